//! `--from`: unpacking a tar archive into the empty tree, exactly.
//!
//! Numeric owners, modes (setuid/setgid/sticky included), mtimes, xattrs,
//! hardlinks, symlinks, device nodes and fifos are kept. An archive that
//! tries to put anything outside the tree (`../x`, `/etc/x`, or a path
//! through a symlink, which could point anywhere) is refused.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use osbuild_tree_fs::{EntryKind, NodeKind, Root};
use tar::EntryType;

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive is malformed or hostile: bad input (exit 2).
    #[error("entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

fn refused(entry: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

/// The entry's path relative to the tree root, or why it may not be used.
fn tree_path(raw: &[u8]) -> Result<PathBuf, UnpackError> {
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
    if path.has_root() {
        return Err(refused(
            raw,
            "is an absolute path; archive entries must be relative to the tree",
        ));
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(refused(
                    raw,
                    "contains '..' and would land outside the tree",
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(
                    raw,
                    "is an absolute path; archive entries must be relative to the tree",
                ));
            }
        }
    }
    Ok(out)
}

/// A decompressing reader for a tar, gzipped tar, zstd tar or plain tar file.
pub fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    open_file(file, path)
}

/// [`open`] on a file already open (`path` names it in messages), read
/// from its start.
pub fn open_file(mut file: std::fs::File, path: &Path) -> anyhow::Result<Box<dyn Read>> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(0))?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    file.seek(io::SeekFrom::Start(0))?;
    let reader = io::BufReader::with_capacity(1 << 20, file);
    if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Ok(Box::new(ReadAhead::new(flate2::read::MultiGzDecoder::new(
            reader,
        ))))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        // libzstd refuses frames whose window is over 128 MiB (its default
        // limit): a hostile archive cannot ask for gigabytes to decode.
        let decoder = zstd::stream::read::Decoder::with_buffer(reader)
            .with_context(|| format!("reading {} as zstd", path.display()))?;
        Ok(Box::new(ReadAhead::new(decoder)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Runs a reader on its own thread, a few chunks ahead: decompression on
/// one core while the caller writes files on the other (as `tar -xz` gets
/// from running gzip as a separate process).
struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    fn new<R: Read + Send + 'static>(mut inner: R) -> ReadAhead {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        std::thread::spawn(move || {
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let mut filled = 0;
                // Fill whole chunks: fewer hand-offs between the threads.
                while filled < buf.len() {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                buf.truncate(filled);
                let done = filled == 0;
                if tx.send(Ok(buf)).is_err() || done {
                    return;
                }
            }
        });
        ReadAhead {
            chunks: rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct PaxExtra {
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn parse_mtime(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    Some((sec, digits.parse().ok()?))
}

fn pax_extra<R: Read>(entry: &mut tar::Entry<'_, R>) -> anyhow::Result<PaxExtra> {
    let mut extra = PaxExtra {
        uid: None,
        gid: None,
        mtime: None,
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let key = ext
                .key()
                .map_err(|_| anyhow::anyhow!("a PAX key is not UTF-8"))?;
            let value = ext.value_bytes();
            match key {
                "uid" => extra.uid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()),
                "gid" => extra.gid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()),
                "mtime" => extra.mtime = parse_mtime(value),
                k if k.starts_with("SCHILY.xattr.") => {
                    extra
                        .xattrs
                        .push((k["SCHILY.xattr.".len()..].to_string(), value.to_vec()));
                }
                _ => {}
            }
        }
    }
    Ok(extra)
}

fn io_refusal(raw: &[u8], e: io::Error) -> UnpackError {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return refused(
            raw,
            "passes through a symlink, which could lead outside the tree",
        );
    }
    UnpackError::Io(
        anyhow::Error::new(e).context(format!("unpacking {}", String::from_utf8_lossy(raw))),
    )
}

