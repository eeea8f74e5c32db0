//! The executor: resolves and checks a whole pipeline, then runs it.
//!
//! Everything that can be known before running is checked first (stage
//! names, options against each stage's schema, what each wasm stage
//! imports, the `--from` archive's name), and all problems are reported
//! together: a build either fails before it starts or starts with a
//! pipeline that makes sense.

mod outputs;
mod packages;
mod plan;
mod remote;
mod run;

pub use packages::options_digest_of;
pub use plan::{Ids, PlannedStage, Restore, find_restore, ids, plan, plan_stages};
pub use remote::{RemoteConfig, RemoteReport};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::archive;
use crate::changes;
use crate::error::{BuildError, InputError};
use crate::host::Limits;
use crate::native::NativeHost;
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::progress::{Outcome, Reporter, StageInfo};
use crate::reach::host_paths::HostPathRules;
use crate::reach::writes;
use crate::signals;
use crate::stage::{Kind, Registry};
use crate::store::file_digests::{FileDigests, Identity as FileIdentity};
use crate::store::packages::PackageCache;
use crate::store::workspace::{Handoff, Workspace};
use crate::store::{self, Object, Store};
use crate::wasm::WasmHost;
use outputs::{place_output, place_outputs_of};
use run::{Hosts, run_stage};

/// Everything a build needs besides the pipeline.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// The lock the build installs packages from, and where it was read
    /// (for messages).
    pub lock: Option<(String, osbuild_lock::LockFile)>,
    /// What the build may use; refused before anything runs otherwise.
    pub policy: Option<Policy>,
    /// Read and write the object store (`--no-cache` turns it off).
    pub cache: bool,
    /// Registries that share results with other machines.
    pub remote: RemoteConfig,
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
    /// Write an SPDX SBOM of the final tree here (`--sbom`).
    pub sbom: Option<PathBuf>,
    /// A provenance will be written of the build: it needs a subject, an
    /// output or a `--save` archive, so a build with neither is refused
    /// before anything runs.
    pub provenance: bool,
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
    /// The output directory as resolved when the build began (the
    /// outputs are in it).
    pub output_dir: PathBuf,
    /// The SBOM written (`--sbom`).
    pub sbom: Option<PathBuf>,
    /// sha256 (hex) of the `--from` archive.
    pub from_digest: Option<String>,
    /// Whether this build read the `--from` archive to hash it (`false`:
    /// the store remembered the digest of the unchanged file).
    pub from_hashed: bool,
    pub source_epoch: i64,
    /// What `--cache-from` and `--cache-to` moved (none without them).
    pub remote: Option<RemoteReport>,
}

/// What happened to one stage of a finished build.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub index: usize,
    pub name: String,
    pub id: String,
    pub duration: Duration,
    pub cached: bool,
    /// The registry's object it came from (`oci://…@sha256:…`), if pulled.
    pub pulled: Option<String>,
    /// What it changed, and where the record is (`None` for a cached
    /// result stored by an osbuild that kept no records).
    pub changes: Option<changes::Summary>,
    /// What a package stage installed (ran or cached).
    pub packages: Option<StagePackages>,
    /// The stage that ran (or whose result was reused): its code, digest
    /// and metadata.
    pub stage: Arc<crate::stage::Stage>,
    /// Who vouches for its code (`builtin`, a key, `unsigned`).
    pub signer: String,
}

/// What a package stage installed, as a build reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StagePackages {
    #[serde(flatten)]
    pub set: store::packages::PackageSet,
    /// What this run kept in the package cache (`None`: a cached result).
    pub downloaded: Option<store::packages::Ingested>,
    /// The whole list (`None` for a result stored without one).
    #[serde(skip)]
    pub resolved: Option<osbuild_lock::Resolved>,
}

