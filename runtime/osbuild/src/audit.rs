//! `osbuild audit`: what every stage of a pipeline may touch, before
//! anything runs, for people (a table) and programs (JSON).
//!
//! The decisions are [`crate::reach`]'s; this module only renders them, so
//! the audit shows exactly what planning refuses and what the hosts grant.

use serde::Serialize;

use crate::changes::Counts;
use crate::error::InputError;
use crate::executor::PlannedStage;
use crate::policy::Policy;
use crate::reach::{self, Refusal, imports};
use crate::stage::{Capabilities, Kind, PathSet, TreeAccess, Writes};

#[derive(Debug, Clone, Serialize)]
pub struct StageAudit {
    pub index: usize,
    pub name: String,
    pub kind: Kind,
    /// `sha256:HEX` of the stage's code.
    pub digest: String,
    pub origin: String,
    /// Who vouches for its code: `builtin`, a key that signed it, or
    /// `unsigned`.
    pub signer: String,
    pub summary: String,
    /// What the stage's metadata declares.
    pub capabilities: Capabilities,
    /// For a wasm stage: the interfaces its binary imports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imports: Option<Vec<String>>,
    /// Where in the tree it may read and write.
    pub tree: TreeReach,
    /// What osbuild grants it when it runs.
    pub sandbox: Vec<String>,
    /// Reasons a build would refuse it (undeclared imports, policy).
    pub refused: Vec<Refusal>,
    /// Mismatches that are not refusals (a capability declared but unused).
    pub notes: Vec<String>,
    /// With `--changes`: what the stage did change in its last build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<Changed>,
}

/// What a built stage changed, against what it declares.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// `None`: the store has no record of it (not built, or evicted).
    pub record: Option<std::path::PathBuf>,
    pub counts: Counts,
    /// The narrowest write set that allows what it changed.
    pub suggested_write: Vec<String>,
}

fn printable_list(paths: &[String]) -> String {
    let p: Vec<String> = paths
        .iter()
        .map(|p| crate::changes::printable(p).into_owned())
        .collect();
    p.join(" ")
}

/// A stage declaring `read-write` whose record fits in this many patterns
/// is flagged, with the narrower declaration.
const FEW_PATHS: usize = 16;

/// Adds each stage's change record (`records`, in pipeline order) to its
/// audit: declared against done.
pub fn add_changes(audits: &mut [StageAudit], records: &[crate::executor::Recorded]) {
    for (a, r) in audits.iter_mut().zip(records) {
        let Some(record) = &r.record else {
            a.changed = Some(Changed {
                record: None,
                counts: Counts::default(),
                suggested_write: Vec::new(),
            });
            continue;
        };
        let suggested = record.suggested_write_set();
        if a.tree.write == ["/**"] && suggested.len() <= FEW_PATHS {
            let quoted: Vec<String> = suggested.iter().map(|p| format!("{p:?}")).collect();
            a.notes.push(format!(
                "declares read-write but changed only {} {} in its last build; it would run with \"tree\": {{\"write\": [{}]}}",
                suggested.len(),
                if suggested.len() == 1 { "path" } else { "paths" },
                quoted.join(", ")
            ));
        }
        a.changed = Some(Changed {
            record: r.location.clone(),
            counts: record.counts(),
            suggested_write: suggested,
        });
    }
}

/// Where in the tree a stage may read and write, as patterns (`/**`: all
/// of it; empty: nothing).
#[derive(Debug, Clone, Serialize)]
pub struct TreeReach {
    pub read: Vec<String>,
    pub write: Vec<String>,
}

impl TreeReach {
    /// With `options`, the paths its `write-options` name there count too
    /// (as the pipeline gives them; a build adds what they resolve to).
    pub fn of(
        tree: &TreeAccess,
        options: &serde_json::Map<String, serde_json::Value>,
    ) -> TreeReach {
        let texts = |s: &PathSet| s.patterns().iter().map(|p| p.to_string()).collect();
        let all = || vec!["/**".to_string()];
        let mut write: Vec<String> = match tree.writes() {
            Writes::Nothing => Vec::new(),
            Writes::Everything => all(),
            Writes::Only(s) => texts(s),
        };
        write.extend(
            tree.write_paths(options)
                .into_iter()
                .map(|o| crate::changes::printable(o.pattern().as_str()).into_owned()),
        );
        TreeReach {
            read: tree.reads().map_or_else(all, texts),
            write,
        }
    }
}

