//! The command line: `osbuild [--from ARCHIVE] [--save ARCHIVE] PIPELINE`,
//! as the original osbuild has it, plus subcommands to inspect stages.

#![allow(unsafe_code, reason = "unshare(2) while the process has one thread")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use osbuild::error::BuildError;
use osbuild::executor::{self, BuildConfig};
use osbuild::pipeline;
use std::io::{IsTerminal, Write as _};

use osbuild::host::Limits;
use osbuild::progress::{JsonReporter, PlainReporter, Reporter, TerminalReporter};
use osbuild::stage::Stage;
use osbuild::store::workspace::Handoff;

/// `--max-tree-size`'s default. It is part of what names a `--from`
/// tree in the store, so commands that look results up use it too.
const DEFAULT_MAX_TREE_SIZE: &str = "64G";

#[derive(Parser, Debug)]
#[command(
    name = "osbuild",
    version,
    about = "Build operating system images from a pipeline of sandboxed stages"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The pipeline to build (JSON).
    pub pipeline: Option<PathBuf>,
    /// Unpack this archive (.tar.gz, .tar.zst or .tar) into the tree before the first stage.
    #[arg(long, value_name = "ARCHIVE")]
    pub from: Option<PathBuf>,
    /// Write the final tree to this archive (.tar.gz, .tar.zst or .tar), deterministically.
    #[arg(long, value_name = "ARCHIVE")]
    pub save: Option<PathBuf>,
    /// Where stages such as image assemblers write their outputs.
    #[arg(long = "output-directory", value_name = "DIR", default_value = ".")]
    pub output_directory: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Per-stage time limit in seconds [default: 600]. Given, it is also the
    /// most a stage's metadata can ask for (else the policy's
    /// "max-timeout-secs", else 4 hours).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Per-stage memory limit for wasm stages, in MiB [default: 1024].
    /// Given, it is also the most a stage's metadata can ask for (else the
    /// policy's "max-memory-mib", else 8192).
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Build without reading or writing the store's cached results.
    #[arg(long)]
    pub no_cache: bool,
    /// Keep the store under this size, evicting least recently used results
    /// (bytes, or with K, M, G, T).
    #[arg(long, value_name = "SIZE", default_value = "20G", value_parser = parse_size)]
    pub cache_max_size: u64,
    /// Before running a stage, look for its result in this registry
    /// (oci://HOST[:PORT]/REPOSITORY; repeatable, the first that has it
    /// wins) and pull it into the store. Every blob is checked against its
    /// digest; a registry that is down is skipped with a note.
    #[arg(long, value_name = "REF", value_parser = parse_location)]
    pub cache_from: Vec<osbuild_registry::Location>,
    /// After the build, push its results to this registry
    /// (oci://HOST[:PORT]/REPOSITORY); only what it lacks is uploaded.
    #[arg(long, value_name = "REF", value_parser = parse_location)]
    pub cache_to: Option<osbuild_registry::Location>,
    /// Sign what --cache-to pushes with this ed25519 key (OpenSSH format);
    /// a policy's "cache-signers" takes only results signed by its keys.
    #[arg(long, value_name = "KEY", requires = "cache_to")]
    pub cache_key: Option<PathBuf>,
    /// Fail the build when a --cache-from registry cannot be reached,
    /// instead of running the stages (an object found wrong is still
    /// only skipped: its stage runs).
    #[arg(long, requires = "cache_from")]
    pub cache_from_required: bool,
    /// The most file content a --from archive may unpack to: a gzip bomb
    /// stops there, and nothing is left behind.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MAX_TREE_SIZE, value_parser = parse_size)]
    pub max_tree_size: u64,
    /// How the tree moves between stages and into the store: overlay or copy
    /// [default: overlay where it works, else copy].
    #[arg(long, value_name = "HOW")]
    pub handoff: Option<HandoffArg>,
    /// Print each stage's id and whether it is cached (and, for a package
    /// stage, its package set and how old it is); run nothing.
    #[arg(long)]
    pub inspect: bool,
    /// Install packages exactly as this lock says (osbuild lock)
    /// [default: PIPELINE.lock.json beside the pipeline, if there is one].
    #[arg(long, value_name = "FILE", conflicts_with = "no_lock")]
    pub lock: Option<PathBuf>,
    /// Ignore the lock beside the pipeline: resolve against the mirrors.
    #[arg(long)]
    pub no_lock: bool,
    /// Write an SPDX 2.3 SBOM (JSON) of the final tree: its Debian
    /// packages, with versions, licenses and purls, and the stages that
    /// built it. The same tree gives the same bytes.
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    /// Write the build's provenance: an in-toto Statement with an SLSA
    /// Provenance v1 predicate (outputs and --save archive as subjects;
    /// the pipeline, --from archive, stages and host tools as what went in).
    #[arg(long, value_name = "FILE")]
    pub provenance: Option<PathBuf>,
    /// Sign the provenance with this ed25519 key (OpenSSH format): it is
    /// then written as a DSSE envelope, which `osbuild verify-provenance`
    /// checks.
    #[arg(long, value_name = "KEY", requires = "provenance")]
    pub provenance_key: Option<PathBuf>,
    /// Print only stage output and errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// How to show progress: `text` (a line per stage; a live view on a
    /// terminal) or `json` (one JSON object per event on stdout).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub monitor: Monitor,
    /// Print the build's result as JSON on stdout: each stage's id, duration
    /// and whether it was cached, and the outputs written with their sha256.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// The store for cached results and compiled stages
    /// [default: $XDG_CACHE_HOME/osbuild, or ~/.cache/osbuild].
    #[arg(long, value_name = "DIR", global = true)]
    pub store: Option<PathBuf>,
    /// Registry credentials ({"auths": {"HOST:PORT": {"auth": base64(user:password)}}}),
    /// read before Podman's and Docker's own files.
    #[arg(long, value_name = "FILE", global = true)]
    pub registry_auth: Option<PathBuf>,
    /// A directory of stages, searched before the built-in ones (repeatable).
    #[arg(long = "libdir", value_name = "DIR", global = true)]
    pub libdirs: Vec<PathBuf>,
    /// A policy (JSON) saying what the build may use: stage kinds, network,
    /// privileges, devices, pinned stage digests. See the README.
    #[arg(long, value_name = "FILE", global = true)]
    pub policy: Option<PathBuf>,
    /// A host directory whose contents stages' options may name
    /// (`file:///srv/repo`), bound read-only into native stages; none is
    /// unless allowed here or in the policy's "host-paths" (repeatable).
    #[arg(long = "allow-host-path", value_name = "DIR", global = true)]
    pub allowed_host_paths: Vec<PathBuf>,
}

