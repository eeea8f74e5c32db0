//! The object store: finished stages' trees (and the files they wrote to
//! the output directory), kept and reused across builds.
//!
//! ```text
//! STORE/lock                 shared by every build, exclusive for `store clear`
//! STORE/objects/ID/info.json what the object is; flock()ed shared while a build uses it
//! STORE/objects/ID/tree/     an overlay layer (changes on top of its parent) or a full tree
//! STORE/objects/ID/output/   files the stage wrote to the output directory
//! STORE/tmp/build-*/         one per running build (its lock file says whether it still runs)
//! STORE/components/          compiled wasm stages
//! ```
//!
//! An object appears only whole: it is built in `tmp/` and renamed into
//! `objects/` (a rename of a directory is atomic). A build that dies leaves
//! only its `tmp/` directory, which the next build removes. Objects in use
//! (pinned by a shared lock on their `info.json`) are never evicted; the
//! least recently used leaves go first, so a layer is never removed from
//! under an object that sits on it.

pub mod file_digests;
pub mod ids;
pub mod packages;
pub mod remote;
pub mod workspace;

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

/// [`secure_root`], for a build about to enter a user namespace of its own
/// ([`crate::rootless::enter`]), which trusts only a store checked here.
pub fn secure_for_rootless(root: &Path) -> Result<crate::rootless::CheckedStore, String> {
    secure_root(root).map(crate::rootless::CheckedStore::new)
}

/// Makes sure the store is its owner's alone, creating it `0700` if it is
/// missing. Stored trees hold setuid programs and device nodes, compiled
/// stages are native code osbuild runs: a store another user can read lets
/// them run the first, one they can write lets them replace the second.
/// An existing store of ours that others can read is tightened to `0700`;
/// one that belongs to someone else, or that others can write, is refused.
///
/// Returns the store's resolved path, which is what osbuild uses from then
/// on: every directory on it belongs to root or to osbuild's user and no
/// one else can write it (or it is sticky, as `/tmp` is), so no one else
/// can swap a part of it for a symlink to a store of their making.
pub fn secure_root(root: &Path) -> Result<PathBuf, String> {
    if let Ok(real) = root.canonicalize()
        && crate::rootless::store_checked(&real)
    {
        // Checked from the host's side before osbuild entered its user
        // namespace, where the host's own files belong to no one.
        return Ok(real);
    }
    let euid = rustix::process::geteuid().as_raw();
    check_symlinks(root, euid)?;
    check_root(root, euid)?;
    // Again: a link planted where the store was missing, between the first
    // look and its creation, is seen now.
    check_symlinks(root, euid)?;
    let real = root
        .canonicalize()
        .map_err(|e| format!("{}: resolving it: {e}", root.display()))?;
    check_ancestors(&real, euid).map_err(|u| {
        format!(
            "{}: the store is inside {}, which {}; another user could swap the store for one of theirs: use a store in a directory only root or you can change",
            root.display(),
            u.dir.display(),
            u.why
        )
    })?;
    Ok(real)
}

/// A directory above a path that lets someone else swap the path.
#[derive(Debug)]
pub struct Untrusted {
    pub dir: PathBuf,
    /// "belongs to user N" or "others can write (mode M)".
    pub why: String,
}

/// Checks that every directory above `real` (a resolved path) belongs to
/// root or to `euid` and that no one else can write it (or it is sticky,
/// as `/tmp` is): then no one else can swap what `real` names. The store
/// needs it, and so does a stage project that root builds.
pub fn check_ancestors(real: &Path, euid: u32) -> Result<(), Untrusted> {
    for dir in real.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| Untrusted {
            dir: dir.to_path_buf(),
            why: format!("cannot be read ({e})"),
        })?;
        let others_write = m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0;
        if (m.uid() != 0 && m.uid() != euid) || others_write {
            return Err(Untrusted {
                dir: dir.to_path_buf(),
                why: if others_write {
                    format!("others can write (mode {:o})", m.mode() & 0o7777)
                } else {
                    format!("belongs to user {}", m.uid())
                },
            });
        }
    }
    Ok(())
}

