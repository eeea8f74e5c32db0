//! Flat repositories in the stage's /tmp that apt reads with `copy://`:
//! a `Packages` index, a `Release` naming the suite (mmdebstrap picks
//! the essential packages by suite) and the package files as symlinks
//! into the store's cache or the stage's downloads. apt checks each file
//! it copies against the index's SHA256, so a file is only ever used as
//! the package the index says it is.

use std::path::{Path, PathBuf};

use osbuild_stage::anyhow::{self, Context as _};

use crate::deb822;

/// One package of a local repository: its index paragraph (without
/// `Filename`, which is set here) and where its file is.
pub struct Member {
    pub stanza: String,
    pub sha256: String,
    pub file: PathBuf,
}

/// Writes the repository at `dir`; returns the sources line for it.
pub fn write(dir: &Path, suite: &str, members: &[Member]) -> anyhow::Result<String> {
    let pool = dir.join("pool");
    std::fs::create_dir_all(&pool).with_context(|| format!("creating {}", pool.display()))?;
    let mut index = String::new();
    for m in members {
        let name = format!("{}.deb", m.sha256);
        let link = pool.join(&name);
        if !link.exists() {
            std::os::unix::fs::symlink(&m.file, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        let p = deb822::Paragraph { text: &m.stanza };
        index.push_str(&p.with_field("Filename", &format!("pool/{name}")));
        index.push('\n');
    }
    std::fs::write(dir.join("Packages"), index)?;
    std::fs::write(
        dir.join("Release"),
        format!("Suite: {suite}\nCodename: {suite}\n"),
    )?;
    Ok(format!("deb [trusted=yes] copy://{} ./", dir.display()))
}
