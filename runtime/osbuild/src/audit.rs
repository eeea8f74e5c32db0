//! `osbuild audit`: what every stage of a pipeline may touch, before
//! anything runs. For a wasm stage the reach is in the binary itself (its
//! component imports) and what the host links for it; for a native stage it
//! is what systemd-nspawn grants. Both are compared with what the stage
//! declares in its metadata, and with the build's policy.

use serde::Serialize;

use crate::error::InputError;
use crate::executor::PlannedStage;
use crate::policy::Policy;
use crate::stage::{Capabilities, Kind, TreeAccess, metadata};
use crate::wasm::import_allowed;

#[derive(Debug, Clone, Serialize)]
pub struct StageAudit {
    pub index: usize,
    pub name: String,
    pub kind: Kind,
    /// `sha256:HEX` of the stage's code.
    pub digest: String,
    pub origin: String,
    pub summary: String,
    /// What the stage's metadata declares.
    pub capabilities: Capabilities,
    /// For a wasm stage: the interfaces its binary imports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imports: Option<Vec<String>>,
    /// What osbuild grants it when it runs.
    pub sandbox: Vec<String>,
    /// Reasons a build would refuse it (undeclared imports, policy).
    pub refused: Vec<String>,
    /// Mismatches that are not refusals (a capability declared but unused).
    pub notes: Vec<String>,
}

/// The capabilities, in a few words each.
pub fn describe(caps: &Capabilities) -> Vec<String> {
    let mut v = vec![match caps.tree {
        TreeAccess::Read => "tree read-only".to_string(),
        TreeAccess::ReadWrite => "tree read-write".to_string(),
    }];
    if caps.output {
        v.push("output".into());
    }
    if caps.network {
        v.push("network".into());
    }
    if caps.privileged {
        v.push("privileged".into());
    }
    if !caps.devices.is_empty() {
        let names: Vec<&str> = caps.devices.iter().map(|d| d.as_str()).collect();
        v.push(format!("devices {}", names.join(" ")));
    }
    if caps.device_nodes {
        v.push("device-nodes".into());
    }
    if !caps.host_tools.is_empty() {
        v.push(format!("host-tools {}", caps.host_tools.join(" ")));
    }
    if !caps.host_paths.is_empty() {
        v.push(format!("host-paths {}", caps.host_paths.join(" ")));
    }
    if let Some(m) = caps.memory_mib {
        v.push(format!("memory {m} MiB"));
    }
    if let Some(t) = caps.timeout_secs {
        v.push(format!("timeout {t} s"));
    }
    v
}

