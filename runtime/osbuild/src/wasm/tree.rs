//! The host side of the `osbuild:stage/tree` interface, on `osbuild-tree-fs`
//! (chroot semantics: nothing a stage names can lead outside the tree).
//!
//! What a stage reads through it is bounded by the stage's memory limit
//! before the host allocates it: the tree is untrusted, and a sparse 1 TiB
//! file must cost the stage its limit, not the host its memory.

use std::io::{self, Read as _};
use std::path::Path;

use osbuild_tree_fs::{EntryKind, Root};

use crate::stage::PathSet;

use super::bindings::osbuild::stage::tree::{
    self as wit, DirEntry, EntryMetadata, ErrorKind, NodeKind, Timestamp, TreeError,
};

/// The tree, as the wasm host hands it to one stage.
pub struct TreeHost {
    root: Root,
    writable: bool,
    /// A path-scoped stage's write set: a call that would change a path
    /// outside it is refused at once. (What holds the stage to it is the
    /// check of its change set after it ran; this names the offending call
    /// to the stage while it runs.)
    writes: Option<PathSet>,
    /// The stage declares `device-nodes`: any device node, not only the
    /// harmless ones.
    device_nodes: bool,
    /// The most bytes one call may hand the stage (its memory limit: more
    /// could never reach its memory anyway).
    max_read: u64,
}

impl TreeHost {
    pub fn new(
        root: Root,
        writable: bool,
        writes: Option<PathSet>,
        device_nodes: bool,
        max_read: u64,
    ) -> TreeHost {
        TreeHost {
            root,
            writable,
            writes,
            device_nodes,
            max_read,
        }
    }

