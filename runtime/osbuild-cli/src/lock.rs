//! `osbuild lock`: the packages each package stage installs, pinned in
//! `PIPELINE.lock.json` beside the pipeline; and finding a build's lock.
//!
//! A lock is what a real run of the stage installed: the pipeline is built
//! up to its last package stage (mmdebstrap and dnf resolve with apt's and
//! dnf's own solvers, against the signed indexes), and each stage's report
//! becomes its entries. A result the store already has gives its recorded
//! set; `--update` runs the package stages again against the mirrors and
//! prints what changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use osbuild::error::BuildError;
use osbuild::executor::{self, BuildConfig};
use osbuild::pipeline::Pipeline;
use osbuild::progress::Reporter;
use osbuild_lock::{LockFile, StageLock};

/// The most a lock file may be.
const MAX_LOCK: u64 = 64 << 20;

/// `debian.json` → `debian.lock.json`, beside it.
pub fn path_for(pipeline: &Path) -> PathBuf {
    let stem = pipeline
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    pipeline.with_file_name(format!("{stem}.lock.json"))
}

/// Reads and checks a lock file.
pub fn read(path: &Path) -> Result<LockFile, BuildError> {
    let at = path.display().to_string();
    let bytes = osbuild::stage::read_regular_file(path, MAX_LOCK, true)
        .map_err(|e| BuildError::input(&at, format!("cannot read the lock: {e}")))?;
    LockFile::parse(&bytes).map_err(|e| BuildError::input(format!("{at}: {}", e.at), e.message))
}

/// The build's lock: `--lock FILE`, else `PIPELINE.lock.json` beside the
/// pipeline if there is one.
pub fn for_build(
    explicit: Option<&Path>,
    pipeline: Option<&Path>,
) -> Result<Option<(String, LockFile)>, BuildError> {
    let path = match (explicit, pipeline) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(pipeline)) => {
            let beside = path_for(pipeline);
            if std::fs::symlink_metadata(&beside).is_err() {
                return Ok(None);
            }
            trusted_beside(&beside, pipeline)?;
            beside
        }
        (None, None) => return Ok(None),
    };
    let lock = read(&path)?;
    eprintln!(
        "osbuild: using the lock {} ({} package stage(s))",
        path.display(),
        lock.stages.len()
    );
    Ok(Some((path.display().to_string(), lock)))
}

