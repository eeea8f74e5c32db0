//! Build policies: what a build may use, checked before anything runs.
//!
//! ```json
//! {
//!   "kinds": ["wasm"],
//!   "network": ["io.weldr.mmdebstrap"],
//!   "privileged": [],
//!   "devices": [],
//!   "device-nodes": [],
//!   "packages": ["io.weldr.mmdebstrap", "io.weldr.dnf"],
//!   "digests": { "io.weldr.hostname": ["sha256:…"] },
//!   "writes": { "*": ["!/usr/bin/**", "!/root/**"], "com.example.motd": ["/etc/motd"] },
//!   "signers": { "*": ["ssh-ed25519 AAAA… build-team"], "io.weldr.*": ["builtin"] },
//!   "cache-signers": ["ssh-ed25519 AAAA… ci"]
//! }
//! ```
//!
//! Every key is optional; a missing key allows what it would restrict,
//! except `from-device-nodes` (archives with device nodes other than
//! null, zero, ...), which is off unless set to `true`, and `host-paths`
//! (host directories stages may read), which allows none unless listed.
//! `network`, `privileged`, `devices`, `device-nodes` and `packages` name
//! the stages that may have that capability; `digests` pins stages to exact code (any stage named there
//! must have one of the digests listed); `writes` bounds where stages
//! may declare they write (see [`crate::reach::writes`]); `signers` names
//! the keys whose signature a stage needs (`builtin`: osbuild's own
//! stages), the most specific name applying (`io.weldr.hostname`, then
//! the longest `io.weldr.*`, then `*`); `cache-signers` the keys one of
//! which must have signed a result pulled with `--cache-from`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::InputError;
use crate::signing::stage::Allowed;
use crate::stage::{Kind, Stage};
use crate::stage::{PathSet, Pattern, Writes};

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
    /// Stages allowed the store's package cache (they read every cached
    /// package, other pipelines' too).
    pub packages: Option<Vec<String>>,
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
    /// Where stages may write in the tree, per stage name (`*`: every
    /// stage; `io.weldr.*`: a prefix): patterns a stage's declared write
    /// set must stay within (`/etc/motd`), and patterns it must not reach
    /// (`!/usr/bin/**`). A stage declaring `read-write` declares `/**`.
    pub writes: Option<BTreeMap<String, Vec<String>>>,
    /// Whose signature a stage needs, per stage name (`*`, a prefix
    /// `io.weldr.*`, or a name; the most specific applies): OpenSSH
    /// ed25519 public key lines, or `builtin` for osbuild's own stages.
    pub signers: Option<BTreeMap<String, Vec<String>>>,
    /// Whose signature a result pulled from a registry (`--cache-from`)
    /// needs: OpenSSH ed25519 public key lines. Missing: results are taken
    /// unsigned (whoever can push to the registry is trusted).
    #[serde(rename = "cache-signers")]
    pub cache_signers: Option<Vec<String>>,
    /// Where pipelines may name stages from (`oci://HOST/REPOSITORY`
    /// prefixes): osbuild contacts a registry a pipeline names before
    /// anything runs. Missing: any registry.
    #[serde(rename = "stage-registries")]
    pub stage_registries: Option<Vec<String>>,
    /// sha256 (hex) of the policy file as read: provenance records it.
    #[serde(skip)]
    pub file_digest: Option<String>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new("--policy", format!("{}: {e}", path.display())))?;
        let mut policy: Policy = serde_json::from_str(&text)
            .map_err(|e| InputError::new("--policy", format!("{}: {e}", path.display())))?;
        policy.file_digest = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            text.as_bytes(),
        )));
        policy
            .write_rules()
            .map_err(|e| InputError::new("--policy", format!("{}: {e}", path.display())))?;
        policy
            .signer_rules()
            .map_err(|e| InputError::new("--policy", format!("{}: {e}", path.display())))?;
        policy
            .cache_signer_keys()
            .map_err(|e| InputError::new("--policy", format!("{}: {e}", path.display())))?;
        Ok(policy)
    }

    /// `cache-signers`, parsed (none: results are taken unsigned).
    pub fn cache_signer_keys(&self) -> Result<Vec<crate::signing::VerifyingKey>, String> {
        self.cache_signers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, line)| {
                crate::signing::VerifyingKey::parse(line)
                    .map_err(|e| format!("cache-signers[{i}]: {e:#}"))
            })
            .collect()
    }

    /// Every `signers` entry, parsed.
    fn signer_rules(&self) -> Result<Vec<(String, Vec<Allowed>)>, String> {
        let mut rules = Vec::new();
        for (key, entries) in self.signers.iter().flatten() {
            let mut allowed = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                allowed
                    .push(Allowed::parse(e).map_err(|e| format!("signers[{key:?}][{i}]: {e:#}"))?);
            }
            rules.push((key.clone(), allowed));
        }
        Ok(rules)
    }

    /// The `signers` entry that applies to the stage `name` (its key and
    /// what it takes), if any: the most specific.
    pub fn signers_for(&self, name: &str) -> Option<(String, Vec<Allowed>)> {
        let rules = match self.signer_rules() {
            Ok(r) => r,
            // Refused when the policy is loaded; if it got here anyway,
            // no signer is taken rather than any.
            Err(_) => return Some(("signers".to_string(), Vec::new())),
        };
        rules
            .into_iter()
            .filter(|(key, _)| WriteRules::applies(key, name))
            .max_by_key(|(key, _)| match key.strip_suffix('*') {
                _ if key == name => usize::MAX,
                Some(prefix) => prefix.len(),
                None => 0,
            })
    }

    /// Where the policy lets the stage `name` write, as one set (`None`:
    /// anywhere): checked against every stage's change record too, so a
    /// path that reaches an excluded place through a symlink in the tree
    /// is caught where it lands.
    pub fn writes_for(&self, name: &str) -> Option<PathSet> {
        match self.write_rules() {
            Ok(rules) => rules.set_for(name),
            // Refused when the policy is loaded; if it got here anyway,
            // nothing is allowed rather than everything.
            Err(_) => Some(PathSet::default()),
        }
    }

    fn write_rules(&self) -> Result<WriteRules, String> {
        match &self.writes {
            Some(w) => WriteRules::parse(w),
            None => Ok(WriteRules::default()),
        }
    }

    /// Every way running `stage` with `options` breaks the policy.
    pub fn check(&self, stage: &Stage, options: &Map<String, Value>) -> Vec<Violation> {
        let mut v = Vec::new();
        let name = stage.name();
        let caps = &stage.meta.capabilities;
        if let Some(kinds) = &self.kinds
            && !kinds.contains(&stage.kind())
        {
            v.push(Violation::Kind {
                kind: stage.kind(),
                allowed: kinds.clone(),
            });
        }
        let named =
            |list: &Option<Vec<String>>| list.as_ref().is_none_or(|l| l.iter().any(|n| n == name));
        if caps.network && !named(&self.network) {
            v.push(Violation::Network);
        }
        if caps.privileged && !named(&self.privileged) {
            v.push(Violation::Privileged);
        }
        if !caps.devices.is_empty() && !named(&self.devices) {
            v.push(Violation::Devices(
                caps.devices
                    .iter()
                    .map(|d| d.as_str().to_string())
                    .collect(),
            ));
        }
        if caps.device_nodes && !named(&self.device_nodes) {
            v.push(Violation::DeviceNodes);
        }
        if caps.packages.is_some() && !named(&self.packages) {
            v.push(Violation::Packages);
        }
        let digest = format!("sha256:{}", stage.digest);
        let pins = self.digests.as_ref().and_then(|d| d.get(name));
        // The pipeline chose this code: what the policy grants a name
        // by name is for code the operator chose (pinned or signed).
        if let crate::stage::Origin::Oci(reference) = &stage.origin {
            let by_name = |list: &Option<Vec<String>>| {
                list.as_ref().is_some_and(|l| l.iter().any(|n| n == name))
            };
            let granted = [
                &self.network,
                &self.privileged,
                &self.devices,
                &self.device_nodes,
                &self.packages,
            ]
            .into_iter()
            .any(by_name)
                || self.writes.as_ref().is_some_and(|w| w.contains_key(name));
            let vouched = pins.is_some() || self.signers_for(name).is_some();
            if granted && !vouched && !stage.shadows_builtin {
                v.push(Violation::RemoteNamed {
                    name: name.to_string(),
                    origin: reference.clone(),
                    digest: digest.clone(),
                });
            }
        }
        if stage.shadows_builtin && pins.is_none() {
            v.push(Violation::ShadowsBuiltin {
                name: name.to_string(),
                origin: stage.origin.to_string(),
                digest: digest.clone(),
            });
        }
        if let Some(pins) = pins
            && !pins.contains(&digest)
        {
            v.push(Violation::NotPinned {
                digest,
                origin: stage.origin.to_string(),
                allowed: pins.clone(),
            });
        }
        if let Some((key, allowed)) = self.signers_for(name)
            && let Err(why) = crate::signing::stage::vouch(stage, &allowed)
        {
            v.push(Violation::Signer {
                key,
                allowed: allowed.iter().map(ToString::to_string).collect(),
                why,
            });
        }
        match self.write_rules() {
            Ok(rules) => v.extend(
                rules
                    .check(stage, options)
                    .into_iter()
                    .map(Violation::Writes),
            ),
            Err(e) => v.push(Violation::BadWrites(e)),
        }
        v
    }
}