fn patterns_or(patterns: &[String], all: &str, none: &str) -> String {
    match patterns {
        [] => none.to_string(),
        [one] if one == "/**" => all.to_string(),
        many => many.join(" "),
    }
}

/// The capabilities, in a few words each.
pub fn describe(caps: &Capabilities) -> Vec<String> {
    let mut v = vec![match &caps.tree {
        TreeAccess::Read => "tree read-only".to_string(),
        TreeAccess::ReadWrite => "tree read-write".to_string(),
        TreeAccess::Scoped(_) => "tree scoped to paths".to_string(),
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
    if let Some(format) = caps.packages {
        v.push(format!("packages {}", format.as_str()));
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

/// Audits a planned pipeline (every stage found and its options checked).
pub fn audit(planned: &[PlannedStage], policy: Option<&Policy>) -> Vec<StageAudit> {
    planned
        .iter()
        .map(|p| {
            let stage = &p.stage;
            let reach = reach::assess(stage, &p.options_value, &p.host_paths, policy);
            StageAudit {
                index: p.index,
                name: stage.name().to_string(),
                kind: stage.kind(),
                digest: format!("sha256:{}", stage.digest),
                origin: stage.origin.to_string(),
                signer: reach.signer,
                summary: stage.meta.summary.clone(),
                capabilities: stage.meta.capabilities.clone(),
                tree: TreeReach::of(&stage.meta.capabilities.tree, &p.options_value),
                imports: reach.imports,
                sandbox: reach.grants,
                refused: reach.refusals,
                notes: reach.notes,
                changed: None,
            }
        })
        .collect()
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
        out.push_str(&format!("{pad}signer:   {}\n", a.signer));
        if a.origin.starts_with("oci://") {
            // The pipeline chose this code, and osbuild went to get it.
            out.push_str(&format!(
                "{pad}from:     {} (pulled by osbuild before anything ran: a registry the pipeline names)\n",
                a.origin
            ));
        }
        out.push_str(&format!(
            "{pad}declares: {}\n",
            describe(&a.capabilities).join(", ")
        ));
        out.push_str(&format!(
            "{pad}reads:    {}\n",
            patterns_or(&a.tree.read, "the whole tree", "nothing")
        ));
        out.push_str(&format!(
            "{pad}writes:   {}\n",
            patterns_or(&a.tree.write, "anywhere in the tree", "nothing")
        ));
        if let Some(imports) = &a.imports {
            out.push_str(&format!("{pad}imports:  {}\n", imports::compact(imports)));
        }
        out.push_str(&format!("{pad}sandbox:  {}\n", a.sandbox.join("; ")));
        if let Some(c) = &a.changed {
            match &c.record {
                None => out.push_str(&format!(
                    "{pad}changed:  no record (not built with this store, or evicted)\n"
                )),
                Some(path) => out.push_str(&format!(
                    "{pad}changed:  {} created, {} modified, {} removed: {} ({})\n",
                    c.counts.created,
                    c.counts.modified,
                    c.counts.removed,
                    match c.suggested_write.len() {
                        0 => "nothing".to_string(),
                        n if n <= FEW_PATHS => printable_list(&c.suggested_write),
                        n => format!(
                            "{} and {} more",
                            printable_list(&c.suggested_write[..FEW_PATHS]),
                            n - FEW_PATHS
                        ),
                    },
                    path.display()
                )),
            }
        }
        for r in &a.refused {
            out.push_str(&format!("{pad}REFUSED:  {r}\n"));
        }
        for n in &a.notes {
            out.push_str(&format!("{pad}note:     {n}\n"));
        }
    }
    out
}

/// The refusals, as the input errors a build reports.
pub fn refusals(audits: &[StageAudit]) -> Vec<InputError> {
    audits
        .iter()
        .flat_map(|a| a.refused.iter().map(|r| r.input_error(a.index, &a.name)))
        .collect()
}
