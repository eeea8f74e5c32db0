//! `test.loop`: never returns.

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {}

fn run(_tree: &Tree, _options: Options) -> anyhow::Result<()> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

osbuild_stage::stage!(run);