fn sandbox(kind: Kind, caps: &Capabilities, host_paths: &[std::path::PathBuf]) -> Vec<String> {
    let tree = if caps.tree == TreeAccess::Read {
        "read-only"
    } else {
        "read-write"
    };
    match kind {
        Kind::Wasm => vec![
            format!("wasmtime; the tree preopened as / ({tree}); a private /tmp"),
            "clock fixed at the source epoch, seeded random, no environment".into(),
            if caps.network {
                "sockets linked"
            } else {
                "no sockets"
            }
            .into(),
            if caps.device_nodes {
                "may create any device node in the tree (never opened by osbuild)"
            } else {
                "device nodes: only null, zero, full, random, urandom, tty, console, ptmx"
            }
            .into(),
        ]
        .into_iter()
        .chain((caps.tree == TreeAccess::ReadWrite).then(|| {
            "may set file capabilities (security.capability) and SELinux labels (security.selinux) in the tree".to_string()
        }))
        .collect(),
        Kind::Native => {
            let userns = crate::native::user_namespaces();
            let mut v = vec![
                if userns {
                    format!(
                        "systemd-nspawn in a user namespace of its own: its root is a range of 65536 unprivileged host ids; a root file system of the host's /usr (read-only) and a generated /etc, not the host's /; the tree {tree}"
                    )
                } else {
                    format!("systemd-nspawn as the host's root (OSBUILD_NATIVE_USERNS=0); the build machine's / read-only; the tree {tree}")
                },
                if caps.output { "the output directory writable" } else { "no output directory" }.into(),
                if caps.network {
                    if userns {
                        "a network namespace of its own, outbound only through slirp4netns: no host interface, no service on the host's loopback, no CAP_NET_RAW or CAP_NET_ADMIN"
                    } else {
                        "the host's network"
                    }
                } else {
                    "a private network (loopback only)"
                }
                .into(),
                match (caps.privileged, userns) {
                    (true, true) => "all of nspawn's capabilities, inside its user namespace only: it can mount there, nothing on the host",
                    (true, false) => "all of nspawn's capabilities: it can mount, so it could make the build machine's root writable",
                    (false, _) => "no CAP_SYS_ADMIN, CAP_MKNOD, CAP_SYS_PTRACE, CAP_SYS_BOOT, CAP_SYS_RESOURCE, CAP_SYS_TTY_CONFIG, CAP_LINUX_IMMUTABLE",
                }
                .into(),
            ];
            for d in &caps.devices {
                v.push(if userns && *d == metadata::Device::Loop {
                    "loop devices: refused in a user namespace (they are shared by the whole host)".to_string()
                } else if userns {
                    format!(
                        "{} made again for the stage and owned by its root (no capability with it: it cannot mount what it opens there)",
                        d.nodes()
                    )
                } else {
                    format!("{} bound in (no capability with it)", d.nodes())
                });
            }
            if caps.tree == TreeAccess::ReadWrite {
                v.push("may set any file capability (security.capability) or SELinux label in the tree".into());
            }
            if !host_paths.is_empty() {
                let paths: Vec<String> =
                    host_paths.iter().map(|p| p.display().to_string()).collect();
                v.push(format!(
                    "host paths bound read-only, nodev, nosuid, noexec: {}",
                    paths.join(", ")
                ));
            } else if !caps.host_paths.is_empty() {
                v.push("no host path (its options name none)".into());
            }
            v
        }
    }
}

/// Audits a planned pipeline (every stage found and its options checked).
pub fn audit(planned: &[PlannedStage], policy: Option<&Policy>) -> Vec<StageAudit> {
    let mut imports_of: std::collections::HashMap<String, Result<Vec<String>, String>> =
        Default::default();
    planned
        .iter()
        .map(|p| {
            let stage = &p.stage;
            let caps = &stage.meta.capabilities;
            let mut refused = Vec::new();
            let mut notes = Vec::new();
            let imports = match &stage.code {
                crate::stage::Code::Wasm(bytes) => {
                    let imports = imports_of
                        .entry(stage.digest.clone())
                        .or_insert_with(|| metadata::wasm_imports(bytes).map_err(|e| e.to_string()))
                        .clone();
                    match imports {
                        Ok(list) => {
                            let denied: Vec<&String> = list.iter().filter(|i| import_allowed(caps, i).is_err()).collect();
                            let (sockets, other): (Vec<&String>, Vec<&String>) =
                                denied.into_iter().partition(|i| i.starts_with("wasi:sockets/"));
                            if !sockets.is_empty() {
                                refused.push(format!(
                                    "imports {}, which need the `network` capability; the stage does not declare it",
                                    compact_imports(&sockets.into_iter().cloned().collect::<Vec<_>>())
                                ));
                            }
                            if !other.is_empty() {
                                refused.push(format!(
                                    "imports {}, which osbuild never grants to a stage",
                                    compact_imports(&other.into_iter().cloned().collect::<Vec<_>>())
                                ));
                            }
                            if caps.network && !list.iter().any(|i| i.starts_with("wasi:sockets/")) {
                                notes.push("declares network but imports no sockets".to_string());
                            }
                            Some(list)
                        }
                        Err(e) => {
                            refused.push(format!("unreadable component: {e}"));
                            None
                        }
                    }
                }
                crate::stage::Code::Native(..) => {
                    if crate::rootless::unprivileged() {
                        refused.push(
                            "native stages need root: systemd-nspawn runs only as the host's root, and osbuild runs as an ordinary user (rootless, wasm stages only); run osbuild as root".to_string(),
                        );
                    }
                    if crate::native::user_namespaces() && caps.devices.contains(&metadata::Device::Loop) {
                        refused.push(crate::native::LOOP_IN_USERNS.to_string());
                    }
                    notes.push("native: its reach is what nspawn grants, not visible in the binary".to_string());
                    None
                }
            };
            for weak in &stage.meta.insecure_options {
                let options = serde_json::Value::Object(p.options_value.clone());
                for at in weak.found_in(&options) {
                    notes.push(format!(
                        "INSECURE: options.{at} is {}: {}",
                        weak.value, weak.means
                    ));
                }
            }
            if let Some(policy) = policy {
                refused.extend(
                    policy
                        .check(stage, &crate::pipeline::StageCall::json_path(p.index))
                        .into_iter()
                        .map(|e| format!("policy: {}", e.message)),
                );
            }
            StageAudit {
                index: p.index,
                name: stage.name().to_string(),
                kind: stage.kind(),
                digest: format!("sha256:{}", stage.digest),
                origin: stage.origin.to_string(),
                summary: stage.meta.summary.clone(),
                capabilities: caps.clone(),
                imports,
                sandbox: sandbox(stage.kind(), caps, &p.host_paths),
                refused,
                notes,
            }
        })
        .collect()
}

