//! `test.escape`: tries one way out of the tree. Every attempt must fail:
//! the stage then fails with the error it got. If an attempt succeeds it
//! prints `ESCAPED` and what it saw, and still fails, so a test notices.
//!
//! The test's tree holds `hostetc -> /etc` and `up -> ../../../../../../../../etc`
//! and no `etc/passwd` of its own; anything read as `passwd` came from the host.

use osbuild_stage::bindings::osbuild::stage::tree as host;
use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {
    attempt: String,
    marker: Option<String>,
}

fn escaped(what: &str) -> anyhow::Error {
    println!("ESCAPED: {what}");
    anyhow::anyhow!("ESCAPED: {what}")
}

fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let marker = options
        .marker
        .unwrap_or_else(|| "/tmp/osbuild-escape-marker".into());
    let result: anyhow::Result<String> = match options.attempt.as_str() {
        // Raw WASI calls, not the SDK: what a hostile stage would do.
        "read-dotdot" => std::fs::read_to_string("/../../../../etc/passwd").map_err(Into::into),
        "read-host-absolute" => std::fs::read_to_string("/etc/passwd").map_err(Into::into),
        "read-through-absolute-symlink" => {
            std::fs::read_to_string("/hostetc/passwd").map_err(Into::into)
        }
        "read-through-relative-symlink" => {
            std::fs::read_to_string("/up/passwd").map_err(Into::into)
        }
        "write-dotdot" => std::fs::write(format!("/../../../../../../..{marker}"), b"x")
            .map(|_| String::new())
            .map_err(Into::into),
        "write-through-symlink" => std::fs::write("/hostetc/osbuild-escape-marker", b"x")
            .map(|_| String::new())
            .map_err(Into::into),
        // The host's tree interface.
        // The raw interface's errors name no path (the SDK's Tree adds it);
        // this stage calls it directly, so it names the path itself.
        "tree-dotdot" => host::metadata("/../../../../etc/passwd", true)
            .map(|m| format!("{m:?}"))
            .map_err(|e| anyhow::anyhow!("/../../../../etc/passwd: {}", e.message)),
        "tree-symlink-to-host-etc" => {
            let _ = host::set_mode("/hostetc/shadow", 0o777);
            host::resolve("/hostetc/passwd", true)
                .map_err(|e| anyhow::anyhow!("/hostetc/passwd: {}", e.message))
                .and_then(|p| tree.read_to_string(&p).map_err(Into::into))
        }
        // Device nodes without the `device-nodes` capability: a loop device
        // (7:N, N from `marker`) and /dev/mem.
        "mknod-block" => {
            let minor: u32 = marker.parse().unwrap_or(0);
            host::make_node("/disk", host::NodeKind::BlockDevice, 0o600, 7, minor)
                .map_err(|e| anyhow::anyhow!(e.message))
                .and_then(|()| Ok(std::fs::write("/disk", b"PWNED")?))
                .map(|()| "ESCAPED: made and wrote a block device".to_string())
        }
        "mknod-mem" => host::make_node("/mem", host::NodeKind::CharDevice, 0o600, 1, 1)
            .map(|()| "ESCAPED: made /dev/mem".to_string())
            .map_err(|e| anyhow::anyhow!(e.message)),
        "set-trusted-xattr" => host::set_xattr("/", "trusted.overlay.opaque", b"y", false)
            .map(|()| "ESCAPED: set trusted.overlay.opaque".to_string())
            .map_err(|e| anyhow::anyhow!(e.message)),
        "tree-nul" => host::set_mode("/etc\0/../x", 0o777)
            .map(|()| "ESCAPED: a path with a NUL byte worked".to_string())
            .map_err(|e| anyhow::anyhow!(e.message)),
        other => anyhow::bail!("unknown attempt {other}"),
    };
    match result {
        Ok(content) if content.contains("root:") => Err(escaped(&content)),
        Ok(content) if content.is_empty() => {
            // A write "succeeded": it must have landed inside the tree.
            Err(anyhow::anyhow!(
                "the write went somewhere inside the tree: {}",
                options.attempt
            ))
        }
        Ok(content) => Err(escaped(&content)),
        Err(e) => Err(e.context(format!("attempt {} was refused", options.attempt))),
    }
}

osbuild_stage::stage!(run);
