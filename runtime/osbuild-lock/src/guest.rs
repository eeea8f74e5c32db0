//! The store's package cache and the build's lock, as a native stage with
//! the `packages` capability sees them.
//!
//! The cache is read-only and holds each package file under its sha256,
//! which osbuild computed itself when it kept the file: a file found here
//! is the file of that digest. What the stage downloads goes to
//! [`new_dir`]; osbuild hashes each file there after the stage and keeps
//! it (when the build has a lock, only files the lock names).

use std::path::{Path, PathBuf};

use crate::{Resolved, paths};

/// The cached file of `sha256`, if the cache has it.
pub fn cached(sha256: &str) -> Option<PathBuf> {
    if !crate::is_sha256(sha256) {
        return None;
    }
    let path = Path::new(paths::CACHE).join(sha256);
    path.is_file().then_some(path)
}

/// Where downloads go (osbuild keeps them after the stage).
pub fn new_dir() -> &'static Path {
    Path::new(paths::NEW)
}

/// Why the lock or the report could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{path}: {source}")]
    Io {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: &'static str,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Invalid(#[from] crate::LockError),
}

/// The build's lock for this stage, checked, if the build has one.
pub fn lock() -> Result<Option<Resolved>, GuestError> {
    let text = match std::fs::read(paths::LOCK) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(GuestError::Io {
                path: paths::LOCK,
                source,
            });
        }
    };
    let resolved: Resolved = serde_json::from_slice(&text).map_err(|source| GuestError::Json {
        path: paths::LOCK,
        source,
    })?;
    resolved.check("lock")?;
    Ok(Some(resolved))
}

/// Reports what the stage installed (sorted), for osbuild to record.
pub fn report(resolved: Resolved) -> Result<(), GuestError> {
    let resolved = resolved.sorted();
    resolved.check("report")?;
    let text = serde_json::to_vec(&resolved).map_err(|source| GuestError::Json {
        path: paths::RESOLVED,
        source,
    })?;
    std::fs::write(paths::RESOLVED, text).map_err(|source| GuestError::Io {
        path: paths::RESOLVED,
        source,
    })
}
