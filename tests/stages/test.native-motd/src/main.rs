//! `test.native-motd`: the native twin of `test.motd`. Writes `/etc/motd`,
//! which it declares, then, if asked, changes `/etc/passwd` with the
//! operating system's calls or the SDK's tree. Each must fail the stage,
//! checked from its change set, and leave nothing of it behind.

use std::os::unix::fs::PermissionsExt;

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
struct Options {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    also: Option<String>,
}

fn run(tree: &Tree, o: Options) -> anyhow::Result<()> {
    tree.write_str("/etc/motd", o.text.as_deref().unwrap_or("hello\n"))?;
    let Some(also) = o.also else {
        return Ok(());
    };
    let passwd = "/etc/passwd";
    let host_passwd = tree.host_path().join("etc/passwd");
    match also.as_str() {
        "direct-write" => std::fs::write(&host_passwd, "evil::0:0::/:/bin/sh\n")?,
        "direct-chmod" => {
            std::fs::set_permissions(&host_passwd, std::fs::Permissions::from_mode(0o666))?
        }
        "tree-write" => tree.write_str(passwd, "evil::0:0::/:/bin/sh\n")?,
        "tree-symlink" => {
            tree.remove_file(passwd)?;
            tree.symlink("/tmp/evil", passwd)?
        }
        "tree-xattr" => tree.set_xattr(passwd, "user.evil", b"1")?,
        "tree-remove" => tree.remove_file(passwd)?,
        "symlink-then-write" => {
            tree.remove_file("/etc/motd")?;
            tree.symlink(passwd, "/etc/motd")?;
            tree.write_str("/etc/motd", "evil::0:0::/:/bin/sh\n")?
        }
        other => anyhow::bail!("unknown action {other}"),
    }
    Ok(())
}

osbuild_stage::native_stage!(run);
