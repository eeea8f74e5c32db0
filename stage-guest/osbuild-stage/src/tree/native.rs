//! The native backend: every call goes through `osbuild-tree-fs`.

use std::io;
use std::path::{Path, PathBuf};

use osbuild_tree_fs::Root;

use super::{EntryKind, Metadata, NodeKind};

pub struct Backend {
    root: Root,
}

fn metadata(m: osbuild_tree_fs::Metadata) -> Metadata {
    use osbuild_tree_fs::EntryKind as K;
    Metadata {
        kind: match m.kind {
            K::File => EntryKind::File,
            K::Directory => EntryKind::Directory,
            K::Symlink => EntryKind::Symlink,
            K::BlockDevice => EntryKind::BlockDevice,
            K::CharDevice => EntryKind::CharDevice,
            K::Fifo => EntryKind::Fifo,
            K::Socket => EntryKind::Socket,
        },
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        size: m.size,
        nlink: m.nlink,
        mtime_sec: m.mtime_sec,
        mtime_nsec: m.mtime_nsec,
        rdev_major: m.rdev_major(),
        rdev_minor: m.rdev_minor(),
    }
}

impl Backend {
    pub fn open(root: &Path) -> io::Result<Backend> {
        Ok(Backend {
            root: Root::open(root)?,
        })
    }

    pub fn host_path(&self) -> &Path {
        self.root.host_path()
    }

    pub fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        self.root.read(p)
    }

    pub fn write(&self, p: &Path, contents: &[u8]) -> io::Result<()> {
        self.root.write(p, contents, 0o644)
    }

    pub fn metadata(&self, p: &Path) -> io::Result<Metadata> {
        self.root.metadata(p, true).map(metadata)
    }

    pub fn symlink_metadata(&self, p: &Path) -> io::Result<Metadata> {
        self.root.metadata(p, false).map(metadata)
    }

    pub fn read_dir(&self, p: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .root
            .read_dir(p)?
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    pub fn create_dir(&self, p: &Path, mode: u32) -> io::Result<()> {
        self.root.create_dir(p, mode)?;
        // mkdir applies the umask: set the bits exactly as asked.
        self.root.set_mode(p, mode)
    }

    pub fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        self.root.create_dir_all(p)
    }

    pub fn remove_file(&self, p: &Path) -> io::Result<()> {
        self.root.remove_file(p)
    }

    pub fn remove_all(&self, p: &Path) -> io::Result<()> {
        self.root.remove_all(p)
    }

    pub fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        self.root.read_link(p)
    }

    pub fn symlink(&self, target: &Path, p: &Path) -> io::Result<()> {
        self.root.symlink(target, p)
    }

    pub fn hard_link(&self, existing: &Path, p: &Path) -> io::Result<()> {
        self.root.hard_link(existing, p)
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.root.rename(from, to)
    }

    pub fn set_mode(&self, p: &Path, mode: u32) -> io::Result<()> {
        self.root.set_mode(p, mode)
    }

    pub fn set_owner(&self, p: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.root.set_owner(p, uid, gid, false)
    }

    pub fn set_mtime(&self, p: &Path, sec: i64, nsec: u32) -> io::Result<()> {
        self.root.set_mtime(p, sec, nsec, false)
    }

    pub fn make_node(
        &self,
        p: &Path,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let kind = match kind {
            NodeKind::BlockDevice => osbuild_tree_fs::NodeKind::BlockDevice,
            NodeKind::CharDevice => osbuild_tree_fs::NodeKind::CharDevice,
            NodeKind::Fifo => osbuild_tree_fs::NodeKind::Fifo,
        };
        match self.root.make_node(p, kind, mode, major, minor) {
            // EPERM: no CAP_MKNOD over the tree (a user namespace).
            Err(e) if e.raw_os_error() == Some(EPERM) => {
                request_node(&self.root, p, kind, mode, major, minor).map_err(|_| e)
            }
            other => other,
        }
    }

    pub fn get_xattr(&self, p: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.root.get_xattr(p, name, false)
    }

    pub fn list_xattrs(&self, p: &Path) -> io::Result<Vec<String>> {
        self.root.list_xattrs(p, false)
    }

    pub fn set_xattr(&self, p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        self.root.set_xattr(p, name, value, false)
    }

    pub fn remove_xattr(&self, p: &Path, name: &str) -> io::Result<()> {
        self.root.remove_xattr(p, name, false)
    }

    pub fn resolve(&self, p: &Path) -> io::Result<PathBuf> {
        self.root.resolve(p, true)
    }
}

const EPERM: i32 = 1;

/// The variable naming the file where a native stage asks the host for
/// device nodes (set by osbuild's native host).
pub const NODE_REQUESTS_ENV: &str = "OSBUILD_NODE_REQUESTS";

/// A native stage runs in a user namespace, where no device node can be
/// made. For a harmless one (`/dev/null` and the like, which a wasm stage
/// may make too) it leaves an empty file with the mode asked for and asks
/// the host, which makes the node there after the stage has run, with the
/// placeholder's mode and owner (so `set_owner` and `set_mode` after this
/// call work as they would on the node).
fn request_node(
    root: &Root,
    p: &Path,
    kind: osbuild_tree_fs::NodeKind,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    use std::io::Write as _;
    let Some(file) = std::env::var_os(NODE_REQUESTS_ENV) else {
        return Err(io::ErrorKind::PermissionDenied.into());
    };
    if osbuild_tree_fs::harmless_device(kind, major, minor).is_none() {
        return Err(io::ErrorKind::PermissionDenied.into());
    }
    let path = p.to_str().ok_or(io::ErrorKind::InvalidInput)?;
    if !path.starts_with('/') || path.chars().any(char::is_control) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    root.write(p, b"", mode & 0o7777)?;
    root.set_mode(p, mode & 0o7777)?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)?;
    writeln!(f, "c {major} {minor} {path}")
}
