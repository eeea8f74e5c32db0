//! The native host: runs a native stage (any executable) under
//! systemd-nspawn, in a user namespace of its own, on a root file system
//! built for it.
//!
//! The stage's root is 0 only inside its namespace: on the host it is the
//! first id of a range no one else uses ([`userns`]), so no capability it
//! holds (not even a `privileged` stage's) is a capability on the host.
//! The tree keeps its real owners through id-mapped mounts. Its root file
//! system ([`rootfs`]) holds the host's `/usr` read-only and a generated
//! `/etc`, never the host's `/`: no `/etc/shadow`, `/root`, `/home`, store
//! or other build to read. Inside, the stage finds the tree at
//! `/run/osbuild/tree`, the output directory at `/run/osbuild/output`,
//! itself at `/run/osbuild/stage`, fresh `/tmp` and `/var/tmp`,
//! `SOURCE_DATE_EPOCH`, and its options as JSON on stdin. No network
//! unless it declares the `network` capability; no loop devices unless it
//! declares `devices`.
//!
//! All mounts live in namespaces that die with the nspawn process; nspawn
//! dies with osbuild (`PR_SET_PDEATHSIG`), so nothing outlives a build, not
//! even one that is killed with SIGKILL.

#![allow(unsafe_code, reason = "pre_exec for the container process")]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::host::{Invocation, NodeRequest, Ran, StageError, StageHost};
use crate::stage::{Code, Device, Stage};

mod devices;
mod host_binds;
mod network;
mod rootfs;

/// Where a native stage sees things.
pub const TREE: &str = "/run/osbuild/tree";
pub const OUTPUT: &str = "/run/osbuild/output";
pub const EXECUTABLE: &str = "/run/osbuild/stage";

/// Where the stage runner (the osbuild binary itself) and its status
/// directory are inside the container.
pub const RUNNER: &str = "/run/osbuild/runner";
pub const STATUS: &str = "/run/osbuild/status";
/// The hidden subcommand that runs a stage inside the container.
pub const RUNNER_COMMAND: &str = "__native-stage-runner";

/// Capabilities a stage loses unless it declares `privileged`.
const DROPPED_CAPABILITIES: &[&str] = &[
    "CAP_SYS_ADMIN",
    "CAP_MKNOD",
    "CAP_SYS_BOOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TTY_CONFIG",
    "CAP_LINUX_IMMUTABLE",
];

/// Runs inside the new namespaces: a private tmpfs for nspawn's state
/// (locks, per-machine directories; nothing left on the host, and no
/// complaints where /run is not a tmpfs), then nspawn on the stage's
/// root, read-only. Without user namespaces (`root` is `host`), the
/// host's / is bound there without its submounts as the root.
const WRAPPER: &str = r#"set -e
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755 osbuild-nspawn /run/systemd/nspawn
nspawn=$1; root=$2; shift 2
if [ "$root" = host ]; then
    root=/run/systemd/nspawn/root
    mkdir "$root"
    mount --bind / "$root"
fi
exec "$nspawn" -D "$root" --read-only "$@"
"#;

use crate::reach::grants::LOOP_IN_USERNS;

/// Where a native stage asks for device nodes it cannot make itself (the
/// SDK finds it in `OSBUILD_NODE_REQUESTS`).
const NODE_REQUESTS: &str = "/run/osbuild/status/nodes";

/// Directories on file systems of their own, which a bind of / leaves out.
fn separate_mounts() -> Vec<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::metadata("/") else {
        return Vec::new();
    };
    ["/usr", "/etc", "/opt", "/var/lib"]
        .into_iter()
        .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.dev() != root.dev()))
        .collect()
}

/// How the stage ended, as the runner writes it to the status directory.
/// (nspawn's own exit status cannot tell a signal from `exit 255`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerResult {
    Exited(i32),
    Signaled(i32),
}

