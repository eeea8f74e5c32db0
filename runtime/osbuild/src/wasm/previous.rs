//! `osbuild:stage@0.1.0`, the world the first stages were built for: its
//! `tree` is 0.2.0's without the whole-file and directory calls, so the
//! host links it by handing each call to the 0.2.0 implementation. A
//! component built for 0.1.0 runs unchanged; its `run` export has the same
//! shape in both worlds.

use super::bindings::osbuild::stage::tree as now;
use super::tree::TreeHost;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit/previous/0.1.0",
        world: "stage",
    });
}

use bindings::osbuild::stage::tree as then;

fn error(e: now::TreeError) -> then::TreeError {
    use now::ErrorKind as N;
    use then::ErrorKind as T;
    then::TreeError {
        kind: match e.kind {
            N::NotFound => T::NotFound,
            N::AlreadyExists => T::AlreadyExists,
            N::PermissionDenied => T::PermissionDenied,
            N::NotADirectory => T::NotADirectory,
            N::IsADirectory => T::IsADirectory,
            N::DirectoryNotEmpty => T::DirectoryNotEmpty,
            N::InvalidInput => T::InvalidInput,
            N::Unsupported => T::Unsupported,
            N::Other => T::Other,
        },
        message: e.message,
    }
}

fn timestamp(t: now::Timestamp) -> then::Timestamp {
    then::Timestamp {
        seconds: t.seconds,
        nanoseconds: t.nanoseconds,
    }
}

fn metadata(m: now::EntryMetadata) -> then::EntryMetadata {
    use now::EntryKind as N;
    use then::EntryKind as T;
    then::EntryMetadata {
        kind: match m.kind {
            N::File => T::File,
            N::Directory => T::Directory,
            N::Symlink => T::Symlink,
            N::BlockDevice => T::BlockDevice,
            N::CharDevice => T::CharDevice,
            N::Fifo => T::Fifo,
            N::Socket => T::Socket,
        },
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        size: m.size,
        nlink: m.nlink,
        mtime: timestamp(m.mtime),
        rdev_major: m.rdev_major,
        rdev_minor: m.rdev_minor,
    }
}

type R<T> = Result<T, then::TreeError>;

impl then::Host for TreeHost {
    fn metadata(&mut self, path: String, follow: bool) -> R<then::EntryMetadata> {
        now::Host::metadata(self, path, follow)
            .map(metadata)
            .map_err(error)
    }

    fn read_link(&mut self, path: String) -> R<String> {
        now::Host::read_link(self, path).map_err(error)
    }

    fn symlink(&mut self, target: String, path: String) -> R<()> {
        now::Host::symlink(self, target, path).map_err(error)
    }

    fn hard_link(&mut self, existing: String, path: String) -> R<()> {
        now::Host::hard_link(self, existing, path).map_err(error)
    }

    fn set_mode(&mut self, path: String, mode: u32) -> R<()> {
        now::Host::set_mode(self, path, mode).map_err(error)
    }

    fn set_owner(&mut self, path: String, uid: u32, gid: u32, follow: bool) -> R<()> {
        now::Host::set_owner(self, path, uid, gid, follow).map_err(error)
    }

    fn set_mtime(&mut self, path: String, mtime: then::Timestamp, follow: bool) -> R<()> {
        let mtime = now::Timestamp {
            seconds: mtime.seconds,
            nanoseconds: mtime.nanoseconds,
        };
        now::Host::set_mtime(self, path, mtime, follow).map_err(error)
    }

    fn make_node(
        &mut self,
        path: String,
        kind: then::NodeKind,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> R<()> {
        let kind = match kind {
            then::NodeKind::BlockDevice => now::NodeKind::BlockDevice,
            then::NodeKind::CharDevice => now::NodeKind::CharDevice,
            then::NodeKind::Fifo => now::NodeKind::Fifo,
        };
        now::Host::make_node(self, path, kind, mode, major, minor).map_err(error)
    }

    fn get_xattr(&mut self, path: String, name: String, follow: bool) -> R<Option<Vec<u8>>> {
        now::Host::get_xattr(self, path, name, follow).map_err(error)
    }

    fn list_xattrs(&mut self, path: String, follow: bool) -> R<Vec<String>> {
        now::Host::list_xattrs(self, path, follow).map_err(error)
    }

    fn set_xattr(&mut self, path: String, name: String, value: Vec<u8>, follow: bool) -> R<()> {
        now::Host::set_xattr(self, path, name, value, follow).map_err(error)
    }

    fn remove_xattr(&mut self, path: String, name: String, follow: bool) -> R<()> {
        now::Host::remove_xattr(self, path, name, follow).map_err(error)
    }

    fn resolve(&mut self, path: String, follow: bool) -> R<String> {
        now::Host::resolve(self, path, follow).map_err(error)
    }
}

impl bindings::osbuild::stage::types::Host for TreeHost {}
