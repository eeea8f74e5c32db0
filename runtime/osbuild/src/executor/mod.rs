//! The executor: resolves and checks a whole pipeline, then runs it.
//!
//! Everything that can be known before running is checked first (stage
//! names, options against each stage's schema, what each wasm stage
//! imports, the `--from` archive's name), and all problems are reported
//! together: a build either fails before it starts or starts with a
//! pipeline that makes sense.

mod outputs;
mod plan;
mod run;

pub use plan::{Ids, PlannedStage, Restore, find_restore, ids, plan, plan_stages};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::archive;
use crate::error::{BuildError, InputError};
use crate::host::Limits;
use crate::native::NativeHost;
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::progress::{Outcome, Reporter, StageInfo};
use crate::reach::host_paths::HostPathRules;
use crate::signals;
use crate::stage::{Kind, Registry};
use crate::store::workspace::{Handoff, Workspace};
use crate::store::{self, Object, Store};
use crate::wasm::WasmHost;
use outputs::{place_output, place_outputs_of};
use run::{Hosts, run_stage};

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
    /// Where stages are found: the built-ins and `--libdir`s.
    pub registry: Registry,
    pub limits: Limits,
    /// Host directories stages may bind (`--allow-host-path`), besides the
    /// policy's `host-paths`.
    pub allowed_host_paths: Vec<PathBuf>,
    /// The most file content `--from` may unpack, in bytes.
    pub max_tree_size: u64,
}