/// The source epoch: `SOURCE_DATE_EPOCH`, else the pipeline's own, else 0.
pub fn source_epoch(pipeline: &Pipeline) -> Result<i64, BuildError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=crate::pipeline::MAX_SOURCE_EPOCH).contains(n))
            .ok_or_else(|| {
                BuildError::input(
                    "SOURCE_DATE_EPOCH",
                    format!(
                        "{v:?} is not a number of seconds since 1970 up to the end of the year 9999 ({})",
                        crate::pipeline::MAX_SOURCE_EPOCH
                    ),
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
    /// What the file was when its digest was taken (or found remembered).
    identity: FileIdentity,
    hashed: bool,
}

impl FromArchive {
    /// `digests`: the store's memory of archive digests, if the build uses
    /// the store; an unchanged archive is then not read again.
    fn open(path: &Path, digests: Option<&FileDigests>) -> Result<FromArchive, BuildError> {
        let input =
            |e: std::io::Error| BuildError::input("--from", format!("{}: {e}", path.display()));
        let mut file = std::fs::File::open(path).map_err(input)?;
        let meta = file.metadata().map_err(input)?;
        let identity = FileIdentity::of(&meta);
        // Only a regular file's times tell that its content changed (a
        // device's do not).
        let digests = digests.filter(|_| meta.is_file());
        let remembered = digests.and_then(|d| d.lookup(&identity));
        let hashed = remembered.is_none();
        let digest = match remembered {
            Some(digest) => digest,
            None => {
                let digest = store::ids::reader_digest(&mut file).map_err(input)?;
                // Written while it was read: the digest is of no one file.
                Self::check_unchanged(&file, &identity, path)?;
                if let Some(d) = digests {
                    d.remember_unless_racy(&identity, &digest);
                }
                digest
            }
        };
        Ok(FromArchive {
            path: path.to_path_buf(),
            file,
            digest,
            identity,
            hashed,
        })
    }

    fn check_unchanged(
        file: &std::fs::File,
        identity: &FileIdentity,
        path: &Path,
    ) -> Result<(), BuildError> {
        let now = file
            .metadata()
            .map(|m| FileIdentity::of(&m))
            .map_err(|e| BuildError::input("--from", format!("{}: {e}", path.display())))?;
        if now != *identity {
            return Err(BuildError::input(
                "--from",
                format!(
                    "{} changed while osbuild read it; nothing was built: build again once nothing writes to it",
                    path.display()
                ),
            ));
        }
        Ok(())
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
        })?;
        // The tree is stored under the digest: it must be of these bytes,
        // whatever the file's times say (they move in ticks of the clock).
        let mut file = self
            .file
            .try_clone()
            .with_context(|| format!("reading {}", from.display()))?;
        std::io::Seek::rewind(&mut file).with_context(|| format!("reading {}", from.display()))?;
        let again = store::ids::reader_digest(&mut file)
            .with_context(|| format!("reading {}", from.display()))?;
        if again != self.digest {
            return Err(BuildError::input(
                "--from",
                format!(
                    "{} changed while osbuild read it; nothing was built: build again once nothing writes to it",
                    from.display()
                ),
            ));
        }
        Self::check_unchanged(&self.file, &self.identity, from)
    }
}

/// What `--inspect` shows for one stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspected {
    pub index: usize,
    pub name: String,
    pub id: String,
    pub cached: bool,
    /// For a package stage: which package set it has, and how old it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<String>,
}