/// One way a stage breaks the policy. Its text never names the stage: the
/// refusal that carries it does, once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("is a {kind} stage; the policy allows only {} stages", allowed_kinds(.allowed))]
    Kind { kind: Kind, allowed: Vec<Kind> },
    #[error("declares the network capability; the policy does not allow it the network")]
    Network,
    #[error("runs privileged; the policy does not allow it")]
    Privileged,
    #[error("needs devices ({}); the policy does not allow it", .0.join(", "))]
    Devices(Vec<String>),
    #[error("creates device nodes (device-nodes); the policy does not allow it")]
    DeviceNodes,
    #[error(
        "uses the store's package cache (packages: it reads every cached package, other pipelines' too); the policy does not allow it"
    )]
    Packages,
    #[error(
        "is loaded from {origin}, in place of the built-in stage of that name; what the policy allows {name} is for the built-in: pin this code (\"digests\": {{\"{name}\": [\"{digest}\"]}}) to run it"
    )]
    ShadowsBuiltin {
        name: String,
        origin: String,
        digest: String,
    },
    #[error(
        "is pulled from {origin}, which the pipeline names; what the policy allows {name} by name is for code you chose: pin it (\"digests\": {{\"{name}\": [\"{digest}\"]}}) or require a signer (\"signers\")"
    )]
    RemoteNamed {
        name: String,
        origin: String,
        digest: String,
    },
    #[error(
        "is not signed as policy.signers[{key:?}] requires ({}): {why}; sign it with `osbuild stage sign FILE --key KEY` using one of those keys",
        if .allowed.is_empty() { "no signer".to_string() } else { .allowed.join(", ") }
    )]
    Signer {
        key: String,
        allowed: Vec<String>,
        why: String,
    },
    #[error("{0}")]
    Writes(WriteViolation),
    #[error("the policy's {0}")]
    BadWrites(String),
    #[error("its code ({digest}, {origin}) is not one the policy allows ({})", .allowed.join(", "))]
    NotPinned {
        digest: String,
        origin: String,
        allowed: Vec<String>,
    },
}

