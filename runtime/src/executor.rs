//! The executor: resolves and checks a whole pipeline, then runs it.
//!
//! Everything that can be known before running is checked first (stage
//! names, options against each stage's schema, what each wasm stage
//! imports, the `--from` archive's name), and all problems are reported
//! together: a build either fails before it starts or starts with a
//! pipeline that makes sense.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::archive;
use crate::error::{BuildError, InputError};
use crate::native::{self, NativeError, NativeHost};
use crate::output::StageOutput;
use crate::pipeline::{Pipeline, StageCall};
use crate::policy::Policy;
use crate::progress::{Outcome, Reporter, StageInfo};
use crate::signals;
use crate::stage::metadata::option_values;
use crate::stage::{Kind, Registry, Stage};
use crate::store::workspace::{Handoff, Workspace, overlay_works};
use crate::store::{self, Object, Store};
use crate::validate;
use crate::wasm::{Invocation, Limits, WasmError, WasmHost};

/// Everything a build needs besides the pipeline.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// What the build may use; refused before anything runs otherwise.
    pub policy: Option<Policy>,
    /// Read and write the object store (`--no-cache` turns it off).
    pub cache: bool,
    /// Evict least recently used objects beyond this many bytes.
    pub cache_max_size: u64,
    /// How the tree moves between stages and the store; `None`: the best that works here.
    pub handoff: Option<Handoff>,
    pub from: Option<PathBuf>,
    pub save: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub store: PathBuf,
    pub libdirs: Vec<PathBuf>,
    pub limits: Limits,
}

/// A stage of the pipeline, resolved and checked.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub index: usize,
    pub stage: Arc<Stage>,
    pub options_value: serde_json::Map<String, Value>,
    /// The options as canonical JSON (keys sorted).
    pub options: String,
    /// Host paths the stage reads (from its `host-paths` options).
    pub host_paths: Vec<PathBuf>,
}

/// The host paths named by a stage's `host-paths` options: `file://` URLs
/// and absolute paths, which must exist.
fn host_paths(stage: &Stage, options: &Value, at: &str) -> Result<Vec<PathBuf>, Vec<InputError>> {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for pattern in &stage.meta.capabilities.host_paths {
        for (path, value) in option_values(options, pattern) {
            let local = value.strip_prefix("file://").unwrap_or(value);
            if !local.starts_with('/') {
                continue; // a remote URL
            }
            let p = PathBuf::from(local);
            if p.exists() {
                paths.push(p);
            } else {
                errors.push(InputError::new(
                    format!("{at}.{path}"),
                    format!("{local}: no such file or directory on this machine"),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(paths)
    } else {
        Err(errors)
    }
}

/// What a finished build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub stages: Vec<StageReport>,
    /// Files written to the output directory (by stages that ran or from the store).
    pub outputs: Vec<PathBuf>,
    pub saved: Option<PathBuf>,
}

/// What happened to one stage of a finished build.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub index: usize,
    pub name: String,
    pub id: String,
    pub duration: Duration,
    pub cached: bool,
}

/// The source epoch: `SOURCE_DATE_EPOCH`, else the pipeline's own, else 0.
pub fn source_epoch(pipeline: &Pipeline) -> Result<i64, BuildError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                BuildError::input(
                    "SOURCE_DATE_EPOCH",
                    format!("{v:?} is not a number of seconds since 1970"),
                )
            }),
        Err(_) => Ok(pipeline.source_epoch.unwrap_or(0)),
    }
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
) -> Result<Vec<PlannedStage>, BuildError> {
    let (planned, mut errors) = plan_stages(pipeline, registry);
    errors.extend(crate::audit::refusals(&crate::audit::audit(
        &planned, policy,
    )));
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
        let schema_errors = validators.check(&stage, &options, &format!("{at}.options"));
        let paths = if schema_errors.is_empty() {
            host_paths(&stage, &options, &format!("{at}.options")).unwrap_or_else(|e| {
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
        });
    }
    (planned, errors)
}

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

