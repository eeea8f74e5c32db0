//! Build policies: what a build may use, checked before anything runs.
//!
//! ```json
//! {
//!   "kinds": ["wasm"],
//!   "network": ["io.weldr.mmdebstrap"],
//!   "privileged": [],
//!   "devices": [],
//!   "device-nodes": [],
//!   "digests": { "io.weldr.hostname": ["sha256:…"] }
//! }
//! ```
//!
//! Every key is optional; a missing key allows what it would restrict,
//! except `from-device-nodes` (archives with device nodes other than
//! null, zero, ...), which is off unless set to `true`, and `host-paths`
//! (host directories stages may read), which allows none unless listed.
//! `network`, `privileged` and `devices` name the stages that may have that
//! capability; `digests` pins stages to exact code (any stage named there
//! must have one of the digests listed).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::InputError;
use crate::stage::{Kind, Stage};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The kinds of stage allowed.
    pub kinds: Option<Vec<Kind>>,
    /// Stages allowed the network.
    pub network: Option<Vec<String>>,
    /// Stages allowed to run privileged.
    pub privileged: Option<Vec<String>>,
    /// Stages allowed device nodes.
    pub devices: Option<Vec<String>>,
    /// Stages allowed to create device nodes beyond the harmless ones.
    #[serde(rename = "device-nodes")]
    pub device_nodes: Option<Vec<String>>,
    /// `--from` archives may carry any device node (default: only the
    /// harmless ones, such as `/dev/null`). Unlike the other keys, missing
    /// means no.
    #[serde(rename = "from-device-nodes", default)]
    pub from_device_nodes: bool,
    /// Host directories whose files and subdirectories stages' options may
    /// name (`file:///srv/repo`), bound read-only into native stages.
    /// Missing means none (like `--allow-host-path`, which adds to it).
    #[serde(rename = "host-paths", default)]
    pub host_paths: Vec<std::path::PathBuf>,
    /// The most memory (MiB) a wasm stage's metadata can ask for, unless
    /// `--memory` says otherwise (built-in: 8192).
    #[serde(rename = "max-memory-mib")]
    pub max_memory_mib: Option<u64>,
    /// The longest time limit (seconds) a stage's metadata can ask for,
    /// unless `--timeout` says otherwise (built-in: 4 hours).
    #[serde(rename = "max-timeout-secs")]
    pub max_timeout_secs: Option<u64>,
    /// Allowed code digests per stage name (`sha256:HEX`).
    pub digests: Option<BTreeMap<String, Vec<String>>>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new("--policy", format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| InputError::new("--policy", format!("{}: {e}", path.display())))
    }

    /// Every way running `stage` at `at` (`pipeline[2]`) breaks the policy.
    pub fn check(&self, stage: &Stage, at: &str) -> Vec<InputError> {
        let mut v = Vec::new();
        let name = stage.name();
        let caps = &stage.meta.capabilities;
        let mut refuse = |msg: String| {
            v.push(InputError::new(
                format!("{at}.name"),
                format!("stage {name}: {msg}"),
            ))
        };
        if let Some(kinds) = &self.kinds
            && !kinds.contains(&stage.kind())
        {
            let allowed: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
            refuse(format!(
                "is a {} stage; the policy allows only {} stages",
                stage.kind(),
                if allowed.is_empty() {
                    "no".to_string()
                } else {
                    allowed.join(" and ")
                }
            ));
        }
        let named =
            |list: &Option<Vec<String>>| list.as_ref().is_none_or(|l| l.iter().any(|n| n == name));
        if caps.network && !named(&self.network) {
            refuse(
                "declares the network capability; the policy does not allow it the network".into(),
            );
        }
        if caps.privileged && !named(&self.privileged) {
            refuse("runs privileged; the policy does not allow it".into());
        }
        if !caps.devices.is_empty() && !named(&self.devices) {
            refuse(format!(
                "needs devices ({}); the policy does not allow it",
                caps.devices
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if caps.device_nodes && !named(&self.device_nodes) {
            refuse("creates device nodes (device-nodes); the policy does not allow it".into());
        }
        let pins = self.digests.as_ref().and_then(|d| d.get(name));
        if stage.shadows_builtin && pins.is_none() {
            refuse(format!(
                "is loaded from {}, in place of the built-in stage of that name; what the policy allows {name} is for the built-in: pin this code (\"digests\": {{\"{name}\": [\"sha256:{}\"]}}) to run it",
                stage.origin, stage.digest
            ));
        }
        if let Some(pins) = pins {
            let digest = format!("sha256:{}", stage.digest);
            if !pins.contains(&digest) {
                refuse(format!(
                    "its code ({digest}, {}) is not one the policy allows ({})",
                    stage.origin,
                    pins.join(", ")
                ));
            }
        }
        v
    }
}
