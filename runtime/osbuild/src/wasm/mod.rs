//! The wasm host: runs a wasm stage (a WASI 0.2 component) in wasmtime,
//! with exactly what it is granted.
//!
//! A stage gets the tree preopened as `/`, a private scratch directory at
//! `/tmp`, its stdout/stderr (a pipe the executor reads), a wall clock fixed
//! to the source epoch, a counting monotonic clock and random sources seeded
//! from the stage's identity: so two runs of a stage see the same world.
//! Only the WASI interfaces its capabilities grant are linked, and a
//! component that imports more is refused before it runs. Memory is capped
//! (a custom limiter records that the cap, not a bug, stopped the stage) and
//! time is bounded by epoch interruption.
//!
//! Compiled components are cached on disk, keyed by the wasm file's digest
//! and the engine's compatibility hash, so a warm run only deserializes.
//!
//! One module per interface of the stage world (`wit/`): [`tree`],
//! [`console`], [`context`]; [`previous`] links the 0.1.0 world's `tree`
//! for components built for it.

#![allow(
    unsafe_code,
    reason = "deserializing a compiled component the store sealed"
)]

mod console;
mod context;
mod previous;
mod tree;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "stage",
    });
}

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::SeedableRng;
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::host::{Invocation, Ran, StageError, StageHost, StageLimits};
use crate::stage::{Code, Stage};

/// How long an epoch tick is: the resolution of timeouts and Ctrl-C.
const TICK: Duration = Duration::from_millis(50);

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    tree: tree::TreeHost,
    console: console::Console,
    context: context::Context,
    /// The stage's stderr, for what the host says about it (a refusal).
    notes: Option<File>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct HasTree;

impl HasData for HasTree {
    type Data<'a> = &'a mut tree::TreeHost;
}

struct HasConsole;

impl HasData for HasConsole {
    type Data<'a> = &'a mut console::Console;
}

struct HasContext;

impl HasData for HasContext {
    type Data<'a> = &'a mut context::Context;
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// Caps linear memory; remembers that it did, so the error can say so
/// instead of the `unreachable` trap the guest's allocator turns it into.
/// Host resources (descriptors, streams, pollables) a stage may hold at
/// once: each may be a host file descriptor.
const MAX_RESOURCES: usize = 16 * 1024;

fn resource_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    table
}

/// The memory a stage may use, over all its memories and tables together
/// (a component has several; a limit on each would multiply).
struct MemoryLimiter {
    limit: usize,
    /// Bytes of linear memory and table elements in use now.
    used: usize,
    hit: bool,
}

/// What a table element costs against the limit (a pointer and a tag).
const TABLE_ELEMENT_BYTES: usize = 16;

impl MemoryLimiter {
    fn new(limit: usize) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            used: 0,
            hit: false,
        }
    }

    fn grow(&mut self, more: usize) -> wasmtime::Result<bool> {
        match self.used.checked_add(more) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(true)
            }
            _ => {
                self.hit = true;
                wasmtime::bail!("memory limit reached")
            }
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        1_000
    }

    fn tables(&self) -> usize {
        1_000
    }

    fn memories(&self) -> usize {
        100
    }
}

#[derive(Debug)]
struct TimedOut;
impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("time limit reached")
    }
}
impl std::error::Error for TimedOut {}

#[derive(Debug)]
struct Cancelled;
impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}
impl std::error::Error for Cancelled {}

/// The wall clock a stage sees: always the source epoch.
struct FixedClock(Duration);

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that advances by one microsecond per reading:
/// deterministic, yet never standing still for code that waits on it.
#[derive(Default)]
struct CountingClock(std::sync::atomic::AtomicU64);

