//! Files stages write to the output directory, put in place.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::place::link_or_copy;
use crate::store::Object;

/// Puts `from` into `dir` under its name (see [`link_or_copy`]; the store
/// notices if a linked output is changed later).
pub fn place_output(from: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = from.file_name().context("an output without a name")?;
    let dest = dir.join(name);
    link_or_copy(from, &dest)?;
    Ok(dest)
}

pub fn place_outputs_of(objects: &[&Object], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for o in objects {
        for out in &o.info.outputs {
            std::fs::create_dir_all(dir)?;
            written.push(place_output(&o.output_dir().join(&out.name), dir)?);
        }
    }
    Ok(written)
}