/// Follows `path` as the kernel would and refuses a symbolic link on the
/// way that belongs to neither root nor osbuild's user. Anyone can plant a
/// link in `/tmp`, or wherever `XDG_CACHE_HOME` points: one aimed at a
/// directory of the user's own would pass every check of the resolved
/// path, and osbuild would make that directory private and clean its
/// `tmp/`.
fn check_symlinks(path: &Path, euid: u32) -> Result<(), String> {
    use std::path::Component;
    let absolute =
        std::path::absolute(path).map_err(|e| format!("{}: resolving it: {e}", path.display()))?;
    let mut pending: Vec<std::ffi::OsString> = absolute
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            Some(Component::RootDir) => {
                at = PathBuf::from("/");
                continue;
            }
            Some(Component::ParentDir) => {
                at.pop();
                continue;
            }
            Some(Component::Normal(_)) => {}
            _ => continue,
        }
        let next = at.join(&part);
        let m = match std::fs::symlink_metadata(&next) {
            // The rest does not exist yet: osbuild makes it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", next.display())),
            Ok(m) => m,
        };
        if !m.file_type().is_symlink() {
            at = next;
            continue;
        }
        if m.uid() != 0 && m.uid() != euid {
            return Err(format!(
                "{}: the store's path goes through {}, a symbolic link that belongs to user {}, who could point it anywhere: give a store path without it (--store DIR)",
                path.display(),
                next.display(),
                m.uid()
            ));
        }
        links += 1;
        if links > 40 {
            return Err(format!(
                "{}: too many levels of symbolic links",
                path.display()
            ));
        }
        let target = std::fs::read_link(&next).map_err(|e| format!("{}: {e}", next.display()))?;
        pending.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
    }
    Ok(())
}

/// Whether `dir` (which exists) may be taken for a store: empty, or
/// holding a store's `lock`. osbuild makes a store private and removes
/// what it finds in its `tmp/`, which it must never do to a directory that
/// is something else.
fn is_store_dir(dir: &Path) -> Result<bool, String> {
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: listing it: {e}", dir.display()))?;
    if entries.next().is_none() {
        return Ok(true);
    }
    Ok(std::fs::symlink_metadata(dir.join("lock")).is_ok_and(|m| m.is_file()))
}

fn check_root(root: &Path, euid: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Err(e) = std::fs::symlink_metadata(root) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(format!("{}: {e}", root.display()));
        }
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("{}: creating it: {e}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(root) {
            // Someone else's (or a link) made meanwhile: checked below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: creating the store: {e}", root.display())),
            Ok(()) => {}
        }
    }
    let m = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !m.is_dir() {
        return Err(format!("{}: not a directory", root.display()));
    }
    if m.uid() != euid {
        return Err(format!(
            "{}: the store belongs to user {}, not to the user running osbuild ({euid}); stored trees and compiled stages must be yours alone: use a store of your own (--store DIR) or chown -R {euid} {}",
            root.display(),
            m.uid(),
            root.display()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: the store is writable by {} (mode {:o}), who could replace what osbuild runs; chmod 700 {} (and check nothing in it was changed)",
            root.display(),
            if m.mode() & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            m.mode() & 0o7777,
            root.display()
        ));
    }
    if !is_store_dir(root)? {
        return Err(format!(
            "{}: this directory is not an osbuild store (it is not empty and has no lock file): osbuild would make it private and clean its tmp/; give a new or empty directory (--store DIR)",
            root.display()
        ));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            format!(
                "{}: making the store private (chmod 700): {e}",
                root.display()
            )
        })?;
    }
    Ok(())
}

/// `ROOT/stages`, where stages pulled from registries are kept: the store
/// checked to be the user's own first; with `create`, opened as a store
/// (its lock file says it is one, a new one is made private) and the
/// directory made.
pub fn stages_dir(root: &Path, create: bool) -> Result<PathBuf, String> {
    if !create {
        return Ok(secure_root(root)?.join("stages"));
    }
    let store = Store::open(root).map_err(|e| format!("{e:#}"))?;
    let dir = store.root().join("stages");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// How an object's `tree/` relates to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The changes made on top of the parent's tree (an overlayfs upper
    /// layer: new and changed entries, whiteouts for deletions).
    Overlay,
    /// The whole tree.
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub id: String,
    /// The object this one's layer sits on (`Layer::Overlay` only).
    pub parent: Option<String>,
    /// The stage whose result this is (`--from` for an unpacked archive).
    pub stage: String,
    pub layer: Layer,
    /// Bytes on disk (blocks of tree/ and output/).
    pub size: u64,
    /// Files in output/, linked (or copied) into the output directory on reuse.
    pub outputs: Vec<OutputFile>,
    /// Seconds since 1970 when it was committed.
    pub created: i64,
    /// How many entries the stage created, modified and removed (its
    /// record is `changes.json` beside this); none for `--from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<crate::changes::Counts>,
    /// What a package stage installed (the list is `packages.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<packages::PackageSet>,
    /// Where it was pulled from (`oci://REGISTRY/REPOSITORY@sha256:…`,
    /// the manifest), if this machine did not build it: it is never
    /// pushed on (a registry gets only what its pushers built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled: Option<String>,
}

