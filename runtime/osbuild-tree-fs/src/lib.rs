//! File operations on a directory treated as the root of an OS tree.
//!
//! An OS tree is full of absolute symlinks (`/etc/localtime ->
//! /usr/share/zoneinfo/UTC`, systemd aliases, ...). Followed naively on the
//! host they lead out of the tree, into the build machine's own `/etc`. Every
//! path given to [`Root`] is resolved with chroot semantics instead, by the
//! kernel (`openat2` with `RESOLVE_IN_ROOT`): `..` stops at the tree's root and
//! an absolute symlink is resolved inside the tree. No operation here can reach
//! outside the directory it was opened on, whatever the tree contains.
//!
//! Used by the runtime (the wasm host's `tree` interface, unpacking `--from`
//! archives) and by the stage SDK's native backend.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, UTIME_OMIT,
};

pub mod stand_in;

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

/// What `lstat`/`stat` tells about an entry, in the units an OS tree needs.
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
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub ino: u64,
    pub dev: u64,
    /// Device number of a block or character device.
    pub rdev: u64,
}

impl Metadata {
    pub fn from_stat(st: &rustix::fs::Stat) -> Self {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => EntryKind::Directory,
            FileType::Symlink => EntryKind::Symlink,
            FileType::BlockDevice => EntryKind::BlockDevice,
            FileType::CharacterDevice => EntryKind::CharDevice,
            FileType::Fifo => EntryKind::Fifo,
            FileType::Socket => EntryKind::Socket,
            _ => EntryKind::File,
        };
        Metadata {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            nlink: st.st_nlink,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec as u32,
            ino: st.st_ino,
            dev: st.st_dev,
            rdev: st.st_rdev,
        }
    }

    pub fn rdev_major(&self) -> u32 {
        rustix::fs::major(self.rdev)
    }

    pub fn rdev_minor(&self) -> u32 {
        rustix::fs::minor(self.rdev)
    }
}

/// Kinds of special files [`Root::make_node`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    BlockDevice,
    CharDevice,
    Fifo,
}

/// A directory opened as the root of a tree. All paths are relative to it;
/// a leading `/` is allowed and means the same thing.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    host_path: PathBuf,
    no_symlinks: bool,
}

/// An entry named for an operation that must not follow a final symlink: its
/// parent directory, resolved inside the root, and its own name.
struct Entry {
    parent: OwnedFd,
    name: OsString,
}

impl Entry {
    /// A path that names the entry itself (not what a symlink points to)
    /// through the parent's `/proc/self/fd` link, for the syscalls that have
    /// no `*at` form (the `l*xattr` family).
    fn proc_path(&self) -> CString {
        let mut bytes = format!("/proc/self/fd/{}/", self.parent.as_raw_fd()).into_bytes();
        bytes.extend_from_slice(self.name.as_bytes());
        CString::new(bytes).expect("file names hold no NUL")
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Splits `path` into its parent (relative to the root) and final name.
/// `None` for the root itself.
fn split(path: &Path) -> io::Result<Option<(PathBuf, OsString)>> {
    check_no_nul(path)?;
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) => {
                return Err(invalid(format!("{}: not a tree path", path.display())));
            }
            Component::ParentDir => parts.push(OsStr::new("..")),
            Component::Normal(n) => parts.push(n),
        }
    }
    let Some(last) = parts.pop() else {
        return Ok(None);
    };
    if last == ".." {
        return Err(invalid(format!(
            "{}: a path that ends in '..' names no entry",
            path.display()
        )));
    }
    let mut parent = PathBuf::from(".");
    parent.extend(parts);
    Ok(Some((parent, last.to_owned())))
}

/// A path with a NUL byte names nothing the kernel could open.
fn check_no_nul(path: &Path) -> io::Result<()> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(invalid(format!(
            "{}: a path with a NUL byte",
            path.display()
        )));
    }
    Ok(())
}

/// The device nodes an OS tree needs in `/dev` before udev or devtmpfs
/// runs, and that reach no hardware: `(name, block?, major, minor)`.
/// Creating any other device node is a capability.
pub const HARMLESS_DEVICES: [(&str, bool, u32, u32); 8] = [
    ("null", false, 1, 3),
    ("zero", false, 1, 5),
    ("full", false, 1, 7),
    ("random", false, 1, 8),
    ("urandom", false, 1, 9),
    ("tty", false, 5, 0),
    ("console", false, 5, 1),
    ("ptmx", false, 5, 2),
];

