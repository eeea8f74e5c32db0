//! `io.weldr.machine-id`: sets the first-boot state of `/etc/machine-id`,
//! as osbuild's `org.osbuild.machine-id` does.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

const PATH: &str = "/etc/machine-id";

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FirstBoot {
    /// `uninitialized\n`: systemd treats the next boot as the first
    /// (`ConditionFirstBoot=yes`) and commits a new id.
    Yes,
    /// An empty file: a new id is generated at boot, but it is not a first boot.
    No,
    /// Keep the file as it is (it must exist).
    Preserve,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(rename = "first-boot")]
    pub first_boot: FirstBoot,
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    match options.first_boot {
        FirstBoot::Yes | FirstBoot::No => {
            if let Ok(m) = tree.symlink_metadata(PATH)
                && !m.is_file()
            {
                anyhow::bail!("{PATH} exists and is not a regular file");
            }
            tree.create_dir_all("/etc")?;
            let contents: &[u8] = if options.first_boot == FirstBoot::Yes {
                b"uninitialized\n"
            } else {
                b""
            };
            tree.write(PATH, contents)?;
        }
        FirstBoot::Preserve => match tree.symlink_metadata(PATH) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(OptionError::new(
                    "first-boot",
                    format!("cannot preserve {PATH}: it is not a regular file"),
                )
                .into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OptionError::new(
                    "first-boot",
                    format!("cannot preserve {PATH}: it does not exist in the tree"),
                )
                .into());
            }
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use osbuild_stage::serde_json;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        (dir, tree)
    }

    fn opts(first_boot: FirstBoot) -> Options {
        Options { first_boot }
    }

    #[test]
    fn yes_no_preserve() {
        let (dir, tree) = tree();
        let path = dir.path().join("etc/machine-id");
        run(&tree, opts(FirstBoot::Yes)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"uninitialized\n");
        run(&tree, opts(FirstBoot::No)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        run(&tree, opts(FirstBoot::Preserve)).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"0123456789abcdef0123456789abcdef\n"
        );
    }

    #[test]
    fn preserving_a_missing_file_fails() {
        let (_dir, tree) = tree();
        let err = run(&tree, opts(FirstBoot::Preserve)).unwrap_err();
        let err = err.downcast_ref::<OptionError>().unwrap();
        assert_eq!(err.option, "first-boot");
        assert!(err.message.contains("does not exist"), "{}", err.message);
    }

    #[test]
    fn options_use_osbuilds_names() {
        let o: Options = serde_json::from_str(r#"{"first-boot": "preserve"}"#).unwrap();
        assert_eq!(o.first_boot, FirstBoot::Preserve);
        assert!(serde_json::from_str::<Options>(r#"{"first-boot": "maybe"}"#).is_err());
    }
}
