//! What each host grants a stage when it runs: the sandbox, in words an
//! auditor reads (`osbuild audit`'s "sandbox" line).

use std::path::PathBuf;

use crate::stage::metadata::Device;
use crate::stage::{Capabilities, Kind, Writes};

/// Whether native stages run in user namespaces on a root of their own:
/// yes, unless `OSBUILD_NATIVE_USERNS=0` (the host's root and `/`, as
/// before; for comparing the two). The nspawn host and the audit both ask
/// here, so what runs is what the audit says.
pub fn user_namespaces() -> bool {
    std::env::var_os("OSBUILD_NATIVE_USERNS").is_none_or(|v| v != "0")
}

/// Why `devices: ["loop"]` is refused to a stage in a user namespace. A
/// loop device is one of the host's, shared by every process on it: a
/// stage holding `/dev/loopN` (even a copy owned by its own root) reads and
/// writes whatever the host or another build attaches there, before, while
/// or after the stage uses it, and `/dev/loop-control` adds and removes the
/// host's devices. Claiming one for the stage alone cannot be done without
/// a window where it is free for anyone.
pub const LOOP_IN_USERNS: &str = "needs devices (loop), which a stage in a user namespace cannot have: loop devices are shared by the whole host, so the stage could read and write what the host or another build attaches to them; build file systems from files instead (mkfs.ext4 -d, as io.weldr.qcow2 does), or run with OSBUILD_NATIVE_USERNS=0, where the stage runs as the host's root and audit says so";

/// What a stage of `kind` declaring `caps`, with the resolved `host_paths`
/// its options name, is granted.
pub fn of(kind: Kind, caps: &Capabilities, host_paths: &[PathBuf]) -> Vec<String> {
    match kind {
        Kind::Wasm => wasm(caps),
        Kind::Native => native(caps, host_paths),
    }
}

fn tree(caps: &Capabilities) -> &'static str {
    match caps.tree.writes() {
        Writes::Nothing => "read-only",
        Writes::Everything => "read-write",
        Writes::Only(_) => {
            "writable, and what the stage changed outside its write set fails it and is thrown away"
        }
    }
}

fn wasm(caps: &Capabilities) -> Vec<String> {
    let mut v = vec![
        format!(
            "wasmtime; the tree preopened as / ({}); a private /tmp",
            tree(caps)
        ),
        "clock fixed at the source epoch, seeded random, no environment".into(),
        if caps.network {
            "sockets linked"
        } else {
            "no sockets"
        }
        .into(),
        if caps.device_nodes {
            "may create any device node in the tree (never opened by osbuild)"
        } else {
            "device nodes: only null, zero, full, random, urandom, tty, console, ptmx"
        }
        .into(),
    ];
    if caps.tree.writable() {
        v.push("may set file capabilities (security.capability) and SELinux labels (security.selinux) in the tree".into());
    }
    v
}

fn native(caps: &Capabilities, host_paths: &[PathBuf]) -> Vec<String> {
    let userns = user_namespaces();
    let tree = tree(caps);
    let mut v = vec![
        if userns {
            format!(
                "systemd-nspawn in a user namespace of its own: its root is a range of 65536 unprivileged host ids; a root file system of the host's /usr (read-only) and a generated /etc, not the host's /; the tree {tree}"
            )
        } else {
            format!(
                "systemd-nspawn as the host's root (OSBUILD_NATIVE_USERNS=0); the build machine's / read-only; the tree {tree}"
            )
        },
        if caps.output {
            "the output directory writable"
        } else {
            "no output directory"
        }
        .into(),
        if caps.network {
            if userns {
                "a network namespace of its own, outbound only through slirp4netns: no host interface, no service on the host's loopback, no CAP_NET_RAW or CAP_NET_ADMIN"
            } else {
                "the host's network"
            }
        } else {
            "a private network (loopback only)"
        }
        .into(),
        match (caps.privileged, userns) {
            (true, true) => "all of nspawn's capabilities, inside its user namespace only: it can mount there, nothing on the host",
            (true, false) => "all of nspawn's capabilities: it can mount, so it could make the build machine's root writable",
            (false, _) => "no CAP_SYS_ADMIN, CAP_MKNOD, CAP_SYS_PTRACE, CAP_SYS_BOOT, CAP_SYS_RESOURCE, CAP_SYS_TTY_CONFIG, CAP_LINUX_IMMUTABLE",
        }
        .into(),
    ];
    for d in &caps.devices {
        v.push(if userns && *d == Device::Loop {
            "loop devices: refused in a user namespace (they are shared by the whole host)"
                .to_string()
        } else if userns {
            format!(
                "{} made again for the stage and owned by its root (no capability with it: it cannot mount what it opens there)",
                d.nodes()
            )
        } else {
            format!("{} bound in (no capability with it)", d.nodes())
        });
    }
    if let Some(format) = caps.packages {
        v.push(format!(
            "the store's package cache read-only (every cached package file, each named by its sha256); the .{} files it downloads kept there by the sha256 osbuild computes (with a lock: only the locked ones)",
            format.as_str()
        ));
    }
    if !userns && matches!(caps.tree.writes(), Writes::Only(_)) {
        v.push(
            "its write set is checked from its layer after it ran, but as the host's root (OSBUILD_NATIVE_USERNS=0) it could change the store's layers below the tree directly: no boundary here".into(),
        );
    }
    if caps.tree.writable() {
        v.push(
            "may set any file capability (security.capability) or SELinux label in the tree".into(),
        );
    }
    if !host_paths.is_empty() {
        let paths: Vec<String> = host_paths.iter().map(|p| p.display().to_string()).collect();
        v.push(format!(
            "host paths bound read-only, nodev, nosuid, noexec: {}",
            paths.join(", ")
        ));
    } else if !caps.host_paths.is_empty() {
        v.push("no host path (its options name none)".into());
    }
    v
}
