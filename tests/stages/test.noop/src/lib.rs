//! `test.noop`: does nothing, for measuring per-stage overhead.

use osbuild_stage::{Tree, anyhow};

#[derive(serde::Deserialize)]
pub struct Options {
    #[allow(dead_code)]
    n: Option<i64>,
}

fn run(_tree: &Tree, _options: Options) -> anyhow::Result<()> {
    Ok(())
}

osbuild_stage::stage!(run);
