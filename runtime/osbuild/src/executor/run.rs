//! Running one stage on the host its kind needs.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{BuildConfig, PlannedStage};
use crate::error::BuildError;
use crate::native::userns::IdMap;
use crate::native::{self, NativeError, NativeHost};
use crate::output::StageOutput;
use crate::pipeline::StageCall;
use crate::progress::Reporter;
use crate::signals;
use crate::stage::Kind;
use crate::store::workspace::Workspace;
use crate::wasm::{Invocation, WasmError, WasmHost};

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

pub struct Hosts<'a> {
    pub wasm: &'a WasmHost,
    pub native: &'a NativeHost,
}

#[allow(clippy::too_many_arguments)]
pub fn run_stage(
    hosts: &Hosts<'_>,
    p: &PlannedStage,
    ws: &mut Workspace,
    scratch: &Path,
    outputs: &Path,
    epoch: i64,
    config: &BuildConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<(), BuildError> {
    let name = p.stage.name().to_string();
    let output = StageOutput::start(reporter, p.index, &name)?;
    let failure = |message: String, tail: Vec<String>| BuildError::Stage {
        index: p.index,
        name: name.clone(),
        message,
        tail,
    };
    match p.stage.kind() {
        Kind::Wasm => {
            let result = hosts.wasm.run(Invocation {
                stage: &p.stage,
                tree: ws.path(),
                options: &p.options,
                source_epoch: epoch,
                seed: seed(p),
                limits: config.limits,
                stdout: output.writer()?,
                stderr: output.writer()?,
                scratch_parent: scratch,
                interrupted: signals::interrupted,
            });
            let tail = output.finish();
            result.map_err(|e| match e {
                WasmError::Interrupted => BuildError::Interrupted,
                WasmError::Failed {
                    message,
                    option: Some(option),
                } => failure(
                    format!(
                        "{}.options.{option}: {message}",
                        StageCall::json_path(p.index)
                    ),
                    tail,
                ),
                other => failure(other.to_string(), tail),
            })
        }
        Kind::Native => {
            // The stage's namespace maps its root to a range of host ids of
            // its own; the tree is id-mapped to match while it runs.
            let ids = if native::user_namespaces() {
                let ids = IdMap::reserve()?;
                ws.shift(&ids)?;
                Some(ids)
            } else {
                None
            };
            let (_, timeout) = config.limits.for_stage(&p.stage.meta.capabilities);
            let result = hosts.native.run(native::Invocation {
                stage: &p.stage,
                tree: ws.path(),
                output_dir: outputs,
                options: &p.options_value,
                source_epoch: epoch,
                timeout,
                stdout: output.writer()?,
                stderr: output.writer()?,
                work: scratch,
                host_paths: p.host_paths.clone(),
                ids: ids.as_ref(),
                interrupted: signals::interrupted,
            });
            let tail = output.finish();
            if ids.is_some() {
                ws.unshift()?;
            }
            let nodes = result.map_err(|e| match e {
                NativeError::Interrupted => BuildError::Interrupted,
                other => failure(other.to_string(), tail.clone()),
            })?;
            native::make_requested_nodes(ws.path(), &nodes)
                .map_err(|e| failure(format!("{e:#}"), tail))
        }
    }
}
