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
use crate::progress::{Outcome, Reporter};
use crate::signals;
use crate::stage::metadata::option_values;
use crate::stage::{Kind, Registry, Stage};
use crate::validate;
use crate::wasm::{Invocation, Limits, WasmError, WasmHost};

/// Everything a build needs besides the pipeline.
#[derive(Debug, Clone)]
pub struct BuildConfig {
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
    pub stages: Vec<(String, Duration)>,
    pub saved: Option<PathBuf>,
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
pub fn plan(
    pipeline: &Pipeline,
    registry: &Registry,
    host: Option<&WasmHost>,
) -> Result<Vec<PlannedStage>, BuildError> {
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
        if stage.kind() == Kind::Wasm
            && let Some(host) = host
            && let Err(e) = host.check_imports(&stage)
        {
            errors.push(InputError::new(
                format!("{at}.name"),
                format!("stage {} ({}) refused: {e}", stage.name(), stage.origin),
            ));
        }
        planned.push(PlannedStage {
            index,
            stage,
            options: options.to_string(),
            options_value: call.options.clone(),
            host_paths: paths,
        });
    }
    if errors.is_empty() {
        Ok(planned)
    } else {
        Err(BuildError::Input(errors))
    }
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

/// Runs a pipeline.
pub fn build(
    pipeline: &Pipeline,
    config: &BuildConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<BuildReport, BuildError> {
    let epoch = source_epoch(pipeline)?;
    check_paths(config)?;
    let registry = Registry::new(config.libdirs.clone());
    let host = WasmHost::new(Some(config.store.join("components")))?;
    let native = NativeHost::new(config.store.join("native-stages"));
    let planned = plan(pipeline, &registry, Some(&host))?;

    let tmp_root = config.store.join("tmp");
    std::fs::create_dir_all(&tmp_root)
        .with_context(|| format!("creating {}", tmp_root.display()))?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&tmp_root)
        .with_context(|| format!("creating a build directory in {}", tmp_root.display()))?;
    let tree = work.path().join("tree");
    let scratch = work.path().join("scratch");
    std::fs::create_dir(&tree).context("creating the tree")?;
    std::fs::create_dir(&scratch).context("creating the scratch directory")?;
    std::fs::set_permissions(&tree, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .context("setting the mode of the tree")?;

    if let Some(from) = &config.from {
        archive::unpack::unpack(from, &tree, &signals::interrupted).map_err(|e| match e {
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
        })?;
    }

    let since = crate::mtime::mark();
    let mut report = BuildReport {
        stages: Vec::new(),
        saved: None,
    };
    let total = planned.len();
    for p in &planned {
        if signals::interrupted() {
            return Err(BuildError::Interrupted);
        }
        reporter.stage_started(p.index, total, p.stage.name());
        let start = Instant::now();
        if p.stage.kind() == Kind::Native {
            // A native stage may read mtimes (an image assembler copies
            // them): give it the tree as it will be saved.
            crate::mtime::clamp(&tree, since, epoch)
                .context("setting the mtimes of changed entries")?;
        }
        let hosts = Hosts {
            wasm: &host,
            native: &native,
        };
        let result = run_stage(&hosts, p, work.path(), epoch, config, Arc::clone(&reporter));
        let elapsed = start.elapsed();
        let outcome = if result.is_ok() {
            Outcome::Ran
        } else {
            Outcome::Failed
        };
        reporter.stage_finished(p.index, p.stage.name(), elapsed, outcome);
        result?;
        report.stages.push((p.stage.name().to_string(), elapsed));
    }
    crate::mtime::clamp(&tree, since, epoch).context("setting the mtimes of changed entries")?;

    if let Some(save) = &config.save {
        archive::save(&tree, save, &signals::interrupted).map_err(|e| {
            if signals::interrupted() {
                BuildError::Interrupted
            } else {
                BuildError::Other(e.context(format!("saving the tree to {}", save.display())))
            }
        })?;
        report.saved = Some(save.clone());
    }
    Ok(report)
}

struct Hosts<'a> {
    wasm: &'a WasmHost,
    native: &'a NativeHost,
}

fn run_stage(
    hosts: &Hosts<'_>,
    p: &PlannedStage,
    work: &Path,
    epoch: i64,
    config: &BuildConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<(), BuildError> {
    let name = p.stage.name().to_string();
    let tree = work.join("tree");
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
                tree: &tree,
                options: &p.options,
                source_epoch: epoch,
                seed: seed(p),
                limits: config.limits,
                stdout: output.writer()?,
                stderr: output.writer()?,
                scratch_parent: &work.join("scratch"),
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
                tree: &tree,
                output_dir: &config.output_dir,
                options: &p.options_value,
                source_epoch: epoch,
                timeout,
                stdout: output.writer()?,
                stderr: output.writer()?,
                work,
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