impl wasmtime_wasi::HostMonotonicClock for CountingClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0
            .fetch_add(1_000, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Stops a [`WasmHost::prefetch`] when dropped.
pub struct Prefetch(Arc<AtomicBool>);

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub struct WasmHost {
    engine: Engine,
    engine_key: String,
    cache_dir: Option<PathBuf>,
    /// The store's secret, which seals each cached component: a `.cwasm`
    /// is native code run as is, so one that osbuild did not write (or
    /// that changed since) must not be loaded.
    cache_key: [u8; 32],
    linkers: [OnceLock<Linker<State>>; 2],
    /// Compiled components by key; a slot's lock is held while it is being
    /// loaded, so a stage the prefetcher is compiling is compiled once.
    loaded: Mutex<HashMap<String, Arc<Mutex<Option<Component>>>>>,
}

impl WasmHost {
    /// A host whose compiled components are cached in `cache_dir`.
    pub fn new(cache: Option<(PathBuf, [u8; 32])>) -> anyhow::Result<WasmHost> {
        let (cache_dir, cache_key) = match cache {
            Some((dir, key)) => (Some(dir), key),
            None => (None, [0; 32]),
        };
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("starting wasmtime")?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("epoch ticker".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .context("starting the epoch ticker")?;
        Ok(WasmHost {
            engine,
            engine_key,
            cache_dir,
            cache_key,
            linkers: [OnceLock::new(), OnceLock::new()],
            loaded: Mutex::new(HashMap::new()),
        })
    }

    fn linker(&self, network: bool) -> anyhow::Result<&Linker<State>> {
        let slot = &self.linkers[network as usize];
        if let Some(l) = slot.get() {
            return Ok(l);
        }
        let linker = build_linker(&self.engine, network).map_err(anyhow::Error::from)?;
        Ok(slot.get_or_init(|| linker))
    }

    /// The compiled component for a stage: from memory, from the disk
    /// cache, or compiled now (and cached).
    pub fn component(&self, stage: &Stage) -> anyhow::Result<Component> {
        let Code::Wasm(bytes) = &stage.code else {
            anyhow::bail!("{} is not a wasm stage", stage.name());
        };
        let key = format!("{}-{}", stage.digest, self.engine_key);
        let slot = Arc::clone(self.loaded.lock().unwrap().entry(key.clone()).or_default());
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let component = self.load_or_compile(stage, bytes, &key)?;
        *slot = Some(component.clone());
        Ok(component)
    }

    fn load_or_compile(&self, stage: &Stage, bytes: &[u8], key: &str) -> anyhow::Result<Component> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.cwasm")));
        if let Some(path) = &cached
            && let Some(file) = open_sealed(path, &self.cache_key)
        {
            let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
            // SAFETY: the open file is the one `write_cache` wrote from
            // `Component::serialize` and sealed: the seal (a MAC under the
            // store's secret) covers its identity and change time, which
            // any write to it changes and no one but root can set back. It
            // is mapped through this very descriptor, not found by name
            // again.
            let loaded = unsafe { Component::deserialize_file(&self.engine, &fd_path) };
            drop(file);
            match loaded {
                Ok(c) => return Ok(c),
                Err(_) => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling stage {} ({})", stage.name(), stage.origin))?;
        if let Some(path) = &cached
            && let Err(e) = write_cache(path, &component, &self.cache_key)
        {
            eprintln!(
                "warning: could not cache the compiled stage at {}: {e:#}",
                path.display()
            );
        }
        Ok(component)
    }

    /// Loads or compiles, in a thread of its own and in pipeline order, the
    /// components of `stages`, so that a first build compiles them while
    /// earlier stages (mmdebstrap, say) run. Errors are left for the run to
    /// report. Dropping the guard stops it after the component at hand.
    pub fn prefetch(
        self: &Arc<Self>,
        stages: Vec<Arc<Stage>>,
        interrupted: fn() -> bool,
    ) -> Prefetch {
        let stop = Arc::new(AtomicBool::new(false));
        let host = Arc::clone(self);
        let flag = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("component prefetch".into())
            .spawn(move || {
                for stage in stages {
                    if flag.load(Ordering::Relaxed) || interrupted() {
                        break;
                    }
                    if host.check_imports(&stage).is_ok() {
                        let _ = host.component(&stage);
                    }
                }
            });
        // Without the thread, each stage compiles when it runs, as before.
        drop(spawned);
        Prefetch(stop)
    }
    /// Refuses a stage whose component imports more than it declares
    /// (the check planning made; made again here, where linking happens).
    pub fn check_imports(&self, stage: &Stage) -> Result<(), StageError> {
        let refused = crate::reach::imports::check(stage);
        if refused.is_empty() {
            Ok(())
        } else {
            let reasons: Vec<String> = refused.iter().map(|r| r.to_string()).collect();
            Err(StageError::Refused(reasons.join("; ")))
        }
    }
}

impl StageHost for WasmHost {
    /// Runs one stage to completion.
    fn run(&self, inv: Invocation<'_>) -> Result<Ran, StageError> {
        let caps = &inv.stage.meta.capabilities;
        self.check_imports(inv.stage)?;
        let component = self.component(inv.stage)?;
        let linker = self.linker(caps.network)?;

        let scratch = tempfile::Builder::new()
            .prefix("scratch-")
            .tempdir_in(inv.scratch)
            .context("creating the stage's /tmp")?;
        let writable = caps.tree.writable();
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true);
        let perms = if writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(inv.tree, "/", perms)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("opening the tree {}", inv.tree.display()))?;
        wasi.preopened_dir(scratch.path(), "/tmp", FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .context("opening the stage's /tmp")?;
        let notes = inv.stderr.try_clone().ok();
        let console =
            console::Console::new(inv.stdout.try_clone().ok(), inv.stderr.try_clone().ok());
        wasi.stdout(OutputFile::new(inv.stdout));
        wasi.stderr(OutputFile::new(inv.stderr));
        wasi.wall_clock(FixedClock(Duration::from_secs(
            inv.source_epoch.max(0) as u64
        )));
        wasi.monotonic_clock(CountingClock::default());
        wasi.secure_random(rand::rngs::StdRng::from_seed(inv.seed));
        let mut insecure = inv.seed;
        insecure[0] ^= 0xff;
        wasi.insecure_random(rand::rngs::StdRng::from_seed(insecure));
        wasi.insecure_random_seed(u128::from_le_bytes(inv.seed[..16].try_into().unwrap()));
        if caps.network {
            wasi.inherit_network();
            wasi.allow_ip_name_lookup(true);
        }
        let root = osbuild_tree_fs::Root::open(inv.tree)
            .with_context(|| format!("opening the tree {}", inv.tree.display()))?;

        let StageLimits {
            memory_bytes,
            timeout,
        } = inv.limits;
        let state = State {
            wasi: wasi.build(),
            table: resource_table(),
            limiter: MemoryLimiter::new(usize::try_from(memory_bytes).unwrap_or(usize::MAX)),
            tree: tree::TreeHost::new(
                root,
                writable,
                inv.writes.cloned(),
                caps.device_nodes,
                memory_bytes,
            ),
            console,
            context: context::Context {
                source_epoch: inv.source_epoch,
            },
            notes,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = Instant::now() + timeout;
        let interrupted = inv.interrupted;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if interrupted() {
                return Err(Cancelled.into());
            }
            if Instant::now() >= deadline {
                return Err(TimedOut.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });

        let result = bindings::Stage::instantiate(&mut store, &component, linker)
            .and_then(|instance| instance.call_run(&mut store, inv.options_json));
        let hit_memory = store.data().limiter.hit;
        drop(store); // closes the stage's ends of the output pipe
        match result {
            Ok(Ok(())) => Ok(Ran::default()),
            Ok(Err(e)) => Err(StageError::Failed {
                message: e.message,
                option: e.option_path,
            }),
            Err(_) if hit_memory => Err(StageError::Memory(memory_bytes)),
            Err(e) if e.downcast_ref::<TimedOut>().is_some() => Err(StageError::Timeout(timeout)),
            Err(e) if e.downcast_ref::<Cancelled>().is_some() => Err(StageError::Interrupted),
            Err(e) => Err(StageError::Crashed(
                match stubbed_wasi_call(inv.stage, &e) {
                    Some(call) => format!(
                        "the stage called WASI ({call}), which it was built without (as Python and \
                         JavaScript stages are): files, sockets, the environment, the clock and \
                         imports of modules not loaded at build time are not there. Reach the tree \
                         through the SDK's Tree, print for output, source_epoch (sourceEpoch) for \
                         the time, and import modules at the top of the stage's code"
                    ),
                    None => format!("the stage crashed: {e:#}"),
                },
            )),
        }
    }
}

/// The WASI call a stage trapped in, if it is built without WASI (it
/// imports none) and trapped in one of the stubs its toolchain left where
/// WASI was: wasi-libc's glue (a Python `open()` or `socket()` ends
/// there) or a stubbed interface function (`[constructor]fields`, where a
/// JavaScript `fetch` ends).
fn stubbed_wasi_call(stage: &Stage, e: &wasmtime::Error) -> Option<String> {
    let imports = crate::reach::imports::of(stage)?.ok()?;
    if imports.iter().any(|i| i.starts_with("wasi:")) {
        return None;
    }
    const WASI_GLUE: [&str; 13] = [
        "filesystem_",
        "sockets_",
        "tcp_",
        "udp_",
        "ip_name_lookup_",
        "environment_",
        "wall_clock_",
        "monotonic_clock_",
        "random_",
        "insecure_",
        "terminal_",
        "streams_",
        "poll_",
    ];
    let trap = e.downcast_ref::<wasmtime::Trap>();
    if trap != Some(&wasmtime::Trap::UnreachableCodeReached) {
        return None;
    }
    let backtrace = e.downcast_ref::<wasmtime::WasmBacktrace>()?;
    // The names are the component's own: shown only as plain characters,
    // and short, so a stage cannot write osbuild's error line.
    let shown = |name: &str| -> String {
        name.chars()
            .filter(|c| c.is_ascii_alphanumeric() || "[]_-.".contains(*c))
            .take(64)
            .collect()
    };
    if let Some(innermost) = backtrace.frames().first().and_then(|f| f.func_name())
        && innermost.starts_with('[')
    {
        return Some(shown(innermost));
    }
    backtrace.frames().iter().find_map(|f| {
        let name = f.func_name()?;
        WASI_GLUE
            .iter()
            .any(|p| name.starts_with(p))
            .then(|| shown(name))
    })
}

/// What a seal covers: the cached file as osbuild left it (device, inode,
/// size, modification and change times). Mapped, not read: a Python
/// stage's compiled component is 36 MB, and hashing it on every run cost
/// more than running the stage.
#[derive(Debug, PartialEq, Eq)]
struct Sealed {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Sealed {
    fn of(st: &rustix::fs::Stat) -> Sealed {
        Sealed {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        }
    }

    /// The seal: HMAC-SHA256, under the store's secret, of the file's
    /// name and identity.
    fn mac(&self, key: &[u8; 32], path: &Path) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        mac.update(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        mac.update(format!("\0{self:?}").as_bytes());
        mac
    }
}

fn seal_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.seal")
}

/// The cached component at `path`, opened (never through a symlink), if
/// it is a regular file whose seal is right; a component with a wrong or
/// missing seal is removed (it is compiled again).
fn open_sealed(path: &Path, key: &[u8; 32]) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .ok()?;
    let st = rustix::fs::fstat(&file).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return None;
    }
    let seal_file = seal_path(path);
    let ok = std::fs::read(&seal_file)
        .is_ok_and(|s| hmac::Mac::verify_slice(Sealed::of(&st).mac(key, path), &s).is_ok());
    if ok {
        Some(file)
    } else {
        eprintln!(
            "osbuild: {} was not written by this store's osbuild (or changed since); compiling the stage again",
            path.display()
        );
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(seal_file);
        None
    }
}

fn write_cache(path: &Path, component: &Component, key: &[u8; 32]) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.as_file().sync_data()?;
    let file = tmp.persist(path)?;
    // The file written, as it is now, in place (the rename changed its
    // change time): through its descriptor, not its name.
    let st = rustix::fs::fstat(&file)?;
    let seal = hmac::Mac::finalize(Sealed::of(&st).mac(key, path)).into_bytes();
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &seal)?;
    tmp.persist(seal_path(path))?;
    Ok(())
}