/// The name of a harmless device (see [`HARMLESS_DEVICES`]), if it is one.
pub fn harmless_device(kind: NodeKind, major: u32, minor: u32) -> Option<&'static str> {
    let block = match kind {
        NodeKind::BlockDevice => true,
        NodeKind::CharDevice => false,
        NodeKind::Fifo => return None,
    };
    HARMLESS_DEVICES
        .iter()
        .find(|(_, b, ma, mi)| *b == block && *ma == major && *mi == minor)
        .map(|(name, ..)| *name)
}

/// What a special file is, for the error that refuses to open it.
fn special_kind(st: &rustix::fs::Stat) -> Option<String> {
    let dev = || {
        format!(
            "{}:{}",
            rustix::fs::major(st.st_rdev),
            rustix::fs::minor(st.st_rdev)
        )
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::BlockDevice => Some(format!("a block device ({})", dev())),
        FileType::CharacterDevice => Some(format!("a character device ({})", dev())),
        FileType::Fifo => Some("a FIFO".into()),
        FileType::Socket => Some("a socket".into()),
        _ => None,
    }
}

/// The error for opening a special file: the host side never does.
pub fn refused_special(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("is {what}: osbuild never opens device nodes, FIFOs or sockets in a tree"),
    )
}

/// Whether `st` could be a device stand-in (see [`stand_in`]): only then
/// is its attribute read, so a root build never pays for it.
fn may_stand_in(st: &rustix::fs::Stat) -> bool {
    stand_in::enabled()
        && st.st_size == 0
        && FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// What the stand-in whose descriptor's `/proc/self/fd` path is `path`
/// (a regular file: the magic link leads to it) stands for.
fn read_stand_in(path: &CString) -> Option<(EntryKind, u32, u32)> {
    let mut buf = [0u8; 32];
    let n = rustix::fs::getxattr(path.as_c_str(), stand_in::XATTR, &mut buf[..]).ok()?;
    stand_in::decode(&buf[..n])
}

fn with_stand_in(st: rustix::fs::Stat, stands_for: Option<(EntryKind, u32, u32)>) -> Metadata {
    let mut m = Metadata::from_stat(&st);
    if let Some((kind, major, minor)) = stands_for {
        m.kind = kind;
        m.rdev = rustix::fs::makedev(major, minor);
    }
    m
}

/// The stand-ins' attribute is osbuild's alone to set or remove.
fn refuse_own_xattr(name: &str) -> io::Result<()> {
    if name == stand_in::XATTR {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{name} is osbuild's own (it marks device-node stand-ins in rootless builds)"),
        ));
    }
    Ok(())
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits & 0o7777)
}