fn check_paths(config: &BuildConfig) -> Result<(), BuildError> {
    let mut errors = Vec::new();
    if let Some(from) = &config.from
        && !from.is_file()
    {
        errors.push(InputError::new(
            "--from",
            format!("{}: no such archive", from.display()),
        ));
    }
    if let Some(save) = &config.save {
        if let Err(e) = archive::Compression::for_path(save) {
            errors.push(InputError::new("--save", e));
        } else if let Some(dir) = save.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            errors.push(InputError::new(
                "--save",
                format!("{}: no such directory", dir.display()),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BuildError::Input(errors))
    }
}

/// The ids of a pipeline's results: the `--from` archive's, then each stage's.
pub struct Ids {
    pub from: Option<String>,
    pub stages: Vec<String>,
}

pub fn ids(planned: &[PlannedStage], from: Option<&Path>, epoch: i64) -> Result<Ids, BuildError> {
    let from = match from {
        Some(path) => {
            let digest = store::ids::file_digest(path)
                .map_err(|e| BuildError::input("--from", format!("{}: {e}", path.display())))?;
            Some(store::ids::from_archive(&digest))
        }
        None => None,
    };
    let mut previous = from.clone();
    let mut stages = Vec::new();
    for p in planned {
        let id = store::ids::stage(
            previous.as_deref(),
            p.stage.name(),
            &Value::Object(p.options_value.clone()),
            &p.stage.digest,
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

/// Copies `from` to `to` through a temporary file (never a half-written output).
/// Puts `from` into `dir` under its name, replacing what is there, never
/// half-written: a hard link where it can (no copy of a multi-GB image;
/// the store notices if the file is changed later), else a copy.
fn place_output(from: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = from.file_name().context("an output without a name")?;
    let tmp = dir.join(format!(".{}.osbuild-partial", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp)
            .with_context(|| format!("copying {} to {}", from.display(), dir.display()))?;
    }
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(dest)
}

fn place_outputs_of(objects: &[&Object], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for o in objects {
        for out in &o.info.outputs {
            std::fs::create_dir_all(dir)?;
            written.push(place_output(&o.output_dir().join(&out.name), dir)?);
        }
    }
    Ok(written)
}

/// What a failed stage's `stage-finished` event says.
fn short_error(e: &BuildError) -> String {
    match e {
        BuildError::Stage { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn unpack_from(from: &Path, tree: &Path) -> Result<(), BuildError> {
    archive::unpack::unpack(from, tree, &signals::interrupted)
        .map(|_| ())
        .map_err(|e| match e {
            archive::unpack::UnpackError::Refused { entry, reason } => BuildError::input(
                "--from",
                format!(
                    "{}: entry {entry:?} {reason}; nothing was built",
                    from.display()
                ),
            ),
            archive::unpack::UnpackError::Interrupted => BuildError::Interrupted,
            archive::unpack::UnpackError::Io(e) => {
                BuildError::Other(e.context(format!("unpacking {}", from.display())))
            }
        })
}

/// What `--inspect` shows for one stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspected {
    pub index: usize,
    pub name: String,
    pub id: String,
    pub cached: bool,
}

/// Each stage's id and whether the store has its result, running nothing.
pub fn inspect(pipeline: &Pipeline, config: &BuildConfig) -> Result<Vec<Inspected>, BuildError> {
    let epoch = source_epoch(pipeline)?;
    check_paths(config)?;
    let registry = Registry::new(config.libdirs.clone());
    let planned = plan(pipeline, &registry, config.policy.as_ref())?;
    let ids = ids(&planned, config.from.as_deref(), epoch)?;
    let done = if config.cache {
        let store = Store::open(&config.store)?;
        match find_restore(&store, &ids)? {
            Restore::Stage(i, _) => Some(i),
            _ => None,
        }
    } else {
        None
    };
    Ok(planned
        .iter()
        .zip(&ids.stages)
        .map(|(p, id)| Inspected {
            index: p.index,
            name: p.stage.name().to_string(),
            id: id.clone(),
            cached: done.is_some_and(|d| p.index <= d),
        })
        .collect())
}

/// Runs a pipeline.
pub fn build(
    pipeline: &Pipeline,
    config: &BuildConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<BuildReport, BuildError> {
    let epoch = source_epoch(pipeline)?;
    check_paths(config)?;
    let registry = Registry::new(config.libdirs.clone());
    let store = Store::open(&config.store)?;
    let host = WasmHost::new(Some(store.root().join("components")))?;
    let native = NativeHost::new(store.root().join("native-stages"));
    let planned = plan(pipeline, &registry, config.policy.as_ref())?;
    let ids = ids(&planned, config.from.as_deref(), epoch)?;
    reporter.build_started(pipeline.name.as_deref(), planned.len());

    let build_dir = store.build_dir()?;
    let handoff = match (config.cache, config.handoff) {
        (false, _) => Handoff::Copy,
        (true, Some(h)) => h,
        (true, None) if overlay_works(build_dir.path()) => Handoff::Overlay,
        (true, None) => Handoff::Copy,
    };
    let restore = if config.cache {
        find_restore(&store, &ids)?
    } else {
        Restore::Nothing
    };
    let (done, chain) = match restore {
        Restore::Nothing => (None, Vec::new()),
        Restore::From(chain) => (None, chain),
        Restore::Stage(i, chain) => (Some(i), chain),
    };
    let from_restored = !chain.is_empty();
    std::fs::create_dir_all(&config.output_dir).with_context(|| {
        format!(
            "creating the output directory {}",
            config.output_dir.display()
        )
    })?;
    let mut outputs_written = {
        let oldest_first: Vec<&Object> = chain.iter().rev().collect();
        place_outputs_of(&oldest_first, &config.output_dir)?
    };
    let mut ws = Workspace::new(build_dir.path(), handoff, chain)?;
    let scratch = build_dir.path().join("scratch");
    std::fs::create_dir(&scratch).context("creating the scratch directory")?;

    if let (Some(from), false) = (&config.from, from_restored) {
        unpack_from(from, ws.path())?;
        if config.cache {
            let id = ids.from.as_deref().expect("an id for --from");
            ws.checkpoint(&store, id, "--from", None, None)?;
        } else {
            ws = ws.restart_mark();
        }
    }

    let mut report = BuildReport {
        stages: Vec::new(),
        outputs: Vec::new(),
        saved: None,
    };
    let total = planned.len();
    fn info<'a>(p: &'a PlannedStage, total: usize, ids: &'a Ids) -> StageInfo<'a> {
        StageInfo {
            index: p.index,
            total,
            name: p.stage.name(),
            id: &ids.stages[p.index],
        }
    }
    let first = done.map_or(0, |d| d + 1);
    for p in &planned[..first] {
        reporter.stage_started(info(p, total, &ids));
        reporter.stage_finished(info(p, total, &ids), Duration::ZERO, Outcome::Cached, None);
        report.stages.push(StageReport {
            index: p.index,
            name: p.stage.name().to_string(),
            id: ids.stages[p.index].clone(),
            duration: Duration::ZERO,
            cached: true,
        });
    }
    let mut checkpointed = done.is_some();
    for p in &planned[first..] {
        if signals::interrupted() {
            return Err(BuildError::Interrupted);
        }
        reporter.stage_started(info(p, total, &ids));
        let start = Instant::now();
        let native_stage = p.stage.kind() == Kind::Native;
        if native_stage {
            // A native stage may read mtimes (an image assembler copies
            // them): give it the tree as it will be saved.
            ws.clamp(epoch)?;
        }
        let outputs = build_dir.path().join(format!("output-{}", p.index));
        std::fs::create_dir(&outputs).context("creating the stage's output directory")?;
        let hosts = Hosts {
            wasm: &host,
            native: &native,
        };
        let result = run_stage(
            &hosts,
            p,
            ws.path(),
            &scratch,
            &outputs,
            epoch,
            config,
            Arc::clone(&reporter),
        );
        if result.is_ok() {
            let last = p.index + 1 == total;
            if config.cache && (native_stage || last) {
                let has_outputs = std::fs::read_dir(&outputs)
                    .context("reading the stage's outputs")?
                    .next()
                    .is_some();
                let object = ws.checkpoint(
                    &store,
                    &ids.stages[p.index],
                    p.stage.name(),
                    has_outputs.then_some(outputs.as_path()),
                    Some(epoch),
                )?;
                outputs_written.extend(place_outputs_of(&[object], &config.output_dir)?);
                checkpointed = true;
            } else {
                for e in std::fs::read_dir(&outputs)
                    .context("reading the stage's outputs")?
                    .flatten()
                {
                    outputs_written.push(place_output(&e.path(), &config.output_dir)?);
                }
                checkpointed = false;
            }
        }
        let elapsed = start.elapsed();
        let outcome = if result.is_ok() {
            Outcome::Ran
        } else {
            Outcome::Failed
        };
        let error = result.as_ref().err().map(short_error);
        reporter.stage_finished(info(p, total, &ids), elapsed, outcome, error.as_deref());
        result?;
        report.stages.push(StageReport {
            index: p.index,
            name: p.stage.name().to_string(),
            id: ids.stages[p.index].clone(),
            duration: elapsed,
            cached: false,
        });
    }
    if !checkpointed {
        ws.clamp(epoch)?;
    }

    if let Some(save) = &config.save {
        archive::save(ws.path(), save, &signals::interrupted).map_err(|e| {
            if signals::interrupted() {
                BuildError::Interrupted
            } else {
                BuildError::Other(e.context(format!("saving the tree to {}", save.display())))
            }
        })?;
        report.saved = Some(save.clone());
    }
    outputs_written.sort();
    outputs_written.dedup();
    report.outputs = outputs_written;
    drop(ws);
    if config.cache {
        store
            .evict(config.cache_max_size)
            .context("evicting old objects from the store")?;
    }
    Ok(report)
}

struct Hosts<'a> {
    wasm: &'a WasmHost,
    native: &'a NativeHost,
}

#[allow(clippy::too_many_arguments)]
fn run_stage(
    hosts: &Hosts<'_>,
    p: &PlannedStage,
    tree: &Path,
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
                tree,
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
            let timeout = p
                .stage
                .meta
                .capabilities
                .timeout_secs
                .map(Duration::from_secs)
                .unwrap_or_default()
                .max(config.limits.timeout);
            let result = hosts.native.run(native::Invocation {
                stage: &p.stage,
                tree,
                output_dir: outputs,
                options: &p.options_value,
                source_epoch: epoch,
                timeout,
                stdout: output.writer()?,
                stderr: output.writer()?,
                work: scratch,
                host_paths: p.host_paths.clone(),
                interrupted: signals::interrupted,
            });
            let tail = output.finish();
            result.map_err(|e| match e {
                NativeError::Interrupted => BuildError::Interrupted,
                other => failure(other.to_string(), tail),
            })
        }
    }
}
