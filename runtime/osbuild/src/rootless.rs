//! Rootless builds: osbuild run by an ordinary user becomes root of a user
//! namespace of its own, and builds there as it builds as root.
//!
//! The namespace maps its 0 to the user and 1..=65536 to the user's
//! subordinate ids (`/etc/subuid`, `/etc/subgid`, written into the
//! namespace by the setuid helpers `newuidmap` and `newgidmap` of Debian's
//! `uidmap`), so a tree's owners (root, `shadow`'s group 42, a user 1000)
//! are real owners on disk, of ids that belong to the user. A mount
//! namespace owned by it lets osbuild mount the tree's overlay (the kernel
//! allows unprivileged overlayfs since 5.11, with its attributes under
//! `user.overlay.*`: [`overlay_xattr_prefix`]). What the kernel refuses
//! even there is `mknod` of a device: device nodes become stand-ins
//! (`osbuild_tree_fs::stand_in`), which `--save` writes as the nodes.
//! Native stages are refused: systemd-nspawn runs only as the host's root.
//!
//! Entering happens once, first thing in `main`: `unshare(CLONE_NEWUSER)`
//! needs a single-threaded process. The maps must be written from outside
//! the namespace, so a child forked before it waits, then runs the helpers
//! on its parent.

#![allow(
    unsafe_code,
    reason = "fork, setgroups, setresuid and getpwuid_r to enter a user namespace"
)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Ids the namespace maps besides 0: as many as a native stage's namespace
/// has (`nobody` is 65534).
pub const SUBORDINATE_IDS: u32 = 65536;

/// The subordinate ids files, as `newuidmap` and `newgidmap` read them.
const SUBUID: &str = "/etc/subuid";
const SUBGID: &str = "/etc/subgid";

/// What this process is, once [`enter`] ran (or was not needed).
#[derive(Debug)]
struct Entered {
    /// The store, checked from the host's side before entering: inside, the
    /// host's `/` and `/home` belong to the unmapped "nobody".
    store: Option<PathBuf>,
}

static ENTERED: OnceLock<Entered> = OnceLock::new();

/// Whether osbuild is a rootless build, in its own user namespace.
pub fn active() -> bool {
    ENTERED.get().is_some()
}

/// Whether osbuild runs without the host's root: rootless, or an ordinary
/// user's osbuild that could not become rootless.
pub fn unprivileged() -> bool {
    active() || !rustix::process::geteuid().is_root()
}

/// The prefix of overlayfs's own attributes on the tree's layers: a
/// rootless build's overlay keeps them under `user.` (the `userxattr`
/// mount option), where unprivileged processes may write them.
pub fn overlay_xattr_prefix() -> &'static str {
    if active() {
        "user.overlay."
    } else {
        "trusted.overlay."
    }
}

/// Whether the store at `real` (its resolved path) was checked before
/// entering; its parents are then not checked again.
pub fn store_checked(real: &Path) -> bool {
    ENTERED
        .get()
        .and_then(|e| e.store.as_deref())
        .is_some_and(|s| s == real)
}

/// A user's subordinate ids: `count` host ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub count: u32,
}

/// The first range in `text` (the format of `/etc/subuid`: `USER:START:COUNT`
/// lines, USER a name or a numeric id) that is `name`'s or `id`'s and holds
/// at least `need` ids.
pub fn find_range(text: &str, name: Option<&str>, id: u32, need: u32) -> Option<Range> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some() || !(Some(who) == name || who.parse() == Ok(id)) {
            return None;
        }
        let (start, count): (u32, u32) = (start.parse().ok()?, count.parse().ok()?);
        (count >= need && start.checked_add(need).is_some()).then_some(Range { start, count })
    })
}

/// The lines `newuidmap PID ...` (or `newgidmap`) takes for `own` and `range`.
fn map_args(own: u32, range: Range) -> [String; 6] {
    [
        "0".into(),
        own.to_string(),
        "1".into(),
        "1".into(),
        range.start.to_string(),
        SUBORDINATE_IDS.to_string(),
    ]
}

