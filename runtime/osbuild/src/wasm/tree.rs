//! The host side of the `osbuild:stage/tree` interface, on `osbuild-tree-fs`
//! (chroot semantics: nothing a stage names can lead outside the tree).
//!
//! What a stage reads through it is bounded by the stage's memory limit
//! before the host allocates it: the tree is untrusted, and a sparse 1 TiB
//! file must cost the stage its limit, not the host its memory.

use std::io::{self, Read as _};
use std::path::Path;

use osbuild_tree_fs::{EntryKind, Root};

use super::bindings::osbuild::stage::tree::{
    self as wit, DirEntry, EntryMetadata, ErrorKind, NodeKind, Timestamp, TreeError,
};

/// The tree, as the wasm host hands it to one stage.
pub struct TreeHost {
    root: Root,
    writable: bool,
    /// The stage declares `device-nodes`: any device node, not only the
    /// harmless ones.
    device_nodes: bool,
    /// The most bytes one call may hand the stage (its memory limit: more
    /// could never reach its memory anyway).
    max_read: u64,
}

impl TreeHost {
    pub fn new(root: Root, writable: bool, device_nodes: bool, max_read: u64) -> TreeHost {
        TreeHost {
            root,
            writable,
            device_nodes,
            max_read,
        }
    }

    fn too_big(&self, path: &str, what: &str) -> TreeError {
        TreeError {
            kind: ErrorKind::Other,
            message: format!(
                "{path}: {what} more than the stage's memory limit ({} MiB) can hold",
                self.max_read >> 20
            ),
        }
    }

    fn check_writable(&self) -> Result<(), TreeError> {
        if self.writable {
            Ok(())
        } else {
            Err(TreeError {
                kind: ErrorKind::PermissionDenied,
                message: "the stage declares read-only access to the tree".into(),
            })
        }
    }
}

/// The error as the guest sees it. Without the path: the SDK names it, so
/// a stage's error names it once.
fn error(e: io::Error) -> TreeError {
    use io::ErrorKind as I;
    let kind = match e.kind() {
        I::NotFound => ErrorKind::NotFound,
        I::AlreadyExists => ErrorKind::AlreadyExists,
        I::PermissionDenied => ErrorKind::PermissionDenied,
        I::NotADirectory => ErrorKind::NotADirectory,
        I::IsADirectory => ErrorKind::IsADirectory,
        I::DirectoryNotEmpty => ErrorKind::DirectoryNotEmpty,
        I::InvalidInput => ErrorKind::InvalidInput,
        I::Unsupported => ErrorKind::Unsupported,
        _ => ErrorKind::Other,
    };
    TreeError {
        kind,
        message: e.to_string(),
    }
}

fn kind(k: EntryKind) -> wit::EntryKind {
    use wit::EntryKind as K;
    match k {
        EntryKind::File => K::File,
        EntryKind::Directory => K::Directory,
        EntryKind::Symlink => K::Symlink,
        EntryKind::BlockDevice => K::BlockDevice,
        EntryKind::CharDevice => K::CharDevice,
        EntryKind::Fifo => K::Fifo,
        EntryKind::Socket => K::Socket,
    }
}

fn metadata(m: osbuild_tree_fs::Metadata) -> EntryMetadata {
    EntryMetadata {
        kind: kind(m.kind),
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        size: m.size,
        nlink: m.nlink,
        mtime: Timestamp {
            seconds: m.mtime_sec,
            nanoseconds: m.mtime_nsec,
        },
        rdev_major: m.rdev_major(),
        rdev_minor: m.rdev_minor(),
    }
}

type R<T> = Result<T, TreeError>;

impl wit::Host for TreeHost {
    fn metadata(&mut self, path: String, follow: bool) -> R<EntryMetadata> {
        self.root
            .metadata(Path::new(&path), follow)
            .map(metadata)
            .map_err(error)
    }

    fn read_file(&mut self, path: String) -> R<Vec<u8>> {
        let file = self.root.open_file(Path::new(&path)).map_err(error)?;
        let size = file.metadata().map_err(error)?.len();
        if size > self.max_read {
            return Err(self.too_big(&path, &format!("{size} bytes,")));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // The file may grow while it is read: the cap holds anyway.
        file.take(self.max_read + 1)
            .read_to_end(&mut bytes)
            .map_err(error)?;
        if bytes.len() as u64 > self.max_read {
            return Err(self.too_big(&path, "grew to"));
        }
        Ok(bytes)
    }

    fn write_file(&mut self, path: String, contents: Vec<u8>) -> R<()> {
        self.check_writable()?;
        let p = Path::new(&path);
        let existed = match self.root.metadata(p, true) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(error(e)),
        };
        self.root.write(p, &contents, 0o644).map_err(error)?;
        if !existed {
            // Exactly 0644, whatever osbuild's umask is.
            self.root.set_mode(p, 0o644).map_err(error)?;
        }
        Ok(())
    }

