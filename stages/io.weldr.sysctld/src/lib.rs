//! `io.weldr.sysctld`: a sysctl.d(5) drop-in in `/usr/lib/sysctl.d`, one
//! `key = value` line per parameter (or `-key` to exclude a key from a
//! glob), as osbuild's `org.osbuild.sysctld` writes it.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub filename: String,
    pub config: Vec<Parameter>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

pub const DIR: &str = "/usr/lib/sysctl.d";

/// A drop-in file name: `^[A-Za-z0-9_.-]{1,250}\.conf$` (osbuild's rule).
pub use osbuild_stage::formats::dropin::valid_name as filename_ok;

fn line(i: usize, p: &Parameter) -> anyhow::Result<String> {
    let key = p.key.as_str();
    let bad_key = |why: &str| -> anyhow::Error {
        OptionError::new(format!("config[{i}].key"), format!("{key:?} {why}")).into()
    };
    let name = key.strip_prefix('-').unwrap_or(key);
    if name.is_empty() {
        return Err(bad_key("is not a sysctl key"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || *c == '=' || c.is_control())
    {
        return Err(bad_key(&format!("contains {c:?}")));
    }
    if name.starts_with(['#', ';', '-']) {
        return Err(bad_key("starts with a comment character or a second '-'"));
    }
    match &p.value {
        Some(value) => {
            if value.contains(['\n', '\r', '\0']) {
                return Err(OptionError::new(
                    format!("config[{i}].value"),
                    "contains a line break or NUL",
                )
                .into());
            }
            Ok(format!("{key} = {value}\n"))
        }
        None if key.starts_with('-') => Ok(format!("{key}\n")),
        None => Err(OptionError::new(
            format!("config[{i}]"),
            format!("{key:?} needs a value (only an excluded key, \"-{key}\", goes without one)"),
        )
        .into()),
    }
}

pub fn render(config: &[Parameter]) -> anyhow::Result<String> {
    osbuild_stage::formats::dropin::render(config, "config", "parameter", line)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let text = render(&options.config)?;
    osbuild_stage::formats::dropin::write(tree, DIR, &options.filename, &text)
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use osbuild_stage::serde_json;

    #[test]
    fn writes_the_drop_in() {
        let o: Options = serde_json::from_value(serde_json::json!({
            "filename": "50-osbuild.conf",
            "config": [
                {"key": "net.ipv4.ip_forward", "value": "1"},
                {"key": "net.ipv4.conf.*.rp_filter", "value": "2"},
                {"key": "-net.ipv4.conf.lo.rp_filter"},
                {"key": "-kernel.unknown_privileged", "value": "1"}
            ]
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        run(&Tree::open(dir.path()).unwrap(), o).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("usr/lib/sysctl.d/50-osbuild.conf")).unwrap(),
            "net.ipv4.ip_forward = 1\nnet.ipv4.conf.*.rp_filter = 2\n-net.ipv4.conf.lo.rp_filter\n-kernel.unknown_privileged = 1\n"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let p = |k: &str, v: Option<&str>| Parameter {
            key: k.into(),
            value: v.map(Into::into),
        };
        let option = |c: &[Parameter]| {
            render(c)
                .unwrap_err()
                .downcast_ref::<OptionError>()
                .unwrap()
                .option
                .clone()
        };
        assert_eq!(option(&[]), "config");
        assert_eq!(option(&[p("kernel.panic", None)]), "config[0]");
        assert_eq!(
            option(&[p("a", Some("1")), p("a b", Some("1"))]),
            "config[1].key"
        );
        assert_eq!(option(&[p("a=b", Some("1"))]), "config[0].key");
        assert_eq!(option(&[p("a", Some("1\nb = 2"))]), "config[0].value");
        assert!(filename_ok("99-x.conf"));
        for bad in ["x", ".conf", "../x.conf", "a b.conf"] {
            assert!(!filename_ok(bad), "{bad}");
        }
    }
}