impl CommonArgs {
    fn policy(&self) -> Result<Option<osbuild::policy::Policy>, BuildError> {
        self.policy
            .as_deref()
            .map(osbuild::policy::Policy::load)
            .transpose()
            .map_err(|e| BuildError::Input(vec![e]))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the available stages, or show one stage's metadata and schema.
    Stages {
        #[command(subcommand)]
        action: Option<StagesCommand>,
    },
    /// Write, build and test a stage of your own, in Rust, Python or
    /// JavaScript.
    Stage {
        #[command(subcommand)]
        action: StageCommand,
    },
    /// Show what every stage of a pipeline may touch, running nothing: kind,
    /// digest, declared capabilities, a wasm stage's actual imports, and any
    /// mismatch or policy violation (exit 2 if a build would be refused).
    Audit {
        /// The pipeline to audit.
        pipeline: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Also show what each stage changed in its last build (from the
        /// store), against what it declares.
        #[arg(long)]
        changes: bool,
        /// The archive the pipeline is built --from (it names the results).
        #[arg(long, value_name = "ARCHIVE")]
        from: Option<PathBuf>,
    },
    /// Print what each stage of a built pipeline changed in the tree, from
    /// the store, running nothing: `+` created, `~` modified (and what
    /// of it), `-` removed.
    Changes {
        /// The pipeline, as it was built.
        pipeline: PathBuf,
        /// The archive it was built --from.
        #[arg(long, value_name = "ARCHIVE")]
        from: Option<PathBuf>,
        /// Only this stage: its number (from 1, as a build shows it) or its name.
        #[arg(long, value_name = "N|NAME")]
        stage: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a provenance written with --provenance-key: its signature by
    /// KEY, that it is an SLSA v1 provenance, and that each --subject file
    /// is one of its subjects (exit 1 if not).
    VerifyProvenance {
        /// The provenance (a DSSE envelope).
        file: PathBuf,
        /// The public key (a .pub file).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
        /// A file that must be a subject (by sha256); repeatable.
        #[arg(long, value_name = "FILE")]
        subject: Vec<PathBuf>,
    },
    /// Pin the packages each package stage installs: build the pipeline up
    /// to its last package stage (cached results are reused) and write
    /// every package's name, version, architecture, URL and sha256 to
    /// PIPELINE.lock.json. Builds then install exactly those.
    Lock {
        /// The pipeline.
        pipeline: PathBuf,
        /// Resolve again against the mirrors (nothing cached is reused)
        /// and print what changed: package, old version, new version.
        #[arg(long)]
        update: bool,
        /// Write the lock here instead.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The archive the pipeline is built --from.
        #[arg(long, value_name = "ARCHIVE")]
        from: Option<PathBuf>,
    },
    /// Look into the store of cached results.
    Store {
        #[command(subcommand)]
        action: StoreCommand,
    },
    /// Boot a disk image in QEMU, serial console on the terminal; the image
    /// is not changed (-snapshot). Exits with QEMU's status.
    Boot {
        /// The image (qcow2, raw, or fixed VHD).
        image: PathBuf,
        /// Also write the console output to this file.
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Guest memory in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 1024)]
        memory: u64,
        /// Give the guest a network (QEMU user-mode NAT).
        #[arg(long)]
        network: bool,
        /// kvm or tcg [default: kvm where it is usable, else tcg].
        #[arg(long, value_name = "ACCEL")]
        accel: Option<osbuild::boot::Accel>,
        /// bios (SeaBIOS) or uefi (OVMF) [default: uefi when the image has
        /// an EFI system partition, else bios].
        #[arg(long, value_name = "FIRMWARE")]
        firmware: Option<osbuild::boot::Firmware>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// List the cached results (id, stage, size, last use) and the
    /// package cache.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Also list each cached package file.
        #[arg(long)]
        packages: bool,
    },
    /// Remove every cached result, compiled stage and cached package.
    Clear {
        /// Only the cached results: keep compiled stages and packages.
        #[arg(long)]
        objects: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum StageCommand {
    /// Write a new stage project: code, stage.json with its schema,
    /// tests.json and a README. It builds as it is.
    New {
        /// The stage's name (`io.example.motd`), as pipelines will name it.
        name: String,
        /// The language to write it in.
        #[arg(long, value_name = "LANG", default_value = "rust")]
        lang: crate::project::Language,
        /// Where (empty or new) [default: a folder named NAME].
        dir: Option<PathBuf>,
    },
    /// Build a stage project into NAME.wasm in its folder (cargo,
    /// componentize-py or componentize-js), metadata embedded and imports
    /// checked. Use it with `--libdir DIR`.
    Build {
        /// The project [default: .].
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a stage with an ed25519 key (`ssh-keygen -t ed25519`): a .wasm
    /// component in place (a `signature` section, the WebAssembly
    /// signatures convention), a native stage in NAME.sig beside it (an
    /// SSH signature of the executable and NAME.json).
    Sign {
        /// The stage file (NAME.wasm, or a native executable).
        file: PathBuf,
        /// The private key (OpenSSH format, no passphrase).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
    /// Check a stage's signature against a public key (a .pub file);
    /// exits 1 if that key did not sign it.
    Verify {
        /// The stage file (NAME.wasm, or a native executable).
        file: PathBuf,
        /// The public key (`ssh-ed25519 AAAA… comment`, as in a .pub file).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
    },
    /// Push a wasm stage to a registry (oci://HOST[:PORT]/REPOSITORY[:TAG],
    /// tag latest by default), as wkg stores components; prints the
    /// reference pinned by digest, which a pipeline names it by.
    Push {
        /// The stage (NAME.wasm; sign it first if a policy will ask).
        file: PathBuf,
        /// Where: oci://HOST[:PORT]/REPOSITORY[:TAG].
        reference: String,
    },
    /// Pull a stage from a registry (by tag or @sha256: digest), check it
    /// and keep it in the store; prints the reference pinned by digest.
    Pull {
        /// oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST].
        reference: String,
        /// Also write the component here.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Build a stage project and run its tests: `cargo test` for Rust, then
    /// each case of tests.json, run by osbuild on the tree it describes.
    Test {
        /// The project [default: .].
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum StagesCommand {
    /// Print a stage's metadata and options schema (by name or .wasm file).
    Show { stage: String },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!("{s:?} is not a size (bytes, or a number with K, M, G or T, below 16 EiB)")
        })
}

/// `--handoff`: the library's [`Handoff`], as the command line spells it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffArg {
    Overlay,
    Copy,
}

impl From<HandoffArg> for Handoff {
    fn from(h: HandoffArg) -> Handoff {
        match h {
            HandoffArg::Overlay => Handoff::Overlay,
            HandoffArg::Copy => Handoff::Copy,
        }
    }
}

/// `--monitor`: how progress is shown.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    Text,
    Json,
}

/// The limits of a build: the command line's, which cap what stages ask
/// for; without them, defaults capped by the policy or built-in maxima.
fn limits(
    memory_mib: Option<u64>,
    timeout_secs: Option<u64>,
    policy: Option<&osbuild::policy::Policy>,
) -> Limits {
    const MIB: u64 = 1024 * 1024;
    let max_memory = memory_mib
        .or_else(|| policy.and_then(|p| p.max_memory_mib))
        .unwrap_or(Limits::MAX_MEMORY_MIB);
    let max_timeout = timeout_secs
        .or_else(|| policy.and_then(|p| p.max_timeout_secs))
        .unwrap_or(Limits::MAX_TIMEOUT_SECS);
    let memory = memory_mib.unwrap_or(1024).min(max_memory);
    let timeout = timeout_secs.unwrap_or(600).min(max_timeout);
    Limits {
        memory_bytes: memory.saturating_mul(MIB),
        timeout: Duration::from_secs(timeout),
        max_memory_bytes: max_memory.saturating_mul(MIB),
        max_timeout: Duration::from_secs(max_timeout),
    }
}

fn default_store() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("osbuild");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache/osbuild");
    }
    PathBuf::from("/var/cache/osbuild")
}

fn report(err: &BuildError) {
    match err {
        BuildError::Input(errors) => {
            for e in errors {
                eprintln!("osbuild: error: {e}");
            }
        }
        BuildError::Other(e) => eprintln!("osbuild: error: {e:#}"),
        other => eprintln!("osbuild: error: {other}"),
    }
}

/// Whether osbuild has a mount namespace of its own (see `main`); a build
/// refuses to start without one.
static PRIVATE_MOUNTS: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();

/// Every mount osbuild makes (the overlay trees) lives in a mount namespace
/// of its own, so none outlives osbuild, even a SIGKILLed one. Run by an
/// ordinary user, osbuild first becomes root of a user namespace of its
/// own (a rootless build, [`osbuild::rootless`]). Done before any other
/// thread exists: unshare(2) needs a single-threaded process.
fn enter_namespaces(cli: &Cli) {
    let result = if rustix::process::geteuid().is_root() {
        enter_private_mount_namespace()
    } else {
        if matches!(
            cli.command,
            Some(
                Command::Boot { .. }
                    | Command::Stages { .. }
                    | Command::Stage { .. }
                    | Command::VerifyProvenance { .. }
            )
        ) {
            return;
        }
        let store = cli.build.common.store.clone().unwrap_or_else(default_store);
        osbuild::store::secure_for_rootless(&store)
            .map_err(|e| format!("--store: {e}"))
            .and_then(|store| osbuild::rootless::enter(Some(store)))
            .map_err(|e| {
                format!("osbuild runs as an ordinary user, and cannot build rootless: {e}")
            })
    };
    let _ = PRIVATE_MOUNTS.set(result);
}

fn enter_private_mount_namespace() -> Result<(), String> {
    // SAFETY: called first thing in main, before any other thread exists,
    // and CLONE_NEWNS shares nothing a thread could rely on.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))
        .and_then(|()| {
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::REC
                    | rustix::mount::MountPropagationFlags::PRIVATE,
            )
            .map_err(|e| format!("making / private in it: {e}"))
        })
        .map_err(|e| {
            format!("cannot make a private mount namespace ({e}): osbuild builds as root (or with CAP_SYS_ADMIN)")
        })
}

/// Fails unless osbuild has a private mount namespace: without one, the
/// tree's mounts would land in the host's and outlive a killed osbuild.
fn require_private_mounts() -> Result<(), BuildError> {
    match PRIVATE_MOUNTS.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(BuildError::Other(anyhow::anyhow!("{e}"))),
        None => Ok(()),
    }
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 3 && argv[1] == osbuild::native::RUNNER_COMMAND {
        return osbuild::native::runner_main(&argv[2]);
    }
    let cli = Cli::parse();
    enter_namespaces(&cli);
    if !rustix::process::geteuid().is_root()
        && let Some(Err(e)) = PRIVATE_MOUNTS.get()
    {
        // Still the ordinary user outside any namespace: nothing of the
        // store (owned by subordinate ids) is reachable from here.
        eprintln!("osbuild: error: {e}");
        return 1;
    }
    osbuild::signals::install();
    // Files the stages create get predictable modes, whatever the caller's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let result = match cli.command {
        Some(Command::Audit {
            pipeline,
            json,
            changes,
            from,
        }) => audit(&cli.build.common, &pipeline, json, changes.then_some(from)),
        Some(Command::Changes {
            pipeline,
            from,
            stage,
            json,
        }) => changes(&cli.build.common, &pipeline, from, stage.as_deref(), json),
        Some(Command::VerifyProvenance { file, key, subject }) => {
            verify_provenance(&file, &key, &subject).map_err(BuildError::from)
        }
        Some(Command::Lock {
            pipeline,
            update,
            output,
            from,
        }) => lock_command(&cli.build.common, &pipeline, update, output, from),
        Some(Command::Store { action }) => {
            store_command(&cli.build.common, action).map_err(BuildError::from)
        }
        Some(Command::Stages { action }) => {
            stages(&cli.build.common, action).map_err(BuildError::from)
        }
        Some(Command::Stage { action }) => {
            stage_project(&cli.build.common, action).map_err(BuildError::from)
        }
        Some(Command::Boot {
            image,
            log,
            memory,
            network,
            accel,
            firmware,
        }) => {
            let opts = osbuild::boot::BootOptions {
                image,
                log,
                memory,
                network,
                accel,
                firmware,
            };
            match osbuild::boot::run(&opts) {
                Ok(code) => return code,
                Err(e) => Err(BuildError::from(e)),
            }
        }
        None => build(cli.build),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            e.exit_code()
        }
    }
}

