//! `io.weldr.kernel-cmdline`: `/etc/kernel/cmdline`, the command line
//! kernel-install and bootloader stages put in boot entries, as osbuild's
//! `org.osbuild.kernel-cmdline` writes it: `root=UUID=<root_fs_uuid>
//! <kernel_opts>`, no trailing newline.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    pub root_fs_uuid: Option<String>,
    #[serde(default)]
    pub kernel_opts: Option<String>,
}

pub const CMDLINE: &str = "/etc/kernel/cmdline";
/// The kernel's `COMMAND_LINE_SIZE` on x86 and arm64, including the final NUL.
pub const MAX_LEN: usize = 2048;

fn uuid_ok(uuid: &str) -> bool {
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    groups
        .iter()
        .all(|g| g.chars().all(|c| c.is_ascii_alphanumeric()))
        && (lens == [8, 4, 4, 4, 12] || lens == [4, 4])
}

/// The command line the options describe.
pub fn cmdline(options: &Options) -> anyhow::Result<String> {
    let mut params = Vec::new();
    if let Some(uuid) = options.root_fs_uuid.as_deref().filter(|u| !u.is_empty()) {
        if !uuid_ok(uuid) {
            return Err(OptionError::new(
                "root_fs_uuid",
                format!("{uuid:?} is not a file system UUID (like 9c6ae55b-cf88-45b8-84e8-64990759f39d or 6699-AFB5)"),
            )
            .into());
        }
        params.push(format!("root=UUID={uuid}"));
    }
    if let Some(opts) = options.kernel_opts.as_deref().filter(|o| !o.is_empty()) {
        if opts.contains(['\n', '\r', '\0']) {
            return Err(OptionError::new(
                "kernel_opts",
                "contains a line break or NUL; the command line is one line",
            )
            .into());
        }
        params.push(opts.to_string());
    }
    let line = params.join(" ");
    if line.len() + 1 > MAX_LEN {
        let option = if options
            .kernel_opts
            .as_deref()
            .is_some_and(|o| !o.is_empty())
        {
            "kernel_opts"
        } else {
            "root_fs_uuid"
        };
        return Err(OptionError::new(
            option,
            format!(
                "the kernel command line would be {} bytes; the kernel takes at most {} (COMMAND_LINE_SIZE, counting the final NUL)",
                line.len(),
                MAX_LEN - 1
            ),
        )
        .into());
    }
    Ok(line)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let line = cmdline(&options)?;
    tree.create_dir_all("/etc/kernel")?;
    tree.write_str(CMDLINE, line)?;
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(uuid: Option<&str>, kopts: Option<&str>) -> Options {
        Options {
            root_fs_uuid: uuid.map(Into::into),
            kernel_opts: kopts.map(Into::into),
        }
    }

    #[test]
    fn writes_the_line_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        run(
            &tree,
            opts(
                Some("9c6ae55b-cf88-45b8-84e8-64990759f39d"),
                Some("ro console=ttyS0"),
            ),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/kernel/cmdline")).unwrap(),
            "root=UUID=9c6ae55b-cf88-45b8-84e8-64990759f39d ro console=ttyS0"
        );
    }

    #[test]
    fn parts_are_optional() {
        assert_eq!(cmdline(&opts(None, None)).unwrap(), "");
        assert_eq!(
            cmdline(&opts(Some("6699-AFB5"), None)).unwrap(),
            "root=UUID=6699-AFB5"
        );
        assert_eq!(cmdline(&opts(Some(""), Some("quiet"))).unwrap(), "quiet");
    }

    #[test]
    fn limits() {
        let long = "x".repeat(MAX_LEN - 1);
        assert_eq!(
            cmdline(&opts(None, Some(&long))).unwrap().len(),
            MAX_LEN - 1
        );
        let err = cmdline(&opts(None, Some(&format!("{long}x")))).unwrap_err();
        let err = err.downcast_ref::<OptionError>().unwrap();
        assert_eq!(err.option, "kernel_opts");
        assert!(err.message.contains("2048 bytes"), "{}", err.message);
        let err = cmdline(&opts(Some("not-a-uuid"), None)).unwrap_err();
        assert_eq!(
            err.downcast_ref::<OptionError>().unwrap().option,
            "root_fs_uuid"
        );
        let err = cmdline(&opts(None, Some("a\nb"))).unwrap_err();
        assert_eq!(
            err.downcast_ref::<OptionError>().unwrap().option,
            "kernel_opts"
        );
    }
}
