//! `--cache-from` and `--cache-to`: before the build, the newest result
//! the registries have (and everything under it) comes into the local
//! store; after it, the build's results go up.
//!
//! A registry that cannot be reached is skipped with a note (the stages
//! run), unless `--cache-from-required`. An object that is wrong (a blob
//! that does not match its digest, a config that is not what this build
//! expects, a tree the unpacker refuses) is never used: the note names it
//! and the stage runs.

use std::path::Path;

use osbuild_registry::{Location, Remote, auth::Credentials};

use super::plan::{Ids, PlannedStage};
use crate::error::BuildError;
use crate::progress::Reporter;
use crate::store::Store;
use crate::store::remote::{self as objects, Expected, PullContext, PullError, Transfer};

/// The remote store a build uses.
#[derive(Debug, Clone, Default)]
pub struct RemoteConfig {
    /// `--cache-from`, in the order given (the first that has an object wins).
    pub from: Vec<Location>,
    /// `--cache-to`.
    pub to: Option<Location>,
    /// `--cache-from-required`: a registry that cannot be reached fails
    /// the build (an object found wrong still only means the stage runs).
    pub required: bool,
    /// `--cache-key`: signs what is pushed.
    pub key: Option<std::sync::Arc<crate::signing::SigningKey>>,
    pub credentials: Credentials,
}

impl RemoteConfig {
    pub fn is_empty(&self) -> bool {
        self.from.is_empty() && self.to.is_none()
    }
}

/// What the remote store did in a build (`--json`'s `remote`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RemoteReport {
    pub pulled: Transfer,
    pub pushed: Transfer,
    /// Objects the registry had already (nothing sent).
    pub present: u64,
    /// Objects not used or not pushed, and why.
    pub problems: Vec<String>,
}

fn connect(location: &Location, credentials: &Credentials) -> Result<Remote, BuildError> {
    Remote::new(location.clone(), credentials)
        .map_err(|e| BuildError::input("--cache-from", e.to_string()))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The object each position of the chain is: index `None` is `--from`'s.
struct Link<'a> {
    id: &'a str,
    stage: &'a str,
    parent: Option<&'a str>,
}

fn links<'a>(ids: &'a Ids, planned: &'a [PlannedStage]) -> Vec<Link<'a>> {
    let mut out = Vec::new();
    if let Some(from) = &ids.from {
        out.push(Link {
            id: from,
            stage: "--from",
            parent: None,
        });
    }
    let mut parent = ids.from.as_deref();
    for (p, id) in planned.iter().zip(&ids.stages) {
        out.push(Link {
            id,
            stage: p.stage.name(),
            parent,
        });
        parent = Some(id);
    }
    out
}

/// Pulls into `store` the newest result of this build that a registry
/// has and the local store lacks, with everything it sits on.
#[allow(clippy::too_many_arguments)]
pub fn pull(
    config: &RemoteConfig,
    store: &Store,
    ids: &Ids,
    planned: &[PlannedStage],
    work: &Path,
    cx_limits: (u64, bool),
    signers: &[crate::signing::VerifyingKey],
    reporter: &dyn Reporter,
    report: &mut RemoteReport,
) -> Result<(), BuildError> {
    if config.from.is_empty() {
        return Ok(());
    }
    let mut remotes = Vec::new();
    for l in &config.from {
        remotes.push(connect(l, &config.credentials)?);
    }
    let chain = links(ids, planned);
    let cx = PullContext {
        store,
        work,
        max_tree_size: cx_limits.0,
        allow_devices: cx_limits.1,
        signers,
        interrupted: &crate::signals::interrupted,
    };
    let mut down = vec![false; remotes.len()];
    // Objects found wrong: a chain that holds one is not tried again.
    let mut bad: Vec<(usize, String)> = Vec::new();
    // From the newest result down: the first the local store has ends
    // the search (the build starts there or later).
    for top in (0..chain.len()).rev() {
        if store.get(chain[top].id)?.is_some() {
            break;
        }
        for (r, remote) in remotes.iter().enumerate() {
            if down[r] {
                continue;
            }
            match pull_chain(remote, &chain, top, &cx, report, &mut bad, r) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.is_unreachable() => {
                    if config.required {
                        return Err(BuildError::input(
                            "--cache-from",
                            format!("{e} (--cache-from-required)"),
                        ));
                    }
                    reporter.note(&format!("{}: {e}; building without it", remote.location()));
                    report.problems.push(e.to_string());
                    down[r] = true;
                }
                Err(PullError::Local(e)) => return Err(e.into()),
                Err(e) => {
                    let text = format!("{e}: not used; the stage runs instead");
                    reporter.note(&text);
                    report.problems.push(text);
                }
            }
        }
        if crate::signals::interrupted() {
            return Err(BuildError::Interrupted);
        }
    }
    Ok(())
}

