//! Package stages in a build: each stage's entries of the lock matched
//! to it (and refused when they were made for other options), the cache
//! and the lock handed to it, what it downloaded kept after it, and what
//! it installed recorded with its result.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use osbuild_lock::{LockFile, Resolved, StageLock};
use sha2::{Digest, Sha256};

use super::PlannedStage;
use crate::error::{BuildError, InputError};
use crate::host::PackageBinds;
use crate::pipeline::StageCall;
use crate::store::packages::{Ingested, PackageCache, PackageSet};

/// sha256 of a stage's options in canonical JSON: what a lock entry is for.
pub fn options_digest(p: &PlannedStage) -> String {
    options_digest_of(&p.options_value)
}

/// [`options_digest`] of a stage's options as the pipeline has them.
pub fn options_digest_of(options: &serde_json::Map<String, serde_json::Value>) -> String {
    let canonical = crate::store::ids::canonical_json(&serde_json::Value::Object(options.clone()));
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Each planned stage's entries of `lock`. With a lock, every package
/// stage must have entries made for its options, and nothing else may.
pub fn match_lock(
    planned: &mut [PlannedStage],
    lock: Option<&LockFile>,
    lock_path: &str,
) -> Result<(), BuildError> {
    let Some(lock) = lock else { return Ok(()) };
    let mut errors = Vec::new();
    for p in planned.iter_mut() {
        let at = || format!("{}.name", StageCall::json_path(p.index));
        let entry = lock.stage(p.index);
        match (p.stage.meta.capabilities.packages, entry) {
            (None, None) => {}
            (None, Some(_)) => errors.push(InputError::new(
                lock_path,
                format!(
                    "locks stage {} ({}), which installs no packages: make the lock again with osbuild lock --update",
                    p.index,
                    p.stage.name()
                ),
            )),
            (Some(_), None) => errors.push(InputError::new(
                at(),
                format!(
                    "{} has no entries in the lock {lock_path}: make the lock again with osbuild lock --update",
                    p.stage.name()
                ),
            )),
            (Some(_), Some(e)) if e.name != p.stage.name() => errors.push(InputError::new(
                at(),
                format!(
                    "the lock {lock_path} is for {} at this place, not {}: make the lock again with osbuild lock --update",
                    e.name,
                    p.stage.name()
                ),
            )),
            (Some(_), Some(e)) if e.options_sha256 != options_digest(p) => {
                errors.push(InputError::new(
                    format!("{}.options", StageCall::json_path(p.index)),
                    format!(
                        "changed since the lock {lock_path} was made for them: make the lock again with osbuild lock --update"
                    ),
                ))
            }
            (Some(_), Some(e)) => p.lock = Some(e.clone()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BuildError::Input(errors))
    }
}

/// What the package stage at hand is given, and holds while it runs.
pub struct Prepared {
    incoming: PathBuf,
    lock_file: Option<PathBuf>,
    locked: Option<HashSet<String>>,
    _in_use: crate::store::packages::InUse,
}

impl Prepared {
    /// An empty downloads directory and the stage's lock in `scratch`.
    pub fn new(cache: &PackageCache, p: &PlannedStage, scratch: &Path) -> anyhow::Result<Prepared> {
        let incoming = scratch.join(format!("packages-new-{}", p.index));
        std::fs::create_dir(&incoming)
            .with_context(|| format!("creating {}", incoming.display()))?;
        let (lock_file, locked) = match &p.lock {
            Some(lock) => {
                let path = scratch.join(format!("lock-{}.json", p.index));
                std::fs::write(&path, serde_json::to_vec(&lock.resolved)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                for sha in lock.resolved.digests() {
                    cache.touch(sha);
                }
                let shas = lock.resolved.digests().map(str::to_string).collect();
                (Some(path), Some(shas))
            }
            None => (None, None),
        };
        Ok(Prepared {
            incoming,
            lock_file,
            locked,
            _in_use: cache.in_use()?,
        })
    }

    pub fn binds<'a>(&'a self, cache: &'a Path) -> PackageBinds<'a> {
        PackageBinds {
            cache,
            incoming: &self.incoming,
            lock: self.lock_file.as_deref(),
        }
    }

    /// Keeps what the stage downloaded (with a lock, only locked files),
    /// and marks what it installed as used.
    pub fn finish(
        self,
        cache: &PackageCache,
        resolved: Option<&Resolved>,
    ) -> anyhow::Result<Ingested> {
        let got = cache
            .ingest(
                &self.incoming,
                self.locked.as_ref(),
                crate::signals::interrupted,
            )
            .context("keeping the stage's downloads in the package cache")?;
        for sha in resolved.iter().flat_map(|r| r.digests()) {
            cache.touch(sha);
        }
        Ok(got)
    }
}

/// The package set a stage installed, as its result records it.
pub fn set_of(resolved: &Resolved, lock: Option<&StageLock>, now: i64) -> PackageSet {
    PackageSet {
        count: resolved.packages.len(),
        sha256: resolved.digest(),
        locked: lock.is_some(),
        resolved_at: lock.map_or(now, |l| l.resolved_at),
    }
}

/// A locked stage installed exactly its lock's packages.
pub fn check_against_lock(resolved: &Resolved, lock: &StageLock) -> Result<(), String> {
    let changes = osbuild_lock::diff(&lock.resolved.packages, &resolved.packages);
    if changes.is_empty() {
        return Ok(());
    }
    Err(format!(
        "installed other packages than its lock names: {}",
        changes
            .iter()
            .take(10)
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    ))
}
