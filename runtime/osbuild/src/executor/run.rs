//! Running one stage on the host its kind needs, through the one
//! stage-host contract ([`crate::host`]).

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::PlannedStage;
use crate::error::BuildError;
use crate::host::{Invocation, Limits, StageError, StageHost};
use crate::native::{self, NativeHost};
use crate::output::StageOutput;
use crate::pipeline::StageCall;
use crate::progress::Reporter;
use crate::reach::grants;
use crate::signals;
use crate::stage::Kind;
use crate::store::packages::{Ingested, PackageCache};
use crate::store::workspace::Workspace;
use crate::userns::IdMap;
use crate::wasm::WasmHost;

/// The seed of a stage's random sources: its position, name and options.
fn seed(p: &PlannedStage) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"osbuild random\0");
    h.update((p.index as u64).to_le_bytes());
    h.update(p.stage.name().as_bytes());
    h.update([0]);
    h.update(p.options.as_bytes());
    h.finalize().into()
}

/// The two hosts, and what every stage run of a build shares.
pub struct Hosts<'a> {
    pub wasm: &'a WasmHost,
    pub native: &'a NativeHost,
    pub limits: Limits,
    pub source_epoch: i64,
    /// A directory of the build's for the hosts' scratch space.
    pub scratch: &'a Path,
    /// The store's package cache, for stages with `packages`.
    pub packages: &'a PackageCache,
    pub reporter: Arc<dyn Reporter>,
}

/// What a stage's run leaves beside its tree and outputs.
#[derive(Default)]
pub struct StageRun {
    /// What a package stage reports it installed.
    pub resolved: Option<osbuild_lock::Resolved>,
    /// What its downloads added to the package cache.
    pub ingested: Option<Ingested>,
}

/// Runs `p` on `ws`'s tree, its outputs into `outputs`.
pub fn run_stage(
    hosts: &Hosts<'_>,
    p: &PlannedStage,
    ws: &mut Workspace,
    outputs: &Path,
    writes: Option<&crate::stage::PathSet>,
) -> Result<StageRun, BuildError> {
    let name = p.stage.name().to_string();
    let output = StageOutput::start(Arc::clone(&hosts.reporter), p.index, &name)?;
    let native = p.stage.kind() == Kind::Native;
    // A native stage's namespace maps its root to a range of host ids of
    // its own; the tree is id-mapped to match while it runs.
    let ids = if native && grants::user_namespaces() {
        let ids = IdMap::reserve()?;
        ws.shift(&ids)?;
        Some(ids)
    } else {
        None
    };
    let prepared = match p.stage.meta.capabilities.packages {
        Some(_) if native => Some(super::packages::Prepared::new(
            hosts.packages,
            p,
            hosts.scratch,
        )?),
        _ => None,
    };
    let cache_files = hosts.packages.files();
    let inv = Invocation {
        stage: &p.stage,
        tree: ws.path(),
        output_dir: outputs,
        options: &p.options_value,
        options_json: &p.options,
        limits: hosts.limits.for_stage(&p.stage.meta.capabilities),
        source_epoch: hosts.source_epoch,
        seed: seed(p),
        stdout: output.writer()?,
        stderr: output.writer()?,
        scratch: hosts.scratch,
        host_paths: &p.host_paths,
        ids: ids.as_ref(),
        packages: prepared.as_ref().map(|pr| pr.binds(&cache_files)),
        interrupted: signals::interrupted,
        writes,
    };
    let result = if native {
        hosts.native.run(inv)
    } else {
        hosts.wasm.run(inv)
    };
    // What it downloaded is kept whether it succeeded or not: the next
    // attempt need not fetch it again.
    let ingested = match prepared {
        Some(pr) => {
            let resolved = result.as_ref().ok().and_then(|r| r.resolved.as_ref());
            match pr.finish(hosts.packages, resolved) {
                Ok(got) => {
                    report_packages(hosts, p, &name, &got, resolved);
                    Some(Ok(got))
                }
                Err(e) => Some(Err(e)),
            }
        }
        None => None,
    };
    let tail = output.finish();
    if ids.is_some() {
        ws.unshift()?;
    }
    // The tree is the host's again before a failure to keep the downloads
    // is reported.
    let ingested = ingested.transpose()?;
    let failure = |message: String| BuildError::Stage {
        index: p.index,
        name: name.clone(),
        message,
        tail: tail.clone(),
    };
    let ran = result.map_err(|e| match e {
        StageError::Interrupted => BuildError::Interrupted,
        StageError::Failed {
            message,
            option: Some(option),
        } => failure(format!(
            "{}.options.{option}: {message}",
            StageCall::json_path(p.index)
        )),
        other => failure(other.to_string()),
    })?;
    native::make_requested_nodes(ws.path(), &ran.device_nodes)
        .map_err(|e| failure(format!("{e:#}")))?;
    if p.stage.meta.capabilities.packages.is_some() {
        let Some(resolved) = &ran.resolved else {
            return Err(failure(
                "declares packages but reported none it installed (osbuild_stage::packages::report)".into(),
            ));
        };
        if let Some(lock) = &p.lock {
            super::packages::check_against_lock(resolved, lock).map_err(failure)?;
        }
    }
    Ok(StageRun {
        resolved: ran.resolved,
        ingested,
    })
}

/// What a package stage's run left in the cache, and which set it
/// installed, in the stage's log.
fn report_packages(
    hosts: &Hosts<'_>,
    p: &PlannedStage,
    name: &str,
    got: &Ingested,
    resolved: Option<&osbuild_lock::Resolved>,
) {
    let line = format!(
        "osbuild: package cache: kept {} downloaded package(s) ({:.1} MB) and {} index file(s), {} known already{}",
        got.added,
        got.added_bytes as f64 / 1e6,
        got.added_indexes,
        got.known,
        if got.refused_count == 0 {
            String::new()
        } else {
            format!(
                "; left out {} file(s) it may not add: {}",
                got.refused_count,
                got.refused.join(", ")
            )
        }
    );
    hosts.reporter.output(p.index, name, &line);
    if let Some(r) = resolved {
        let line = format!(
            "osbuild: installed {} packages (set {}), {}",
            r.packages.len(),
            &r.digest()[..12],
            if p.lock.is_some() {
                "exactly the lock's"
            } else {
                "unlocked: osbuild lock pins them"
            }
        );
        hosts.reporter.output(p.index, name, &line);
    }
}
