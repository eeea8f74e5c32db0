//! `io.weldr.modprobe`: a modprobe.d(5) file in `/usr/lib/modprobe.d`, one
//! line per command, with osbuild's `org.osbuild.modprobe` options
//! (`blacklist`, `install`) plus `options`.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub filename: String,
    pub commands: Vec<Command>,
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// Ignore the module's aliases (it is not loaded for a device).
    Blacklist { modulename: String },
    /// Run `cmdline` instead of inserting the module.
    Install { modulename: String, cmdline: String },
    /// Parameters passed when the module is inserted.
    Options { modulename: String, options: String },
}

pub const DIR: &str = "/usr/lib/modprobe.d";

/// A drop-in file name: `^[A-Za-z0-9_.-]{1,250}\.conf$` (osbuild's rule).
pub use osbuild_stage::formats::dropin::valid_name as filename_ok;

fn check_module(i: usize, name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    {
        return Err(OptionError::new(
            format!("commands[{i}].modulename"),
            format!("{name:?} is not a module name (letters, digits, '_' and '-')"),
        )
        .into());
    }
    Ok(())
}

fn check_text(i: usize, field: &str, text: &str) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        return Err(OptionError::new(format!("commands[{i}].{field}"), "is empty").into());
    }
    if text.contains(['\n', '\r', '\0']) {
        return Err(OptionError::new(
            format!("commands[{i}].{field}"),
            "contains a line break or NUL",
        )
        .into());
    }
    Ok(())
}

pub fn render(commands: &[Command]) -> anyhow::Result<String> {
    if commands.is_empty() {
        return Err(OptionError::new("commands", "needs at least one command").into());
    }
    let mut out = String::new();
    for (i, c) in commands.iter().enumerate() {
        match c {
            Command::Blacklist { modulename } => {
                check_module(i, modulename)?;
                out.push_str(&format!("blacklist {modulename}\n"));
            }
            Command::Install {
                modulename,
                cmdline,
            } => {
                check_module(i, modulename)?;
                check_text(i, "cmdline", cmdline)?;
                out.push_str(&format!("install {modulename} {cmdline}\n"));
            }
            Command::Options {
                modulename,
                options,
            } => {
                check_module(i, modulename)?;
                check_text(i, "options", options)?;
                out.push_str(&format!("options {modulename} {options}\n"));
            }
        }
    }
    Ok(out)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let text = render(&options.commands)?;
    osbuild_stage::formats::dropin::write(tree, DIR, &options.filename, &text)
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use osbuild_stage::serde_json;

    #[test]
    fn writes_commands() {
        let o: Options = serde_json::from_value(serde_json::json!({
            "filename": "disallow-modules.conf",
            "commands": [
                {"command": "blacklist", "modulename": "nouveau"},
                {"command": "install", "modulename": "floppy", "cmdline": "/bin/false"},
                {"command": "options", "modulename": "kvm_intel", "options": "nested=1"}
            ]
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        run(&Tree::open(dir.path()).unwrap(), o).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("usr/lib/modprobe.d/disallow-modules.conf"))
                .unwrap(),
            "blacklist nouveau\ninstall floppy /bin/false\noptions kvm_intel nested=1\n"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let option = |c: &[Command]| {
            render(c)
                .unwrap_err()
                .downcast_ref::<OptionError>()
                .unwrap()
                .option
                .clone()
        };
        assert_eq!(option(&[]), "commands");
        let bl = |m: &str| Command::Blacklist {
            modulename: m.into(),
        };
        assert_eq!(
            option(&[bl("ok"), bl("bad name")]),
            "commands[1].modulename"
        );
        assert_eq!(
            option(&[Command::Install {
                modulename: "x".into(),
                cmdline: "a\nblacklist y".into()
            }]),
            "commands[0].cmdline"
        );
        assert!(
            serde_json::from_value::<Command>(
                serde_json::json!({"command": "remove", "modulename": "x"})
            )
            .is_err()
        );
    }
}