/// How old a resolution is, in words.
fn age(resolved_at: i64, now: i64) -> String {
    let secs = (now - resolved_at).max(0);
    let (n, unit) = match secs {
        s if s < 3600 => (s / 60, "minute"),
        s if s < 2 * 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!(
        "resolved {} ({n} {unit}{} ago)",
        crate::mtime::rfc3339(resolved_at),
        if n == 1 { "" } else { "s" }
    )
}

/// What `--inspect` says of a package stage's packages.
fn describe_packages(p: &PlannedStage, object: Option<&Object>, now: i64) -> Option<String> {
    p.stage.meta.capabilities.packages?;
    if let Some(lock) = &p.lock {
        // The lock's own time is the lock writer's word; the archives'
        // dates are what their signed releases say.
        let dates: Vec<String> = lock
            .resolved
            .repositories
            .iter()
            .map(|r| format!("{} {}", r.url, r.date.as_deref().unwrap_or("(no date)")))
            .collect();
        return Some(format!(
            "locked: {} packages, {}; repositories: {}",
            lock.resolved.packages.len(),
            age(lock.resolved_at, now),
            dates.join(", ")
        ));
    }
    Some(match object.and_then(|o| o.info.packages.as_ref()) {
        Some(set) => format!(
            "unlocked: {} packages (set {}), {}; osbuild lock pins them",
            set.count,
            &set.sha256[..12],
            age(set.resolved_at, now)
        ),
        None => "unlocked: resolves against its mirrors when it runs".to_string(),
    })
}

/// Each stage's id and whether the store has its result, running nothing.
pub fn inspect(pipeline: &Pipeline, config: &BuildConfig) -> Result<Vec<Inspected>, BuildError> {
    let store = if config.cache {
        crate::store::secure_root(&config.store).map_err(|e| BuildError::input("--store", e))?;
        Some(Store::open(&config.store)?)
    } else {
        None
    };
    let resolved = resolve(pipeline, config, store.as_ref())?;
    let restored = match &store {
        Some(store) => Some(restore(store, config, &resolved.ids)?),
        None => None,
    };
    let done = restored.as_ref().and_then(|r| r.done);
    let now = crate::mtime::unix_now();
    Ok(resolved
        .planned
        .iter()
        .zip(&resolved.ids.stages)
        .map(|(p, id)| {
            let object = restored
                .as_ref()
                .and_then(|r| r.chain.iter().find(|o| o.info.id == *id));
            Inspected {
                index: p.index,
                name: p.stage.name().to_string(),
                id: id.clone(),
                cached: done.is_some_and(|d| p.index <= d),
                packages: describe_packages(p, object, now),
            }
        })
        .collect())
}

/// A stage's change record, as the store keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recorded {
    pub index: usize,
    pub name: String,
    pub id: String,
    /// Where the record is; `None` if the store has no result for the
    /// stage (or one stored without a record).
    pub location: Option<PathBuf>,
    #[serde(skip)]
    pub record: Option<changes::Record>,
}

/// The change record of each stage of a built pipeline, from the store,
/// running nothing.
pub fn records(pipeline: &Pipeline, config: &BuildConfig) -> Result<Vec<Recorded>, BuildError> {
    crate::store::secure_root(&config.store).map_err(|e| BuildError::input("--store", e))?;
    let store = Store::open(&config.store)?;
    let resolved = resolve(pipeline, config, Some(&store))?;
    let mut out = Vec::new();
    for (p, id) in resolved.planned.iter().zip(&resolved.ids.stages) {
        let (location, record) = match store.get(id)? {
            Some(object) => {
                let path = object.changes_path();
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let record: changes::Record = serde_json::from_slice(&bytes)
                            .with_context(|| format!("reading {}", path.display()))?;
                        (Some(path), Some(record))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
                    Err(e) => {
                        return Err(anyhow::Error::from(e)
                            .context(format!("reading {}", path.display()))
                            .into());
                    }
                }
            }
            None => (None, None),
        };
        out.push(Recorded {
            index: p.index,
            name: p.stage.name().to_string(),
            id: id.clone(),
            location,
            record,
        });
    }
    Ok(out)
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

/// A pipeline, resolved: every stage found and checked, and the ids of
/// the results.
struct Resolved {
    planned: Vec<PlannedStage>,
    from: Option<FromArchive>,
    ids: Ids,
    epoch: i64,
}

/// Resolve: every stage found, its options checked, what it may reach
/// decided, and the ids of its result, before anything runs.
fn resolve(
    pipeline: &Pipeline,
    config: &BuildConfig,
    store: Option<&Store>,
) -> Result<Resolved, BuildError> {
    let epoch = source_epoch(pipeline)?;
    check_paths(config)?;
    let mut planned = plan(
        pipeline,
        &config.registry,
        config.policy.as_ref(),
        &config.host_path_rules()?,
    )?;
    if let Some((path, lock)) = &config.lock {
        packages::match_lock(&mut planned, Some(lock), path)?;
    }
    if config.provenance
        && config.save.is_none()
        && !planned.iter().any(|p| p.stage.meta.capabilities.output)
    {
        return Err(BuildError::input(
            "--provenance",
            "no stage of the pipeline writes an output file and there is no --save archive: a provenance needs a subject; add --save ARCHIVE",
        ));
    }
    let digests = store.map(|s| FileDigests::in_store(s.root()));
    let from = config
        .from
        .as_deref()
        .map(|path| FromArchive::open(path, digests.as_ref()))
        .transpose()?;
    let from_identity = from.as_ref().map(|f| f.identity(config));
    let ids = ids(
        &planned,
        from_identity.as_deref(),
        epoch,
        config.policy.as_ref(),
    )?;
    Ok(Resolved {
        planned,
        from,
        ids,
        epoch,
    })
}

