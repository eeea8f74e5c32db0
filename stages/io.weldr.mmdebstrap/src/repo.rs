//! Flat repositories in the stage's /tmp that apt reads with `copy://`:
//! a `Packages` index, a `Release` naming the suite (mmdebstrap picks
//! the essential packages by suite) and the package files as symlinks
//! into the store's cache or the stage's downloads. apt checks each file
//! it copies against the index's SHA256, so a file is only ever used as
//! the package the index says it is.

use std::path::{Path, PathBuf};
use std::process::Command;

use osbuild_stage::anyhow::{self, Context as _};
use osbuild_stage::packages::Package;

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

/// The index paragraph for a locked package, from its file's own control
/// data (`dpkg-deb -f`), checked against the lock's name, version and
/// architecture, with the lock's size and digest (already verified).
pub fn locked_stanza(p: &Package, file: &Path) -> anyhow::Result<String> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("--field").arg(file);
    let out = cmd
        .output()
        .with_context(|| format!("running dpkg-deb on {}", p.file_name()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} (sha256 {}) is not a Debian package: {}",
            p.file_name(),
            p.sha256,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let control = String::from_utf8_lossy(&out.stdout).into_owned();
    let para = deb822::Paragraph {
        text: control.trim_end(),
    };
    let found = (
        para.field("Package").unwrap_or(""),
        para.field("Version").unwrap_or(""),
        para.field("Architecture").unwrap_or(""),
    );
    if found != (p.name.as_str(), p.version.as_str(), p.architecture.as_str()) {
        anyhow::bail!(
            "the lock says {} is {}, but the file (sha256 {}) is {} {} ({}): make the lock again with osbuild lock --update",
            p.file_name(),
            p.label(),
            p.sha256,
            found.0,
            found.1,
            found.2
        );
    }
    let mut stanza = para.text.to_string();
    let mut set = |name: &str, value: &str| {
        stanza = deb822::Paragraph {
            text: stanza.trim_end(),
        }
        .with_field(name, value);
    };
    set("Size", &p.size.to_string());
    set("SHA256", &p.sha256);
    // The archive's priority, not the package's own: variants pick by it.
    if let Some(priority) = &p.priority {
        set("Priority", priority);
    }
    Ok(stanza)
}