impl Root {
    /// Opens `dir` as a tree root.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Root> {
        let dir = dir.as_ref();
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", dir.display()))
        })?;
        let host_path = std::fs::canonicalize(dir)?;
        Ok(Root {
            fd,
            host_path,
            no_symlinks: false,
        })
    }

    /// Opens `dir` as a tree root in which no path may pass through a
    /// symlink at all (`ELOOP`), for unpacking untrusted archives: an entry
    /// under a symlinked directory is refused rather than redirected.
    pub fn open_no_symlinks(dir: impl AsRef<Path>) -> io::Result<Root> {
        let mut root = Root::open(dir)?;
        root.no_symlinks = true;
        Ok(root)
    }

    fn resolve_flags(&self) -> ResolveFlags {
        let flags = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        if self.no_symlinks {
            flags | ResolveFlags::NO_SYMLINKS
        } else {
            flags
        }
    }

    /// The tree's root directory on the host.
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }

    fn open_in_root(&self, path: &Path, flags: OFlags, m: Mode) -> io::Result<OwnedFd> {
        check_no_nul(path)?;
        let rel = relative(path);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            m,
            self.resolve_flags(),
        )
        .map_err(errno)
    }

    fn entry(&self, path: &Path) -> io::Result<Entry> {
        let (parent, name) = split(path)?
            .ok_or_else(|| invalid("the tree's root has no parent directory".to_string()))?;
        let parent = self.open_in_root(&parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Entry { parent, name })
    }

    /// An `O_PATH` descriptor for `path`, following a final symlink (inside the root).
    fn followed(&self, path: &Path) -> io::Result<OwnedFd> {
        self.open_in_root(path, OFlags::PATH, Mode::empty())
    }

    fn proc_fd(fd: &OwnedFd) -> CString {
        CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
    }

    /// `lstat` (follow = false) or `stat` (follow = true), inside the root.
    pub fn metadata(&self, path: &Path, follow: bool) -> io::Result<Metadata> {
        let fd = if follow || split(path)?.is_none() {
            // Following needs no split, so `a/..` is fine here.
            self.followed(path)?
        } else {
            let e = self.entry(path)?;
            let st =
                rustix::fs::statat(&e.parent, &e.name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
            if !may_stand_in(&st) {
                return Ok(Metadata::from_stat(&st));
            }
            // A stand-in's attribute is read through a descriptor of the
            // entry, so both answers are about one inode.
            rustix::fs::openat(
                &e.parent,
                &e.name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?
        };
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        if may_stand_in(&st) {
            return Ok(with_stand_in(st, read_stand_in(&Self::proc_fd(&fd))));
        }
        Ok(Metadata::from_stat(&st))
    }

    /// `lstat` of `path` inside the root, as the kernel says it (no
    /// stand-in read as a device).
    pub fn stat_raw(&self, path: &Path) -> io::Result<rustix::fs::Stat> {
        match split(path)? {
            None => rustix::fs::fstat(&self.fd).map_err(errno),
            Some(_) => {
                let e = self.entry(path)?;
                rustix::fs::statat(&e.parent, &e.name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
            }
        }
    }

    /// Whether an entry exists at `path` (a dangling symlink exists).
    pub fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.metadata(path, false) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The target of the symlink at `path`, as stored (absolute targets stay absolute).
    pub fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        let e = self.entry(path)?;
        let target = rustix::fs::readlinkat(&e.parent, &e.name, Vec::new()).map_err(errno)?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    /// Creates a symlink at `path` pointing to `target` (stored verbatim).
    pub fn symlink(&self, target: &Path, path: &Path) -> io::Result<()> {
        let e = self.entry(path)?;
        rustix::fs::symlinkat(target, &e.parent, &e.name).map_err(errno)
    }

    /// Creates a hard link at `path` to the entry at `existing` (not following it).
    pub fn hard_link(&self, existing: &Path, path: &Path) -> io::Result<()> {
        let from = self.entry(existing)?;
        let to = self.entry(path)?;
        rustix::fs::linkat(
            &from.parent,
            &from.name,
            &to.parent,
            &to.name,
            AtFlags::empty(),
        )
        .map_err(errno)
    }

    /// Creates a directory (not its parents).
    pub fn create_dir(&self, path: &Path, mode_bits: u32) -> io::Result<()> {
        let e = self.entry(path)?;
        rustix::fs::mkdirat(&e.parent, &e.name, mode(mode_bits)).map_err(errno)
    }

    /// Creates a directory and its missing parents (mode 0755), like `mkdir -p`.
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match self.metadata(path, true) {
            Ok(m) if m.kind == EntryKind::Directory => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists and is not a directory", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some((parent, _)) = split(path)? {
            self.create_dir_all(&parent)?;
        }
        match self.create_dir(path, 0o755) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    /// Creates a new regular file (it must not exist) and opens it for writing.
    pub fn create_file(&self, path: &Path, mode_bits: u32) -> io::Result<File> {
        let fd = self.open_in_root(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            mode(mode_bits),
        )?;
        Ok(File::from(fd))
    }

    /// Opens a regular file for reading, following symlinks inside the
    /// root. Anything else (a device node, FIFO or socket) is refused before
    /// it is opened: the entry is looked up as an `O_PATH` descriptor, which
    /// opens nothing, checked, and only then reopened.
    pub fn open_file(&self, path: &Path) -> io::Result<File> {
        let fd = self.open_in_root(path, OFlags::PATH, Mode::empty())?;
        self.reopen_regular(&fd, OFlags::RDONLY)
    }

    /// Reopens an `O_PATH` descriptor with `flags` if it is a regular file.
    fn reopen_regular(&self, fd: &OwnedFd, flags: OFlags) -> io::Result<File> {
        let st = rustix::fs::fstat(fd).map_err(errno)?;
        if let Some(what) = special_kind(&st) {
            return Err(refused_special(&what));
        }
        if may_stand_in(&st)
            && let Some((kind, major, minor)) = read_stand_in(&Self::proc_fd(fd))
        {
            let what = if kind == EntryKind::BlockDevice {
                "a block device"
            } else {
                "a character device"
            };
            return Err(refused_special(&format!("{what} ({major}:{minor})")));
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        let reopened = rustix::fs::open(
            Self::proc_fd(fd).as_c_str(),
            flags | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(File::from(reopened))
    }

    /// Writes `contents` to `path`, creating it with `mode_bits` or
    /// truncating it. An existing entry must be a regular file (a symlink
    /// to one inside the root is followed); special files are refused
    /// unopened, as in [`Root::open_file`].
    pub fn write(&self, path: &Path, contents: &[u8], mode_bits: u32) -> io::Result<()> {
        use std::io::Write;
        let mut file = match self.open_in_root(path, OFlags::PATH, Mode::empty()) {
            Ok(fd) => self.reopen_regular(&fd, OFlags::WRONLY | OFlags::TRUNC)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Nothing there (or a dangling symlink, whose target inside
                // the root is created). Non-blocking and checked after, in
                // case something else was put there in between.
                let fd = self.open_in_root(
                    path,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::NONBLOCK | OFlags::NOCTTY,
                    mode(mode_bits),
                )?;
                let st = rustix::fs::fstat(&fd).map_err(errno)?;
                if let Some(what) = special_kind(&st) {
                    return Err(refused_special(&what));
                }
                let file = File::from(fd);
                rustix::fs::fcntl_setfl(&file, OFlags::empty()).map_err(errno)?;
                file
            }
            Err(e) => return Err(e),
        };
        file.write_all(contents)
    }

    /// Reads the whole file at `path`.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut buf = Vec::new();
        self.open_file(path)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Names in the directory at `path`, sorted bytewise.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let fd = self.open_in_root(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        names.sort();
        Ok(names)
    }

    /// The entries of the directory at `path` with their kinds (from the
    /// directory itself where the file system says; `None` where it does
    /// not), sorted bytewise. Stops with an error once the names would take
    /// more than `max_bytes` (each counted with 16 bytes for its kind and
    /// bookkeeping), before reading more: a directory of millions of
    /// entries costs the caller an error, not memory.
    pub fn read_dir_bounded(
        &self,
        path: &Path,
        max_bytes: u64,
    ) -> io::Result<Vec<(OsString, Option<EntryKind>)>> {
        let fd = self.open_in_root(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut entries = Vec::new();
        let mut used = 0u64;
        for entry in rustix::fs::Dir::read_from(&fd).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            used += name.len() as u64 + 16;
            if used > max_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("more than {max_bytes} bytes of entries"),
                ));
            }
            let kind = match entry.file_type() {
                FileType::RegularFile => Some(EntryKind::File),
                FileType::Directory => Some(EntryKind::Directory),
                FileType::Symlink => Some(EntryKind::Symlink),
                FileType::BlockDevice => Some(EntryKind::BlockDevice),
                FileType::CharacterDevice => Some(EntryKind::CharDevice),
                FileType::Fifo => Some(EntryKind::Fifo),
                FileType::Socket => Some(EntryKind::Socket),
                FileType::Unknown => None,
            };
            entries.push((OsString::from_vec(name.to_vec()), kind));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// Removes a file, symlink or special file (not a directory).
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        let e = self.entry(path)?;
        rustix::fs::unlinkat(&e.parent, &e.name, AtFlags::empty()).map_err(errno)
    }

    /// Removes an empty directory.
    pub fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let e = self.entry(path)?;
        rustix::fs::unlinkat(&e.parent, &e.name, AtFlags::REMOVEDIR).map_err(errno)
    }

    /// Removes `path` and, for a directory, everything under it. Symlinks
    /// are removed, never followed.
    pub fn remove_all(&self, path: &Path) -> io::Result<()> {
        if self.metadata(path, false)?.kind == EntryKind::Directory {
            for name in self.read_dir(path)? {
                self.remove_all(&path.join(name))?;
            }
            self.remove_dir(path)
        } else {
            self.remove_file(path)
        }
    }

    /// Renames `from` to `to`, replacing `to` if it exists.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let a = self.entry(from)?;
        let b = self.entry(to)?;
        rustix::fs::renameat(&a.parent, &a.name, &b.parent, &b.name).map_err(errno)
    }

    /// Sets the permission bits (incl. setuid/setgid/sticky) of `path`,
    /// following a final symlink inside the root (symlinks have no mode).
    pub fn set_mode(&self, path: &Path, mode_bits: u32) -> io::Result<()> {
        let fd = self.followed(path)?;
        rustix::fs::chmodat(
            CWD,
            Self::proc_fd(&fd).as_c_str(),
            mode(mode_bits),
            AtFlags::empty(),
        )
        .map_err(errno)
    }

    /// Sets the numeric owner and group of `path`. Like chown(2), this
    /// clears setuid/setgid bits: set the mode afterwards.
    pub fn set_owner(&self, path: &Path, uid: u32, gid: u32, follow: bool) -> io::Result<()> {
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        );
        if follow || split(path)?.is_none() {
            let fd = self.followed(path)?;
            rustix::fs::chownat(&fd, "", uid, gid, AtFlags::EMPTY_PATH).map_err(errno)
        } else {
            let e = self.entry(path)?;
            rustix::fs::chownat(&e.parent, &e.name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(errno)
        }
    }

    /// Sets the modification time of `path` (the access time is left alone).
    pub fn set_mtime(&self, path: &Path, sec: i64, nsec: u32, follow: bool) -> io::Result<()> {
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: sec,
                tv_nsec: nsec.into(),
            },
        };
        if follow || split(path)?.is_none() {
            let fd = self.followed(path)?;
            rustix::fs::utimensat(CWD, Self::proc_fd(&fd).as_c_str(), &times, AtFlags::empty())
                .map_err(errno)
        } else {
            let e = self.entry(path)?;
            rustix::fs::utimensat(&e.parent, &e.name, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(errno)
        }
    }

    /// Creates a device node or fifo.
    pub fn make_node(
        &self,
        path: &Path,
        kind: NodeKind,
        mode_bits: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let e = self.entry(path)?;
        if kind != NodeKind::Fifo && stand_in::enabled() {
            return Self::make_stand_in(&e, kind, mode_bits, major, minor);
        }
        let ft = match kind {
            NodeKind::BlockDevice => FileType::BlockDevice,
            NodeKind::CharDevice => FileType::CharacterDevice,
            NodeKind::Fifo => FileType::Fifo,
        };
        let dev = rustix::fs::makedev(major, minor);
        rustix::fs::mknodat(&e.parent, &e.name, ft, mode(mode_bits), dev).map_err(errno)?;
        // mknod applies the umask: set the bits exactly as asked.
        rustix::fs::chmodat(&e.parent, &e.name, mode(mode_bits), AtFlags::empty()).map_err(errno)
    }

    fn make_stand_in(
        e: &Entry,
        kind: NodeKind,
        mode_bits: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let fd = rustix::fs::openat(
            &e.parent,
            &e.name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode(mode_bits),
        )
        .map_err(errno)?;
        let kind = if kind == NodeKind::BlockDevice {
            EntryKind::BlockDevice
        } else {
            EntryKind::CharDevice
        };
        let value = stand_in::encode(kind, major, minor);
        rustix::fs::fsetxattr(
            &fd,
            stand_in::XATTR,
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(errno)?;
        rustix::fs::fchmod(&fd, mode(mode_bits)).map_err(errno)
    }

    /// Runs `f` with a path naming the entry itself (`follow = false`) or
    /// what it resolves to inside the root (`follow = true`), and whether
    /// the syscall may follow that path's final component.
    fn with_xattr_path<T>(
        &self,
        path: &Path,
        follow: bool,
        f: impl FnOnce(&CString, bool) -> rustix::io::Result<T>,
    ) -> io::Result<T> {
        if follow || split(path)?.is_none() {
            let fd = self.followed(path)?;
            // The descriptor's magic link leads to the resolved, non-symlink
            // inode; following it is what we want.
            f(&Self::proc_fd(&fd), true).map_err(errno)
        } else {
            let e = self.entry(path)?;
            f(&e.proc_path(), false).map_err(errno)
        }
    }

    /// The value of extended attribute `name`, or `None` if it is not set.
    pub fn get_xattr(&self, path: &Path, name: &str, follow: bool) -> io::Result<Option<Vec<u8>>> {
        if name == stand_in::XATTR {
            return Ok(None);
        }
        let r = self.with_xattr_path(path, follow, |p, follow| {
            let size = if follow {
                rustix::fs::getxattr_query(p.as_c_str(), name)?
            } else {
                rustix::fs::lgetxattr_query(p.as_c_str(), name)?
            };
            let mut buf = vec![0u8; size];
            let n = if follow {
                rustix::fs::getxattr(p.as_c_str(), name, &mut buf[..])?
            } else {
                rustix::fs::lgetxattr(p.as_c_str(), name, &mut buf[..])?
            };
            buf.truncate(n);
            Ok(buf)
        });
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The names of all extended attributes of `path`, sorted.
    pub fn list_xattrs(&self, path: &Path, follow: bool) -> io::Result<Vec<String>> {
        let raw = self.with_xattr_path(path, follow, |p, follow| {
            let size = if follow {
                rustix::fs::listxattr_query(p.as_c_str())?
            } else {
                rustix::fs::llistxattr_query(p.as_c_str())?
            };
            let mut buf = vec![0u8; size];
            let n = if follow {
                rustix::fs::listxattr(p.as_c_str(), &mut buf[..])?
            } else {
                rustix::fs::llistxattr(p.as_c_str(), &mut buf[..])?
            };
            buf.truncate(n);
            Ok(buf)
        })?;
        let mut names: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty() && *n != stand_in::XATTR.as_bytes())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Sets extended attribute `name` to `value`.
    pub fn set_xattr(&self, path: &Path, name: &str, value: &[u8], follow: bool) -> io::Result<()> {
        refuse_own_xattr(name)?;
        self.with_xattr_path(path, follow, |p, follow| {
            // The kernel refuses `user.` attributes on device nodes; a
            // stand-in refuses them too, so a rootless build keeps the
            // same bytes as a root one.
            if name.starts_with("user.") && stand_in::enabled() {
                let mut buf = [0u8; 32];
                let marked = if follow {
                    rustix::fs::getxattr(p.as_c_str(), stand_in::XATTR, &mut buf[..])
                } else {
                    rustix::fs::lgetxattr(p.as_c_str(), stand_in::XATTR, &mut buf[..])
                };
                if marked.is_ok() {
                    return Err(rustix::io::Errno::PERM);
                }
            }
            let flags = rustix::fs::XattrFlags::empty();
            if follow {
                rustix::fs::setxattr(p.as_c_str(), name, value, flags)
            } else {
                rustix::fs::lsetxattr(p.as_c_str(), name, value, flags)
            }
        })
    }

    /// Removes extended attribute `name`.
    pub fn remove_xattr(&self, path: &Path, name: &str, follow: bool) -> io::Result<()> {
        refuse_own_xattr(name)?;
        self.with_xattr_path(path, follow, |p, follow| {
            if follow {
                rustix::fs::removexattr(p.as_c_str(), name)
            } else {
                rustix::fs::lremovexattr(p.as_c_str(), name)
            }
        })
    }

    /// The canonical path of `path` inside the tree (absolute, starting at
    /// the tree's `/`), with every symlink resolved inside the tree; a final
    /// symlink is kept when `follow` is false. The parent must exist; with
    /// `follow = false` the final entry need not.
    pub fn resolve(&self, path: &Path, follow: bool) -> io::Result<PathBuf> {
        if follow {
            return self.tree_path_of(&self.followed(path)?);
        }
        match split(path)? {
            None => Ok(PathBuf::from("/")),
            Some((parent, name)) => {
                let fd =
                    self.open_in_root(&parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
                Ok(self.tree_path_of(&fd)?.join(name))
            }
        }
    }

    fn tree_path_of(&self, fd: &impl AsFd) -> io::Result<PathBuf> {
        let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
        let host = std::fs::read_link(link)?;
        let inside = host.strip_prefix(&self.host_path).map_err(|_| {
            io::Error::other(format!(
                "{} resolved outside the tree {}",
                host.display(),
                self.host_path.display()
            ))
        })?;
        Ok(Path::new("/").join(inside))
    }
}

#[cfg(test)]
mod tests;