/// Where a build starts: the stages the store already holds.
struct Restored {
    /// The last stage whose result is stored, if any.
    done: Option<usize>,
    /// The stored objects the tree is made of, newest first.
    chain: Vec<Object>,
}

impl Restored {
    /// The first stage that runs.
    fn first(&self) -> usize {
        self.done.map_or(0, |d| d + 1)
    }
}

/// Restore: the newest stored result this build can start from.
fn restore(store: &Store, config: &BuildConfig, ids: &Ids) -> Result<Restored, BuildError> {
    let restore = if config.cache {
        find_restore(store, ids)?
    } else {
        Restore::Nothing
    };
    Ok(match restore {
        Restore::Nothing => Restored {
            done: None,
            chain: Vec::new(),
        },
        Restore::From(chain) => Restored { done: None, chain },
        Restore::Stage(i, chain) => Restored {
            done: Some(i),
            chain,
        },
    })
}

/// Compiles the components of the wasm stages that will run while the
/// tree is unpacked and the first stages run (the first build on a
/// machine compiles every component: seconds, under the unpacking's or
/// mmdebstrap's wait). `OSBUILD_PREFETCH=0` turns it off
/// (benches/components.py measures it).
fn prefetch(host: &Arc<WasmHost>, to_run: &[PlannedStage]) -> crate::wasm::Prefetch {
    let mut to_compile: Vec<Arc<crate::stage::Stage>> = Vec::new();
    if std::env::var_os("OSBUILD_PREFETCH").is_none_or(|v| v != "0") {
        for p in to_run {
            if p.stage.kind() == Kind::Wasm
                && !to_compile.iter().any(|s| s.digest == p.stage.digest)
            {
                to_compile.push(Arc::clone(&p.stage));
            }
        }
    }
    host.prefetch(to_compile, signals::interrupted)
}

/// The output directory, created and resolved once: a symlink swapped in
/// later does not move the outputs.
fn output_dir(config: &BuildConfig) -> Result<PathBuf, BuildError> {
    let dir = &config.output_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the output directory {}", dir.display()))?;
    Ok(std::fs::canonicalize(dir)
        .with_context(|| format!("resolving the output directory {}", dir.display()))?)
}

/// What every stage run of a build shares.
struct Run<'a> {
    config: &'a BuildConfig,
    store: &'a Store,
    resolved: &'a Resolved,
    hosts: Hosts<'a>,
    build_dir: &'a Path,
    output_dir: &'a Path,
}

