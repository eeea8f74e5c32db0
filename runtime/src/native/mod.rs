//! The native host: runs a native stage (any executable) under
//! systemd-nspawn, with the build machine's root file system read-only as
//! the container's root.
//!
//! nspawn refuses `-D /`, so the child first enters a private mount
//! namespace and bind-mounts `/` (not recursively: no `/proc`, `/dev`,
//! `/run` of the host) onto a directory of the build, and nspawn boots that
//! read-only. Inside, the stage finds the tree at `/run/osbuild/tree`, the
//! output directory at `/run/osbuild/output`, itself at
//! `/run/osbuild/stage`, fresh `/tmp` and `/var/tmp`, `SOURCE_DATE_EPOCH`,
//! and its options as JSON on stdin. No network unless it declares the
//! `network` capability; no loop devices unless it declares `devices`.
//!
//! All mounts live in namespaces that die with the nspawn process; nspawn
//! dies with osbuild (`PR_SET_PDEATHSIG`), so nothing outlives a build, not
//! even one that is killed with SIGKILL.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::stage::{Code, Stage, TreeAccess};

/// Where a native stage sees things.
pub const TREE: &str = "/run/osbuild/tree";
pub const OUTPUT: &str = "/run/osbuild/output";
pub const EXECUTABLE: &str = "/run/osbuild/stage";

/// How long a stage gets to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(
        "systemd-nspawn is not installed; native stages need it: apt-get install systemd-container"
    )]
    NoNspawn,
    #[error("exited with status {0}")]
    Failed(i32),
    #[error("killed by signal {0} ({1})")]
    Signal(i32, String),
    #[error(
        "stopped after {0:?}: the stage exceeded its time limit (raise it with --timeout SECONDS)"
    )]
    Timeout(Duration),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Host(#[from] anyhow::Error),
}

/// One run of a native stage.
pub struct Invocation<'a> {
    pub stage: &'a Stage,
    pub tree: &'a Path,
    pub output_dir: &'a Path,
    /// The options, to which `"tree"` and `"output"` are added.
    pub options: &'a serde_json::Map<String, serde_json::Value>,
    pub source_epoch: i64,
    pub timeout: Duration,
    pub stdout: File,
    pub stderr: File,
    /// A directory of the build this run may use (the root mount point).
    pub work: &'a Path,
    /// Host paths the stage reads, bound read-only at the same place.
    pub host_paths: Vec<PathBuf>,
    pub interrupted: fn() -> bool,
}

pub struct NativeHost {
    /// Where built-in stages' executables are written out to be run.
    stage_dir: PathBuf,
}

fn find_nspawn() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("systemd-nspawn"))
        .find(|p| p.is_file())
}

fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local string.
    let s = unsafe { libc::strsignal(sig) };
    if s.is_null() {
        return format!("signal {sig}");
    }
    unsafe { std::ffi::CStr::from_ptr(s) }
        .to_string_lossy()
        .into_owned()
}

impl NativeHost {
    pub fn new(stage_dir: PathBuf) -> NativeHost {
        NativeHost { stage_dir }
    }