fn allowed_kinds(kinds: &[Kind]) -> String {
    if kinds.is_empty() {
        "no".to_string()
    } else {
        kinds
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// The policy's `writes`, parsed: per stage-name key (`*`, a name, or a
/// prefix such as `io.weldr.*`), patterns where stages may (`/etc/motd`)
/// or may not (`!/usr/bin/**`) write.
#[derive(Debug, Clone, Default)]
pub struct WriteRules {
    rules: Vec<(String, Vec<Pattern>)>,
}

/// One way a stage's declared write set exceeds the policy's `writes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteViolation {
    #[error(
        "may write {declared} ({declared_in}), which policy.writes[{key:?}][{index}] ({rule:?}) forbids"
    )]
    Forbidden {
        declared: String,
        declared_in: String,
        key: String,
        index: usize,
        rule: String,
    },
    #[error(
        "may write {declared} ({declared_in}), which policy.writes does not allow it (it allows {allowed})"
    )]
    NotAllowed {
        declared: String,
        declared_in: String,
        allowed: String,
    },
}

impl WriteRules {
    /// Parses `writes`; errors name the JSON path of the bad pattern.
    pub fn parse(
        writes: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<WriteRules, String> {
        let mut rules = Vec::new();
        for (key, patterns) in writes {
            let mut parsed = Vec::new();
            for (i, p) in patterns.iter().enumerate() {
                parsed.push(Pattern::parse(p).map_err(|e| format!("writes[{key:?}][{i}]: {e}"))?);
            }
            rules.push((key.clone(), parsed));
        }
        Ok(WriteRules { rules })
    }

    fn applies(key: &str, name: &str) -> bool {
        key == "*"
            || key == name
            || key
                .strip_suffix('*')
                .is_some_and(|prefix| name.starts_with(prefix))
    }

    /// The rules that apply to the stage `name`, as one set of paths
    /// (`None`: none apply).
    pub fn set_for(&self, name: &str) -> Option<PathSet> {
        let mut set = PathSet::default();
        let mut any = false;
        let mut allows = false;
        for (key, patterns) in &self.rules {
            if Self::applies(key, name) {
                for p in patterns {
                    any = true;
                    allows |= !p.is_exclusion();
                    set.push(p.clone());
                }
            }
        }
        if !allows {
            set.push(Pattern::parse("/**").expect("a valid pattern"));
        }
        any.then_some(set)
    }

    /// Every way `stage`'s declared write set, with what its
    /// `write-options` name in `options`, exceeds the rules.
    pub fn check(&self, stage: &Stage, options: &Map<String, Value>) -> Vec<WriteViolation> {
        let tree = &stage.meta.capabilities.tree;
        let mut declared = match tree.writes() {
            Writes::Nothing => return Vec::new(),
            Writes::Everything => PathSet::everything(),
            Writes::Only(set) => set.clone(),
        };
        let mut sources: Vec<String> = declared
            .patterns()
            .iter()
            .map(|_| {
                if *tree == crate::stage::TreeAccess::ReadWrite {
                    "its tree capability is read-write".to_string()
                } else {
                    "capabilities.tree.write".to_string()
                }
            })
            .collect();
        for o in tree.write_paths(options) {
            declared.push(o.pattern());
            sources.push(o.at);
        }
        let name = stage.name();
        let applicable: Vec<&(String, Vec<Pattern>)> = self
            .rules
            .iter()
            .filter(|(k, _)| Self::applies(k, name))
            .collect();
        let mut v = Vec::new();
        for (wanted, source) in declared.patterns().iter().zip(&sources) {
            if wanted.is_exclusion() {
                continue;
            }
            for (key, patterns) in &applicable {
                for (index, rule) in patterns.iter().enumerate() {
                    let excluded_by_stage = declared.exclusions().any(|x| x.covers(rule));
                    if rule.is_exclusion() && wanted.overlaps(rule) && !excluded_by_stage {
                        v.push(WriteViolation::Forbidden {
                            declared: crate::changes::printable(wanted.as_str()).into_owned(),
                            declared_in: source.to_string(),
                            key: key.clone(),
                            index,
                            rule: rule.to_string(),
                        });
                    }
                }
            }
            let allows: Vec<(&String, usize, &Pattern)> = applicable
                .iter()
                .flat_map(|(k, ps)| {
                    ps.iter()
                        .enumerate()
                        .filter(|(_, p)| !p.is_exclusion())
                        .map(move |(i, p)| (k, i, p))
                })
                .collect();
            if !allows.is_empty() && !allows.iter().any(|(_, _, p)| p.covers(wanted)) {
                let allowed: Vec<String> = allows
                    .iter()
                    .map(|(k, i, p)| format!("{p} at policy.writes[{k:?}][{i}]"))
                    .collect();
                v.push(WriteViolation::NotAllowed {
                    declared: crate::changes::printable(wanted.as_str()).into_owned(),
                    declared_in: source.to_string(),
                    allowed: allowed.join(", "),
                });
            }
        }
        v
    }
}