impl RunnerResult {
    pub fn parse(text: &str) -> Option<RunnerResult> {
        let (kind, n) = text.trim().split_once(' ')?;
        let n = n.parse().ok()?;
        match kind {
            "exited" => Some(RunnerResult::Exited(n)),
            "signaled" => Some(RunnerResult::Signaled(n)),
            _ => None,
        }
    }

    pub fn render(&self) -> String {
        match self {
            RunnerResult::Exited(n) => format!("exited {n}\n"),
            RunnerResult::Signaled(n) => format!("signaled {n}\n"),
        }
    }
}

/// The runner, inside the container: runs the stage with the container's
/// stdio, records how it ended, and exits like it.
pub fn runner_main(stage: &str) -> i32 {
    if let Err(e) = network::wait_for_network() {
        eprintln!("osbuild: {e}");
        return 127;
    }
    let status = match Command::new(stage).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("osbuild: cannot run the stage {stage}: {e}");
            return 127;
        }
    };
    let result = match (status.code(), status.signal()) {
        (Some(c), _) => RunnerResult::Exited(c),
        (None, Some(s)) => RunnerResult::Signaled(s),
        (None, None) => RunnerResult::Exited(1),
    };
    if let Err(e) = std::fs::write(Path::new(STATUS).join("result"), result.render()) {
        eprintln!("osbuild: cannot record the stage's status: {e}");
    }
    status.code().unwrap_or(1)
}

pub struct NativeHost {
    /// A directory of this build's alone, where the runner and the stages'
    /// executables are written before they run.
    private: PathBuf,
    runner: std::sync::OnceLock<PathBuf>,
}

fn find_nspawn() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("systemd-nspawn"))
        .find(|p| p.is_file())
}

/// A signal's name as strsignal(3) gives it, from a table: strsignal is
/// not safe to call while other threads run, and the build has several.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "Hangup",
        libc::SIGINT => "Interrupt",
        libc::SIGQUIT => "Quit",
        libc::SIGILL => "Illegal instruction",
        libc::SIGTRAP => "Trace/breakpoint trap",
        libc::SIGABRT => "Aborted",
        libc::SIGBUS => "Bus error",
        libc::SIGFPE => "Floating point exception",
        libc::SIGKILL => "Killed",
        libc::SIGUSR1 => "User defined signal 1",
        libc::SIGSEGV => "Segmentation fault",
        libc::SIGUSR2 => "User defined signal 2",
        libc::SIGPIPE => "Broken pipe",
        libc::SIGALRM => "Alarm clock",
        libc::SIGTERM => "Terminated",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "File size limit exceeded",
        libc::SIGSYS => "Bad system call",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

impl NativeHost {
    /// `private` is a directory of the build's own (in the store, which is
    /// its owner's alone); it is created when a native stage first runs.
    pub fn new(private: PathBuf) -> NativeHost {
        NativeHost {
            private,
            runner: std::sync::OnceLock::new(),
        }
    }

    /// The runner is this osbuild binary, copied once per build into the
    /// build's private directory: the file osbuild started from may be
    /// replaced while it runs (a rebuild, an upgrade), nspawn cannot bind
    /// /proc/self/exe, and a copy shared between builds would be code that
    /// every later native stage runs, trusted on its name alone.
    fn runner(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = self.runner.get() {
            return Ok(p.clone());
        }
        std::fs::create_dir_all(&self.private)
            .with_context(|| format!("creating {}", self.private.display()))?;
        let path = self.private.join("runner");
        crate::place::copy_exe(Path::new("/proc/self/exe"), &path)
            .context("copying the osbuild executable for the stage runner")?;
        Ok(self.runner.get_or_init(|| path).clone())
    }

