//! `test.loop`: never returns. It spins in wasm code, sleeps in a host
//! call (a day at a time), or writes to stdout without ever ending a line.

use std::io::Write;

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {
    #[serde(default)]
    mode: Option<String>,
}

fn run(_tree: &Tree, options: Options) -> anyhow::Result<()> {
    match options.mode.as_deref().unwrap_or("spin") {
        "sleep" => loop {
            std::thread::sleep(std::time::Duration::from_secs(24 * 3600));
        },
        "flood" => {
            let chunk = [b'x'; 64 * 1024];
            let mut out = std::io::stdout().lock();
            loop {
                out.write_all(&chunk)?;
            }
        }
        _ => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
    }
}

osbuild_stage::stage!(run);
