//! The store's package cache and the build's lock, as a native stage with
//! the `packages` capability sees them (see [`osbuild_lock`]).
//!
//! The cache is read-only and holds each package file under its sha256,
//! which osbuild computed itself when it kept the file: a file found here
//! is the file of that digest. What the stage downloads goes to
//! [`new_dir`]; osbuild hashes each file there after the stage and keeps
//! it (when the build has a lock, only files the lock names).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
pub use osbuild_lock::{self as lock, Package, Repository, Resolved, paths};

/// The cached file of `sha256`, if the cache has it.
pub fn cached(sha256: &str) -> Option<PathBuf> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let path = Path::new(paths::CACHE).join(sha256);
    path.is_file().then_some(path)
}

/// Where downloads go (osbuild keeps them after the stage).
pub fn new_dir() -> &'static Path {
    Path::new(paths::NEW)
}

/// The build's lock for this stage, checked, if the build has one.
pub fn lock() -> anyhow::Result<Option<Resolved>> {
    let text = match std::fs::read(paths::LOCK) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", paths::LOCK)),
    };
    let resolved: Resolved = serde_json::from_slice(&text)
        .with_context(|| format!("reading the lock osbuild gave ({})", paths::LOCK))?;
    resolved.check("lock")?;
    Ok(Some(resolved))
}

/// Reports what the stage installed (sorted), for osbuild to record.
pub fn report(resolved: Resolved) -> anyhow::Result<()> {
    let resolved = resolved.sorted();
    resolved.check("report")?;
    let text = serde_json::to_vec(&resolved)?;
    std::fs::write(paths::RESOLVED, text).with_context(|| format!("writing {}", paths::RESOLVED))
}