    /// The stage's executable, written from the bytes its digest was taken
    /// of (for a `--libdir` stage too: the file there may change after it
    /// was hashed) into the build's private directory.
    fn executable(&self, stage: &Stage) -> anyhow::Result<PathBuf> {
        let Code::Native(bytes, _) = &stage.code else {
            anyhow::bail!("{} is not a native stage", stage.name());
        };
        let dir = self.private.join(&stage.digest);
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
}

impl StageHost for NativeHost {
    /// Runs the stage; returns the device nodes it asked for.
    fn run(&self, inv: Invocation<'_>) -> Result<Ran, StageError> {
        let nspawn = find_nspawn().ok_or_else(|| {
            StageError::Refused(
                "systemd-nspawn is not installed; native stages need it: apt-get install systemd-container"
                    .into(),
            )
        })?;
        let exe = self.executable(inv.stage)?;
        let runner = self.runner()?;
        let caps = &inv.stage.meta.capabilities;
        let status_dir = tempfile::Builder::new()
            .prefix("status-")
            .tempdir_in(inv.scratch)
            .context("creating the stage's status directory")?;
        std::fs::create_dir_all(inv.output_dir).with_context(|| {
            format!("creating the output directory {}", inv.output_dir.display())
        })?;

        let tree_bind = if !caps.tree.writable() {
            "--bind-ro"
        } else {
            "--bind"
        };
        let mut args: Vec<String> = vec![
            "--quiet".into(),
            "--register=no".into(),
            "--keep-unit".into(),
            "--link-journal=no".into(),
            // The machine's state lives in a private tmpfs: one name for all.
            "--machine=osbuild".into(),
            // A stub init reaps zombies and passes signals on.
            "--as-pid2".into(),
            // Without a tty nspawn would not forward stdin.
            "--console=pipe".into(),
            // The root's /etc is made for the stage (rootfs.rs).
            "--resolv-conf=off".into(),
            "--timezone=off".into(),
            format!("--setenv=SOURCE_DATE_EPOCH={}", inv.source_epoch),
            "--setenv=LC_ALL=C.UTF-8".into(),
            "--setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "--tmpfs=/tmp".into(),
            "--tmpfs=/var/tmp".into(),
            // The tree is id-mapped already (by the workspace).
            format!("{tree_bind}={}:{TREE}", inv.tree.display()),
            format!("--bind-ro={}:{EXECUTABLE}", exe.display()),
            format!("--bind-ro={}:{RUNNER}", runner.display()),
            format!("--setenv=OSBUILD_NODE_REQUESTS={NODE_REQUESTS}"),
            "--chdir=/".into(),
        ];
        // Binds the stage writes through: id-mapped, so that its root
        // owns them inside its namespace.
        let idmap = if inv.ids.is_some() { ":idmap" } else { "" };
        args.push(format!(
            "{}={}:{OUTPUT}{idmap}",
            if caps.output { "--bind" } else { "--bind-ro" },
            inv.output_dir.display()
        ));
        args.push(format!(
            "--bind={}:{STATUS}{idmap}",
            status_dir.path().display()
        ));
        if let Some(p) = &inv.packages {
            use osbuild_lock::paths;
            // Not id-mapped: root-owned and read-only to the stage's root.
            args.push(format!("--bind-ro={}:{}", p.cache.display(), paths::CACHE));
            args.push(format!(
                "--bind={}:{}{idmap}",
                p.incoming.display(),
                paths::NEW
            ));
            if let Some(lock) = p.lock {
                args.push(format!("--bind-ro={}:{}", lock.display(), paths::LOCK));
            }
        }
        let root_dir = tempfile::Builder::new()
            .prefix("root-")
            .tempdir_in(inv.scratch)
            .context("creating the stage's root directory")?;
        let root = match inv.ids {
            Some(ids) => {
                args.push(ids.nspawn_arg());
                // The root is the range's already; the rest is bound below.
                args.push("--private-users-ownership=off".into());
                let root = rootfs::RootFs::build(root_dir.path(), ids, caps.network)?;
                args.extend(root.nspawn_args().iter().cloned());
                Some(root)
            }
            None => {
                // A bind of / does not include other file systems.
                for dir in separate_mounts() {
                    args.push(format!("--bind-ro={dir}"));
                }
                None
            }
        };
        let private_network = caps.network && inv.ids.is_some();
        if !caps.network {
            args.push("--private-network".into());
        } else if private_network {
            // Its own network, which slirp4netns connects once it is up.
            args.push("--private-network".into());
            args.push(format!("--drop-capability={}", network::DROPPED));
            args.push(format!("--setenv={}={STATUS}/network", network::READY_ENV));
        } else if Path::new("/run/systemd/resolve").is_dir() {
            // /etc/resolv.conf may point there (systemd-resolved hosts).
            args.push("--bind-ro=/run/systemd/resolve".into());
        }
        if caps.privileged {
            // gpg (apt) wants to lock its memory.
            args.push("--capability=CAP_IPC_LOCK".into());
        } else {
            // With CAP_SYS_ADMIN a stage could remount the (read-only) host
            // root writable; with CAP_MKNOD make device nodes for the host's
            // disks. Only stages that declare `privileged` keep them: a
            // device grants its node, never a capability.
            args.push(format!(
                "--drop-capability={}",
                DROPPED_CAPABILITIES.join(",")
            ));
        }
        let mut nodes = Vec::new();
        if inv.ids.is_some() && caps.devices.contains(&Device::Loop) {
            // The audit refuses it before anything runs; never reached.
            return Err(anyhow::anyhow!("{LOOP_IN_USERNS}").into());
        }
        for device in &caps.devices {
            nodes.extend(device_nodes(*device)?);
        }
        let _devices = match inv.ids {
            Some(ids) if !nodes.is_empty() => {
                let made = devices::DeviceNodes::make(root_dir.path(), &nodes, ids)?;
                args.extend(made.nspawn_args().iter().cloned());
                Some(made)
            }
            _ => {
                args.extend(nodes.iter().map(|n| format!("--bind={n}")));
                None
            }
        };
        let (_host_binds, pairs) = host_binds::HostBinds::new(inv.host_paths, inv.scratch)?;
        // Not id-mapped: the stage reads them as any other user would.
        for (bound, seen_at) in &pairs {
            args.push(format!(
                "--bind-ro={}:{}",
                bound.display(),
                seen_at.display()
            ));
        }
        args.extend([RUNNER.into(), RUNNER_COMMAND.into(), EXECUTABLE.into()]);

        // nspawn runs as PID 1 of a pid namespace of its own (so when it
        // dies, for whatever reason, the kernel kills everything in the
        // container), in a mount namespace of its own (so no mount is ever
        // seen on the host), with the host's / bound at a private point.
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
            "--mount",
            "--propagation",
            "private",
            // A /proc of the new pid namespace: nspawn looks itself up
            // there (by its pid in that namespace) when it tears down the
            // container's network namespace.
            "--mount-proc",
            "--",
        ])
        .arg("/bin/sh")
        .arg("-c")
        .arg(WRAPPER)
        .arg("osbuild-nspawn")
        .arg(&nspawn)
        .arg(root.as_ref().map_or(Path::new("host"), |r| r.path()))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(inv.stdout)
        .stderr(inv.stderr);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Our own process group: a Ctrl-C on the terminal reaches
                // osbuild, which stops the stage itself.
                libc::setpgid(0, 0);
                // Die with osbuild, whatever kills it; --kill-child takes
                // nspawn and the container along.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .context("starting unshare (util-linux) for systemd-nspawn")?;
        let _slirp = if private_network {
            match network::Slirp::attach(child.id(), &status_dir.path().join("network")) {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e.into());
                }
            }
        } else {
            None
        };

        let mut input = inv.options.clone();
        input.insert("tree".into(), TREE.into());
        input.insert("output".into(), OUTPUT.into());
        let json = serde_json::to_vec(&input).context("encoding the options")?;
        if let Some(mut stdin) = child.stdin.take() {
            // A stage may exit without reading its options: not our error.
            let _ = stdin.write_all(&json);
        }

        let deadline = Instant::now() + inv.limits.timeout;
        let mut stopped: Option<StageError> = None;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for systemd-nspawn")? {
                break status;
            }
            if stopped.is_none() {
                if (inv.interrupted)() {
                    stopped = Some(StageError::Interrupted);
                } else if Instant::now() >= deadline {
                    stopped = Some(StageError::Timeout(inv.limits.timeout));
                }
                if stopped.is_some() {
                    // unshare ignores SIGTERM; killing it kills the pid
                    // namespace, and nspawn's container with it.
                    let _ = child.kill();
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(why) = stopped {
            return Err(why);
        }
        let result = read_status(&status_dir.path().join("result"), 64);
        match result.as_deref().map(RunnerResult::parse) {
            Some(Some(RunnerResult::Exited(0))) => {
                let requests = read_status(&status_dir.path().join("nodes"), MAX_NODE_REQUESTS)
                    .unwrap_or_default();
                Ok(Ran {
                    device_nodes: NodeRequest::parse_all(&requests)?,
                    resolved: match inv.packages {
                        Some(_) => read_resolved(status_dir.path())?,
                        None => None,
                    },
                })
            }
            Some(Some(RunnerResult::Exited(c))) => Err(StageError::Failed {
                message: format!("exited with status {c}"),
                option: None,
            }),
            Some(Some(RunnerResult::Signaled(s))) => Err(StageError::Crashed(format!(
                "killed by signal {s} ({})",
                signal_name(s)
            ))),
            _ => Err(StageError::Host(anyhow::anyhow!(
                "systemd-nspawn could not run the stage ({status}); its messages are above"
            ))),
        }
    }
}