/// Pulls `chain[top]` and what it sits on, oldest first. `Ok(false)`:
/// the registry does not have it.
fn pull_chain(
    remote: &Remote,
    chain: &[Link<'_>],
    top: usize,
    cx: &PullContext<'_>,
    report: &mut RemoteReport,
    bad: &mut Vec<(usize, String)>,
    r: usize,
) -> Result<bool, PullError> {
    let mut current = chain[top].id;
    let result = pull_chain_inner(remote, chain, top, cx, report, bad, r, &mut current);
    if matches!(&result, Err(e) if !e.is_unreachable()) {
        bad.push((r, current.to_string()));
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn pull_chain_inner<'c>(
    remote: &Remote,
    chain: &[Link<'c>],
    top: usize,
    cx: &PullContext<'_>,
    report: &mut RemoteReport,
    bad: &[(usize, String)],
    r: usize,
    current: &mut &'c str,
) -> Result<bool, PullError> {
    let is_bad = |id: &str| bad.iter().any(|(b, i)| *b == r && i == id);
    if is_bad(chain[top].id) {
        return Ok(false);
    }
    let Some(found) = objects::find(remote, chain[top].id)? else {
        return Ok(false);
    };
    // What it needs below, found first (the manifests are small): a
    // chain with a hole is not worth any of its trees.
    let mut wanted = vec![(top, found)];
    let mut at = top;
    while let Some(parent) = wanted.last().unwrap().1.config.parent() {
        if cx.store.get(parent)?.is_some() {
            break;
        }
        if at == 0 || chain[at - 1].id != parent {
            return Err(PullError::Refused(format!(
                "object {} in {}: it sits on {parent}, which is not this build's previous result",
                chain[at].id,
                remote.location()
            )));
        }
        at -= 1;
        *current = chain[at].id;
        if is_bad(chain[at].id) {
            return Ok(false);
        }
        let Some(found) = objects::find(remote, chain[at].id)? else {
            return Ok(false);
        };
        wanted.push((at, found));
    }
    for (i, found) in wanted.into_iter().rev() {
        let link = &chain[i];
        *current = link.id;
        let (_, bytes) = objects::pull(
            remote,
            &Expected {
                id: link.id,
                stage: link.stage,
                parent: link.parent,
            },
            found,
            cx,
        )?;
        report.pulled.objects += 1;
        report.pulled.bytes += bytes;
    }
    Ok(true)
}

/// Pushes this build's results (oldest first, so a reader never finds an
/// object whose parent is missing) that the registry lacks.
pub fn push(
    config: &RemoteConfig,
    store: &Store,
    ids: &Ids,
    work: &Path,
    reporter: &dyn Reporter,
    report: &mut RemoteReport,
) -> Result<(), BuildError> {
    let Some(location) = &config.to else {
        return Ok(());
    };
    let remote = connect(location, &config.credentials)?;
    for id in ids.from.iter().chain(&ids.stages) {
        let Some(object) = store.get(id)? else {
            continue;
        };
        match objects::push(
            &remote,
            &object,
            work,
            config.key.as_deref(),
            &crate::signals::interrupted,
        ) {
            Ok(Some(bytes)) => {
                report.pushed.objects += 1;
                report.pushed.bytes += bytes;
            }
            Ok(None) => report.present += 1,
            Err(e) if e.downcast_ref::<objects::NotPushed>().is_some() => {
                let from_here = object
                    .info
                    .pulled
                    .as_deref()
                    .is_some_and(|p| p.starts_with(&format!("{location}@")));
                if from_here {
                    report.present += 1;
                } else {
                    let text = format!("object {id} is not pushed to {location}: {e}");
                    reporter.note(&text);
                    report.problems.push(text);
                }
            }
            Err(e) => {
                if crate::signals::interrupted() {
                    return Err(BuildError::Interrupted);
                }
                let text = format!(
                    "pushing object {id} to {location}: {e:#}; the build's result stands, the registry lacks it"
                );
                reporter.note(&text);
                report.problems.push(text);
                let unreachable = e
                    .downcast_ref::<osbuild_registry::Error>()
                    .is_some_and(|e| matches!(e, osbuild_registry::Error::Unreachable { .. }));
                if unreachable {
                    break;
                }
            }
        }
    }
    reporter.note(&format!(
        "{location}: pushed {} objects ({}), {} there already",
        report.pushed.objects,
        mb(report.pushed.bytes),
        report.present
    ));
    Ok(())
}

/// The note after a pull.
pub fn pulled_note(config: &RemoteConfig, report: &RemoteReport) -> Option<String> {
    if config.from.is_empty() {
        return None;
    }
    Some(format!(
        "pulled {} objects ({}) from {}",
        report.pulled.objects,
        mb(report.pulled.bytes),
        config
            .from
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