    fn too_big(&self, path: &str, what: &str) -> TreeError {
        TreeError {
            kind: ErrorKind::Other,
            message: format!(
                "{path}: {what} the stage's memory limit ({} MiB)",
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

impl TreeHost {
    /// Refuses a change to `path` (its final symlink followed if
    /// `follow`) outside the write set; a directory on the way to the set
    /// may be created (`on_the_way`).
    fn check_write(&self, path: &str, follow: bool, on_the_way: bool) -> Result<(), TreeError> {
        self.check_writable()?;
        let Some(set) = &self.writes else {
            return Ok(());
        };
        let p = Path::new(path);
        let resolved = match self.root.resolve(p, follow) {
            Ok(r) => r,
            Err(_) if follow => match self.root.resolve(p, false) {
                Ok(r) => r,
                Err(_) => return Ok(()),
            },
            // The call fails by itself (no parent directory).
            Err(_) => return Ok(()),
        };
        let resolved = resolved.to_string_lossy();
        if set.contains(&resolved) || (on_the_way && set.leads_to(&resolved)) {
            return Ok(());
        }
        let via = if resolved != path {
            format!(" (that is {resolved})")
        } else {
            String::new()
        };
        Err(TreeError {
            kind: ErrorKind::PermissionDenied,
            message: format!(
                "{path}{via} is outside the stage's write set {}",
                set.describe()
            ),
        })
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
            return Err(self.too_big(&path, &format!("{size} bytes, more than")));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // The file may grow while it is read: the cap holds anyway.
        file.take(self.max_read + 1)
            .read_to_end(&mut bytes)
            .map_err(error)?;
        if bytes.len() as u64 > self.max_read {
            return Err(self.too_big(&path, "grew while read to more than"));
        }
        Ok(bytes)
    }

    fn write_file(&mut self, path: String, contents: Vec<u8>) -> R<()> {
        self.check_write(&path, true, false)?;
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
        let entries = match self.root.read_dir_bounded(dir, self.max_read) {
            Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                return Err(self.too_big(&path, "its entries take more than"));
            }
            r => r.map_err(error)?,
        };
        entries
            .into_iter()
            .map(|(name, known)| {
                // A rootless tree's device stand-ins are files on disk:
                // their kind is the one `metadata` reports.
                let k = match known {
                    Some(EntryKind::File) if !osbuild_tree_fs::stand_in::enabled() => {
                        EntryKind::File
                    }
                    Some(EntryKind::File) | None => {
                        self.root
                            .metadata(&dir.join(&name), false)
                            .map_err(error)?
                            .kind
                    }
                    Some(k) => k,
                };
                Ok(DirEntry {
                    name: name.to_string_lossy().into_owned(),
                    kind: kind(k),
                })
            })
            .collect()
    }

    fn create_dir(&mut self, path: String, mode: u32) -> R<()> {
        self.check_write(&path, false, true)?;
        let p = Path::new(&path);
        self.root.create_dir(p, mode).map_err(error)?;
        self.root.set_mode(p, mode).map_err(error)
    }

    fn remove(&mut self, path: String) -> R<()> {
        self.check_write(&path, false, false)?;
        let p = Path::new(&path);
        if self.root.metadata(p, false).map_err(error)?.kind == EntryKind::Directory {
            self.root.remove_dir(p).map_err(error)
        } else {
            self.root.remove_file(p).map_err(error)
        }
    }

    fn remove_all(&mut self, path: String) -> R<()> {
        self.check_write(&path, false, false)?;
        self.root.remove_all(Path::new(&path)).map_err(error)
    }

    fn rename(&mut self, source: String, destination: String) -> R<()> {
        self.check_write(&source, false, false)?;
        self.check_write(&destination, false, false)?;
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
        self.check_write(&path, false, false)?;
        self.root
            .symlink(Path::new(&target), Path::new(&path))
            .map_err(error)
    }

    fn hard_link(&mut self, existing: String, path: String) -> R<()> {
        self.check_write(&path, false, false)?;
        self.root
            .hard_link(Path::new(&existing), Path::new(&path))
            .map_err(error)
    }

    fn set_mode(&mut self, path: String, mode: u32) -> R<()> {
        self.check_write(&path, true, false)?;
        self.root.set_mode(Path::new(&path), mode).map_err(error)
    }

    fn set_owner(&mut self, path: String, uid: u32, gid: u32, follow: bool) -> R<()> {
        self.check_write(&path, follow, false)?;
        self.root
            .set_owner(Path::new(&path), uid, gid, follow)
            .map_err(error)
    }

    fn set_mtime(&mut self, path: String, mtime: Timestamp, follow: bool) -> R<()> {
        self.check_write(&path, follow, false)?;
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
        self.check_write(&path, false, false)?;
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
        self.check_write(&path, follow, false)?;
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
        self.check_write(&path, follow, false)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use wit::Host as _;

    fn host(dir: &Path, writable: bool, max_read: u64) -> TreeHost {
        TreeHost::new(Root::open(dir).unwrap(), writable, None, false, max_read)
    }

    /// Every call that changes the tree is refused to a `tree: read` stage,
    /// and changes nothing.
    #[test]
    fn a_read_only_stage_can_change_nothing_through_the_new_calls() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), "keep").unwrap();
        let mut h = host(dir.path(), false, 1 << 20);
        let refused = [
            h.write_file("/d/f".into(), b"x".to_vec()),
            h.write_file("/new".into(), b"x".to_vec()),
            h.create_dir("/e".into(), 0o755),
            h.remove("/d/f".into()),
            h.remove_all("/d".into()),
            h.rename("/d/f".into(), "/g".into()),
        ];
        for r in refused {
            let e = r.unwrap_err();
            assert_eq!(e.kind, ErrorKind::PermissionDenied);
            assert_eq!(e.message, "the stage declares read-only access to the tree");
        }
        assert_eq!(std::fs::read(dir.path().join("d/f")).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(h.read_file("/d/f".into()).unwrap(), b"keep");
    }

    /// A path-scoped stage's call outside its write set is refused at once,
    /// naming the path it resolves to; inside it, calls work.
    #[test]
    fn a_write_outside_the_write_set_is_refused_where_it_is_made() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/motd")).unwrap();
        let set = PathSet::parse(&["/etc/motd", "/etc/systemd/system/**"]).unwrap();
        let mut h = TreeHost::new(
            Root::open(dir.path()).unwrap(),
            true,
            Some(set),
            false,
            1 << 20,
        );
        // Through the symlink the set names: the file it leads to.
        let e = h.write_file("/etc/motd".into(), b"x".to_vec()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert_eq!(
            e.message,
            "/etc/motd (that is /etc/passwd) is outside the stage's write set [\"/etc/motd\", \"/etc/systemd/system/**\"]"
        );
        for e in [
            h.set_mode("/etc/passwd".into(), 0o600),
            h.remove("/etc/passwd".into()),
            h.rename("/etc/motd".into(), "/etc/shadow".into()),
            h.create_dir("/usr".into(), 0o755),
        ] {
            assert_eq!(e.unwrap_err().kind, ErrorKind::PermissionDenied);
        }
        assert_eq!(
            std::fs::read(dir.path().join("etc/passwd")).unwrap(),
            b"root"
        );
        // The link itself is in the set; directories on the way may be made.
        h.remove("/etc/motd".into()).unwrap();
        h.write_file("/etc/motd".into(), b"hi".to_vec()).unwrap();
        h.create_dir("/etc/systemd".into(), 0o755).unwrap();
        h.create_dir("/etc/systemd/system".into(), 0o755).unwrap();
        h.write_file("/etc/systemd/system/a.service".into(), b"[Unit]".to_vec())
            .unwrap();
    }

    /// What a call hands the stage is bounded before the host reads it.
    #[test]
    fn a_huge_file_or_directory_costs_the_stage_an_error_not_the_host_memory() {
        let dir = tempfile::tempdir().unwrap();
        let big = std::fs::File::create(dir.path().join("big")).unwrap();
        big.set_len(1 << 40).unwrap(); // sparse: a terabyte of nothing
        std::fs::create_dir(dir.path().join("many")).unwrap();
        for i in 0..100 {
            std::fs::write(dir.path().join(format!("many/{i:03}")), "").unwrap();
        }
        let mut h = host(dir.path(), true, 1 << 20);
        let e = h.read_file("/big".into()).unwrap_err();
        assert_eq!(
            e.message,
            "/big: 1099511627776 bytes, more than the stage's memory limit (1 MiB)"
        );
        let mut h = host(dir.path(), true, 1000);
        let e = h.read_dir("/many".into()).unwrap_err();
        assert_eq!(
            e.message,
            "/many: its entries take more than the stage's memory limit (0 MiB)"
        );
        let mut h = host(dir.path(), true, 1 << 20);
        assert_eq!(h.read_dir("/many".into()).unwrap().len(), 100);
    }

    #[test]
    fn the_whole_file_and_directory_calls_do_what_the_world_says() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::os::unix::fs::symlink("/etc/hostname", d.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let mut h = host(d, true, 1 << 20);
        h.create_dir("/etc".into(), 0o750).unwrap();
        h.write_file("/etc/hostname".into(), b"one\n".to_vec())
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("etc"), 0o750);
        assert_eq!(mode("etc/hostname"), 0o644);
        // An existing file keeps its mode; an absolute symlink is followed
        // inside the tree.
        std::fs::set_permissions(d.join("etc/hostname"), PermissionsExt::from_mode(0o600)).unwrap();
        h.write_file("/link".into(), b"two\n".to_vec()).unwrap();
        assert_eq!(std::fs::read(d.join("etc/hostname")).unwrap(), b"two\n");
        assert_eq!(mode("etc/hostname"), 0o600);
        assert_eq!(h.read_file("/link".into()).unwrap(), b"two\n");
        // A FIFO is neither read nor written (nor waited on).
        assert!(h.read_file("/fifo".into()).is_err());
        assert!(h.write_file("/fifo".into(), b"x".to_vec()).is_err());
        let kinds: Vec<(String, wit::EntryKind)> = h
            .read_dir("/".into())
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("etc".to_string(), wit::EntryKind::Directory),
                ("fifo".to_string(), wit::EntryKind::Fifo),
                ("link".to_string(), wit::EntryKind::Symlink),
            ]
        );
        h.rename("/etc/hostname".into(), "/etc/name".into())
            .unwrap();
        h.remove("/link".into()).unwrap();
        assert_eq!(
            h.remove("/etc".into()).unwrap_err().kind,
            ErrorKind::DirectoryNotEmpty
        );
        h.remove_all("/etc".into()).unwrap();
        h.remove("/fifo".into()).unwrap();
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
        // `..` stops at the root.
        h.write_file("/../../x".into(), b"in".to_vec()).unwrap();
        assert_eq!(std::fs::read(d.join("x")).unwrap(), b"in");
    }
}
