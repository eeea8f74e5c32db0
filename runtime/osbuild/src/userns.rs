//! User namespaces for native stages: each stage runs with its root mapped
//! to a range of host ids that nothing else on the host uses, so that no
//! capability it holds is a capability on the host.
//!
//! The tree keeps its real owners through id-mapped mounts: a file owned
//! by 0 on disk is seen as the range's first id from the host side and as
//! 0 inside the stage's namespace, and what the stage creates as its root
//! lands on disk as 0. overlayfs cannot itself be id-mapped, so the
//! stage's tree is an overlay mounted over id-mapped *layers*, by a thread
//! whose file system ids are the range's first id
//! ([`mount_shifted_overlay`]): overlayfs does its own work on the layers
//! (copy-up, whiteouts, its work directory) with the mounter's ids, and
//! those must map to disk ids through the layers' mapping.

#![allow(
    unsafe_code,
    reason = "fork, mount_setattr and setfsuid for id-mapped mounts"
)]

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

/// The ids one stage's namespace maps: 0..65536, as on a normal system.
pub const COUNT: u32 = 65536;

/// The host ids osbuild takes ranges from: the top of systemd's container
/// range (524288..1879048191), which `systemd-nspawn --private-users=pick`
/// fills from the bottom, and far above any user's or subuid range.
const FIRST_BASE: u32 = 0x6000_0000;
const RANGES: u32 = 256;

/// Where the lock files of ranges in use are: only root can create
/// directories in /run, so no other user can hold a range.
const LOCK_DIR: &str = "/run/osbuild/id-ranges";

/// A range of host ids held for one stage (an exclusive lock on its file,
/// released when this is dropped), and a user namespace that maps it.
pub struct IdMap {
    base: u32,
    userns: OwnedFd,
    _lock: File,
}

impl std::fmt::Debug for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdMap({}..{})", self.base, self.base + COUNT)
    }
}

impl IdMap {
    /// Takes the first free range.
    pub fn reserve() -> anyhow::Result<IdMap> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        for k in 0..RANGES {
            let base = FIRST_BASE + k * COUNT;
            let path = Path::new(LOCK_DIR).join(base.to_string());
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    let userns = user_namespace(base)?;
                    return Ok(IdMap {
                        base,
                        userns,
                        _lock: lock,
                    });
                }
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        anyhow::bail!(
            "all {RANGES} id ranges for native stages are in use (locks in {LOCK_DIR}); \
             wait for other builds to end"
        )
    }

    /// The host id that is 0 inside.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// nspawn's `--private-users=` for this range.
    pub fn nspawn_arg(&self) -> String {
        format!("--private-users={}:{COUNT}", self.base)
    }

    pub fn userns(&self) -> BorrowedFd<'_> {
        self.userns.as_fd()
    }
}