impl Run<'_> {
    fn info<'b>(&'b self, p: &'b PlannedStage) -> StageInfo<'b> {
        StageInfo {
            index: p.index,
            total: self.resolved.planned.len(),
            name: p.stage.name(),
            id: &self.resolved.ids.stages[p.index],
        }
    }

    fn stage_report(
        &self,
        p: &PlannedStage,
        duration: Duration,
        cached: bool,
        changes: Option<changes::Summary>,
        packages: Option<StagePackages>,
        pulled: Option<String>,
    ) -> StageReport {
        StageReport {
            index: p.index,
            name: p.stage.name().to_string(),
            id: self.resolved.ids.stages[p.index].clone(),
            duration,
            cached,
            pulled,
            changes,
            packages,
            stage: Arc::clone(&p.stage),
            signer: p.signer.clone(),
        }
    }

    /// Run one stage; tell what it changed and refuse what it changed
    /// outside its write set; then keep its result: its tree into the store
    /// (or, without the cache, as a layer for the next stage) with its
    /// change record, its outputs into the output directory.
    fn stage(
        &self,
        p: &PlannedStage,
        ws: &mut Workspace,
        outputs_written: &mut Vec<PathBuf>,
    ) -> Result<(changes::Summary, Option<StagePackages>), BuildError> {
        let failed = |message: String| BuildError::Stage {
            index: p.index,
            name: p.stage.name().to_string(),
            message,
            tail: Vec::new(),
        };
        let outputs = self.build_dir.join(format!("output-{}", p.index));
        std::fs::create_dir(&outputs).context("creating the stage's output directory")?;
        // Where it may write in this run: what it declares, and the paths
        // its options name as they resolve in the tree it is given.
        let allowed = {
            let root = osbuild_tree_fs::Root::open(ws.path()).context("opening the tree")?;
            writes::allowed(&p.stage, &p.options_value, Some(&root))
        };
        let scoped = match &allowed {
            writes::Allowed::Only(set) => Some(set),
            _ => None,
        };
        let ran = run_stage(&self.hosts, p, ws, &outputs, scoped)?;
        let stage_packages = ran.resolved.map(|resolved| StagePackages {
            set: packages::set_of(&resolved, p.lock.as_ref(), crate::mtime::unix_now()),
            downloaded: ran.ingested,
            resolved: Some(resolved),
        });
        outputs::take(&outputs).map_err(failed)?;
        let record = changes::Record {
            stage: p.stage.name().to_string(),
            index: p.index,
            changes: ws
                .finish_stage(
                    self.resolved.epoch,
                    changes::diff::Bounds {
                        max_bytes: self.config.max_tree_size,
                        interrupted: signals::interrupted,
                    },
                )
                .context("telling what the stage changed")?,
        };
        writes::check(allowed.as_writes(), &record).map_err(failed)?;
        if let Some(policy) = self
            .config
            .policy
            .as_ref()
            .and_then(|policy| policy.writes_for(p.stage.name()))
        {
            writes::check_policy(&policy, &record).map_err(failed)?;
        }
        let counts = record.counts();
        if self.config.cache {
            let has_outputs = std::fs::read_dir(&outputs)
                .context("reading the stage's outputs")?
                .next()
                .is_some();
            let object = ws.checkpoint(
                self.store,
                &self.resolved.ids.stages[p.index],
                p.stage.name(),
                has_outputs.then_some(outputs.as_path()),
                Some(&record),
                stage_packages
                    .as_ref()
                    .and_then(|s| Some((&s.set, s.resolved.as_ref()?))),
            )?;
            outputs_written.extend(place_outputs_of(&[object], self.output_dir)?);
            Ok((
                changes::Summary {
                    counts,
                    record: Some(object.changes_path()),
                },
                stage_packages,
            ))
        } else {
            ws.advance()?;
            for e in std::fs::read_dir(&outputs)
                .context("reading the stage's outputs")?
                .flatten()
            {
                outputs_written.push(place_output(&e.path(), self.output_dir)?);
            }
            Ok((
                changes::Summary {
                    counts,
                    record: None,
                },
                stage_packages,
            ))
        }
    }
}

/// What a cached package stage installed, from its object.
fn cached_packages(chain: &[Object], id: &str) -> Option<StagePackages> {
    let object = chain.iter().find(|o| o.info.id == id)?;
    Some(StagePackages {
        set: object.info.packages.clone()?,
        downloaded: None,
        resolved: object.resolved(),
    })
}

/// Where a cached stage's result was pulled from, if it was.
fn cached_pulled(chain: &[Object], id: &str) -> Option<String> {
    chain.iter().find(|o| o.info.id == id)?.info.pulled.clone()
}

/// What a cached stage changed, from its object's info.
fn cached_changes(chain: &[Object], id: &str) -> Option<changes::Summary> {
    let object = chain.iter().find(|o| o.info.id == id)?;
    Some(changes::Summary {
        counts: object.info.changes?,
        record: Some(object.changes_path()),
    })
}

/// Unpack: `--from` into the tree, and into the store as the first
/// checkpoint (unless the tree was restored from the store).
fn unpack(
    ws: Workspace,
    resolved: &Resolved,
    restored_a_tree: bool,
    store: &Store,
    config: &BuildConfig,
) -> Result<Workspace, BuildError> {
    let Some(from) = resolved.from.as_ref().filter(|_| !restored_a_tree) else {
        return Ok(ws);
    };
    let mut ws = ws;
    from.unpack(ws.path(), config.policy.as_ref(), config.max_tree_size)?;
    if config.cache {
        let id = resolved.ids.from.as_deref().expect("an id for --from");
        ws.checkpoint(store, id, "--from", None, None, None)?;
    } else {
        ws.advance()?;
    }
    Ok(ws)
}