/// A file a stage wrote to the output directory, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub name: String,
    pub size: u64,
    /// Its mtime when stored: output files are hard links into the store
    /// (no copy of a multi-GB image), so a change made through the output
    /// directory (booting it without `-snapshot`) shows up here.
    pub mtime_ns: i128,
}

impl OutputFile {
    pub fn of(path: &Path) -> std::io::Result<OutputFile> {
        let m = std::fs::metadata(path)?;
        Ok(OutputFile {
            name: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// An object, pinned against eviction while this value lives.
#[derive(Debug)]
pub struct Object {
    pub info: ObjectInfo,
    pub dir: PathBuf,
    _pin: File,
}

impl Object {
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("output")
    }

    /// Where the record of what the stage changed is kept.
    pub fn changes_path(&self) -> PathBuf {
        self.dir.join(crate::changes::FILE_NAME)
    }

    /// What its package stage installed, as recorded.
    pub fn resolved(&self) -> Option<osbuild_lock::Resolved> {
        let text = std::fs::read(self.dir.join(packages::RESOLVED_FILE)).ok()?;
        let r: osbuild_lock::Resolved = serde_json::from_slice(&text).ok()?;
        r.check("stored").ok()?;
        Some(r)
    }

    /// Whether its output files are still exactly as stored.
    pub fn outputs_intact(&self) -> bool {
        self.info
            .outputs
            .iter()
            .all(|o| OutputFile::of(&self.output_dir().join(&o.name)).is_ok_and(|now| now == *o))
    }
}

/// An entry of `osbuild store list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub info: ObjectInfo,
    /// Seconds since 1970 when a build last used it.
    pub last_used: i64,
}

pub struct Store {
    root: PathBuf,
    _lock: File,
}

/// Bytes a directory tree occupies on disk.
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = m.blocks() * 512;
    if m.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for e in entries.flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}

/// Removes a directory tree that may hold read-only directories.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn try_lock(file: &File, op: FlockOperation) -> bool {
    flock(file.as_fd(), op).is_ok()
}

/// A build's private directory in `tmp/`, removed when dropped. Its lock
/// file tells other builds it is alive.
pub struct BuildDir {
    path: PathBuf,
    _lock: File,
}