/// Links the WASI interfaces every stage gets, the stage world's
/// interfaces (0.2.0 and 0.1.0), and the sockets only for stages with the
/// `network` capability.
fn build_linker(engine: &Engine, network: bool) -> wasmtime::Result<Linker<State>> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::filesystem::WasiFilesystem;
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets, sync};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::sockets::WasiSockets;

    let mut linker = Linker::<State>::new(engine);
    let l = &mut linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<State, HasIo>(l, |t| {
        &mut t.table
    })?;
    sync::io::poll::add_to_linker::<State, HasIo>(l, |t| &mut t.table)?;
    sync::io::streams::add_to_linker::<State, HasIo>(l, |t| &mut t.table)?;
    clocks::wall_clock::add_to_linker::<State, WasiClocks>(l, |t| {
        wasmtime_wasi::clocks::WasiClocksView::clocks(t)
    })?;
    clocks::monotonic_clock::add_to_linker::<State, WasiClocks>(l, |t| {
        wasmtime_wasi::clocks::WasiClocksView::clocks(t)
    })?;
    filesystem::preopens::add_to_linker::<State, WasiFilesystem>(l, |t| {
        wasmtime_wasi::filesystem::WasiFilesystemView::filesystem(t)
    })?;
    sync::filesystem::types::add_to_linker::<State, WasiFilesystem>(l, |t| {
        wasmtime_wasi::filesystem::WasiFilesystemView::filesystem(t)
    })?;
    random::random::add_to_linker::<State, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<State, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<State, WasiRandom>(l, |t| t.wasi.random())?;
    macro_rules! cli {
        ($($iface:ident),*) => {
            $(cli::$iface::add_to_linker::<State, WasiCli>(l, |t| wasmtime_wasi::cli::WasiCliView::cli(t))?;)*
        };
    }
    cli!(
        exit,
        environment,
        stdin,
        stdout,
        stderr,
        terminal_input,
        terminal_output,
        terminal_stdin,
        terminal_stdout,
        terminal_stderr
    );
    if network {
        fn get(t: &mut State) -> wasmtime_wasi::sockets::WasiSocketsCtxView<'_> {
            wasmtime_wasi::sockets::WasiSocketsView::sockets(t)
        }
        sockets::tcp_create_socket::add_to_linker::<State, WasiSockets>(l, get)?;
        sockets::instance_network::add_to_linker::<State, WasiSockets>(l, get)?;
        sockets::network::add_to_linker::<State, WasiSockets>(l, &Default::default(), get)?;
        sockets::ip_name_lookup::add_to_linker::<State, WasiSockets>(l, get)?;
        sync::sockets::tcp::add_to_linker::<State, WasiSockets>(l, get)?;
        sync::sockets::udp::add_to_linker::<State, WasiSockets>(l, get)?;
        sync::sockets::udp_create_socket::add_to_linker::<State, WasiSockets>(l, get)?;
    }
    {
        use bindings::osbuild::stage as now;
        now::tree::add_to_linker::<State, HasTree>(l, |s| &mut s.tree)?;
        now::types::add_to_linker::<State, HasTree>(l, |s| &mut s.tree)?;
        now::console::add_to_linker::<State, HasConsole>(l, |s| &mut s.console)?;
        now::context::add_to_linker::<State, HasContext>(l, |s| &mut s.context)?;
        use previous::bindings::osbuild::stage as then;
        then::tree::add_to_linker::<State, HasTree>(l, |s| &mut s.tree)?;
        then::types::add_to_linker::<State, HasTree>(l, |s| &mut s.tree)?;
    }
    guard_open_at(l)?;
    virtual_sleeps(l)?;
    Ok(linker)
}