    /// The stage's executable on disk, writing a built-in one out first.
    fn executable(&self, stage: &Stage) -> anyhow::Result<PathBuf> {
        let Code::Native(bytes, path) = &stage.code else {
            anyhow::bail!("{} is not a native stage", stage.name());
        };
        if let Some(p) = path {
            return Ok(p.clone());
        }
        let dir = self.stage_dir.join(&stage.digest);
        let exe = dir.join(stage.name());
        if exe.is_file() {
            return Ok(exe);
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o755))?;
        tmp.persist(&exe)
            .with_context(|| format!("writing the stage executable {}", exe.display()))?;
        Ok(exe)
    }

    pub fn run(&self, inv: Invocation<'_>) -> Result<(), NativeError> {
        let nspawn = find_nspawn().ok_or(NativeError::NoNspawn)?;
        let exe = self.executable(inv.stage)?;
        let caps = &inv.stage.meta.capabilities;
        let root = inv.work.join("nspawn-root");
        std::fs::create_dir_all(&root).context("creating the stage's root mount point")?;
        std::fs::create_dir_all(inv.output_dir).with_context(|| {
            format!("creating the output directory {}", inv.output_dir.display())
        })?;

        let machine = format!("osbuild-{}-{}", std::process::id(), &inv.stage.digest[..12]);
        let mut cmd = Command::new(&nspawn);
        cmd.arg("--quiet")
            .arg("--register=no")
            .arg("--keep-unit")
            .arg("--link-journal=no")
            .arg(format!("--machine={machine}"))
            .arg("--as-pid2")
            .arg("--console=pipe")
            .arg("--resolv-conf=off")
            .arg("--timezone=off")
            .arg("-D")
            .arg(&root)
            .arg("--read-only")
            .arg(format!("--setenv=SOURCE_DATE_EPOCH={}", inv.source_epoch))
            .arg("--setenv=LC_ALL=C.UTF-8")
            .arg("--setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("--tmpfs=/tmp")
            .arg("--tmpfs=/var/tmp")
            .arg(format!(
                "--bind{}={}:{TREE}",
                if caps.tree == TreeAccess::Read {
                    "-ro"
                } else {
                    ""
                },
                inv.tree.display()
            ))
            .arg(format!("--bind={}:{OUTPUT}", inv.output_dir.display()))
            .arg(format!("--bind-ro={}:{EXECUTABLE}", exe.display()))
            .arg("--chdir=/");
        if !caps.network {
            cmd.arg("--private-network");
        } else if Path::new("/run/systemd/resolve").is_dir() {
            // /etc/resolv.conf may point there (systemd-resolved hosts).
            cmd.arg("--bind-ro=/run/systemd/resolve");
        }
        if caps.devices.iter().any(|d| d == "loop") {
            cmd.arg("--bind=/dev/loop-control");
            for entry in std::fs::read_dir("/dev").context("listing /dev")?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("loop")
                    && name[4..].chars().all(|c| c.is_ascii_digit())
                    && name.len() > 4
                {
                    cmd.arg(format!("--bind=/dev/{name}"));
                }
            }
            cmd.arg("--property=DeviceAllow=block-loop rwm");
            cmd.arg("--property=DeviceAllow=/dev/loop-control rwm");
        }
        for p in &inv.host_paths {
            cmd.arg(format!("--bind-ro={}", p.display()));
        }
        cmd.arg(EXECUTABLE);
        cmd.stdin(Stdio::piped())
            .stdout(inv.stdout)
            .stderr(inv.stderr);

        let root_c = CString::new(root.as_os_str().as_encoded_bytes()).context("root path")?;
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Our own process group: a Ctrl-C on the terminal reaches
                // osbuild, which stops the stage in order.
                libc::setpgid(0, 0);
                // Die with osbuild, whatever kills it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let none = c"none";
                let slash = c"/";
                if libc::mount(
                    none.as_ptr(),
                    slash.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::mount(
                    slash.as_ptr(),
                    root_c.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // nspawn keeps per-machine state under /run/systemd/nspawn
                // and will only clean it up on a tmpfs (where /run is not
                // one, it complains): give it a private tmpfs, gone with
                // this namespace.
                let state = c"/run/systemd/nspawn";
                libc::mkdir(c"/run/systemd".as_ptr(), 0o755);
                libc::mkdir(state.as_ptr(), 0o755);
                let tmpfs = c"tmpfs";
                if libc::mount(
                    tmpfs.as_ptr(),
                    state.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    c"mode=0755".as_ptr().cast(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", nspawn.display()))?;

        let mut input = inv.options.clone();
        input.insert("tree".into(), TREE.into());
        input.insert("output".into(), OUTPUT.into());
        let json = serde_json::to_vec(&input).context("encoding the options")?;
        if let Some(mut stdin) = child.stdin.take() {
            // A stage may exit without reading its options: not our error.
            let _ = stdin.write_all(&json);
        }

        let deadline = Instant::now() + inv.timeout;
        let mut stopping: Option<(Instant, NativeError)> = None;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for systemd-nspawn")? {
                break status;
            }
            match &stopping {
                None if (inv.interrupted)() => {
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    stopping = Some((Instant::now(), NativeError::Interrupted));
                }
                None if Instant::now() >= deadline => {
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    stopping = Some((Instant::now(), NativeError::Timeout(inv.timeout)));
                }
                Some((since, _)) if since.elapsed() > GRACE => {
                    let _ = child.kill();
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some((_, why)) = stopping {
            return Err(why);
        }
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            // nspawn reports a payload killed by a signal as 128 + signal.
            (Some(c), _) if c > 128 && c < 128 + 65 => {
                Err(NativeError::Signal(c - 128, signal_name(c - 128)))
            }
            (Some(c), _) => Err(NativeError::Failed(c)),
            (None, Some(sig)) => Err(NativeError::Signal(sig, signal_name(sig))),
            (None, None) => Err(NativeError::Failed(-1)),
        }
    }
}
