//! @NAME@: writes the message of the day.

use osbuild_stage::{OptionError, Tree, anyhow};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    text: String,
    #[serde(default = "default_mode")]
    mode: u32,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

fn default_mode() -> u32 {
    0o644
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    if options.text.trim().is_empty() {
        return Err(OptionError::new("text", "is empty: give the message to show at login").into());
    }
    tree.create_dir_all("/etc")?;
    let motd = format!("{}\n", options.text);
    tree.write_with("/etc/motd", motd, options.mode, options.uid, options.gid)?;
    // An absolute symlink: it resolves inside the tree, never on the host.
    if tree.exists("/etc/issue.net")? {
        tree.remove_file("/etc/issue.net")?;
    }
    tree.symlink("/etc/motd", "/etc/issue.net")?;
    tree.set_xattr("/etc/motd", "user.written-by", b"@NAME@")?;
    println!("/etc/motd: {} bytes", options.text.len() + 1);
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_message_with_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let options = Options { text: "Hello".into(), mode: 0o640, uid: 0, gid: 0 };
        run(&tree, options).unwrap();
        assert_eq!(tree.read_to_string("/etc/motd").unwrap(), "Hello\n");
        assert_eq!(tree.read_link("/etc/issue.net").unwrap().to_str(), Some("/etc/motd"));
    }
}