fn user_name(uid: u32) -> Option<String> {
    // SAFETY: passwd is plain data (integers and pointers); all zero is a
    // valid value, which getpwuid_r overwrites.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; `out` points into them or is null.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r filled pw_name with a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// What a user needs to build rootless, when they do not have it.
fn range_of(file: &str, name: Option<&str>, id: u32, kind: &str) -> Result<Range, String> {
    let who = name.map_or_else(|| id.to_string(), str::to_string);
    let how = format!(
        "as root: usermod --add-sub{kind}s 100000-165535 {who} (any free range of {SUBORDINATE_IDS} ids)"
    );
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{file} does not exist: a rootless build maps the tree's owners to subordinate ids of {who}; {how}"
            ));
        }
        Err(e) => return Err(format!("{file}: {e}")),
    };
    find_range(&text, name, id, SUBORDINATE_IDS).ok_or_else(|| {
        format!(
            "{file} gives {who} no range of {SUBORDINATE_IDS} subordinate ids, which a rootless build maps the tree's owners to; {how}"
        )
    })
}

/// A store checked from the host's side by `store::secure_root`, the only
/// maker of one: inside the namespace the host's files belong to no one,
/// so the store's parents can no longer be checked there, and a path
/// nobody checked must not pass for one that was.
#[derive(Debug)]
pub struct CheckedStore(PathBuf);

impl CheckedStore {
    pub(crate) fn new(resolved: PathBuf) -> CheckedStore {
        CheckedStore(resolved)
    }
}

/// Enters a user namespace (with a mount namespace it owns) as its root.
/// `store` was checked from the host's side first
/// (`store::secure_for_rootless`). Must run while the process has one
/// thread.
pub fn enter(store: Option<CheckedStore>) -> Result<(), String> {
    let store = store.map(|s| s.0);
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid);
    let uids = range_of(SUBUID, name.as_deref(), uid, "uid")?;
    let gids = range_of(SUBGID, name.as_deref(), uid, "gid")?;
    map_from_a_child(uid, uids, gid, gids)?;
    // The user's supplementary groups mean nothing inside (unmapped): drop
    // them, so nothing is created or reached through them.
    // SAFETY: plain syscalls; the process has one thread.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
        }
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(format!(
                "becoming the namespace's root: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::REC | rustix::mount::MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| format!("making / private in the build's mount namespace: {e}"))?;
    osbuild_tree_fs::stand_in::enable();
    let _ = ENTERED.set(Entered { store });
    Ok(())
}

/// Unshares the namespaces and has a child, forked before, write their maps.
fn map_from_a_child(uid: u32, uids: Range, gid: u32, gids: Range) -> Result<(), String> {
    // Close-on-exec: newuidmap must not hold them open (then the parent's
    // read would wait on it).
    let pipe = || {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))
    };
    let (go_r, go_w) = pipe()?;
    let (done_r, done_w) = pipe()?;
    let parent = std::process::id();
    // SAFETY: the process has one thread, so the child may allocate and
    // spawn; it ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(go_w);
        drop(done_r);
        let mut b = [0u8];
        let report = match rustix::io::read(&go_r, &mut b) {
            Ok(1) => write_maps(parent, uid, uids, gid, gids).err(),
            // The parent could not unshare, and said so itself.
            _ => None,
        };
        if let Some(msg) = report {
            let _ = rustix::io::write(&done_w, msg.as_bytes());
        }
        // SAFETY: ends the child without running the parent's exit handlers
        // or destructors twice.
        unsafe { libc::_exit(0) };
    }
    drop(go_r);
    drop(done_w);
    // SAFETY: the process has one thread (the caller's promise), so no
    // other thread shares the file table or mount namespace it changes.
    let unshared = unsafe {
        rustix::thread::unshare_unsafe(
            rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS,
        )
    };
    let result = match unshared {
        Err(e) => {
            drop(go_w);
            Err(format!(
                "cannot make a user namespace (unshare: {e}); rootless builds need unprivileged user namespaces (sysctl user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns=0)"
            ))
        }
        Ok(()) => {
            let _ = rustix::io::write(&go_w, &[1]);
            drop(go_w);
            let mut msg = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = rustix::io::read(&done_r, &mut buf) {
                msg.extend_from_slice(&buf[..n]);
            }
            if msg.is_empty() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&msg).into_owned())
            }
        }
    };
    let waited = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
    result?;
    match waited {
        Ok(Some((_, status))) if status.exit_status() == Some(0) => {}
        Ok(Some((_, status))) => {
            return Err(format!(
                "the process that maps the user namespace's ids ended abnormally (wait status {:#x})",
                status.as_raw()
            ));
        }
        Ok(None) => {
            return Err(
                "waiting for the process that maps the user namespace's ids: it did not end".into(),
            );
        }
        Err(e) => {
            return Err(format!(
                "waiting for the process that maps the user namespace's ids: {e}"
            ));
        }
    }
    // What the kernel holds, not what the tools said.
    let mapped = |file: &str, own: u32, range: Range| -> Result<(), String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let lines: Vec<Vec<u64>> = text
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .collect();
        let want = [
            vec![0, u64::from(own), 1],
            vec![1, u64::from(range.start), u64::from(SUBORDINATE_IDS)],
        ];
        if lines != want {
            return Err(format!(
                "{file} is {:?} after mapping, not 0 {own} 1 and 1 {} {SUBORDINATE_IDS}",
                text.trim(),
                range.start,
            ));
        }
        Ok(())
    };
    mapped("/proc/self/uid_map", uid, uids)?;
    mapped("/proc/self/gid_map", gid, gids)
}