/// Compiles a freshly built stage into the store, so its first run does
/// not wait for it (as root: an ordinary user's store belongs to its user
/// namespace, which `stage build` does not enter). A failure only warns:
/// the run compiles it then.
fn precompile(common: &CommonArgs, wasm: &std::path::Path) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let store = common.store.clone().unwrap_or_else(default_store);
    let started = std::time::Instant::now();
    let result = osbuild::stage::Stage::load_file(wasm)
        .map_err(anyhow::Error::msg)
        .and_then(|stage| executor::precompile(&store, &stage));
    match result {
        Ok(()) => eprintln!(
            "osbuild: compiled it for this machine into {} ({:.1}s): its first run starts at once",
            store.display(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!(
            "osbuild: warning: could not compile it into {}: {e:#}",
            store.display()
        ),
    }
}

/// `osbuild stage new|build|test|sign|verify|push|pull`.
fn stage_project(common: &CommonArgs, action: StageCommand) -> anyhow::Result<()> {
    use crate::project;
    match action {
        StageCommand::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            project::new(&name, lang, &dir)
        }
        StageCommand::Build { dir } => {
            let wasm = project::build(&dir)?;
            precompile(common, &wasm);
            Ok(())
        }
        StageCommand::Sign { file, key } => {
            let key = osbuild::signing::SigningKey::load(&key)?;
            let written = osbuild::signing::stage::sign_file(&file, &key)?;
            eprintln!(
                "osbuild: signed {} with {}: {}",
                file.display(),
                key.public().describe(),
                written.display()
            );
            Ok(())
        }
        StageCommand::Verify { file, key } => {
            let key = osbuild::signing::VerifyingKey::load(&key)?;
            let stage = Stage::load_file(&file).map_err(anyhow::Error::msg)?;
            osbuild::signing::stage::verify(&stage, &key).map_err(|why| {
                anyhow::anyhow!(
                    "{}: not signed by {}: {why}",
                    file.display(),
                    key.describe()
                )
            })?;
            println!(
                "{}: a good signature by {} (stage {}, sha256:{})",
                file.display(),
                key.describe(),
                stage.name(),
                stage.digest
            );
            Ok(())
        }
        StageCommand::Push { file, reference } => {
            let reference =
                osbuild::stage::remote::Reference::parse(&reference).map_err(anyhow::Error::msg)?;
            let remote = remote_stages(common).map_err(|e| anyhow::anyhow!("{e}"))?;
            // The config's time: SOURCE_DATE_EPOCH, else 1970, so that the
            // same component always has the same manifest digest.
            let epoch = std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let pinned = remote
                .push(&file, &reference, epoch)
                .map_err(anyhow::Error::msg)?;
            eprintln!("osbuild: pushed {} to {reference}", file.display());
            println!("{pinned}");
            Ok(())
        }
        StageCommand::Pull { reference, output } => {
            let reference =
                osbuild::stage::remote::Reference::parse(&reference).map_err(anyhow::Error::msg)?;
            let remote = remote_stages(common).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (stage, digest) = remote.pull(&reference).map_err(anyhow::Error::msg)?;
            if let Some(path) = &output
                && let osbuild::stage::Code::Wasm(bytes) = &stage.code
            {
                std::fs::write(path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!(
                "osbuild: pulled stage {} (component sha256:{}) into {}",
                stage.name(),
                stage.digest,
                remote.store.display()
            );
            println!("{}@{digest}", reference.location);
            Ok(())
        }
        StageCommand::Test { dir } => project::test(
            &dir,
            &project::TestArgs {
                store: common.store.clone(),
                libdirs: common.libdirs.clone(),
            },
        ),
    }
}

fn load_pipeline(path: Option<&std::path::Path>) -> Result<pipeline::Pipeline, BuildError> {
    read_pipeline(path).map(|(p, _)| p)
}

/// The pipeline, parsed, and its text as read (provenance records it).
fn read_pipeline(
    path: Option<&std::path::Path>,
) -> Result<(pipeline::Pipeline, String), BuildError> {
    let Some(path) = path else {
        return Err(BuildError::input(
            "PIPELINE",
            "no pipeline given; usage: osbuild [--from ARCHIVE] [--save ARCHIVE] PIPELINE",
        ));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        BuildError::input(
            path.display().to_string(),
            format!("cannot read the pipeline: {e}"),
        )
    })?;
    let parsed = pipeline::parse(&text).map_err(|errors| {
        BuildError::Input(
            errors
                .into_iter()
                .map(|mut e| {
                    e.path = format!("{}: {}", path.display(), e.path);
                    e
                })
                .collect(),
        )
    })?;
    Ok((parsed, text))
}

fn build(args: BuildArgs) -> Result<(), BuildError> {
    let started = std::time::Instant::now();
    let reporter: Arc<dyn Reporter> = if args.monitor == Monitor::Json {
        Arc::new(JsonReporter)
    } else if std::io::stderr().is_terminal() && !args.quiet && !args.inspect {
        Arc::new(TerminalReporter::new())
    } else {
        Arc::new(PlainReporter { quiet: args.quiet })
    };
    let want_result = (args.json || args.monitor == Monitor::Json) && !args.inspect;
    let started_at = osbuild::mtime::unix_now();
    let (pipeline, pipeline_text) = match read_pipeline(args.pipeline.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            if want_result {
                let result = result_json(None, started.elapsed(), Err(&e));
                reporter.build_finished(&result);
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&result).unwrap_or_default()
                    );
                }
            }
            return Err(e);
        }
    };
    let policy = args.common.policy()?;
    let provenance_key = args
        .provenance_key
        .as_deref()
        .map(osbuild::signing::SigningKey::load)
        .transpose()
        .map_err(|e| BuildError::input("--provenance-key", format!("{e:#}")))?;
    let lock = if args.no_lock {
        None
    } else {
        crate::lock::for_build(args.lock.as_deref(), args.pipeline.as_deref())?
    };
    // Stages named by tag run as the lock pinned them.
    let mut pipeline = pipeline;
    crate::lock::pin_references(&mut pipeline, lock.as_ref().map(|(_, l)| l));
    let remote = remote_config(&args)?;
    let stage_registry = stage_registry(&args.common)?;
    let config = BuildConfig {
        lock,
        limits: limits(args.memory, args.timeout, policy.as_ref()),
        policy,
        cache: !args.no_cache,
        remote,
        cache_max_size: args.cache_max_size,
        handoff: args.handoff.map(Handoff::from),
        from: args.from,
        save: args.save,
        output_dir: args.output_directory,
        store: args.common.store.unwrap_or_else(default_store),
        registry: stage_registry,
        allowed_host_paths: args.common.allowed_host_paths,
        max_tree_size: args.max_tree_size,
        sbom: args.sbom.clone(),
        provenance: args.provenance.is_some(),
    };
    if args.inspect {
        if let Some((path, _)) = &config.lock {
            println!("lock: {path}");
        }
        for s in executor::inspect(&pipeline, &config)? {
            println!(
                "{:>3}  {:<28} {}  {}",
                s.index,
                s.name,
                s.id,
                if s.cached { "cached" } else { "runs" }
            );
            if let Some(packages) = &s.packages {
                println!("     {packages}");
            }
        }
        return Ok(());
    }
    let outcome = require_private_mounts()
        .and_then(|()| executor::build(&pipeline, &config, Arc::clone(&reporter)))
        .and_then(|report| {
            if let Some(path) = &args.provenance {
                write_provenance(
                    path,
                    &report,
                    &osbuild::provenance::Invocation {
                        pipeline_path: args.pipeline.as_deref().unwrap_or(std::path::Path::new("")),
                        pipeline_bytes: pipeline_text.as_bytes(),
                        from: config.from.as_deref(),
                        policy: config.policy.as_ref(),
                        started: started_at,
                        finished: osbuild::mtime::unix_now(),
                        cache: config.cache,
                    },
                    provenance_key.as_ref(),
                )?;
            }
            Ok(report)
        });
    if want_result {
        let result = result_json(
            pipeline.name.as_deref(),
            started.elapsed(),
            outcome.as_ref(),
        );
        reporter.build_finished(&result);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
        }
    }
    outcome.map(|_| ())
}