/// Whether an archive (or a stage) may set the extended attribute `name`:
/// `trusted.*` is the kernel's and overlayfs's own (`trusted.overlay.*`
/// would rewrite what the tree's layers mean), and so are `user.overlay.*`
/// (a rootless build's layers) and `user.osbuild.*` (a rootless build's
/// device stand-ins); `security.*` other than file capabilities and
/// SELinux labels (which images need) belong to the build host's security
/// modules.
pub fn xattr_allowed(name: &str) -> bool {
    (name.starts_with("user.")
        && !name.starts_with("user.overlay.")
        && !name.starts_with("user.osbuild."))
        || name.starts_with("system.posix_acl_")
        || name == "security.capability"
        || name == "security.selinux"
}

/// The most the tar reader may read between two entries: their headers,
/// with a GNU long name or a PAX record (a path is at most 4096 bytes).
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// How much the tar reader has read since [`HeaderBudget::arm`].
#[derive(Clone, Default)]
struct HeaderBudget(std::rc::Rc<std::cell::Cell<Option<u64>>>);

impl HeaderBudget {
    fn arm(&self) {
        self.0.set(Some(0));
    }
    fn disarm(&self) {
        self.0.set(None);
    }
}

struct Budgeted<R> {
    inner: R,
    budget: HeaderBudget,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(used) = self.budget.0.get() {
            let used = used + n as u64;
            if used > MAX_HEADER_BYTES {
                return Err(io::Error::other(format!(
                    "an entry's headers (a GNU long name or PAX record) are over {} KiB; \
                     this is not an archive osbuild unpacks",
                    MAX_HEADER_BYTES / 1024
                )));
            }
            self.budget.0.set(Some(used));
        }
        Ok(n)
    }
}

/// Unpacks `archive` into the directory `tree`. Returns the number of entries.
///
/// Device nodes other than the harmless ones (`/dev/null` and the like) are
/// refused unless `allow_devices`: the policy's `"from-device-nodes": true`.
pub fn unpack(
    archive: &Path,
    tree: &Path,
    allow_devices: bool,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, UnpackError> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    unpack_file(file, archive, tree, allow_devices, u64::MAX, interrupted)
}

