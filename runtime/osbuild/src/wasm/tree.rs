//! The host side of the `osbuild:stage/tree` interface, on `osbuild-tree-fs`
//! (chroot semantics: nothing a stage names can lead outside the tree).

use std::io;
use std::path::Path;

use osbuild_tree_fs::{EntryKind, Root};

use super::bindings::osbuild::stage::tree::{
    self as wit, EntryMetadata, ErrorKind, NodeKind, Timestamp, TreeError,
};

/// The tree, as the wasm host hands it to one stage.
pub struct TreeHost {
    root: Root,
    writable: bool,
    /// The stage declares `device-nodes`: any device node, not only the
    /// harmless ones.
    device_nodes: bool,
}

impl TreeHost {
    pub fn new(root: Root, writable: bool, device_nodes: bool) -> TreeHost {
        TreeHost {
            root,
            writable,
            device_nodes,
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

fn metadata(m: osbuild_tree_fs::Metadata) -> EntryMetadata {
    use wit::EntryKind as K;
    EntryMetadata {
        kind: match m.kind {
            EntryKind::File => K::File,
            EntryKind::Directory => K::Directory,
            EntryKind::Symlink => K::Symlink,
            EntryKind::BlockDevice => K::BlockDevice,
            EntryKind::CharDevice => K::CharDevice,
            EntryKind::Fifo => K::Fifo,
            EntryKind::Socket => K::Socket,
        },
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
