//! The wasm backend. File data goes through WASI (the tree is preopened as
//! `/`), everything WASI lacks through the host's `tree` interface. WASI
//! refuses to follow absolute symlinks (`EPERM`); when a WASI call fails that
//! way, the path is resolved inside the tree by the host and the call retried
//! on the resolved path, so stages never see the difference.

use std::io;
use std::path::{Path, PathBuf};

use crate::bindings::osbuild::stage::tree as host;

use super::{EntryKind, Metadata, NodeKind};

pub struct Backend;

fn err(e: host::TreeError) -> io::Error {
    use host::ErrorKind as K;
    use io::ErrorKind as I;
    let kind = match e.kind {
        K::NotFound => I::NotFound,
        K::AlreadyExists => I::AlreadyExists,
        K::PermissionDenied => I::PermissionDenied,
        K::NotADirectory => I::NotADirectory,
        K::IsADirectory => I::IsADirectory,
        K::DirectoryNotEmpty => I::DirectoryNotEmpty,
        K::InvalidInput => I::InvalidInput,
        K::Unsupported => I::Unsupported,
        K::Other => I::Other,
    };
    io::Error::new(kind, e.message)
}

fn s(p: &Path) -> io::Result<&str> {
    p.to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))
}

fn resolve(p: &Path, follow: bool) -> io::Result<PathBuf> {
    host::resolve(s(p)?, follow).map(PathBuf::from).map_err(err)
}

/// Runs a WASI file operation; if WASI refused a symlink it would not follow,
/// retries on the path resolved inside the tree by the host.
fn via_wasi<T>(p: &Path, follow_final: bool, op: impl Fn(&Path) -> io::Result<T>) -> io::Result<T> {
    match op(p) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let resolved = match resolve(p, follow_final) {
                Err(r) if follow_final && r.kind() == io::ErrorKind::NotFound => resolve(p, false)?,
                r => r?,
            };
            if resolved == p {
                return Err(e);
            }
            op(&resolved)
        }
        r => r,
    }
}

fn metadata(m: host::EntryMetadata) -> Metadata {
    use host::EntryKind as K;
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
        mtime_sec: m.mtime.seconds,
        mtime_nsec: m.mtime.nanoseconds,
        rdev_major: m.rdev_major,
        rdev_minor: m.rdev_minor,
    }
}

impl Backend {
    pub fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        via_wasi(p, true, |p| std::fs::read(p))
    }

    pub fn write(&self, p: &Path, contents: &[u8]) -> io::Result<()> {
        via_wasi(p, true, |p| std::fs::write(p, contents))
    }

    pub fn metadata(&self, p: &Path) -> io::Result<Metadata> {
        host::metadata(s(p)?, true).map(metadata).map_err(err)
    }

    pub fn symlink_metadata(&self, p: &Path) -> io::Result<Metadata> {
        host::metadata(s(p)?, false).map(metadata).map_err(err)
    }

    pub fn read_dir(&self, p: &Path) -> io::Result<Vec<String>> {
        via_wasi(p, true, |p| {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(p)? {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names)
        })
    }

    pub fn create_dir(&self, p: &Path, mode: u32) -> io::Result<()> {
        via_wasi(p, false, |p| std::fs::create_dir(p))?;
        self.set_mode(p, mode)
    }

    pub fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        match self.metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = p.parent() {
            self.create_dir_all(parent)?;
        }
        match via_wasi(p, false, |p| std::fs::create_dir(p)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    pub fn remove_file(&self, p: &Path) -> io::Result<()> {
        via_wasi(p, false, |p| std::fs::remove_file(p))
    }

    pub fn remove_all(&self, p: &Path) -> io::Result<()> {
        if self.symlink_metadata(p)?.is_dir() {
            for name in self.read_dir(p)? {
                self.remove_all(&p.join(name))?;
            }
            via_wasi(p, false, |p| std::fs::remove_dir(p))
        } else {
            self.remove_file(p)
        }
    }

    pub fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        host::read_link(s(p)?).map(PathBuf::from).map_err(err)
    }

    pub fn symlink(&self, target: &Path, p: &Path) -> io::Result<()> {
        host::symlink(s(target)?, s(p)?).map_err(err)
    }

    pub fn hard_link(&self, existing: &Path, p: &Path) -> io::Result<()> {
        host::hard_link(s(existing)?, s(p)?).map_err(err)
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from = resolve(from, false)?;
        let to = resolve(to, false)?;
        std::fs::rename(from, to)
    }

    pub fn set_mode(&self, p: &Path, mode: u32) -> io::Result<()> {
        host::set_mode(s(p)?, mode).map_err(err)
    }

    pub fn set_owner(&self, p: &Path, uid: u32, gid: u32) -> io::Result<()> {
        host::set_owner(s(p)?, uid, gid, false).map_err(err)
    }

    pub fn set_mtime(&self, p: &Path, sec: i64, nsec: u32) -> io::Result<()> {
        let t = host::Timestamp {
            seconds: sec,
            nanoseconds: nsec,
        };
        host::set_mtime(s(p)?, t, false).map_err(err)
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
            NodeKind::BlockDevice => host::NodeKind::BlockDevice,
            NodeKind::CharDevice => host::NodeKind::CharDevice,
            NodeKind::Fifo => host::NodeKind::Fifo,
        };
        host::make_node(s(p)?, kind, mode, major, minor).map_err(err)
    }

    pub fn get_xattr(&self, p: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
        host::get_xattr(s(p)?, name, false).map_err(err)
    }

    pub fn list_xattrs(&self, p: &Path) -> io::Result<Vec<String>> {
        host::list_xattrs(s(p)?, false).map_err(err)
    }

    pub fn set_xattr(&self, p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        host::set_xattr(s(p)?, name, value, false).map_err(err)
    }

    pub fn remove_xattr(&self, p: &Path, name: &str) -> io::Result<()> {
        host::remove_xattr(s(p)?, name, false).map_err(err)
    }

    pub fn resolve(&self, p: &Path) -> io::Result<PathBuf> {
        resolve(p, true)
    }
}
