//! The contract between the executor and the two stage hosts: wasm stages
//! in wasmtime ([`crate::wasm`]) and native stages under systemd-nspawn
//! ([`crate::native`]).
//!
//! Both take one [`Invocation`], with everything already decided (the
//! stage's limits resolved from the build's and its metadata's, its seed,
//! the host paths it may bind), and fail with one [`StageError`], so the
//! executor runs a stage and reports its failure the same way whatever
//! its kind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::stage::{Capabilities, Stage};
use crate::userns::IdMap;

const MIB: u64 = 1024 * 1024;

/// The build's resource limits: what a stage gets, and the ceilings its
/// metadata cannot raise it beyond.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// What a stage gets unless its metadata asks for more.
    pub memory_bytes: u64,
    pub timeout: Duration,
    /// The most a stage's metadata can get: the operator's `--memory` and
    /// `--timeout` when given, else the policy's or built-in maxima.
    pub max_memory_bytes: u64,
    pub max_timeout: Duration,
}

impl Limits {
    /// The built-in ceilings on what a stage's metadata can ask for.
    pub const MAX_MEMORY_MIB: u64 = 8192;
    pub const MAX_TIMEOUT_SECS: u64 = 4 * 3600;

    /// A stage's memory and time: the defaults, raised by what its
    /// metadata asks for, never beyond the ceilings. Resolved here only.
    pub fn for_stage(&self, caps: &Capabilities) -> StageLimits {
        let memory_bytes = caps
            .memory_mib
            .map(|m| m.saturating_mul(MIB))
            .unwrap_or(0)
            .max(self.memory_bytes)
            .min(self.max_memory_bytes.max(self.memory_bytes));
        let timeout = caps
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or_default()
            .max(self.timeout)
            .min(self.max_timeout.max(self.timeout));
        StageLimits {
            memory_bytes,
            timeout,
        }
    }
}

/// One stage's limits, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLimits {
    /// All of a wasm stage's memories and tables together.
    pub memory_bytes: u64,
    pub timeout: Duration,
}

/// One run of a stage, for either host.
pub struct Invocation<'a> {
    pub stage: &'a Stage,
    /// The tree on the host.
    pub tree: &'a Path,
    /// Where a stage that declares `output` writes its outputs.
    pub output_dir: &'a Path,
    /// The options as a JSON object (native stages get it on stdin, with
    /// `"tree"` and `"output"` added) ...
    pub options: &'a Map<String, Value>,
    /// ... and as canonical JSON text (wasm stages' `run(options)`).
    pub options_json: &'a str,
    pub limits: StageLimits,
    pub source_epoch: i64,
    /// Seeds a wasm stage's random sources.
    pub seed: [u8; 32],
    /// Where the stage's stdout and stderr go (one pipe, two handles).
    pub stdout: File,
    pub stderr: File,
    /// A directory of the build's this run may use (a wasm stage's `/tmp`,
    /// a native stage's root mount point); emptied by the host.
    pub scratch: &'a Path,
    /// Host paths the stage reads (resolved and allowed by the operator),
    /// bound read-only, nodev, nosuid, noexec at the same place.
    pub host_paths: &'a [PathBuf],
    /// For a stage with the `packages` capability.
    pub packages: Option<PackageBinds<'a>>,
    /// The host ids a native stage's user namespace maps (the tree is
    /// id-mapped with the same range); `None`: the host's root user.
    pub ids: Option<&'a IdMap>,
    /// Checked while the stage runs: a `true` stops it (Ctrl-C).
    pub interrupted: fn() -> bool,
    /// A path-scoped stage's write set for this run (declared patterns and
    /// its options' paths): a wasm stage's `tree` call outside it is
    /// refused where it is made.
    pub writes: Option<&'a crate::stage::PathSet>,
}

/// What a stage left for the executor besides the tree and its outputs.
#[derive(Debug, Default)]
pub struct Ran {
    /// Harmless device nodes a native stage in a user namespace asked the
    /// host to make (it cannot make them there), once the tree is no longer
    /// id-mapped.
    pub device_nodes: Vec<NodeRequest>,
    /// What a package stage reports it installed (checked field by field).
    pub resolved: Option<osbuild_lock::Resolved>,
}

/// What a stage with the `packages` capability is given (native stages):
/// the cache read-only, an empty directory for its downloads, and its
/// entries of the build's lock, if any.
pub struct PackageBinds<'a> {
    pub cache: &'a Path,
    pub incoming: &'a Path,
    pub lock: Option<&'a Path>,
}

/// A device node a stage in a user namespace asked for (it left an empty
/// file in its place): `c MAJOR MINOR PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequest {
    pub path: String,
    pub major: u32,
    pub minor: u32,
}

/// Why a stage did not succeed, whichever host ran it.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The stage may not run here (imports more than it declares, a host
    /// tool osbuild needs for it is missing).
    #[error("{0}")]
    Refused(String),
    /// The stage ran and failed: its own error, or its exit status.
    #[error("{message}")]
    Failed {
        message: String,
        /// The option at fault, below the stage's `options`.
        option: Option<String>,
    },
    #[error(
        "stopped after {0:?}: the stage exceeded its time limit (raise it with --timeout SECONDS)"
    )]
    Timeout(Duration),
    #[error(
        "stopped: the stage tried to use more than its memory limit of {} MiB (raise it with --memory MIB)",
        .0 / MIB
    )]
    Memory(u64),
    #[error("interrupted")]
    Interrupted,
    /// The stage ended abnormally (a wasm trap, a native stage killed by a
    /// signal).
    #[error("{0}")]
    Crashed(String),
    /// osbuild could not run it (I/O on the host, ...).
    #[error(transparent)]
    Host(#[from] anyhow::Error),
}

/// A host that runs stages of one kind.
pub trait StageHost {
    fn run(&self, inv: Invocation<'_>) -> Result<Ran, StageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_raises_a_limit_up_to_the_ceiling_only() {
        let limits = Limits {
            memory_bytes: 64 * MIB,
            timeout: Duration::from_secs(10),
            max_memory_bytes: 128 * MIB,
            max_timeout: Duration::from_secs(60),
        };
        let caps = |memory_mib, timeout_secs| Capabilities {
            memory_mib,
            timeout_secs,
            ..Default::default()
        };
        assert_eq!(
            limits.for_stage(&caps(None, None)),
            StageLimits {
                memory_bytes: 64 * MIB,
                timeout: Duration::from_secs(10)
            }
        );
        assert_eq!(
            limits.for_stage(&caps(Some(100), Some(30))),
            StageLimits {
                memory_bytes: 100 * MIB,
                timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(
            limits.for_stage(&caps(Some(1 << 40), Some(1 << 40))),
            StageLimits {
                memory_bytes: 128 * MIB,
                timeout: Duration::from_secs(60)
            }
        );
    }
}