/// A lock found beside the pipeline (not named with `--lock`) is used
/// only if whoever owns the pipeline, or root, owns it and no one else
/// may write it: in a shared directory (`/tmp`) another user could
/// otherwise lay one there for the next build to take.
fn trusted_beside(lock: &Path, pipeline: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::MetadataExt;
    let at = lock.display().to_string();
    let meta = std::fs::metadata(lock)
        .map_err(|e| BuildError::input(&at, format!("cannot read the lock: {e}")))?;
    let owner = std::fs::metadata(pipeline).map(|m| m.uid()).ok();
    if meta.uid() != 0 && Some(meta.uid()) != owner {
        return Err(BuildError::input(
            at,
            format!(
                "is owned by uid {}, neither root nor the pipeline's owner: it may not be the pipeline author's; name it with --lock if you trust it, or --no-lock",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(BuildError::input(
            at,
            format!(
                "may be written by others (mode {:o}): chmod go-w it, or name it with --lock if you trust it",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

pub struct LockRequest<'a> {
    pub pipeline_path: &'a Path,
    pub pipeline: &'a Pipeline,
    /// Where the lock goes (default: beside the pipeline).
    pub output: Option<PathBuf>,
    pub update: bool,
    /// Where stages named by tag are resolved.
    pub remote_stages: Option<&'a osbuild::stage::remote::RemoteStages>,
}

/// `osbuild lock [--update] PIPELINE`.
pub fn run(
    req: LockRequest<'_>,
    mut config: BuildConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<(), BuildError> {
    let out = req
        .output
        .clone()
        .unwrap_or_else(|| path_for(req.pipeline_path));
    let old = if std::fs::symlink_metadata(&out).is_ok() {
        if !req.update {
            return Err(BuildError::input(
                out.display().to_string(),
                "exists: osbuild lock --update resolves the packages again and prints what changed",
            ));
        }
        Some(read(&out)?)
    } else {
        None
    };
    // Stages named by tag: pinned to what the tag names now.
    let mut references = std::collections::BTreeMap::new();
    let mut pinned_pipeline = req.pipeline.clone();
    for (i, call) in pinned_pipeline.stages.iter_mut().enumerate() {
        if !osbuild::stage::remote::is_reference(&call.name) {
            continue;
        }
        let at = format!("pipeline[{i}].name");
        let reference = osbuild::stage::remote::Reference::parse(&call.name)
            .map_err(|e| BuildError::input(&at, e))?;
        if reference.digest.is_some() {
            continue;
        }
        let remote = req.remote_stages.ok_or_else(|| {
            BuildError::input(&at, "stages from registries are not looked up here")
        })?;
        let (_, digest) = remote
            .pull(&reference)
            .map_err(|e| BuildError::input(&at, e))?;
        let pinned = format!("{}@{digest}", reference.location);
        references.insert(call.name.clone(), pinned.clone());
        call.name = pinned;
    }
    let req = LockRequest {
        pipeline: &pinned_pipeline,
        ..req
    };
    let mut last = None;
    for (i, call) in req.pipeline.stages.iter().enumerate() {
        let stage = config
            .registry
            .find(&call.name)
            .map_err(|e| BuildError::input(format!("pipeline[{i}].name"), e))?;
        if stage.is_some_and(|s| s.meta.capabilities.packages.is_some()) {
            last = Some(i);
        }
    }
    let Some(last) = last else {
        if references.is_empty() {
            return Err(BuildError::input(
                req.pipeline_path.display().to_string(),
                "no stage of the pipeline installs packages (io.weldr.mmdebstrap, io.weldr.dnf) or is named by tag (oci://...:TAG): there is nothing to lock",
            ));
        }
        let lock = LockFile {
            version: osbuild_lock::FORMAT,
            stages: Vec::new(),
            references,
        };
        write(&out, &lock)?;
        print_references(&lock, old.as_ref());
        eprintln!("osbuild: wrote {}", out.display());
        return Ok(());
    };
    // The stages up to the last package stage have the same ids as in
    // the whole pipeline: what is cached is reused.
    let prefix = Pipeline {
        name: req.pipeline.name.clone(),
        source_epoch: req.pipeline.source_epoch,
        stages: req.pipeline.stages[..=last].to_vec(),
    };
    config.lock = None;
    // --update asks the mirrors again: nothing cached is reused.
    config.cache = !req.update;
    config.sbom = None;
    config.provenance = false;
    config.save = None;
    let report = executor::build(&prefix, &config, reporter)?;
    let mut stages = Vec::new();
    for s in &report.stages {
        let Some(packages) = &s.packages else {
            continue;
        };
        let Some(resolved) = packages.resolved.clone() else {
            return Err(BuildError::input(
                format!("pipeline[{}]", s.index),
                format!(
                    "the store's result for {} keeps no package list (made by an older osbuild): osbuild lock --update runs it again",
                    s.name
                ),
            ));
        };
        stages.push(StageLock {
            index: s.index,
            name: s.name.clone(),
            options_sha256: executor::options_digest_of(&req.pipeline.stages[s.index].options),
            resolved_at: packages.set.resolved_at,
            resolved: resolved.sorted(),
        });
    }
    let lock = LockFile {
        version: osbuild_lock::FORMAT,
        stages,
        references,
    };
    write(&out, &lock)?;
    print_references(&lock, old.as_ref());
    for s in &lock.stages {
        println!(
            "stage {} {}: {} packages",
            s.index + 1,
            s.name,
            s.resolved.packages.len()
        );
        if let Some(old) = old.as_ref().and_then(|o| o.stage(s.index)) {
            let changes = osbuild_lock::diff(&old.resolved.packages, &s.resolved.packages);
            if changes.is_empty() {
                println!("  no package changed");
            }
            for c in changes {
                println!("  {c}");
            }
        }
    }
    eprintln!("osbuild: wrote {}", out.display());
    Ok(())
}

/// Each tag the lock pins, and whether it moved since the old lock.
fn print_references(lock: &LockFile, old: Option<&LockFile>) {
    for (tagged, pinned) in &lock.references {
        match old.and_then(|o| o.references.get(tagged)) {
            Some(before) if before != pinned => println!("{tagged}: {before} -> {pinned}"),
            _ => println!("{tagged}: {pinned}"),
        }
    }
}

/// The pipeline with the stages it names by tag named by the digest the
/// lock pins; a tag the lock does not pin is left (and refused when it
/// is looked up).
pub fn pin_references(pipeline: &mut Pipeline, lock: Option<&LockFile>) {
    let Some(lock) = lock else { return };
    for call in &mut pipeline.stages {
        if let Some(pinned) = lock.references.get(&call.name) {
            call.name = pinned.clone();
        }
    }
}

fn write(path: &Path, lock: &LockFile) -> Result<(), BuildError> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fail = |e: std::io::Error| {
        BuildError::input(
            path.display().to_string(),
            format!("cannot write the lock: {e}"),
        )
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(lock.to_text().as_bytes()).map_err(fail)?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_sits_beside_the_pipeline() {
        assert_eq!(
            path_for(Path::new("examples/debian.json")),
            Path::new("examples/debian.lock.json")
        );
        assert_eq!(path_for(Path::new("p")), Path::new("p.lock.json"));
    }
}