/// The SPDX SBOM of the final tree, with the stages that built it.
fn write_sbom(
    ws: &Workspace,
    path: &Path,
    pipeline: &Pipeline,
    planned: &[PlannedStage],
    epoch: i64,
) -> Result<(), BuildError> {
    let about = crate::sbom::About {
        name: pipeline
            .name
            .clone()
            .unwrap_or_else(|| "osbuild tree".to_string()),
        source_epoch: epoch,
        stages: planned
            .iter()
            .map(|p| crate::sbom::BuildTool {
                name: p.stage.name().to_string(),
                kind: p.stage.kind().to_string(),
                digest: p.stage.digest.clone(),
                signer: p.signer.clone(),
            })
            .collect(),
    };
    let bytes = crate::sbom::of_tree(ws.path(), &about).context("making the SBOM (--sbom)")?;
    std::fs::write(path, bytes)
        .with_context(|| format!("writing the SBOM to {} (--sbom)", path.display()))?;
    Ok(())
}

/// Save: the final tree as an archive.
fn save(ws: &Workspace, save: &Path) -> Result<(), BuildError> {
    archive::save(ws.path(), save, &signals::interrupted)
        .map(|_| ())
        .map_err(|e| {
            if signals::interrupted() {
                BuildError::Interrupted
            } else {
                BuildError::Other(e.context(format!("saving the tree to {}", save.display())))
            }
        })
}

/// Compiles a wasm stage into the store's cache of compiled components
/// (sealed, keyed by the stage's digest and the engine), as a build would:
/// `osbuild stage build` does it so that a big Python or JavaScript
/// component's first run does not pay the compile.
pub fn precompile(store_root: &Path, stage: &crate::stage::Stage) -> anyhow::Result<()> {
    crate::store::secure_root(store_root).map_err(anyhow::Error::msg)?;
    let store = Store::open(store_root)?;
    let host = WasmHost::new(Some((store.root().join("components"), store.secret()?)))?;
    host.component(stage).map(|_| ())
}

