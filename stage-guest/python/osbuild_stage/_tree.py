"""The tree a stage configures, through osbuild's ``tree`` interface.

Paths are absolute inside the tree (``"etc/motd"`` means ``/etc/motd``) and
resolved with chroot semantics: ``..`` stops at ``/`` and an absolute
symlink resolves inside the tree. Failures raise the ``OSError`` subclass
Python would (``FileNotFoundError``, ``FileExistsError``, ...), with the
path in ``filename``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import Iterator, List, Optional, Union

from componentize_py_types import Err
from wit_world.imports import tree as _wit

StrPath = Union[str, PurePosixPath, "TreePath"]


class EntryKind(Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    BLOCK_DEVICE = "block-device"
    CHAR_DEVICE = "char-device"
    FIFO = "fifo"
    SOCKET = "socket"


class NodeKind(Enum):
    BLOCK_DEVICE = "block-device"
    CHAR_DEVICE = "char-device"
    FIFO = "fifo"


_KINDS = {
    _wit.EntryKind.FILE: EntryKind.FILE,
    _wit.EntryKind.DIRECTORY: EntryKind.DIRECTORY,
    _wit.EntryKind.SYMLINK: EntryKind.SYMLINK,
    _wit.EntryKind.BLOCK_DEVICE: EntryKind.BLOCK_DEVICE,
    _wit.EntryKind.CHAR_DEVICE: EntryKind.CHAR_DEVICE,
    _wit.EntryKind.FIFO: EntryKind.FIFO,
    _wit.EntryKind.SOCKET: EntryKind.SOCKET,
}

_NODES = {
    NodeKind.BLOCK_DEVICE: _wit.NodeKind.BLOCK_DEVICE,
    NodeKind.CHAR_DEVICE: _wit.NodeKind.CHAR_DEVICE,
    NodeKind.FIFO: _wit.NodeKind.FIFO,
}

_ERRORS = {
    _wit.ErrorKind.NOT_FOUND: (FileNotFoundError, errno.ENOENT),
    _wit.ErrorKind.ALREADY_EXISTS: (FileExistsError, errno.EEXIST),
    _wit.ErrorKind.PERMISSION_DENIED: (PermissionError, errno.EACCES),
    _wit.ErrorKind.NOT_A_DIRECTORY: (NotADirectoryError, errno.ENOTDIR),
    _wit.ErrorKind.IS_A_DIRECTORY: (IsADirectoryError, errno.EISDIR),
    _wit.ErrorKind.DIRECTORY_NOT_EMPTY: (OSError, errno.ENOTEMPTY),
    _wit.ErrorKind.INVALID_INPUT: (OSError, errno.EINVAL),
    _wit.ErrorKind.UNSUPPORTED: (OSError, errno.EOPNOTSUPP),
    _wit.ErrorKind.OTHER: (OSError, errno.EIO),
}


@dataclass(frozen=True)
class Metadata:
    """What ``stat``/``lstat`` tells about an entry."""

    kind: EntryKind
    #: Permission bits including setuid, setgid and sticky (0o7777).
    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    mtime: int
    mtime_ns: int
    rdev_major: int
    rdev_minor: int

    def is_file(self) -> bool:
        return self.kind is EntryKind.FILE

    def is_dir(self) -> bool:
        return self.kind is EntryKind.DIRECTORY

    def is_symlink(self) -> bool:
        return self.kind is EntryKind.SYMLINK


@dataclass(frozen=True)
class DirEntry:
    name: str
    kind: EntryKind


def _text(path: StrPath) -> str:
    p = str(path)
    return p if p.startswith("/") else "/" + p


def _call(path: StrPath, fn, *args):
    """Calls the host; its error becomes the OSError Python would raise."""
    try:
        return fn(*args)
    except Err as e:
        err = e.value
        cls, code = _ERRORS.get(err.kind, (OSError, errno.EIO))
        raise cls(code, err.message, _text(path)) from None


class Tree:
    """The tree, as osbuild hands it to the stage. ``tree / "etc"`` gives a
    :class:`TreePath`; every method also takes a plain path."""

    def __truediv__(self, other: StrPath) -> "TreePath":
        return TreePath(self, PurePosixPath("/") / str(other))

    def path(self, path: StrPath) -> "TreePath":
        return self / path

    # Reading.

    def stat(self, path: StrPath, *, follow_symlinks: bool = True) -> Metadata:
        m = _call(path, _wit.metadata, _text(path), follow_symlinks)
        return Metadata(
            kind=_KINDS[m.kind],
            mode=m.mode,
            uid=m.uid,
            gid=m.gid,
            size=m.size,
            nlink=m.nlink,
            mtime=m.mtime.seconds,
            mtime_ns=m.mtime.nanoseconds,
            rdev_major=m.rdev_major,
            rdev_minor=m.rdev_minor,
        )

    def lstat(self, path: StrPath) -> Metadata:
        return self.stat(path, follow_symlinks=False)

    def exists(self, path: StrPath, *, follow_symlinks: bool = True) -> bool:
        try:
            self.stat(path, follow_symlinks=follow_symlinks)
            return True
        except FileNotFoundError:
            return False

    def read_bytes(self, path: StrPath) -> bytes:
        return _call(path, _wit.read_file, _text(path))

    def read_text(self, path: StrPath, encoding: str = "utf-8") -> str:
        return self.read_bytes(path).decode(encoding)

    def iterdir(self, path: StrPath) -> List[DirEntry]:
        """The entries of a directory, sorted by name."""
        return [
            DirEntry(e.name, _KINDS[e.kind])
            for e in _call(path, _wit.read_dir, _text(path))
        ]

    def readlink(self, path: StrPath) -> str:
        return _call(path, _wit.read_link, _text(path))

    def resolve(self, path: StrPath, *, follow_symlinks: bool = True) -> PurePosixPath:
        """The canonical path inside the tree, every symlink resolved in it."""
        return PurePosixPath(_call(path, _wit.resolve, _text(path), follow_symlinks))

    def getxattr(self, path: StrPath, name: str, *, follow_symlinks: bool = True) -> Optional[bytes]:
        return _call(path, _wit.get_xattr, _text(path), name, follow_symlinks)

    def listxattr(self, path: StrPath, *, follow_symlinks: bool = True) -> List[str]:
        return _call(path, _wit.list_xattrs, _text(path), follow_symlinks)

    # Writing.

    def write_bytes(
        self,
        path: StrPath,
        data: bytes,
        *,
        mode: Optional[int] = None,
        uid: Optional[int] = None,
        gid: Optional[int] = None,
    ) -> None:
        """Writes a file whole. A new file is 0644 and 0:0 unless ``mode``,
        ``uid``, ``gid`` say otherwise; an existing one keeps its mode and
        owner unless they are given."""
        _call(path, _wit.write_file, _text(path), bytes(data))
        if uid is not None or gid is not None:
            m = self.stat(path)
            self.chown(path, m.uid if uid is None else uid, m.gid if gid is None else gid)
        if mode is not None:
            self.chmod(path, mode)

    def write_text(
        self,
        path: StrPath,
        text: str,
        *,
        encoding: str = "utf-8",
        mode: Optional[int] = None,
        uid: Optional[int] = None,
        gid: Optional[int] = None,
    ) -> None:
        self.write_bytes(path, text.encode(encoding), mode=mode, uid=uid, gid=gid)

    def mkdir(
        self, path: StrPath, mode: int = 0o755, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        if parents:
            parent = PurePosixPath(_text(path)).parent
            if parent != PurePosixPath("/") and not self.exists(parent):
                self.mkdir(parent, 0o755, parents=True, exist_ok=True)
        try:
            _call(path, _wit.create_dir, _text(path), mode)
        except FileExistsError:
            if not (exist_ok and self.stat(path).is_dir()):
                raise

    def unlink(self, path: StrPath, *, missing_ok: bool = False) -> None:
        """Removes a file, symlink or node (a directory only if empty)."""
        try:
            _call(path, _wit.remove, _text(path))
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmdir(self, path: StrPath) -> None:
        if not self.lstat(path).is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", _text(path))
        _call(path, _wit.remove, _text(path))

    def rmtree(self, path: StrPath) -> None:
        """Removes ``path`` and everything under it; symlinks are removed,
        never followed."""
        _call(path, _wit.remove_all, _text(path))

    def rename(self, source: StrPath, destination: StrPath) -> None:
        _call(source, _wit.rename, _text(source), _text(destination))

    def symlink(self, target: str, path: StrPath) -> None:
        """Creates ``path`` as a symlink to ``target``, stored as given (an
        absolute target resolves inside the tree)."""
        _call(path, _wit.symlink, str(target), _text(path))

    def hardlink(self, existing: StrPath, path: StrPath) -> None:
        _call(path, _wit.hard_link, _text(existing), _text(path))

    def chmod(self, path: StrPath, mode: int) -> None:
        _call(path, _wit.set_mode, _text(path), mode)

    def chown(self, path: StrPath, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """Sets the owner by number; clears setuid/setgid as chown(2) does."""
        _call(path, _wit.set_owner, _text(path), uid, gid, follow_symlinks)

    def set_mtime(
        self, path: StrPath, seconds: int, nanoseconds: int = 0, *, follow_symlinks: bool = True
    ) -> None:
        stamp = _wit.Timestamp(seconds=seconds, nanoseconds=nanoseconds)
        _call(path, _wit.set_mtime, _text(path), stamp, follow_symlinks)

    def mknod(self, path: StrPath, kind: NodeKind, mode: int, major: int = 0, minor: int = 0) -> None:
        """Makes a device node or FIFO (beyond the harmless devices, only
        with the ``device-nodes`` capability)."""
        _call(path, _wit.make_node, _text(path), _NODES[kind], mode, major, minor)

    def setxattr(self, path: StrPath, name: str, value: bytes, *, follow_symlinks: bool = True) -> None:
        _call(path, _wit.set_xattr, _text(path), name, bytes(value), follow_symlinks)

    def removexattr(self, path: StrPath, name: str, *, follow_symlinks: bool = True) -> None:
        _call(path, _wit.remove_xattr, _text(path), name, follow_symlinks)

    def walk(self, top: StrPath = "/") -> Iterator[tuple]:
        """Like ``os.walk`` (top down, symlinks not followed): yields
        ``(directory, directory names, other names)``."""
        entries = self.iterdir(top)
        dirs = [e.name for e in entries if e.kind is EntryKind.DIRECTORY]
        others = [e.name for e in entries if e.kind is not EntryKind.DIRECTORY]
        yield PurePosixPath(_text(top)), dirs, others
        for d in dirs:
            yield from self.walk(PurePosixPath(_text(top)) / d)


class TreePath:
    """A path in the tree, with pathlib's names for what it can do."""

    def __init__(self, tree: Tree, path: PurePosixPath) -> None:
        self._tree = tree
        self._path = path

    def __truediv__(self, other: StrPath) -> "TreePath":
        return TreePath(self._tree, self._path / str(other))

    def __str__(self) -> str:
        return str(self._path)

    def __repr__(self) -> str:
        return f"TreePath({str(self._path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TreePath) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def parent(self) -> "TreePath":
        return TreePath(self._tree, self._path.parent)

    @property
    def suffix(self) -> str:
        return self._path.suffix

    def exists(self) -> bool:
        return self._tree.exists(self._path)

    def is_file(self) -> bool:
        return self.exists() and self._tree.stat(self._path).is_file()

    def is_dir(self) -> bool:
        return self.exists() and self._tree.stat(self._path).is_dir()

    def is_symlink(self) -> bool:
        return self._tree.exists(self._path, follow_symlinks=False) and self._tree.lstat(self._path).is_symlink()

    def stat(self, *, follow_symlinks: bool = True) -> Metadata:
        return self._tree.stat(self._path, follow_symlinks=follow_symlinks)

    def lstat(self) -> Metadata:
        return self._tree.lstat(self._path)

    def read_bytes(self) -> bytes:
        return self._tree.read_bytes(self._path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._tree.read_text(self._path, encoding)

    def write_bytes(self, data: bytes, **kw) -> None:
        self._tree.write_bytes(self._path, data, **kw)

    def write_text(self, text: str, **kw) -> None:
        self._tree.write_text(self._path, text, **kw)

    def iterdir(self) -> Iterator["TreePath"]:
        for e in self._tree.iterdir(self._path):
            yield self / e.name

    def mkdir(self, mode: int = 0o755, parents: bool = False, exist_ok: bool = False) -> None:
        self._tree.mkdir(self._path, mode, parents=parents, exist_ok=exist_ok)

    def unlink(self, missing_ok: bool = False) -> None:
        self._tree.unlink(self._path, missing_ok=missing_ok)

    def rmdir(self) -> None:
        self._tree.rmdir(self._path)

    def rename(self, target: StrPath) -> "TreePath":
        self._tree.rename(self._path, target)
        return self._tree / str(target)

    def symlink_to(self, target: str) -> None:
        self._tree.symlink(target, self._path)

    def hardlink_to(self, target: StrPath) -> None:
        self._tree.hardlink(target, self._path)

    def readlink(self) -> str:
        return self._tree.readlink(self._path)

    def resolve(self) -> "TreePath":
        return TreePath(self._tree, self._tree.resolve(self._path))

    def chmod(self, mode: int) -> None:
        self._tree.chmod(self._path, mode)

    def chown(self, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        self._tree.chown(self._path, uid, gid, follow_symlinks=follow_symlinks)
