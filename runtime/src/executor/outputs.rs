//! Files stages write to the output directory, put in place.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::store::Object;

/// Puts `from` into `dir` under its name, replacing what is there, never
/// half-written: a hard link where it can (no copy of a multi-GB image;
/// the store notices if the file is changed later), else a copy.
pub fn place_output(from: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = from.file_name().context("an output without a name")?;
    // A name of its own, so that two builds writing one output directory
    // do not trip over each other's half-written file.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".osbuild-partial")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?
        .into_temp_path();
    std::fs::remove_file(&tmp).ok();
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp)
            .with_context(|| format!("copying {} to {}", from.display(), dir.display()))?;
    }
    let dest = dir.join(name);
    let tmp_name = tmp.to_path_buf();
    tmp.persist(&dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    // rename(2) does nothing when dest is already a link to the same file.
    let _ = std::fs::remove_file(&tmp_name);
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