/// The runner's status file. The stage could have replaced it (the status
/// directory is writable inside the container) with a symlink to
/// `/dev/zero`, a FIFO or a huge file: opened without following links or
/// blocking, only a regular file is read, and only its first bytes.
fn read_status(path: &Path, max: u64) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(max).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The most a package stage's report may be (~20 000 packages).
const MAX_RESOLVED: u64 = 32 << 20;

/// What a package stage reports it installed, if it did: checked field by
/// field (it becomes a lock, and names files and URLs).
fn read_resolved(status: &Path) -> Result<Option<osbuild_lock::Resolved>, StageError> {
    let path = status.join("packages.json");
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let bad = |why: String| StageError::Failed {
        message: format!("its report of the packages it installed is unusable: {why}"),
        option: None,
    };
    let text = read_status(&path, MAX_RESOLVED + 1)
        .ok_or_else(|| bad("not a regular file of text".into()))?;
    if text.len() as u64 > MAX_RESOLVED {
        return Err(bad(format!("larger than {MAX_RESOLVED} bytes")));
    }
    let resolved: osbuild_lock::Resolved =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    resolved.check("report").map_err(|e| bad(e.to_string()))?;
    Ok(Some(resolved.sorted()))
}

/// The most a stage may write to its node requests.
const MAX_NODE_REQUESTS: u64 = 64 * 1024;

