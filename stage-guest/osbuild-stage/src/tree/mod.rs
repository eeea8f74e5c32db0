//! [`Tree`]: the OS tree a stage works on.

use std::io;
use std::path::{Path, PathBuf};

#[cfg(not(target_family = "wasm"))]
mod native;
#[cfg(not(target_family = "wasm"))]
use native::Backend;

#[cfg(target_family = "wasm")]
mod wasm;
#[cfg(target_family = "wasm")]
use wasm::Backend;

/// The kind of a file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

/// Kinds of special files [`Tree::make_node`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    BlockDevice,
    CharDevice,
    Fifo,
}

/// What a stage can learn about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl Metadata {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Directory
    }
    pub fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }
    pub fn is_symlink(&self) -> bool {
        self.kind == EntryKind::Symlink
    }
}

/// The OS tree a stage works on.
///
/// Paths are absolute inside the tree (`/etc/hostname`); relative paths
/// mean the same from `/`. Absolute symlinks resolve inside the tree and
/// `..` stops at its root. Errors name the path.
///
/// In a wasm stage `/tmp` is the stage's private scratch directory, not
/// the tree's `/tmp`.
pub struct Tree {
    backend: Backend,
}

fn with_path<T>(path: &Path, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn abs(path: &Path) -> PathBuf {
    Path::new("/").join(path)
}

macro_rules! forward {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name(&self, path: impl AsRef<Path>, $($arg: $ty),*) -> io::Result<$ret> {
            let path = abs(path.as_ref());
            with_path(&path, self.backend.$name(&path, $($arg),*))
        }
    };
}

impl Tree {
    /// Opens a directory on the host as a tree (native stages and tests).
    #[cfg(not(target_family = "wasm"))]
    pub fn open(root: impl AsRef<Path>) -> io::Result<Tree> {
        Ok(Tree {
            backend: Backend::open(root.as_ref())?,
        })
    }

    /// The tree's directory on the host, for native stages that hand it to
    /// host tools (`mmdebstrap`, `dnf --installroot`, `mkfs.ext4 -d`).
    #[cfg(not(target_family = "wasm"))]
    pub fn host_path(&self) -> &Path {
        self.backend.host_path()
    }

    #[cfg(target_family = "wasm")]
    pub(crate) fn wasm() -> Tree {
        Tree { backend: Backend }
    }

    forward!(
        /// Reads a whole file, following symlinks.
        read() -> Vec<u8>
    );
    forward!(
        /// Metadata, following a final symlink (`stat`).
        metadata() -> Metadata
    );
    forward!(
        /// Metadata of the entry itself (`lstat`).
        symlink_metadata() -> Metadata
    );
    forward!(
        /// The names in a directory, sorted.
        read_dir() -> Vec<String>
    );
    forward!(
        /// Creates a directory with `mode` (its parent must exist).
        create_dir(mode: u32) -> ()
    );
    forward!(
        /// Creates a directory and its missing parents (0755), like `mkdir -p`.
        create_dir_all() -> ()
    );
    forward!(
        /// Removes a file, symlink or special file.
        remove_file() -> ()
    );
    forward!(
        /// Removes an entry and, for a directory, everything below it.
        /// Symlinks are removed, never followed.
        remove_all() -> ()
    );
    forward!(
        /// The target of a symlink, as stored.
        read_link() -> PathBuf
    );
    forward!(
        /// Sets permission bits (incl. setuid/setgid/sticky), following symlinks.
        set_mode(mode: u32) -> ()
    );
    forward!(
        /// Sets the numeric owner of the entry itself (a symlink is not
        /// followed). Clears setuid/setgid like chown(2): set the mode after.
        set_owner(uid: u32, gid: u32) -> ()
    );
    forward!(
        /// Sets the modification time of the entry itself.
        set_mtime(sec: i64, nsec: u32) -> ()
    );
    forward!(
        /// Creates a device node or fifo.
        make_node(kind: NodeKind, mode: u32, major: u32, minor: u32) -> ()
    );
    forward!(
        /// An extended attribute of the entry itself, if set.
        get_xattr(name: &str) -> Option<Vec<u8>>
    );
    forward!(
        /// Names of the extended attributes of the entry itself, sorted.
        list_xattrs() -> Vec<String>
    );
    forward!(
        /// Sets an extended attribute on the entry itself.
        set_xattr(name: &str, value: &[u8]) -> ()
    );
    forward!(
        /// Removes an extended attribute from the entry itself.
        remove_xattr(name: &str) -> ()
    );
    forward!(
        /// The canonical path inside the tree, every symlink resolved.
        resolve() -> PathBuf
    );

    /// Writes a file, creating it (mode 0644, owned by root) or replacing
    /// its contents (keeping its mode and owner). `contents` is anything
    /// that is bytes: `&str`, `String`, `&[u8]`, `Vec<u8>`.
    pub fn write(&self, path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
        let path = abs(path.as_ref());
        with_path(&path, self.backend.write(&path, contents.as_ref()))
    }

    /// Writes a file with the given contents; see [`Tree::write`].
    pub fn write_str(&self, path: impl AsRef<Path>, contents: impl AsRef<str>) -> io::Result<()> {
        self.write(path, contents.as_ref().as_bytes())
    }

    /// Reads a whole file as UTF-8.
    pub fn read_to_string(&self, path: impl AsRef<Path>) -> io::Result<String> {
        let path = path.as_ref();
        let bytes = self.read(path)?;
        String::from_utf8(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not UTF-8", abs(path).display()),
            )
        })
    }

    /// Reads a file as UTF-8, or `None` if it does not exist.
    pub fn read_optional(&self, path: impl AsRef<Path>) -> io::Result<Option<String>> {
        match self.read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether an entry exists (a dangling symlink exists).
    pub fn exists(&self, path: impl AsRef<Path>) -> io::Result<bool> {
        match self.symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates a symlink at `path` pointing to `target` (stored verbatim).
    pub fn symlink(&self, target: impl AsRef<Path>, path: impl AsRef<Path>) -> io::Result<()> {
        let path = abs(path.as_ref());
        with_path(&path, self.backend.symlink(target.as_ref(), &path))
    }

    /// Creates a hard link at `path` to `existing`.
    pub fn hard_link(&self, existing: impl AsRef<Path>, path: impl AsRef<Path>) -> io::Result<()> {
        let path = abs(path.as_ref());
        with_path(
            &path,
            self.backend.hard_link(&abs(existing.as_ref()), &path),
        )
    }

    /// Renames `from` to `to`, replacing `to`.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        let from = abs(from.as_ref());
        with_path(&from, self.backend.rename(&from, &abs(to.as_ref())))
    }

    /// Writes a file and sets its mode and owner in one go.
    pub fn write_with(
        &self,
        path: impl AsRef<Path>,
        contents: impl AsRef<[u8]>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        let path = path.as_ref();
        self.write(path, contents)?;
        self.set_owner(path, uid, gid)?;
        self.set_mode(path, mode)
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests;
