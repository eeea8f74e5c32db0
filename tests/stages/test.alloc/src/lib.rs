//! `test.alloc`: allocates until something stops it.

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {}

fn run(_tree: &Tree, _options: Options) -> anyhow::Result<()> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

osbuild_stage::stage!(run);