impl NodeRequest {
    fn parse_all(text: &str) -> anyhow::Result<Vec<NodeRequest>> {
        text.lines()
            .map(|line| {
                NodeRequest::parse(line).ok_or_else(|| {
                    anyhow::anyhow!(
                        "the stage asked for a device node in a form osbuild does not know: {:?}",
                        line.chars().take(200).collect::<String>()
                    )
                })
            })
            .collect()
    }

    fn parse(line: &str) -> Option<NodeRequest> {
        let mut parts = line.splitn(4, ' ');
        if parts.next()? != "c" {
            return None;
        }
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let path = parts.next()?.to_string();
        Some(NodeRequest { path, major, minor })
    }
}

/// Makes the nodes a stage asked for, in the tree as the host sees it.
/// Only harmless ones (null, zero, ...: the ones every stage may make),
/// and only where the stage left an empty regular file, whose mode and
/// owner the node takes.
pub fn make_requested_nodes(tree: &Path, requests: &[NodeRequest]) -> anyhow::Result<()> {
    if requests.is_empty() {
        return Ok(());
    }
    use osbuild_tree_fs::{EntryKind, NodeKind};
    let root = osbuild_tree_fs::Root::open(tree)
        .with_context(|| format!("opening the tree {}", tree.display()))?;
    for r in requests {
        let what = || format!("the device node {} ({}:{})", r.path, r.major, r.minor);
        if osbuild_tree_fs::harmless_device(NodeKind::CharDevice, r.major, r.minor).is_none() {
            anyhow::bail!(
                "{}: a native stage may ask only for null, zero, full, random, urandom, tty, console or ptmx",
                what()
            );
        }
        if !r.path.starts_with('/') || r.path.chars().any(char::is_control) {
            anyhow::bail!("{}: not an absolute path", what());
        }
        let path = Path::new(&r.path);
        let m = root
            .metadata(path, false)
            .with_context(|| format!("{}: its placeholder", what()))?;
        if m.kind != EntryKind::File || m.size != 0 || m.nlink != 1 {
            anyhow::bail!(
                "{}: the stage left something other than an empty file there",
                what()
            );
        }
        root.remove_file(path)?;
        root.make_node(
            path,
            NodeKind::CharDevice,
            m.mode & 0o7777,
            r.major,
            r.minor,
        )
        .with_context(what)?;
        root.set_owner(path, m.uid, m.gid, false)
            .with_context(what)?;
    }
    Ok(())
}