/// Runs a pipeline: resolve, restore, unpack, run (and checkpoint), save,
/// evict.
pub fn build(
    pipeline: &Pipeline,
    config: &BuildConfig,
    reporter: Arc<dyn Reporter>,
) -> Result<BuildReport, BuildError> {
    let trace = Trace::new();
    crate::store::secure_root(&config.store).map_err(|e| BuildError::input("--store", e))?;
    let store = Store::open(&config.store)?;
    trace.at("store opened");
    let host = Arc::new(WasmHost::new(Some((
        store.root().join("components"),
        store.secret()?,
    )))?);
    let resolved = resolve(pipeline, config, config.cache.then_some(&store))?;
    let planned = &resolved.planned;
    trace.at("planned");
    reporter.build_started(pipeline.name.as_deref(), planned.len());

    let build_dir = store.build_dir()?;
    let native = NativeHost::new(build_dir.path().join("native"));
    if !config.remote.is_empty() && crate::rootless::active() {
        // Its layers' whiteouts are stand-ins, which an OCI layer cannot say.
        return Err(BuildError::input(
            "--cache-from",
            "a rootless build does not use registries yet; build as root to share results",
        ));
    }
    let mut remote_report = (!config.remote.is_empty()).then(RemoteReport::default);
    if let Some(rr) = remote_report.as_mut().filter(|_| config.cache) {
        let devices = config.policy.as_ref().is_some_and(|p| p.from_device_nodes);
        let signers = config
            .policy
            .as_ref()
            .map(|p| p.cache_signer_keys())
            .transpose()
            .map_err(|e| BuildError::input("--policy", e))?
            .unwrap_or_default();
        remote::pull(
            &config.remote,
            &store,
            &resolved.ids,
            planned,
            build_dir.path(),
            (config.max_tree_size, devices),
            &signers,
            reporter.as_ref(),
            rr,
        )?;
        if let Some(note) = remote::pulled_note(&config.remote, rr) {
            reporter.note(&note);
        }
        trace.at("pulled");
    }
    let restored = restore(&store, config, &resolved.ids)?;
    let first = restored.first();
    let _prefetch = prefetch(&host, &planned[first..]);
    let output_dir = output_dir(config)?;
    let mut outputs_written = {
        let oldest_first: Vec<&Object> = restored.chain.iter().rev().collect();
        place_outputs_of(&oldest_first, &output_dir)?
    };
    trace.at("restore point found");
    // Without the cache, stages' layers stay in the build directory (each
    // stage's changes are told apart all the same) and go with it.
    let handoff = config.handoff;
    let everything_cached = restored.done.is_some_and(|d| d + 1 == planned.len());
    let restored_a_tree = !restored.chain.is_empty();
    type Cached = (
        Option<changes::Summary>,
        Option<StagePackages>,
        Option<String>,
    );
    let cached: Vec<Cached> = planned[..first]
        .iter()
        .map(|p| {
            let id = &resolved.ids.stages[p.index];
            (
                cached_changes(&restored.chain, id),
                cached_packages(&restored.chain, id),
                cached_pulled(&restored.chain, id),
            )
        })
        .collect();
    let ws = Workspace::new(
        build_dir.path(),
        handoff,
        restored.chain,
        !everything_cached,
    )?;
    trace.at("tree ready");
    let scratch = build_dir.path().join("scratch");
    std::fs::create_dir(&scratch).context("creating the scratch directory")?;
    let mut ws = unpack(ws, &resolved, restored_a_tree, &store, config)?;
    let package_cache = PackageCache::open(store.root())?;

    let run = Run {
        config,
        store: &store,
        resolved: &resolved,
        hosts: Hosts {
            wasm: &host,
            native: &native,
            limits: config.limits,
            source_epoch: resolved.epoch,
            scratch: &scratch,
            packages: &package_cache,
            reporter: Arc::clone(&reporter),
        },
        build_dir: build_dir.path(),
        output_dir: &output_dir,
    };
    let mut report = BuildReport {
        stages: Vec::new(),
        outputs: Vec::new(),
        saved: None,
        output_dir: output_dir.clone(),
        sbom: None,
        from_digest: resolved.from.as_ref().map(|f| f.digest.clone()),
        from_hashed: resolved.from.as_ref().is_some_and(|f| f.hashed),
        source_epoch: resolved.epoch,
        remote: None,
    };
    for (p, (summary, packages, pulled)) in planned[..first].iter().zip(cached) {
        reporter.stage_started(run.info(p));
        reporter.stage_finished(
            run.info(p),
            Duration::ZERO,
            Outcome::Cached,
            None,
            summary.as_ref(),
        );
        report
            .stages
            .push(run.stage_report(p, Duration::ZERO, true, summary, packages, pulled));
    }
    for p in &planned[first..] {
        if signals::interrupted() {
            return Err(BuildError::Interrupted);
        }
        reporter.stage_started(run.info(p));
        let start = Instant::now();
        let result = run.stage(p, &mut ws, &mut outputs_written);
        let elapsed = start.elapsed();
        let (outcome, error) = match &result {
            Ok(_) => (Outcome::Ran, None),
            Err(e) => (Outcome::Failed, Some(short_error(e))),
        };
        reporter.stage_finished(
            run.info(p),
            elapsed,
            outcome,
            error.as_deref(),
            result.as_ref().ok().map(|(summary, _)| summary),
        );
        let (summary, packages) = result?;
        report
            .stages
            .push(run.stage_report(p, elapsed, false, Some(summary), packages, None));
    }
    trace.at("stages done");
    if let Some(path) = &config.sbom {
        write_sbom(&ws, path, pipeline, &resolved.planned, resolved.epoch)?;
        report.sbom = Some(path.clone());
        trace.at("sbom written");
    }
    if let Some(path) = &config.save {
        save(&ws, path)?;
        report.saved = Some(path.clone());
    }
    outputs_written.sort();
    outputs_written.dedup();
    report.outputs = outputs_written;
    trace.at("saved");
    drop(ws);
    if let Some(rr) = remote_report.as_mut().filter(|_| config.cache) {
        remote::push(
            &config.remote,
            &store,
            &resolved.ids,
            build_dir.path(),
            reporter.as_ref(),
            rr,
        )?;
        trace.at("pushed");
    }
    report.remote = remote_report;
    if config.cache {
        store
            .evict(config.cache_max_size)
            .context("evicting old objects from the store")?;
    }
    trace.at("evicted");
    Ok(report)
}