impl BuildConfig {
    /// The operator's host-path allowances: the command line's and the
    /// policy's.
    pub fn host_path_rules(&self) -> Result<HostPathRules, BuildError> {
        HostPathRules::for_build(&self.allowed_host_paths, self.policy.as_ref(), &self.store)
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

/// What a failed stage's `stage-finished` event says.
fn short_error(e: &BuildError) -> String {
    match e {
        BuildError::Stage { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The `--from` archive, opened once: its digest names the tree it
/// unpacks to, so it is hashed and unpacked from the same open file (a
/// file swapped in between could otherwise be stored under the genuine
/// archive's id).
struct FromArchive {
    path: PathBuf,
    file: std::fs::File,
    digest: String,
}

impl FromArchive {
    fn open(path: &Path) -> Result<FromArchive, BuildError> {
        let input =
            |e: std::io::Error| BuildError::input("--from", format!("{}: {e}", path.display()));
        let mut file = std::fs::File::open(path).map_err(input)?;
        let digest = store::ids::reader_digest(&mut file).map_err(input)?;
        Ok(FromArchive {
            path: path.to_path_buf(),
            file,
            digest,
        })
    }

    /// What names the unpacked tree in the store: the archive's digest and
    /// the rules it was unpacked under, so that a tree unpacked under a
    /// laxer policy (device nodes allowed) or a larger `--max-tree-size` is
    /// never reused under a stricter one.
    fn identity(&self, config: &BuildConfig) -> String {
        let devices = config.policy.as_ref().is_some_and(|p| p.from_device_nodes);
        format!(
            "{}+device-nodes={devices}+max-tree-size={}",
            self.digest, config.max_tree_size
        )
    }

    fn unpack(
        &self,
        tree: &Path,
        policy: Option<&Policy>,
        max_bytes: u64,
    ) -> Result<(), BuildError> {
        let from = &self.path;
        let allow_devices = policy.is_some_and(|p| p.from_device_nodes);
        let file = self
            .file
            .try_clone()
            .with_context(|| format!("reading {}", from.display()))?;
        archive::unpack::unpack_file(
            file,
            from,
            tree,
            allow_devices,
            max_bytes,
            &signals::interrupted,
        )
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
    let registry = &config.registry;
    let planned = plan(
        pipeline,
        registry,
        config.policy.as_ref(),
        &config.host_path_rules()?,
    )?;
    let from = config.from.as_deref().map(FromArchive::open).transpose()?;
    let from_identity = from.as_ref().map(|f| f.identity(config));
    let ids = ids(&planned, from_identity.as_deref(), epoch)?;
    let done = if config.cache {
        crate::store::secure_root(&config.store).map_err(|e| BuildError::input("--store", e))?;
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

/// `OSBUILD_TRACE=1` prints when each phase of a build ends (for
/// performance work).
struct Trace(Option<Instant>);

impl Trace {
    fn new() -> Trace {
        Trace(std::env::var_os("OSBUILD_TRACE").map(|_| Instant::now()))
    }

    fn at(&self, phase: &str) {
        if let Some(start) = self.0 {
            eprintln!(
                "osbuild: trace: {:>8.3} ms {phase}",
                start.elapsed().as_secs_f64() * 1000.0
            );
        }
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
    let registry = &config.registry;
    let trace = Trace::new();
    crate::store::secure_root(&config.store).map_err(|e| BuildError::input("--store", e))?;
    let store = Store::open(&config.store)?;
    trace.at("store opened");
    let host = Arc::new(WasmHost::new(Some((
        store.root().join("components"),
        store.secret()?,
    )))?);
    let planned = plan(
        pipeline,
        registry,
        config.policy.as_ref(),
        &config.host_path_rules()?,
    )?;
    let from = config.from.as_deref().map(FromArchive::open).transpose()?;
    let from_identity = from.as_ref().map(|f| f.identity(config));
    let ids = ids(&planned, from_identity.as_deref(), epoch)?;
    trace.at("planned");
    reporter.build_started(pipeline.name.as_deref(), planned.len());

    let build_dir = store.build_dir()?;
    let native = NativeHost::new(build_dir.path().join("native"));
    // Without the cache, nothing is layered or stored: a plain tree.
    let handoff = if config.cache {
        config.handoff
    } else {
        Some(Handoff::Copy)
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
    let first = done.map_or(0, |d| d + 1);
    // Compile what will run while the tree is unpacked and the first stages
    // run (the first build on a machine compiles every component: seconds,
    // under the unpacking's or mmdebstrap's wait).
    let mut to_compile: Vec<Arc<crate::stage::Stage>> = Vec::new();
    for p in &planned[first..] {
        if p.stage.kind() == Kind::Wasm && !to_compile.iter().any(|s| s.digest == p.stage.digest) {
            to_compile.push(Arc::clone(&p.stage));
        }
    }
    // OSBUILD_PREFETCH=0 turns it off (benches/components.py measures it).
    if std::env::var_os("OSBUILD_PREFETCH").is_some_and(|v| v == "0") {
        to_compile.clear();
    }
    let _prefetch = host.prefetch(to_compile, signals::interrupted);
    std::fs::create_dir_all(&config.output_dir).with_context(|| {
        format!(
            "creating the output directory {}",
            config.output_dir.display()
        )
    })?;
    // Resolved once: a symlink swapped in later does not move the outputs.
    let output_dir = std::fs::canonicalize(&config.output_dir).with_context(|| {
        format!(
            "resolving the output directory {}",
            config.output_dir.display()
        )
    })?;
    let mut outputs_written = {
        let oldest_first: Vec<&Object> = chain.iter().rev().collect();
        place_outputs_of(&oldest_first, &output_dir)?
    };
    trace.at("restore point found");
    let everything_cached = done.is_some_and(|d| d + 1 == planned.len());
    let mut ws = Workspace::new(build_dir.path(), handoff, chain, !everything_cached)?;
    trace.at("tree ready");
    let scratch = build_dir.path().join("scratch");
    std::fs::create_dir(&scratch).context("creating the scratch directory")?;

    if let (Some(from), false) = (&from, from_restored) {
        from.unpack(ws.path(), config.policy.as_ref(), config.max_tree_size)?;
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
    let hosts = Hosts {
        wasm: &host,
        native: &native,
        limits: config.limits,
        source_epoch: epoch,
        scratch: &scratch,
        reporter: Arc::clone(&reporter),
    };
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
        let result = run_stage(&hosts, p, &mut ws, &outputs).and_then(|()| {
            outputs::take(&outputs).map_err(|message| BuildError::Stage {
                index: p.index,
                name: p.stage.name().to_string(),
                message,
                tail: Vec::new(),
            })
        });
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
                outputs_written.extend(place_outputs_of(&[object], &output_dir)?);
                checkpointed = true;
            } else {
                for e in std::fs::read_dir(&outputs)
                    .context("reading the stage's outputs")?
                    .flatten()
                {
                    outputs_written.push(place_output(&e.path(), &output_dir)?);
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
    trace.at("stages done");
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
    trace.at("saved");
    drop(ws);
    if config.cache {
        store
            .evict(config.cache_max_size)
            .context("evicting old objects from the store")?;
    }
    trace.at("evicted");
    Ok(report)
}