/// The host nodes bound in for `device` (those that exist here).
fn device_nodes(device: Device) -> anyhow::Result<Vec<String>> {
    let fixed = |path: &str| {
        if Path::new(path).exists() {
            Ok(vec![path.to_string()])
        } else {
            anyhow::bail!("the stage needs {path}, which this machine does not have")
        }
    };
    match device {
        Device::Fuse => fixed("/dev/fuse"),
        Device::Kvm => fixed("/dev/kvm"),
        Device::Loop => {
            let mut nodes = fixed("/dev/loop-control")?;
            for entry in std::fs::read_dir("/dev").context("listing /dev")?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.len() > 4
                    && name.starts_with("loop")
                    && name[4..].chars().all(|c| c.is_ascii_digit())
                {
                    nodes.push(format!("/dev/{name}"));
                }
            }
            nodes.sort();
            Ok(nodes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_as_strsignal_names_them() {
        assert_eq!(signal_name(libc::SIGKILL), "Killed");
        assert_eq!(signal_name(libc::SIGSEGV), "Segmentation fault");
        assert_eq!(signal_name(libc::SIGTERM), "Terminated");
        assert_eq!(signal_name(77), "signal 77");
    }

    #[test]
    fn the_runner_is_a_private_copy_of_osbuild() {
        let dir = tempfile::tempdir().unwrap();
        let host = NativeHost::new(dir.path().join("native"));
        let runner = host.runner().unwrap();
        assert!(runner.starts_with(dir.path()));
        assert_eq!(host.runner().unwrap(), runner);
        assert!(std::fs::read(&runner).unwrap() == std::fs::read("/proc/self/exe").unwrap());
        let m = std::fs::metadata(&runner).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn a_libdir_stage_runs_from_the_bytes_that_were_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("test.x");
        std::fs::write(&file, b"#!/bin/sh\necho hashed\n").unwrap();
        std::fs::write(
            dir.path().join("test.x.json"),
            r#"{"name": "test.x", "kind": "native", "summary": "x"}"#,
        )
        .unwrap();
        let stage = Stage::load_file(&file).unwrap();
        // Swapped after it was hashed (M4).
        std::fs::write(&file, b"#!/bin/sh\necho swapped\n").unwrap();
        let host = NativeHost::new(dir.path().join("native"));
        let exe = host.executable(&stage).unwrap();
        assert_eq!(std::fs::read(exe).unwrap(), b"#!/bin/sh\necho hashed\n");
    }
}
