//! Planning a build: every stage found and its options checked, the ids
//! of its results, and where in the store a build can start from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{BuildError, InputError};
use crate::pipeline::{Pipeline, StageCall};
use crate::policy::Policy;
use crate::reach::host_paths::HostPathRules;
use crate::stage::metadata::option_values;
use crate::stage::{Kind, Registry, Stage};
use crate::store::{self, Object, Store};
use crate::validate;

/// A stage of the pipeline, resolved and checked.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub index: usize,
    pub stage: Arc<Stage>,
    pub options_value: serde_json::Map<String, Value>,
    /// The options as canonical JSON (keys sorted).
    pub options: String,
    /// Host paths the stage reads (from its `host-paths` options),
    /// resolved and allowed by the operator.
    pub host_paths: Vec<PathBuf>,
    /// Who vouches for its code, as [`crate::reach::signer`] found when
    /// [`plan`] assessed it (empty from [`plan_stages`] alone): the SBOM
    /// and the provenance name it without checking a signature again.
    pub signer: String,
    /// Its entries of the build's lock (package stages).
    pub lock: Option<osbuild_lock::StageLock>,
}

/// The host paths named by a stage's `host-paths` options, each resolved
/// and allowed by `rules`.
fn host_paths(
    stage: &Stage,
    options: &Value,
    at: &str,
    rules: &HostPathRules,
) -> Result<Vec<PathBuf>, Vec<InputError>> {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for pattern in &stage.meta.capabilities.host_paths {
        for (path, value) in option_values(options, pattern) {
            match rules.check(value) {
                Ok(Some(p)) => {
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(InputError::new(
                    format!("{at}.{path}"),
                    format!("stage {}: host path {e}", stage.name()),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(paths)
    } else {
        Err(errors)
    }
}

/// Control characters in a native stage's options: its options end up on
/// command lines and in configuration files (a mirror in a sources list),
/// where a newline adds a line of the attacker's choosing.
fn control_characters(stage: &Stage, options: &Value, at: &str) -> Vec<InputError> {
    fn walk(v: &Value, at: String, out: &mut Vec<(String, char)>) {
        let bad = |s: &str| s.chars().find(|c| c.is_control());
        match v {
            Value::String(s) => {
                if let Some(c) = bad(s) {
                    out.push((at, c));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{at}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let here = format!("{at}.{k}");
                    if let Some(c) = bad(k) {
                        out.push((here.clone(), c));
                    }
                    walk(item, here, out);
                }
            }
            _ => {}
        }
    }
    if stage.kind() != Kind::Native {
        return Vec::new();
    }
    let mut found = Vec::new();
    walk(options, at.to_string(), &mut found);
    found
        .into_iter()
        .map(|(path, c)| {
            InputError::new(
                path,
                format!(
                    "stage {}: holds the control character U+{:04X}; a native stage's options reach command lines and configuration files, where it could start a line of its own",
                    stage.name(),
                    c as u32
                ),
            )
        })
        .collect()
}

/// Resolves every stage and checks every option; all problems at once.
///
/// Besides each stage's options, checks what the stages may reach: a wasm
/// stage that imports more than it declares, and anything the `policy`
/// forbids, is refused here.
pub fn plan(
    pipeline: &Pipeline,
    registry: &Registry,
    policy: Option<&Policy>,
    rules: &HostPathRules,
) -> Result<Vec<PlannedStage>, BuildError> {
    let (mut planned, mut errors) = plan_stages(pipeline, registry, rules);
    for p in &mut planned {
        let reach = crate::reach::assess(&p.stage, &p.options_value, &p.host_paths, policy);
        p.signer = reach.signer;
        errors.extend(
            reach
                .refusals
                .iter()
                .map(|r| r.input_error(p.index, p.stage.name())),
        );
    }
    if errors.is_empty() {
        Ok(planned)
    } else {
        Err(BuildError::Input(errors))
    }
}

/// Finds every stage and checks its options; the stages it could plan,
/// and the problems it found.
pub fn plan_stages(
    pipeline: &Pipeline,
    registry: &Registry,
    rules: &HostPathRules,
) -> (Vec<PlannedStage>, Vec<InputError>) {
    let mut errors = Vec::new();
    let mut planned = Vec::new();
    // A pipeline often runs one stage many times: load and check it once.
    let mut found: HashMap<String, Result<Option<Arc<Stage>>, String>> = HashMap::new();
    let mut validators = validate::Validators::default();
    for (index, call) in pipeline.stages.iter().enumerate() {
        let at = StageCall::json_path(index);
        let lookup = found
            .entry(call.name.clone())
            .or_insert_with(|| registry.find(&call.name).map(|s| s.map(Arc::new)))
            .clone();
        let stage = match lookup {
            Ok(Some(s)) => s,
            Ok(None) => {
                errors.push(InputError::new(
                    format!("{at}.name"),
                    format!(
                        "unknown stage {:?}; known stages: {} (add a directory of stages with --libdir)",
                        call.name,
                        registry.names().join(", ")
                    ),
                ));
                continue;
            }
            Err(e) => {
                errors.push(InputError::new(format!("{at}.name"), e));
                continue;
            }
        };
        let options = Value::Object(call.options.clone());
        let mut schema_errors = validators.check(&stage, &options, &format!("{at}.options"));
        schema_errors.extend(control_characters(
            &stage,
            &options,
            &format!("{at}.options"),
        ));
        let paths = if schema_errors.is_empty() {
            host_paths(&stage, &options, &format!("{at}.options"), rules).unwrap_or_else(|e| {
                errors.extend(e);
                Vec::new()
            })
        } else {
            Vec::new()
        };
        errors.extend(schema_errors);
        planned.push(PlannedStage {
            index,
            stage,
            options: options.to_string(),
            options_value: call.options.clone(),
            host_paths: paths,
            signer: String::new(),
            lock: None,
        });
    }
    (planned, errors)
}

/// The ids of a pipeline's results: the `--from` archive's, then each stage's.
pub struct Ids {
    pub from: Option<String>,
    pub stages: Vec<String>,
}

/// `from_digest`: the sha256 of the `--from` archive, if any.
pub fn ids(
    planned: &[PlannedStage],
    from_digest: Option<&str>,
    epoch: i64,
    policy: Option<&crate::policy::Policy>,
) -> Result<Ids, BuildError> {
    let from = from_digest.map(store::ids::from_archive);
    let mut previous = from.clone();
    let mut stages = Vec::new();
    for p in planned {
        // A stage that reads host paths depends on what they hold (L9).
        let code = if p.host_paths.is_empty() {
            p.stage.digest.clone()
        } else {
            let held = crate::reach::host_paths::fingerprint(&p.host_paths).map_err(|e| {
                BuildError::input(
                    format!("{}.options", crate::pipeline::StageCall::json_path(p.index)),
                    format!("reading the host paths it names: {e}"),
                )
            })?;
            format!("{}+host-paths:{held}", p.stage.digest)
        };
        // The policy's writes for the stage hold its change record to them
        // when it runs: a result made under other rules (none, or laxer)
        // is another result, not one to reuse.
        let code = match policy.and_then(|policy| policy.writes_for(p.stage.name())) {
            Some(rules) => format!("{code}+writes:{}", rules.describe()),
            None => code,
        };
        // A locked package stage's result is its lock's packages: a new
        // lock, a new result; the same lock, the same one.
        let code = match &p.lock {
            Some(lock) => format!("{code}+lock:{}", lock.resolved.digest()),
            None => code,
        };
        let id = store::ids::stage(
            previous.as_deref(),
            p.stage.name(),
            &Value::Object(p.options_value.clone()),
            &code,
            epoch,
        );
        previous = Some(id.clone());
        stages.push(id);
    }
    Ok(Ids { from, stages })
}

/// Where a build can start from: the last result the store has.
pub enum Restore {
    /// Nothing: start from an empty tree.
    Nothing,
    /// The unpacked `--from` archive.
    From(Vec<Object>),
    /// Stages `0..=index` are done.
    Stage(usize, Vec<Object>),
}

pub fn find_restore(store: &Store, ids: &Ids) -> anyhow::Result<Restore> {
    for (i, id) in ids.stages.iter().enumerate().rev() {
        if let Some(chain) = store.chain(id)? {
            return Ok(Restore::Stage(i, chain));
        }
    }
    if let Some(id) = &ids.from
        && let Some(chain) = store.chain(id)?
    {
        return Ok(Restore::From(chain));
    }
    Ok(Restore::Nothing)
}