/// [`unpack`] from a file already open (the one whose digest names the
/// result: never reopened by name), writing at most `max_bytes` of file
/// content (a gzip bomb stops there).
pub fn unpack_file(
    file: std::fs::File,
    archive: &Path,
    tree: &Path,
    allow_devices: bool,
    max_bytes: u64,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, UnpackError> {
    unpack_inner(
        file,
        archive,
        tree,
        allow_devices,
        max_bytes,
        None,
        interrupted,
    )
}

/// [`unpack_file`] of an OCI image layer into an overlayfs upper layer
/// (whose own xattrs start with `overlay_prefix`): `.wh.NAME` becomes a
/// whiteout (a 0:0 character device), `.wh..wh..opq` marks its directory
/// opaque. What [`super::pack::TarWriter::for_layer`] writes.
pub fn unpack_layer(
    file: std::fs::File,
    archive: &Path,
    tree: &Path,
    allow_devices: bool,
    max_bytes: u64,
    overlay_prefix: &str,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, UnpackError> {
    unpack_inner(
        file,
        archive,
        tree,
        allow_devices,
        max_bytes,
        Some(overlay_prefix),
        interrupted,
    )
}

/// A `.wh.` entry of an OCI layer, made what overlayfs reads.
fn layer_marker(
    root: &Root,
    raw: &[u8],
    rel: &Path,
    base: &[u8],
    kind: EntryType,
    overlay_prefix: &str,
) -> Result<(), UnpackError> {
    use super::pack::{OPAQUE_MARKER, WHITEOUT_PREFIX};
    if kind != EntryType::Regular {
        return Err(refused(raw, "a .wh. marker that is not an empty file"));
    }
    let parent = rel.parent().unwrap_or(Path::new(""));
    match root.metadata(parent, false) {
        Ok(m) if m.kind == EntryKind::Directory => {}
        Ok(_) => return Err(refused(raw, "a .wh. marker in something not a directory")),
        Err(e) => return Err(io_refusal(raw, e)),
    }
    if base == OPAQUE_MARKER {
        return root
            .set_xattr(parent, &format!("{overlay_prefix}opaque"), b"y", false)
            .map_err(|e| io_refusal(raw, e));
    }
    let name = &base[WHITEOUT_PREFIX.len()..];
    if name.is_empty() || name == b"." || name == b".." || name.starts_with(WHITEOUT_PREFIX) {
        return Err(refused(raw, "a whiteout that names no entry"));
    }
    let target = parent.join(std::ffi::OsStr::from_bytes(name));
    match root.metadata(&target, false) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Ok(_) => {
            return Err(refused(raw, "a whiteout for an entry the layer also holds"));
        }
        Err(e) => return Err(io_refusal(raw, e)),
    }
    root.make_node(&target, NodeKind::CharDevice, 0, 0, 0)
        .map_err(|e| io_refusal(raw, e))?;
    root.set_owner(&target, 0, 0, false)
        .map_err(|e| io_refusal(raw, e))
}

#[allow(clippy::too_many_arguments)]
fn unpack_inner(
    file: std::fs::File,
    archive: &Path,
    tree: &Path,
    allow_devices: bool,
    max_bytes: u64,
    layer: Option<&str>,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, UnpackError> {
    let mut written = 0u64;
    let budget = HeaderBudget::default();
    let reader = Budgeted {
        inner: open_file(file, archive)?,
        budget: budget.clone(),
    };
    let root = Root::open_no_symlinks(tree)
        .with_context(|| format!("opening the tree {}", tree.display()))?;
    let mut ar = tar::Archive::new(reader);
    let mut dirs: Vec<(PathBuf, i64, u32)> = Vec::new();
    let mut count = 0u64;
    let mut entries = ar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?;
    loop {
        if interrupted() {
            return Err(UnpackError::Interrupted);
        }
        // Between two entries the tar reader reads headers, and reads GNU
        // long names and PAX records into memory whole, whatever size
        // they claim: those reads are capped.
        budget.arm();
        let Some(entry) = entries.next() else { break };
        budget.disarm();
        let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        let raw = entry.path_bytes().into_owned();
        let rel = tree_path(&raw)?;
        let extra =
            pax_extra(&mut entry).with_context(|| format!("reading {}", archive.display()))?;
        let header = entry.header().clone();
        let uid = extra.uid.unwrap_or(header.uid().context("bad uid")? as u32);
        let gid = extra.gid.unwrap_or(header.gid().context("bad gid")? as u32);
        let mode = header.mode().context("bad mode")? & 0o7777;
        let (mtime, mtime_nsec) = extra
            .mtime
            .unwrap_or((header.mtime().context("bad mtime")? as i64, 0));
        let kind = header.entry_type();
        if let Some(prefix) = layer
            && let Some(base) = rel.file_name().map(|n| n.as_bytes())
            && base.starts_with(super::pack::WHITEOUT_PREFIX)
        {
            layer_marker(&root, &raw, &rel, base, kind, prefix)?;
            count += 1;
            continue;
        }
        let is_root = rel.as_os_str().is_empty();
        if is_root && kind != EntryType::Directory {
            return Err(refused(
                &raw,
                "names the tree's root but is not a directory",
            ));
        }

        // A later entry for the same path replaces the earlier one (as tar does).
        if !is_root && kind != EntryType::Directory {
            match root.metadata(&rel, false) {
                Ok(m) if m.kind == EntryKind::Directory => {
                    return Err(refused(&raw, "would replace a directory"));
                }
                Ok(_) => root.remove_file(&rel).map_err(|e| io_refusal(&raw, e))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_refusal(&raw, e)),
            }
        }
        match kind {
            EntryType::Directory => {
                if !is_root {
                    match root.metadata(&rel, false) {
                        Ok(m) if m.kind == EntryKind::Directory => {}
                        Ok(_) => {
                            return Err(refused(
                                &raw,
                                "a directory where a non-directory already is",
                            ));
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            root.create_dir(&rel, 0o700)
                                .map_err(|e| io_refusal(&raw, e))?;
                        }
                        Err(e) => return Err(io_refusal(&raw, e)),
                    }
                }
                dirs.push((rel.clone(), mtime, mtime_nsec));
            }
            EntryType::Regular | EntryType::Continuous => {
                written = written.saturating_add(entry.size());
                if written > max_bytes {
                    return Err(refused(
                        &raw,
                        format!(
                            "would make the tree larger than {max_bytes} bytes (raise it with --max-tree-size)"
                        ),
                    ));
                }
                let mut file = root
                    .create_file(&rel, 0o600)
                    .map_err(|e| io_refusal(&raw, e))?;
                io::copy(&mut entry, &mut file)
                    .with_context(|| format!("writing {}", rel.display()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(&raw, "a symlink without a target"))?
                    .into_owned();
                root.symlink(Path::new(std::ffi::OsStr::from_bytes(&target)), &rel)
                    .map_err(|e| io_refusal(&raw, e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(&raw, "a hard link without a target"))?
                    .into_owned();
                let target_rel = tree_path(&target)?;
                root.hard_link(&target_rel, &rel)
                    .map_err(|e| io_refusal(&raw, e))?;
                count += 1;
                // A hard link shares its target's metadata.
                continue;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let node = match kind {
                    EntryType::Char => NodeKind::CharDevice,
                    EntryType::Block => NodeKind::BlockDevice,
                    _ => NodeKind::Fifo,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if node != NodeKind::Fifo
                    && !allow_devices
                    && osbuild_tree_fs::harmless_device(node, major, minor).is_none()
                {
                    let what = if node == NodeKind::BlockDevice {
                        "block"
                    } else {
                        "character"
                    };
                    return Err(refused(
                        &raw,
                        format!(
                            "is a {what} device ({major}:{minor}); archives may carry only null, zero, full, \
                             random, urandom, tty, console and ptmx unless the policy allows \
                             \"from-device-nodes\": true"
                        ),
                    ));
                }
                root.make_node(&rel, node, mode, major, minor)
                    .map_err(|e| io_refusal(&raw, e))?;
            }
            EntryType::XGlobalHeader => continue,
            other => {
                return Err(refused(&raw, format!("unsupported entry type {other:?}")));
            }
        }
        // Owner first (chown clears setuid/setgid), then mode, xattrs, mtime.
        let is_symlink = kind == EntryType::Symlink;
        root.set_owner(&rel, uid, gid, false)
            .map_err(|e| io_refusal(&raw, e))?;
        if !is_symlink {
            root.set_mode(&rel, mode).map_err(|e| io_refusal(&raw, e))?;
        }
        for (name, _) in &extra.xattrs {
            if !xattr_allowed(name) {
                return Err(refused(
                    &raw,
                    format!(
                        "carries the extended attribute {name}; from archives osbuild takes user.* \
                         (but user.overlay.* and user.osbuild.*, which are the store's own), \
                         security.capability and security.selinux (and system.* ACLs), never \
                         trusted.* or other security.* attributes"
                    ),
                ));
            }
        }
        for (name, value) in &extra.xattrs {
            root.set_xattr(&rel, name, value, false)
                .with_context(|| format!("setting xattr {name} on {}", rel.display()))?;
        }
        if kind != EntryType::Directory {
            root.set_mtime(&rel, mtime, mtime_nsec, false)
                .map_err(|e| io_refusal(&raw, e))?;
        }
        count += 1;
    }
    // Directory mtimes last, deepest first: filling a directory changes its mtime.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (rel, sec, nsec) in dirs {
        root.set_mtime(&rel, sec, nsec, false)
            .with_context(|| format!("setting the mtime of {}", rel.display()))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd"] {
            assert!(
                matches!(tree_path(bad.as_bytes()), Err(UnpackError::Refused { .. })),
                "{bad}"
            );
        }
        assert_eq!(tree_path(b"./etc/x").unwrap(), Path::new("etc/x"));
        assert_eq!(tree_path(b"./").unwrap(), Path::new(""));
    }

    #[test]
    fn pax_mtimes() {
        assert_eq!(
            parse_mtime(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_mtime(b"12"), Some((12, 0)));
    }
}