/// A user namespace whose ids 0..COUNT are the host's base..base+COUNT:
/// a child process enters a new one, the parent writes its maps (as root
/// it may map any ids), keeps a descriptor of it, and lets the child go.
fn user_namespace(base: u32) -> anyhow::Result<OwnedFd> {
    let (ready_r, ready_w) = rustix::pipe::pipe().context("creating a pipe")?;
    let (go_r, go_w) = rustix::pipe::pipe().context("creating a pipe")?;
    // SAFETY: the child only makes async-signal-safe calls, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: raw syscalls only (no allocation, no locks): the parent
        // may have other threads, so nothing else is safe before _exit.
        unsafe {
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                1
            } else {
                0
            };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(go_r);
    let result = (|| {
        let mut ok = [0u8];
        let n = rustix::io::read(&ready_r, &mut ok).context("waiting for the namespace")?;
        if n != 1 || ok[0] != 1 {
            anyhow::bail!(
                "cannot create a user namespace (unshare(CLONE_NEWUSER) failed); \
                 native stages need user namespaces (sysctl user.max_user_namespaces)"
            );
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let map = format!("0 {base} {COUNT}\n");
        for file in ["uid_map", "gid_map"] {
            std::fs::write(proc.join(file), &map)
                .with_context(|| format!("writing {}/{file}", proc.display()))?;
        }
        let ns = File::open(proc.join("ns/user")).context("opening the user namespace")?;
        Ok(OwnedFd::from(ns))
    })();
    let _ = rustix::io::write(&go_w, &[0]);
    // The child exits as soon as it reads; its status says nothing more.
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
    result
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Mounts `src` (a directory; not what is mounted beneath it) at `dst`,
/// id-mapped through `map`, nodev and nosuid, read-only if asked.
pub fn bind_idmapped(src: &Path, dst: &Path, map: &IdMap, read_only: bool) -> anyhow::Result<()> {
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("cloning the mount of {}", src.display()))?;
    let mut attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: map.userns().as_raw_fd() as u64,
    };
    if read_only {
        attr.attr_set |= MOUNT_ATTR_RDONLY;
    }
    // SAFETY: a valid descriptor, an empty path and a mount_attr of the
    // size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| {
            format!(
                "id-mapping {} (its file system must support id-mapped mounts: \
                 ext4, xfs, btrfs and tmpfs do)",
                src.display()
            )
        });
    }
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        dst,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(std::io::Error::from)
    .with_context(|| {
        format!(
            "mounting the id-mapped {} at {}",
            src.display(),
            dst.display()
        )
    })
}

/// Runs `f` on a thread of its own whose file system ids are `map`'s
/// base, with its capabilities kept: a mount made there (overlayfs keeps
/// its mounter's credentials) works on id-mapped layers as the stage's
/// root would.
pub fn as_range_root<T: Send>(
    map: &IdMap,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let base = map.base;
    std::thread::scope(|s| {
        s.spawn(move || {
            // Both calls change this thread's credentials only (the
            // syscalls are per thread; glibc does not broadcast these).
            // SAFETY: plain syscalls on integers; rustix has no setfsuid.
            unsafe {
                libc::setfsgid(base);
                libc::setfsuid(base);
            }
            // A nonzero fsuid clears the file system capabilities from the
            // effective set: raise them again from the permitted one.
            let mut caps = rustix::thread::capabilities(None)
                .map_err(std::io::Error::from)
                .context("reading this thread's capabilities")?;
            caps.effective = caps.permitted;
            rustix::thread::set_capabilities(None, caps)
                .map_err(std::io::Error::from)
                .context("raising this thread's capabilities")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the id-mapped mount thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn ranges_are_exclusive_and_map_their_base() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let a = IdMap::reserve().unwrap();
        let b = IdMap::reserve().unwrap();
        assert_ne!(a.base(), b.base());
        assert_eq!(a.base() % COUNT, 0);
        assert!(a.base() >= FIRST_BASE);
        assert_eq!(
            a.nspawn_arg(),
            format!("--private-users={}:65536", a.base())
        );
    }

    #[test]
    fn an_idmapped_bind_shows_disk_ids_shifted() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        std::os::unix::fs::lchown(src.join("f"), Some(5), Some(6)).unwrap();
        let map = IdMap::reserve().unwrap();
        // A mount namespace of this test's own, so nothing is left behind.
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: this thread alone changes namespace; it ends here.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                    .unwrap();
                rustix::mount::mount_change(
                    "/",
                    rustix::mount::MountPropagationFlags::PRIVATE
                        | rustix::mount::MountPropagationFlags::REC,
                )
                .unwrap();
                bind_idmapped(&src, &dst, &map, true).unwrap();
                let m = std::fs::metadata(dst.join("f")).unwrap();
                assert_eq!((m.uid(), m.gid()), (map.base() + 5, map.base() + 6));
                assert!(std::fs::write(dst.join("g"), b"").is_err(), "read-only");
            })
            .join()
            .unwrap()
        });
    }
}
