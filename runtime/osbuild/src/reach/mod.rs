//! What a stage may reach on the build host, decided before it runs.
//!
//! Every capability decision of the sandbox is made here, as typed values:
//! what the stage declares (its metadata), what its binary really imports
//! ([`imports`]: the one import check, for wasm stages), what the host that
//! runs it grants ([`grants`]), which host paths the operator lets stages
//! bind ([`host_paths`]), and the policy's verdict. Planning refuses a
//! build on a [`Reach`]'s refusals, `osbuild audit` renders the same
//! values, and the wasm host links only what [`imports`] allows: the three
//! cannot disagree.

pub mod grants;
pub mod host_paths;
pub mod imports;
pub mod writes;

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::InputError;
use crate::pipeline::StageCall;
use crate::policy::{Policy, Violation};
use crate::rootless;
use crate::stage::{Code, Stage, metadata::Device};

/// Why a build refuses a stage, before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "imports {}, which need the `network` capability; the stage does not declare it",
        imports::compact(.0)
    )]
    UndeclaredSockets(Vec<String>),
    #[error("imports {}, which osbuild never grants to a stage", imports::compact(.0))]
    NeverGranted(Vec<String>),
    #[error(
        "was built for {} (imports {}); this osbuild runs stages built for {}: rebuild it with `osbuild stage build`, or use an osbuild that knows that world",
        imports::worlds_of(.0),
        imports::compact(.0),
        imports::WORLDS.join(" and ")
    )]
    UnknownWorld(Vec<String>),
    #[error("unreadable component: {0}")]
    UnreadableComponent(String),
    #[error(
        "native stages need root: systemd-nspawn runs only as the host's root, and osbuild runs as an ordinary user (rootless, wasm stages only); run osbuild as root"
    )]
    NativeWithoutRoot,
    #[error("{}", grants::LOOP_IN_USERNS)]
    LoopInUserNamespace,
    #[error(
        "declares `packages`, which only native stages have (the package cache is bound into their container): declare it on a native stage"
    )]
    PackagesInWasm,
    #[error("policy: {0}")]
    Policy(#[from] Violation),
}

impl Refusal {
    /// The input error a build reports for it: at `pipeline[index].name`,
    /// naming the stage once.
    pub fn input_error(&self, index: usize, stage: &str) -> InputError {
        InputError::new(
            format!("{}.name", StageCall::json_path(index)),
            format!("stage {stage} refused: {self}"),
        )
    }
}

/// As its message: what `osbuild audit --json` shows.
impl serde::Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one stage of a pipeline may reach, and whether it may run.
#[derive(Debug, Clone)]
pub struct Reach {
    /// For a wasm stage: the interfaces its binary imports (`None` for a
    /// native stage, or a component that could not be read).
    pub imports: Option<Vec<String>>,
    /// What the host grants it when it runs, in a few words each.
    pub grants: Vec<String>,
    /// Who vouches for its code ([`signer`]).
    pub signer: String,
    /// Why a build refuses it; empty when it may run.
    pub refusals: Vec<Refusal>,
    /// Mismatches that are no refusal (a capability declared but unused,
    /// options that turn a check off).
    pub notes: Vec<String>,
}

/// Decides what `stage`, with `options` and the resolved `host_paths` its
/// options name, may reach, and whether `policy` lets it run.
pub fn assess(
    stage: &Stage,
    options: &Map<String, Value>,
    host_paths: &[PathBuf],
    policy: Option<&Policy>,
) -> Reach {
    let caps = &stage.meta.capabilities;
    let mut refusals = Vec::new();
    let mut notes = Vec::new();
    let imports = match &stage.code {
        Code::Wasm(_) if caps.packages.is_some() => {
            refusals.push(Refusal::PackagesInWasm);
            None
        }
        Code::Wasm(_) => match imports::of(stage) {
            Some(Ok(list)) => {
                refusals.extend(imports::refusals(caps, &list));
                if caps.network && !list.iter().any(|i| i.starts_with("wasi:sockets/")) {
                    notes.push("declares network but imports no sockets".to_string());
                }
                Some(list.to_vec())
            }
            Some(Err(e)) => {
                refusals.push(Refusal::UnreadableComponent(e));
                None
            }
            None => None,
        },
        Code::Native(..) => {
            if rootless::unprivileged() {
                refusals.push(Refusal::NativeWithoutRoot);
            }
            if grants::user_namespaces() && caps.devices.contains(&Device::Loop) {
                refusals.push(Refusal::LoopInUserNamespace);
            }
            notes.push(
                "native: its reach is what nspawn grants, not visible in the binary".to_string(),
            );
            None
        }
    };
    let options_map = options;
    let options = Value::Object(options.clone());
    for weak in &stage.meta.insecure_options {
        for at in weak.found_in(&options) {
            notes.push(format!(
                "INSECURE: options.{at} is {}: {}",
                weak.value, weak.means
            ));
        }
    }
    if let Some(policy) = policy {
        refusals.extend(
            policy
                .check(stage, options_map)
                .into_iter()
                .map(Refusal::Policy),
        );
    }
    Reach {
        imports,
        grants: grants::of(stage.kind(), caps, host_paths),
        signer: signer(stage, policy),
        refusals,
        notes,
    }
}

/// Who vouches for the stage: the policy's signer that does (checked),
/// else what its signature claims (unchecked: no key to check it with).
pub fn signer(stage: &Stage, policy: Option<&Policy>) -> String {
    use crate::signing::stage::{claim, vouch};
    match policy.and_then(|p| p.signers_for(stage.name())) {
        Some((_, allowed)) => match vouch(stage, &allowed) {
            Ok(signer) => signer.to_string(),
            Err(_) => format!("{} (not a signer the policy takes)", claim(stage)),
        },
        None => match claim(stage) {
            c @ crate::signing::stage::Claim::Signed(_) => {
                format!("{c} (unchecked: the policy names no signers for it)")
            }
            c => c.to_string(),
        },
    }
}