    fn read_dir(&mut self, path: String) -> R<Vec<DirEntry>> {
        let dir = Path::new(&path);
        let names = self.root.read_dir(dir).map_err(error)?;
        let total: u64 = names.iter().map(|n| n.len() as u64 + 16).sum();
        if total > self.max_read {
            return Err(self.too_big(&path, &format!("{} entries,", names.len())));
        }
        names
            .into_iter()
            .map(|name| {
                let m = self.root.metadata(&dir.join(&name), false).map_err(error)?;
                Ok(DirEntry {
                    name: name.to_string_lossy().into_owned(),
                    kind: kind(m.kind),
                })
            })
            .collect()
    }

    fn create_dir(&mut self, path: String, mode: u32) -> R<()> {
        self.check_writable()?;
        let p = Path::new(&path);
        self.root.create_dir(p, mode).map_err(error)?;
        self.root.set_mode(p, mode).map_err(error)
    }

    fn remove(&mut self, path: String) -> R<()> {
        self.check_writable()?;
        let p = Path::new(&path);
        if self.root.metadata(p, false).map_err(error)?.kind == EntryKind::Directory {
            self.root.remove_dir(p).map_err(error)
        } else {
            self.root.remove_file(p).map_err(error)
        }
    }

    fn remove_all(&mut self, path: String) -> R<()> {
        self.check_writable()?;
        self.root.remove_all(Path::new(&path)).map_err(error)
    }

    fn rename(&mut self, source: String, destination: String) -> R<()> {
        self.check_writable()?;
        self.root
            .rename(Path::new(&source), Path::new(&destination))
            .map_err(error)
    }

    fn read_link(&mut self, path: String) -> R<String> {
        self.root
            .read_link(Path::new(&path))
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(error)
    }

    fn symlink(&mut self, target: String, path: String) -> R<()> {
        self.check_writable()?;
        self.root
            .symlink(Path::new(&target), Path::new(&path))
            .map_err(error)
    }

    fn hard_link(&mut self, existing: String, path: String) -> R<()> {
        self.check_writable()?;
        self.root
            .hard_link(Path::new(&existing), Path::new(&path))
            .map_err(error)
    }

    fn set_mode(&mut self, path: String, mode: u32) -> R<()> {
        self.check_writable()?;
        self.root.set_mode(Path::new(&path), mode).map_err(error)
    }

    fn set_owner(&mut self, path: String, uid: u32, gid: u32, follow: bool) -> R<()> {
        self.check_writable()?;
        self.root
            .set_owner(Path::new(&path), uid, gid, follow)
            .map_err(error)
    }

    fn set_mtime(&mut self, path: String, mtime: Timestamp, follow: bool) -> R<()> {
        self.check_writable()?;
        self.root
            .set_mtime(Path::new(&path), mtime.seconds, mtime.nanoseconds, follow)
            .map_err(error)
    }

    fn make_node(
        &mut self,
        path: String,
        kind: NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> R<()> {
        self.check_writable()?;
        let kind = match kind {
            NodeKind::BlockDevice => osbuild_tree_fs::NodeKind::BlockDevice,
            NodeKind::CharDevice => osbuild_tree_fs::NodeKind::CharDevice,
            NodeKind::Fifo => osbuild_tree_fs::NodeKind::Fifo,
        };
        if kind != osbuild_tree_fs::NodeKind::Fifo
            && !self.device_nodes
            && osbuild_tree_fs::harmless_device(kind, major, minor).is_none()
        {
            let what = if kind == osbuild_tree_fs::NodeKind::BlockDevice {
                "block"
            } else {
                "character"
            };
            return Err(TreeError {
                kind: ErrorKind::PermissionDenied,
                message: format!(
                    "{path}: making {what} device {major}:{minor} needs the `device-nodes` capability, \
                     which the stage does not declare (without it: only null, zero, full, random, \
                     urandom, tty, console and ptmx)"
                ),
            });
        }
        self.root
            .make_node(Path::new(&path), kind, mode, major, minor)
            .map_err(error)
    }

    fn get_xattr(&mut self, path: String, name: String, follow: bool) -> R<Option<Vec<u8>>> {
        self.root
            .get_xattr(Path::new(&path), &name, follow)
            .map_err(error)
    }

    fn list_xattrs(&mut self, path: String, follow: bool) -> R<Vec<String>> {
        self.root
            .list_xattrs(Path::new(&path), follow)
            .map_err(error)
    }

    fn set_xattr(&mut self, path: String, name: String, value: Vec<u8>, follow: bool) -> R<()> {
        self.check_writable()?;
        if !crate::archive::unpack::xattr_allowed(&name) {
            return Err(TreeError {
                kind: ErrorKind::PermissionDenied,
                message: format!(
                    "{path}: a stage may set user.* (but user.overlay.* and user.osbuild.*, the \
                     store's own), security.capability and security.selinux attributes (and \
                     ACLs), not {name}"
                ),
            });
        }
        self.root
            .set_xattr(Path::new(&path), &name, &value, follow)
            .map_err(error)
    }

    fn remove_xattr(&mut self, path: String, name: String, follow: bool) -> R<()> {
        self.check_writable()?;
        self.root
            .remove_xattr(Path::new(&path), &name, follow)
            .map_err(error)
    }

    fn resolve(&mut self, path: String, follow: bool) -> R<String> {
        self.root
            .resolve(Path::new(&path), follow)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(error)
    }
}

impl super::bindings::osbuild::stage::types::Host for TreeHost {}
