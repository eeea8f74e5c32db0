//! `io.weldr.systemd`: enable, disable and mask units, set the default target.

mod install;

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

pub use install::Installer;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    pub enabled_services: Vec<String>,
    #[serde(default)]
    pub disabled_services: Vec<String>,
    #[serde(default)]
    pub masked_services: Vec<String>,
    #[serde(default)]
    pub masked_generators: Vec<String>,
    pub default_target: Option<String>,
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let installer = Installer::new(tree)?;
    let lists = [
        ("enabled_services", &options.enabled_services),
        ("disabled_services", &options.disabled_services),
        ("masked_services", &options.masked_services),
    ];
    for (option, names) in lists {
        for (i, name) in names.iter().enumerate() {
            let path = format!("{option}[{i}]");
            let result = match option {
                "enabled_services" => installer.enable(name),
                "disabled_services" => installer.disable(name),
                _ => installer.mask(name),
            };
            result.map_err(|e| match e {
                install::Error::Option(msg) => anyhow::Error::new(OptionError::new(path, msg)),
                install::Error::Tree(e) => e,
            })?;
        }
    }
    for (i, generator) in options.masked_generators.iter().enumerate() {
        if generator.contains('/') || generator == "." || generator == ".." {
            return Err(OptionError::new(
                format!("masked_generators[{i}]"),
                format!("{generator:?} is not a generator name"),
            )
            .into());
        }
        tree.create_dir_all("/etc/systemd/system-generators")?;
        installer.link_to_dev_null(&format!("/etc/systemd/system-generators/{generator}"))?;
    }
    if let Some(target) = &options.default_target {
        installer.set_default(target).map_err(|e| match e {
            install::Error::Option(msg) => {
                anyhow::Error::new(OptionError::new("default_target", msg))
            }
            install::Error::Tree(e) => e,
        })?;
    }
    Ok(())
}

osbuild_stage::stage!(run);