/// The `wasi:filesystem` version wasmtime-wasi implements; guests built
/// for any earlier 0.2 release link to it.
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `descriptor.open-at` with one that refuses, before opening,
/// anything but regular files, directories and symlinks: opening a FIFO
/// would block the stage in the host where no timeout reaches it, and a
/// device node in the tree must never become the host's device (the tree
/// is mounted `nodev` too; this says why instead of `EACCES`).
fn guard_open_at(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::bindings::sync::filesystem::types as fs;
    linker.allow_shadowing(true);
    linker.instance(WASI_FILESYSTEM_TYPES)?.func_wrap(
        "[method]descriptor.open-at",
        |mut store: wasmtime::StoreContextMut<'_, State>,
         (fd, path_flags, path, oflags, flags): (
            Resource<fs::Descriptor>,
            fs::PathFlags,
            String,
            fs::OpenFlags,
            fs::DescriptorFlags,
        )| {
            let state = store.data_mut();
            let follow = path_flags.contains(fs::PathFlags::SYMLINK_FOLLOW);
            if let Some(what) = special_file(&state.table, &fd, &path, follow) {
                if let Some(notes) = state.notes.as_mut() {
                    let _ = std::io::Write::write_all(
                        notes,
                        format!("osbuild: refused to open {path}: it is {what}; osbuild never opens device nodes, FIFOs or sockets in a tree\n").as_bytes(),
                    );
                }
                return Ok((Err(fs::ErrorCode::NotPermitted),));
            }
            let mut view = wasmtime_wasi::filesystem::WasiFilesystemView::filesystem(state);
            match fs::HostDescriptor::open_at(&mut view, fd, path_flags, path, oflags, flags) {
                Ok(opened) => Ok((Ok(opened),)),
                Err(e) => Ok((Err(fs::Host::convert_error_code(&mut view, e)?),)),
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

const WASI_MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A sleep on the stage's clock, which is virtual (it does not follow real
/// time): over at once.
struct Elapsed;

#[wasmtime_wasi_io::async_trait]
impl wasmtime_wasi_io::poll::Pollable for Elapsed {
    async fn ready(&mut self) {}
}

/// Sleeps end at once. A real one would block in the host, where the
/// epoch deadline that enforces `--timeout` and Ctrl-C is never checked:
/// a stage sleeping for a year would hold the build for a year. The
/// stage's clock is virtual anyway; a stage that polls in a loop is still
/// stopped at its deadline, between the calls.
fn virtual_sleeps(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi_io::poll::DynPollable;
    fn elapsed(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
        let r = table.push(Elapsed)?;
        wasmtime_wasi_io::poll::subscribe(table, r)
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(WASI_MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, State>, (_,): (u64,)| {
            Ok((elapsed(&mut store.data_mut().table)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, State>, (_,): (u64,)| {
            Ok((elapsed(&mut store.data_mut().table)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What the entry at `path` under the directory descriptor `fd` is, if it
/// is a device node, FIFO or socket. It is looked up the way cap-std will
/// open it (beneath the directory, no magic links) as an `O_PATH`
/// descriptor, which opens nothing. Anything that fails here is left for
/// the real open to report.
fn special_file(
    table: &ResourceTable,
    fd: &wasmtime::component::Resource<wasmtime_wasi::filesystem::Descriptor>,
    path: &str,
    follow: bool,
) -> Option<&'static str> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let wasmtime_wasi::filesystem::Descriptor::Dir(dir) = table.get(fd).ok()? else {
        return None;
    };
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let found = rustix::fs::openat2(
        &*dir.dir,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let st = rustix::fs::fstat(&found).ok()?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::BlockDevice => Some("a block device"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::Fifo => Some("a FIFO"),
        FileType::Socket => Some("a socket"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// L3: the limit is for the stage, not for each of its memories and
    /// tables.
    #[test]
    fn the_memory_limit_covers_all_memories_and_tables_together() {
        const MIB: usize = 1024 * 1024;
        let mut l = MemoryLimiter::new(64 * MIB);
        assert!(l.memory_growing(0, 40 * MIB, None).unwrap());
        assert!(
            l.memory_growing(0, 40 * MIB, None).is_err(),
            "a second memory"
        );
        assert!(l.hit);
        let mut l = MemoryLimiter::new(64 * MIB);
        assert!(l.memory_growing(0, 60 * MIB, None).unwrap());
        assert!(
            l.table_growing(0, MIB, None).is_err(),
            "16 MiB of table elements"
        );
        let mut l = MemoryLimiter::new(64 * MIB);
        assert!(l.memory_growing(0, 32 * MIB, None).unwrap());
        assert!(l.memory_growing(32 * MIB, 64 * MIB, None).unwrap());
        assert!(l.memory_growing(64 * MIB, 64 * MIB + 65536, None).is_err());
    }

    #[test]
    fn a_stage_holds_a_bounded_number_of_host_resources() {
        let mut t = resource_table();
        for _ in 0..MAX_RESOURCES {
            t.push(()).unwrap();
        }
        assert!(t.push(()).is_err());
    }
}