/// `--provenance`: the statement, signed if a key was given.
fn write_provenance(
    path: &std::path::Path,
    report: &executor::BuildReport,
    invocation: &osbuild::provenance::Invocation,
    key: Option<&osbuild::signing::SigningKey>,
) -> Result<(), BuildError> {
    let statement = osbuild::provenance::statement(report, invocation)
        .context("making the provenance (--provenance)")?;
    let bytes = osbuild::provenance::encode(&statement, key)
        .context("encoding the provenance (--provenance)")?;
    std::fs::write(path, bytes).with_context(|| {
        format!(
            "writing the provenance to {} (--provenance)",
            path.display()
        )
    })?;
    Ok(())
}

/// `osbuild verify-provenance`.
fn verify_provenance(
    file: &std::path::Path,
    key: &std::path::Path,
    subjects: &[PathBuf],
) -> anyhow::Result<()> {
    let key = osbuild::signing::VerifyingKey::load(key)?;
    let bytes = osbuild::stage::read_regular_file(file, 256 << 20, true)
        .map_err(|e| anyhow::anyhow!("reading the provenance: {e}"))?;
    let verified = osbuild::provenance::verify(&bytes, &key, subjects)
        .map_err(|why| anyhow::anyhow!("{}: {why}", file.display()))?;
    println!(
        "{}: a good signature by {}; an SLSA v1 provenance with {} subject{}",
        file.display(),
        key.describe(),
        verified.statement.subject.len(),
        if verified.statement.subject.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    for (path, s) in subjects.iter().zip(&verified.subjects) {
        println!(
            "{}: the subject {:?} (sha256:{})",
            path.display(),
            s.name.as_deref().unwrap_or_default(),
            s.digest
                .get("sha256")
                .map(String::as_str)
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The result object of `--json` (and the `build-finished` event).
fn result_json(
    name: Option<&str>,
    elapsed: Duration,
    outcome: Result<&executor::BuildReport, &BuildError>,
) -> serde_json::Value {
    use serde_json::json;
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let file = |p: &std::path::Path| {
        json!({
            "path": p.display().to_string(),
            "size": std::fs::metadata(p).map(|m| m.len()).ok(),
            "sha256": osbuild::store::ids::file_digest(p).ok(),
        })
    };
    match outcome {
        Ok(r) => json!({
            "success": true,
            "pipeline": name,
            "duration_ms": ms(elapsed),
            "stages": r.stages.iter().map(|s| {
                let mut v = json!({
                "index": s.index,
                "name": s.name,
                "id": s.id,
                "duration_ms": ms(s.duration),
                "cached": s.cached,
                "changes": s.changes,
                "packages": s.packages,
            });
                if let Some(p) = &s.pulled {
                    v["pulled"] = p.clone().into();
                }
                v
            }).collect::<Vec<_>>(),
            "outputs": r.outputs.iter().map(|p| file(p)).collect::<Vec<_>>(),
            "saved": r.saved.as_deref().map(file),
            "sbom": r.sbom.as_deref().map(file),
            "from": r.from_digest.as_ref().map(|digest| json!({
                "sha256": digest,
                "hashed": r.from_hashed,
            })),
            "remote": r.remote,
        }),
        Err(e) => {
            let error = match e {
                BuildError::Input(errors) => json!({
                    "kind": "input",
                    "message": e.to_string(),
                    "errors": errors.iter().map(|i| json!({"path": i.path, "message": i.message})).collect::<Vec<_>>(),
                }),
                BuildError::Stage {
                    index,
                    name,
                    message,
                    tail,
                } => json!({
                    "kind": "stage",
                    "stage": {"index": index, "name": name},
                    "message": message,
                    "output_tail": tail,
                }),
                BuildError::Interrupted => json!({"kind": "interrupted", "message": "interrupted"}),
                BuildError::Other(e) => json!({"kind": "other", "message": format!("{e:#}")}),
            };
            json!({
                "success": false,
                "pipeline": name,
                "duration_ms": ms(elapsed),
                "exit_code": e.exit_code(),
                "error": error,
            })
        }
    }
}

fn stages(common: &CommonArgs, action: Option<StagesCommand>) -> anyhow::Result<()> {
    let registry = osbuild_builtins::registry(common.libdirs.clone());
    match action {
        None => {
            for name in registry.names() {
                match registry.find(&name) {
                    Ok(Some(s)) => println!(
                        "{:<28} {:<7} {}",
                        name,
                        s.kind().to_string(),
                        s.meta.summary
                    ),
                    Ok(None) => {}
                    Err(e) => println!("{name:<28} (invalid: {e})"),
                }
            }
        }
        Some(StagesCommand::Show { stage }) => {
            let s = if stage.ends_with(".wasm") || stage.contains('/') {
                Stage::load_file(std::path::Path::new(&stage)).map_err(anyhow::Error::msg)?
            } else {
                registry
                    .find(&stage)
                    .map_err(anyhow::Error::msg)?
                    .with_context(|| {
                        format!("no stage named {stage:?}; `osbuild stages` lists them")
                    })?
            };
            let mut v = serde_json::to_value(&s.meta)?;
            v["digest"] = serde_json::Value::String(format!("sha256:{}", s.digest));
            v["origin"] = serde_json::Value::String(s.origin.to_string());
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

fn store_command(common: &CommonArgs, action: StoreCommand) -> anyhow::Result<()> {
    let root = common.store.clone().unwrap_or_else(default_store);
    match action {
        StoreCommand::List { json, packages } => {
            let store = osbuild::store::Store::open(&root)?;
            let objects = store.list()?;
            let cached = osbuild::store::packages::PackageCache::open(store.root())?.list()?;
            let cached_size: u64 = cached.iter().map(|c| c.size).sum();
            if json {
                let v = serde_json::json!({
                    "objects": objects,
                    "packages": {"count": cached.len(), "size": cached_size, "files": cached},
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("{:<64}  {:<24} {:>10}  last used", "id", "stage", "size");
            let mut total = 0;
            for o in &objects {
                total += o.info.size;
                println!(
                    "{:<64}  {:<24} {:>10}  {}",
                    o.info.id,
                    o.info.stage,
                    human_size(o.info.size),
                    o.last_used
                );
            }
            println!("{} objects, {}", objects.len(), human_size(total));
            if packages {
                println!(
                    "{:<64}  {:<40} {:>10}  last used",
                    "sha256", "package file", "size"
                );
                for c in &cached {
                    println!(
                        "{:<64}  {:<40} {:>10}  {}",
                        c.sha256,
                        c.name,
                        human_size(c.size),
                        c.last_used
                    );
                }
            }
            println!(
                "package cache: {} files, {}",
                cached.len(),
                human_size(cached_size)
            );
        }
        StoreCommand::Clear { objects } => {
            let n = osbuild::store::Store::clear(&root, !objects)?;
            println!("removed {n} objects from {}", root.display());
        }
    }
    Ok(())
}

fn credentials(common: &CommonArgs) -> Result<osbuild_registry::auth::Credentials, BuildError> {
    osbuild_registry::auth::Credentials::load(common.registry_auth.as_deref())
        .map_err(|e| BuildError::input("--registry-auth", e))
}

/// The stages a command can name: `--libdir`s, the built-ins, and (by
/// reference) registries, whose stages are kept in the store.
fn stage_registry(common: &CommonArgs) -> Result<osbuild::stage::Registry, BuildError> {
    Ok(osbuild_builtins::registry(common.libdirs.clone()).with_remote(remote_stages(common)?))
}

fn remote_stages(common: &CommonArgs) -> Result<osbuild::stage::remote::RemoteStages, BuildError> {
    Ok(osbuild::stage::remote::RemoteStages {
        store: common.store.clone().unwrap_or_else(default_store),
        auth_file: common.registry_auth.clone(),
        allowed: common.policy()?.and_then(|p| p.stage_registries),
        stages_dir: osbuild::store::stages_dir,
    })
}

fn parse_location(text: &str) -> Result<osbuild_registry::Location, String> {
    osbuild_registry::Location::parse(text).map_err(|e| e.to_string())
}

/// `--cache-from`, `--cache-to` and the credentials for them.
fn remote_config(args: &BuildArgs) -> Result<executor::RemoteConfig, BuildError> {
    let any = !args.cache_from.is_empty() || args.cache_to.is_some();
    if any && args.no_cache {
        return Err(BuildError::input(
            "--no-cache",
            "--cache-from and --cache-to share the store's results: they do not go with --no-cache",
        ));
    }
    let credentials = if any {
        credentials(&args.common)?
    } else {
        Default::default()
    };
    Ok(executor::RemoteConfig {
        from: args.cache_from.clone(),
        to: args.cache_to.clone(),
        required: args.cache_from_required,
        key: args
            .cache_key
            .as_deref()
            .map(osbuild::signing::SigningKey::load)
            .transpose()
            .map_err(|e| BuildError::input("--cache-key", format!("{e:#}")))?
            .map(std::sync::Arc::new),
        credentials,
    })
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// What reading a built pipeline's records needs: the build's config as
/// far as it names the results.
fn records_config(common: &CommonArgs, from: Option<PathBuf>) -> Result<BuildConfig, BuildError> {
    let policy = common.policy()?;
    Ok(BuildConfig {
        lock: None,
        limits: limits(None, None, policy.as_ref()),
        policy,
        cache: true,
        remote: Default::default(),
        cache_max_size: u64::MAX,
        handoff: None,
        from,
        save: None,
        output_dir: PathBuf::from("."),
        store: common.store.clone().unwrap_or_else(default_store),
        registry: stage_registry(common)?,
        allowed_host_paths: common.allowed_host_paths.clone(),
        max_tree_size: parse_size(DEFAULT_MAX_TREE_SIZE).expect("a valid default"),
        sbom: None,
        provenance: false,
    })
}

/// `osbuild lock`.
fn lock_command(
    common: &CommonArgs,
    path: &std::path::Path,
    update: bool,
    output: Option<PathBuf>,
    from: Option<PathBuf>,
) -> Result<(), BuildError> {
    let pipeline = load_pipeline(Some(path))?;
    let mut config = records_config(common, from)?;
    // The stages' outputs (a lock runs them only for their packages) go
    // to a directory of their own, removed after.
    let outputs = tempfile::Builder::new()
        .prefix("osbuild-lock-outputs-")
        .tempdir()
        .context("creating a directory for the stages' outputs")?;
    config.output_dir = outputs.path().to_path_buf();
    require_private_mounts()?;
    let remote = remote_stages(common)?;
    crate::lock::run(
        crate::lock::LockRequest {
            pipeline_path: path,
            pipeline: &pipeline,
            output,
            update,
            remote_stages: Some(&remote),
        },
        config,
        Arc::new(PlainReporter { quiet: false }),
    )
}

/// `osbuild changes`.
fn changes(
    common: &CommonArgs,
    path: &std::path::Path,
    from: Option<PathBuf>,
    only: Option<&str>,
    json: bool,
) -> Result<(), BuildError> {
    let pipeline = load_pipeline(Some(path))?;
    let config = records_config(common, from)?;
    let mut records = executor::records(&pipeline, &config)?;
    if let Some(only) = only {
        let total = records.len();
        records.retain(|r| match only.parse::<usize>() {
            Ok(n) => r.index + 1 == n,
            Err(_) => r.name == only,
        });
        if records.is_empty() {
            return Err(BuildError::input(
                "--stage",
                format!(
                    "{only:?}: the pipeline has no such stage (give its number, 1 to {total}, or its name)"
                ),
            ));
        }
    }
    let missing: Vec<String> = records
        .iter()
        .filter(|r| r.record.is_none())
        .map(|r| format!("stage {} ({})", r.index + 1, r.name))
        .collect();
    if !missing.is_empty() {
        return Err(BuildError::input(
            path.display().to_string(),
            format!(
                "{} {} no change record in the store {}: build the pipeline first (with the same --from and --store), then ask again",
                missing.join(", "),
                if missing.len() == 1 { "has" } else { "have" },
                config.store.display()
            ),
        ));
    }
    if json {
        let out: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let record = r.record.as_ref().expect("checked above");
                serde_json::json!({
                    "index": r.index,
                    "name": r.name,
                    "id": r.id,
                    "record": r.location,
                    "counts": record.counts(),
                    "changes": record.changes,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for r in &records {
        let record = r.record.as_ref().expect("checked above");
        let c = record.counts();
        let _ = writeln!(
            out,
            "# stage {} {} ({} created, {} modified, {} removed)",
            r.index + 1,
            r.name,
            c.created,
            c.modified,
            c.removed
        );
        let _ = out.write_all(record.render().as_bytes());
    }
    Ok(())
}

fn audit(
    common: &CommonArgs,
    path: &std::path::Path,
    json: bool,
    changes_from: Option<Option<PathBuf>>,
) -> Result<(), BuildError> {
    let pipeline = load_pipeline(Some(path))?;
    let policy = common.policy()?;
    let registry = stage_registry(common)?;
    let store = common.store.clone().unwrap_or_else(default_store);
    let rules = osbuild::reach::host_paths::HostPathRules::for_build(
        &common.allowed_host_paths,
        policy.as_ref(),
        &store,
    )?;
    let (planned, errors) = executor::plan_stages(&pipeline, &registry, &rules);
    if !errors.is_empty() {
        return Err(BuildError::Input(errors));
    }
    let mut audits = osbuild::audit::audit(&planned, policy.as_ref());
    if let Some(from) = changes_from {
        let records = executor::records(&pipeline, &records_config(common, from)?)?;
        osbuild::audit::add_changes(&mut audits, &records);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&audits).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", osbuild::audit::render(&audits));
    }
    let refusals = osbuild::audit::refusals(&audits);
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(BuildError::Input(refusals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_a_huge_one_is_refused() {
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        let e = parse_size("99999999999T").unwrap_err();
        assert!(e.contains("is not a size"), "{e}");
    }
}
