//! `test.mknod`: makes a device node or FIFO, which it may (it declares
//! `device-nodes`), then opens it if asked. The make must work; the open
//! must be refused by the host (a FIFO would block, a device node would be
//! the host's device). If an open succeeds it prints `ESCAPED`.

use osbuild_stage::bindings::osbuild::stage::tree as host;
use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {
    path: String,
    kind: String,
    major: u32,
    minor: u32,
    #[serde(default)]
    write: bool,
    #[serde(default)]
    read: bool,
}

fn run(_tree: &Tree, o: Options) -> anyhow::Result<()> {
    let kind = match o.kind.as_str() {
        "block" => host::NodeKind::BlockDevice,
        "char" => host::NodeKind::CharDevice,
        _ => host::NodeKind::Fifo,
    };
    host::make_node(&o.path, kind, 0o666, o.major, o.minor)
        .map_err(|e| anyhow::anyhow!("make-node: {}", e.message))?;
    println!("made {} {}:{} at {}", o.kind, o.major, o.minor, o.path);
    if o.write {
        std::fs::write(&o.path, b"PWNED")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", o.path))?;
        println!("ESCAPED: wrote {}", o.path);
    }
    if o.read {
        let got = std::fs::read(&o.path).map_err(|e| anyhow::anyhow!("reading {}: {e}", o.path))?;
        println!("ESCAPED: read {} bytes from {}", got.len(), o.path);
    }
    Ok(())
}

osbuild_stage::stage!(run);