/// Imports grouped by package: `wasi:cli/{exit,stdout}@0.2.6`.
fn compact_imports(imports: &[String]) -> String {
    let mut groups: Vec<(String, Vec<String>, String)> = Vec::new();
    for i in imports {
        let (name, version) = i.split_once('@').unwrap_or((i, ""));
        let (package, iface) = name.split_once('/').unwrap_or((name, ""));
        match groups
            .iter_mut()
            .find(|(p, _, v)| p == package && v == version)
        {
            Some(g) => g.1.push(iface.to_string()),
            None => groups.push((
                package.to_string(),
                vec![iface.to_string()],
                version.to_string(),
            )),
        }
    }
    groups
        .into_iter()
        .map(|(p, ifaces, v)| {
            let at = if v.is_empty() {
                String::new()
            } else {
                format!("@{v}")
            };
            if ifaces.len() == 1 {
                format!("{p}/{}{at}", ifaces[0])
            } else {
                format!("{p}/{{{}}}{at}", ifaces.join(","))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The audit as a table for people.
pub fn render(audits: &[StageAudit]) -> String {
    let mut out = String::new();
    let name_w = audits
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:>3}  {:<name_w$}  {:<6}  {:<19}  {}\n",
        "#", "stage", "kind", "digest", "status"
    ));
    for a in audits {
        let status = if a.refused.is_empty() {
            "ok"
        } else {
            "REFUSED"
        };
        out.push_str(&format!(
            "{:>3}  {:<name_w$}  {:<6}  {:<19}  {status}\n",
            a.index,
            a.name,
            a.kind.to_string(),
            &a.digest[..19.min(a.digest.len())]
        ));
        let pad = " ".repeat(5);
        out.push_str(&format!(
            "{pad}declares: {}\n",
            describe(&a.capabilities).join(", ")
        ));
        if let Some(imports) = &a.imports {
            out.push_str(&format!("{pad}imports:  {}\n", compact_imports(imports)));
        }
        out.push_str(&format!("{pad}sandbox:  {}\n", a.sandbox.join("; ")));
        for r in &a.refused {
            out.push_str(&format!("{pad}REFUSED:  {r}\n"));
        }
        for n in &a.notes {
            out.push_str(&format!("{pad}note:     {n}\n"));
        }
    }
    out
}

/// The refusals, as input errors a build reports.
pub fn refusals(audits: &[StageAudit]) -> Vec<InputError> {
    audits
        .iter()
        .flat_map(|a| {
            a.refused.iter().map(move |r| {
                InputError::new(
                    format!("pipeline[{}].name", a.index),
                    format!("stage {} refused: {r}", a.name),
                )
            })
        })
        .collect()
}
