//! The network of a native stage that declares `network`: the private
//! network namespace nspawn makes for the container, with outbound access
//! through slirp4netns (user-mode networking: the stage's packets become
//! ordinary sockets of an unprivileged, sandboxed slirp4netns process on
//! the host), and nothing else. The stage sees one interface, `tap0`, not
//! the host's; with `--disable-host-loopback` it cannot reach services on
//! the host's 127.0.0.1; and it holds neither `CAP_NET_RAW` nor
//! `CAP_NET_ADMIN` (no packet sockets, no reconfiguring).
//!
//! The namespace belongs to the stage's user namespace (nspawn 252 cannot
//! join a network namespace of another one), so slirp4netns attaches to
//! it once the container is up; the runner waits for it before starting
//! the stage ([`wait_for_network`]).

#![allow(unsafe_code, reason = "pre_exec for slirp4netns")]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The resolver slirp4netns answers on inside the namespace (it forwards
/// to the host's).
pub const RESOLV_CONF: &str = "nameserver 10.0.2.3\n";

/// The variable that tells the runner which file says the network is up.
pub const READY_ENV: &str = "OSBUILD_NETWORK_READY";

/// Capabilities a network stage never holds, even `privileged`.
pub const DROPPED: &str = "CAP_NET_RAW,CAP_NET_ADMIN";

/// slirp4netns attached to a container's network; stopped on drop.
pub struct Slirp {
    child: Child,
}

impl Slirp {
    /// Attaches to the network namespace of the container started under
    /// `root_pid` (the unshare process), then writes `ready`.
    pub fn attach(root_pid: u32, ready: &Path) -> anyhow::Result<Slirp> {
        let pid = container_process(root_pid, Duration::from_secs(20))?;
        let (ready_r, ready_w) = rustix::pipe::pipe().context("creating a pipe")?;
        let ready_fd = ready_w.as_raw_fd();
        let mut cmd = Command::new("slirp4netns");
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-sandbox",
            "--enable-seccomp",
        ])
        .arg(format!("--userns-path=/proc/{pid}/ns/user"))
        .arg(format!("--ready-fd={ready_fd}"))
        .arg(pid.to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(move || {
                let flags = libc::fcntl(ready_fd, libc::F_GETFD);
                libc::fcntl(ready_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().context(
            "starting slirp4netns, which gives network stages their private network \
             (apt-get install slirp4netns)",
        )?;
        drop(ready_w);
        let mut slirp = Slirp { child };
        // slirp4netns writes "1" once tap0 is up and configured.
        let mut buf = [0u8; 1];
        if rustix::io::read(&ready_r, &mut buf).unwrap_or(0) != 1 {
            let _ = slirp.child.kill();
            let mut text = String::new();
            if let Some(mut e) = slirp.child.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut text);
            }
            anyhow::bail!(
                "slirp4netns did not set up the stage's network: {}",
                text.trim()
            );
        }
        std::fs::write(ready, b"up\n").context("telling the stage its network is up")?;
        Ok(slirp)
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process under `root` in another network namespace than osbuild's:
/// the container's.
fn container_process(root: u32, within: Duration) -> anyhow::Result<u32> {
    let ours = std::fs::read_link("/proc/self/ns/net").context("reading our network namespace")?;
    let deadline = Instant::now() + within;
    loop {
        let mut queue = vec![root];
        while let Some(pid) = queue.pop() {
            if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net"))
                && ns != ours
            {
                return Ok(pid);
            }
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
                queue.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the stage's container did not start within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In the runner: waits until osbuild says the network is up.
pub fn wait_for_network() -> Result<(), String> {
    let Some(file) = std::env::var_os(READY_ENV) else {
        return Ok(());
    };
    let file = PathBuf::from(file);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        if Instant::now() >= deadline {
            return Err("the stage's network did not come up within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
