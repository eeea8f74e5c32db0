//! `test.motd`: writes `/etc/motd`, the one path it declares, then, if
//! asked, changes `/etc/passwd` one way or another: through WASI's own
//! filesystem or through the tree interface. Every one of those must fail
//! the stage and leave nothing of it behind.

use osbuild_stage::bindings::osbuild::stage::tree as host;
use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    also: Option<String>,
}

fn host_err(e: host::TreeError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

fn run(tree: &Tree, o: Options) -> anyhow::Result<()> {
    tree.write_str("/etc/motd", o.text.as_deref().unwrap_or("hello\n"))?;
    let Some(also) = o.also else {
        return Ok(());
    };
    let passwd = "/etc/passwd";
    match also.as_str() {
        // WASI's filesystem directly, not the SDK.
        "wasi-write" => std::fs::write(passwd, "evil::0:0::/:/bin/sh\n")?,
        "wasi-remove" => std::fs::remove_file(passwd)?,
        "tree-write" => host::write_file(passwd, b"evil::0:0::/:/bin/sh\n").map_err(host_err)?,
        "tree-chmod" => host::set_mode(passwd, 0o666).map_err(host_err)?,
        "tree-chown" => host::set_owner(passwd, 1000, 1000, false).map_err(host_err)?,
        "tree-symlink" => {
            host::remove(passwd).map_err(host_err)?;
            host::symlink("/tmp/evil", passwd).map_err(host_err)?
        }
        "tree-xattr" => host::set_xattr(passwd, "user.evil", b"1", false).map_err(host_err)?,
        "tree-remove" => host::remove(passwd).map_err(host_err)?,
        "tree-rename" => host::rename(passwd, "/etc/motd").map_err(host_err)?,
        "tree-mtime" => host::set_mtime(
            passwd,
            host::Timestamp {
                seconds: 1,
                nanoseconds: 0,
            },
            false,
        )
        .map_err(host_err)?,
        "tree-hardlink" => {
            host::remove("/etc/motd").map_err(host_err)?;
            host::hard_link(passwd, "/etc/motd").map_err(host_err)?;
            host::write_file("/etc/motd", b"evil::0:0::/:/bin/sh\n").map_err(host_err)?
        }
        // The declared path made a way to the undeclared one.
        "symlink-then-write" => {
            host::remove("/etc/motd").map_err(host_err)?;
            host::symlink(passwd, "/etc/motd").map_err(host_err)?;
            tree.write_str("/etc/motd", "evil::0:0::/:/bin/sh\n")?
        }
        "mkdir-etc-new" => host::create_dir("/etc/new", 0o755).map_err(host_err)?,
        other => anyhow::bail!("unknown action {other}"),
    }
    Ok(())
}

osbuild_stage::stage!(run);