impl BuildDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> anyhow::Result<Store> {
        let root = &secure_root(root).map_err(|e| anyhow::anyhow!("{e}"))?;
        // The lock first: it is what says this directory is a store.
        let lock = File::create(root.join("lock"))
            .with_context(|| format!("opening {}/lock", root.display()))?;
        for sub in ["objects", "tmp"] {
            std::fs::create_dir_all(root.join(sub))
                .with_context(|| format!("creating the store at {}", root.display()))?;
        }
        // Waits while `osbuild store clear` runs.
        flock(lock.as_fd(), FlockOperation::LockShared).context("locking the store")?;
        let store = Store {
            root: root.to_path_buf(),
            _lock: lock,
        };
        store.remove_stale();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's secret (`STORE/secret`, 0600, made on first use): it
    /// seals what the store keeps that osbuild runs as native code.
    pub fn secret(&self) -> anyhow::Result<[u8; 32]> {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::fs::PermissionsExt;
        let path = self.root.join("secret");
        let read = |path: &Path| -> anyhow::Result<[u8; 32]> {
            let mut key = [0u8; 32];
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?
                .read_exact(&mut key)?;
            Ok(key)
        };
        if let Ok(key) = read(&path) {
            return Ok(key);
        }
        let mut key = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut key))
            .context("making the store's secret from /dev/urandom")?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        tmp.write_all(&key)?;
        // Another build may have made one meanwhile: the first one stays.
        match tmp.persist_noclobber(&path) {
            Ok(_) => Ok(key),
            Err(_) => read(&path).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes what dead builds left in tmp/ (their lock is free).
    fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(self.tmp()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Only what osbuild makes there; anything else is left alone.
            if !name.starts_with("build-") && !name.starts_with("evict-") {
                continue;
            }
            let path = e.path();
            let stale = match File::open(path.join("lock")) {
                Ok(f) => try_lock(&f, FlockOperation::NonBlockingLockExclusive),
                // No lock file: an evicted object being removed, or a build
                // that died before it took its lock.
                Err(_) => {
                    e.metadata()
                        .map(|m| crate::mtime::unix_now() - m.mtime() > 60)
                        .unwrap_or(false)
                        || name.starts_with("evict-")
                }
            };
            if stale {
                let _ = remove_tree(&path);
            }
        }
    }

    /// A private directory for a build, on the store's file system.
    pub fn build_dir(&self) -> anyhow::Result<BuildDir> {
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(self.tmp())
            .with_context(|| format!("creating a build directory in {}", self.tmp().display()))?
            .keep();
        let lock = File::create(dir.join("lock"))?;
        flock(lock.as_fd(), FlockOperation::LockExclusive)?;
        Ok(BuildDir {
            path: dir,
            _lock: lock,
        })
    }

    /// The object `id`, pinned, if the store has it.
    pub fn get(&self, id: &str) -> anyhow::Result<Option<Object>> {
        let dir = self.objects().join(id);
        let info_path = dir.join("info.json");
        let file = match File::open(&info_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", info_path.display())),
        };
        flock(file.as_fd(), FlockOperation::LockShared).context("pinning a store object")?;
        // Evicted while we waited for the lock?
        let still_there = std::fs::metadata(&info_path)
            .ok()
            .zip(file.metadata().ok())
            .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
        if !still_there {
            return Ok(None);
        }
        let Ok(info) = serde_json::from_reader::<_, ObjectInfo>(&file) else {
            // Written by an osbuild with another object format: unusable.
            drop(file);
            self.discard(id)?;
            return Ok(None);
        };
        // Last use is the info file's mtime: eviction goes by it, so a
        // failure here is the build's (the store is not writable).
        rustix::fs::futimens(
            &file,
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
            },
        )
        .with_context(|| format!("marking {} as used (its mtime)", info_path.display()))?;
        Ok(Some(Object {
            info,
            dir,
            _pin: file,
        }))
    }

    /// `id` and every object below it, top first, all pinned; `None` if any is missing.
    pub fn chain(&self, id: &str) -> anyhow::Result<Option<Vec<Object>>> {
        let mut chain = Vec::new();
        let mut next = Some(id.to_string());
        while let Some(id) = next {
            let Some(obj) = self.get(&id)? else {
                return Ok(None);
            };
            if !obj.outputs_intact() {
                // Changed through the output directory: not what the stage made.
                drop(obj);
                self.discard(&id)?;
                return Ok(None);
            }
            next = obj.info.parent.clone();
            chain.push(obj);
        }
        Ok(Some(chain))
    }

    /// Makes the prepared directory `staged` (holding `tree/` and perhaps
    /// `output/`) the object `info.id`. If another build committed the same
    /// id meanwhile, theirs is kept (it is the same result) and ours removed.
    pub fn commit(&self, staged: &Path, mut info: ObjectInfo) -> anyhow::Result<Object> {
        info.size = disk_usage(staged);
        info.created = crate::mtime::unix_now();
        std::fs::write(staged.join("info.json"), serde_json::to_vec_pretty(&info)?)
            .context("writing the object's info")?;
        let dest = self.objects().join(&info.id);
        if let Err(e) = std::fs::rename(staged, &dest) {
            let raced = matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST));
            if !raced {
                return Err(e).with_context(|| format!("committing {}", dest.display()));
            }
            remove_tree(staged)?;
        }
        self.get(&info.id)?
            .with_context(|| format!("object {} vanished right after its commit", info.id))
    }

    /// Removes one object now, unless a build uses it.
    pub fn discard(&self, id: &str) -> anyhow::Result<bool> {
        let dir = self.objects().join(id);
        let Ok(file) = File::open(dir.join("info.json")) else {
            return Ok(false);
        };
        if !try_lock(&file, FlockOperation::NonBlockingLockExclusive) {
            return Ok(false);
        }
        let grave = self.tmp().join(format!("evict-{id}"));
        std::fs::rename(&dir, &grave).with_context(|| format!("removing {id} from the store"))?;
        drop(file);
        remove_tree(&grave)?;
        Ok(true)
    }

    /// Every object, oldest use first.
    pub fn list(&self) -> anyhow::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.objects())?.flatten() {
            let info_path = e.path().join("info.json");
            let Ok(text) = std::fs::read(&info_path) else {
                continue;
            };
            let Ok(info) = serde_json::from_slice::<ObjectInfo>(&text) else {
                // Another osbuild's object format: unusable, and never
                // evicted otherwise.
                let _ = self.discard(&e.file_name().to_string_lossy());
                continue;
            };
            let last_used = std::fs::metadata(&info_path)
                .map(|m| m.mtime())
                .unwrap_or(0);
            out.push(Listed { info, last_used });
        }
        out.sort_by(|a, b| (a.last_used, &a.info.id).cmp(&(b.last_used, &b.info.id)));
        Ok(out)
    }

    /// Evicts least recently used objects and cached packages, oldest use
    /// first, until the store holds at most `max` bytes. Objects in use,
    /// and objects others sit on, stay; packages stay while a package
    /// stage runs. Objects whose parent is gone are useless and go first.
    /// Returns the evicted ids (and `package:SHA256` for packages).
    pub fn evict(&self, max: u64) -> anyhow::Result<Vec<String>> {
        let mut evicted = Vec::new();
        let mut skip: std::collections::HashSet<String> = Default::default();
        let cache = packages::PackageCache::open(&self.root)?;
        // While a package stage runs, packages count against the limit
        // but stay (results go in their place).
        let lock = cache.for_eviction()?;
        let mut cached: std::collections::VecDeque<packages::Cached> = cache.list()?.into();
        loop {
            let objects = self.list()?;
            let ids: std::collections::HashSet<&str> =
                objects.iter().map(|o| o.info.id.as_str()).collect();
            let orphan = objects.iter().find(|o| {
                o.info.parent.as_deref().is_some_and(|p| !ids.contains(p))
                    && !skip.contains(&o.info.id)
            });
            let total: u64 = objects.iter().map(|o| o.info.size).sum::<u64>()
                + cached.iter().map(|c| c.size).sum::<u64>();
            let victim = match orphan {
                Some(o) => Some(o),
                None if total <= max => break,
                None => {
                    let parents: std::collections::HashSet<&str> = objects
                        .iter()
                        .filter_map(|o| o.info.parent.as_deref())
                        .collect();
                    objects.iter().find(|o| {
                        !parents.contains(o.info.id.as_str()) && !skip.contains(&o.info.id)
                    })
                }
            };
            // The package used longest ago goes when it is older than the
            // oldest object that could go (or no object can).
            let package_first = match cached.front() {
                None => false,
                Some(_) if orphan.is_some() || lock.is_none() => false,
                Some(c) => victim.is_none_or(|o| c.last_used < o.last_used),
            };
            if package_first {
                let c = cached.pop_front().expect("checked");
                cache.remove(&c.sha256)?;
                evicted.push(format!("package:{}", c.sha256));
                continue;
            }
            let Some(victim) = victim else { break };
            let id = victim.info.id.clone();
            if self.discard(&id)? {
                evicted.push(id);
            } else {
                skip.insert(id); // in use
            }
        }
        Ok(evicted)
    }

    /// Removes every object and, with `everything`, compiled stages,
    /// remembered digests and cached packages too (waits for running
    /// builds to finish).
    pub fn clear(root: &Path, everything: bool) -> anyhow::Result<usize> {
        let lock = File::create(root.join("lock"))
            .with_context(|| format!("opening {}/lock", root.display()))?;
        flock(lock.as_fd(), FlockOperation::LockExclusive).context("locking the store")?;
        let mut n = 0;
        if let Ok(entries) = std::fs::read_dir(root.join("objects")) {
            for e in entries.flatten() {
                remove_tree(&e.path())?;
                n += 1;
            }
        }
        let subs: &[&str] = if everything {
            &[
                "tmp",
                "components",
                "native-stages",
                "file-digests",
                "packages",
            ]
        } else {
            &["tmp"]
        };
        for sub in subs {
            remove_tree(&root.join(sub))?;
        }
        Ok(n)
    }
}