/// Where Debian's `uidmap` puts a tool (setuid root: never looked up on
/// `PATH`).
fn tool_path(tool: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// In the child: `newuidmap` and `newgidmap` on `pid`.
fn write_maps(pid: u32, uid: u32, uids: Range, gid: u32, gids: Range) -> Result<(), String> {
    for (tool, own, range, file) in [
        ("newuidmap", uid, uids, SUBUID),
        ("newgidmap", gid, gids, SUBGID),
    ] {
        let path = tool_path(tool).ok_or_else(|| {
            format!("{tool} not found in /usr/bin or /usr/sbin: rootless builds need it to map the tree's owners to your subordinate ids; as root: apt-get install uidmap")
        })?;
        let out = std::process::Command::new(&path)
            .arg(pid.to_string())
            .args(map_args(own, range))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    format!("{tool} not found: rootless builds need it to map the tree's owners to your subordinate ids; as root: apt-get install uidmap")
                } else {
                    format!("running {tool}: {e}")
                }
            })?;
        if !out.status.success() {
            return Err(format!(
                "{tool} {pid} {} failed ({}): {}; it maps your subordinate ids from {file} (range {}..{})",
                map_args(own, range).join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                range.start,
                u64::from(range.start) + u64::from(range.count),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID_TEXT: &str = "\
alice:100000:65536
1002:165536:65536
bob:231072:1000
bob:300000:70000
carol:4294967000:65536
dave:1:2:3
";

    #[test]
    fn a_users_range_is_found_by_name_or_id_and_must_be_large_enough() {
        assert_eq!(
            find_range(SUBUID_TEXT, Some("alice"), 1001, SUBORDINATE_IDS),
            Some(Range {
                start: 100000,
                count: 65536
            })
        );
        // By numeric id, when the name is not there (or unknown).
        assert_eq!(
            find_range(SUBUID_TEXT, None, 1002, SUBORDINATE_IDS).map(|r| r.start),
            Some(165536)
        );
        // A range too small is passed over for one that is large enough.
        assert_eq!(
            find_range(SUBUID_TEXT, Some("bob"), 1003, SUBORDINATE_IDS).map(|r| r.start),
            Some(300000)
        );
        assert_eq!(
            find_range(SUBUID_TEXT, Some("bob"), 1003, 2000).map(|r| r.start),
            Some(300000)
        );
        // A range that would pass the top of the id space, or a malformed
        // line, is none; nor is someone else's.
        assert_eq!(
            find_range(SUBUID_TEXT, Some("carol"), 1004, SUBORDINATE_IDS),
            None
        );
        assert_eq!(find_range(SUBUID_TEXT, Some("dave"), 1005, 1), None);
        assert_eq!(find_range(SUBUID_TEXT, Some("erin"), 1001, 1), None);
    }

    #[test]
    fn the_maps_put_the_user_at_0_and_the_range_above() {
        assert_eq!(
            map_args(
                1001,
                Range {
                    start: 100000,
                    count: 65536
                }
            )
            .join(" "),
            "0 1001 1 1 100000 65536"
        );
    }
}
