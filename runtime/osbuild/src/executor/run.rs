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
    pub reporter: Arc<dyn Reporter>,
}

/// Runs `p` on `ws`'s tree, its outputs into `outputs`.
pub fn run_stage(
    hosts: &Hosts<'_>,
    p: &PlannedStage,
    ws: &mut Workspace,
    outputs: &Path,
    writes: Option<&crate::stage::PathSet>,
) -> Result<(), BuildError> {
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
        interrupted: signals::interrupted,
        writes,
    };
    let result = if native {
        hosts.native.run(inv)
    } else {
        hosts.wasm.run(inv)
    };
    let tail = output.finish();
    if ids.is_some() {
        ws.unshift()?;
    }
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
        .map_err(|e| failure(format!("{e:#}")))
}
