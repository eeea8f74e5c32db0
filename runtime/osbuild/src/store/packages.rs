//! The package cache (`STORE/packages/`): every `.deb` and `.rpm` a
//! package stage downloaded, kept under the sha256 osbuild computed
//! itself, shared by every pipeline and build using the store.
//!
//! A stage never writes here. It sees `sha256/` read-only, leaves what it
//! downloads in a directory of the build's, and after the stage osbuild
//! opens each file there by descriptor (no symlink, FIFO or device
//! followed, no hard link to elsewhere), copies it while hashing it, and
//! names the copy by that digest. A file can therefore only ever be found
//! under its own digest: a stage that lies about a package poisons
//! nothing, and the package managers check every file they take from here
//! against the digest their signed index (or the lock) states.
//!
//! Package stages hold a shared lock on `packages/lock` while they run;
//! eviction takes it exclusively, so it never removes a file a running
//! stage may be reading (it leaves the packages alone for this build if
//! one runs).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use osbuild_lock::is_sha256;
use rustix::fs::{FlockOperation, OFlags, flock};
use sha2::{Digest, Sha256};

/// The largest package file kept (the largest Debian packages are ~1 GB).
pub const MAX_PACKAGE: u64 = 4 << 30;

/// The most one stage's downloads may add, in files and bytes (a full
/// desktop is ~3000 packages, ~3 GB): a stage cannot fill the store's disk
/// through the cache beyond this.
pub const MAX_FILES_PER_STAGE: usize = 50_000;
pub const MAX_BYTES_PER_STAGE: u64 = 64 << 30;

/// A file in `tmp/` older than this is what a killed build left.
const STALE_SECS: i64 = 3600;

pub struct PackageCache {
    dir: PathBuf,
}

/// What one stage's downloads added.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ingested {
    /// Package files new to the cache, and their bytes.
    pub added: usize,
    pub added_bytes: u64,
    /// Signed releases and package indexes new to the cache (kept so that
    /// a locked build can check packages against them offline).
    pub added_indexes: usize,
    /// Files the cache had already.
    pub known: usize,
    /// Files left out: not a regular file of a package's name, too large,
    /// or (with a lock) not a file the lock names. The first names, and
    /// how many in all.
    pub refused: Vec<String>,
    pub refused_count: usize,
}

impl Ingested {
    /// The most refused names kept for the report.
    const NAMES: usize = 20;

    fn refuse(&mut self, name: String) {
        self.refused_count += 1;
        if self.refused.len() < Self::NAMES {
            self.refused.push(name);
        }
    }
}

/// One cached package, for `osbuild store list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cached {
    pub sha256: String,
    /// The name it was downloaded under (as the stage named it).
    pub name: String,
    pub size: u64,
    /// Seconds since 1970 when a build last used it.
    pub last_used: i64,
}

/// The package set a stage's result holds (its object's info; the whole
/// report is [`RESOLVED_FILE`] beside it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageSet {
    pub count: usize,
    /// [`osbuild_lock::Resolved::digest`].
    pub sha256: String,
    /// Installed from a lock.
    pub locked: bool,
    /// When the set was resolved (the lock's time, or the stage's run).
    pub resolved_at: i64,
}

/// Where an object keeps what its stage installed.
pub const RESOLVED_FILE: &str = "packages.json";

/// Held while a package stage runs: eviction leaves the cache alone.
pub struct InUse(#[allow(dead_code, reason = "held for its lock")] File);

fn is_index_name(name: &str) -> bool {
    name.ends_with("_InRelease") || name.ends_with("_Packages")
}

/// A package file's name, or a signed release's or package index's
/// (kept so that a locked build can check packages against them offline).
fn is_package_name(name: &str) -> bool {
    !name.starts_with(['.', '-'])
        && name.len() <= 255
        && [".deb", ".udeb", ".rpm", "_InRelease", "_Packages"]
            .iter()
            .any(|e| name.ends_with(e))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~%:^-".contains(&b))
}

impl PackageCache {
    /// The cache of the store at `store_root` (already checked), created
    /// if needed.
    pub fn open(store_root: &Path) -> anyhow::Result<PackageCache> {
        let dir = store_root.join("packages");
        for sub in ["sha256", "names", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating the package cache in {}", dir.display()))?;
        }
        // Readable by the stages' unprivileged ids, as the files are.
        std::fs::set_permissions(dir.join("sha256"), std::fs::Permissions::from_mode(0o755))?;
        let cache = PackageCache { dir };
        cache.remove_stale();
        Ok(cache)
    }

    /// Removes half-written copies a killed build left (a running build's
    /// are younger).
    fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        let now = crate::mtime::unix_now();
        for e in entries.flatten() {
            if e.metadata().is_ok_and(|m| now - m.mtime() > STALE_SECS) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The files by sha256: what stages see, read-only.
    pub fn files(&self) -> PathBuf {
        self.dir.join("sha256")
    }

    fn lock_file(&self) -> anyhow::Result<File> {
        File::create(self.dir.join("lock")).context("opening the package cache's lock")
    }

    /// Marks the cache in use by a stage until the value is dropped.
    pub fn in_use(&self) -> anyhow::Result<InUse> {
        let f = self.lock_file()?;
        flock(f.as_fd(), FlockOperation::LockShared).context("locking the package cache")?;
        Ok(InUse(f))
    }

    /// Keeps the package files a stage left in `incoming` (only those
    /// whose digest is in `only`, if given) and marks them used.
    pub fn ingest(
        &self,
        incoming: &Path,
        only: Option<&HashSet<String>>,
        interrupted: fn() -> bool,
    ) -> anyhow::Result<Ingested> {
        let mut out = Ingested::default();
        let dir = rustix::fs::open(
            incoming,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .with_context(|| format!("opening {}", incoming.display()))?;
        // At most one entry past the limit is read: a stage that leaves
        // millions of names costs the host nothing more.
        let mut names = Vec::new();
        let mut more = false;
        for entry in rustix::fs::Dir::read_from(&dir)
            .with_context(|| format!("reading {}", incoming.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            if names.len() == MAX_FILES_PER_STAGE {
                more = true;
                break;
            }
            names.push(name);
        }
        names.sort();
        // Every byte read counts, whether the file is new or known.
        let mut budget = MAX_BYTES_PER_STAGE;
        for name in names {
            if interrupted() {
                anyhow::bail!("interrupted while keeping the stage's downloads");
            }
            match self.keep(&dir, &name, only, &mut budget)? {
                Kept::Added(_) if is_index_name(&name) => out.added_indexes += 1,
                Kept::Added(n) => {
                    out.added += 1;
                    out.added_bytes += n;
                }
                Kept::Known => out.known += 1,
                Kept::Refused => out.refuse(name),
            }
        }
        if more {
            out.refuse(format!(
                "(more than {MAX_FILES_PER_STAGE} files: the rest unread)"
            ));
        }
        Ok(out)
    }

    /// One file of the stage's: opened without following anything, a
    /// regular file with no other link, hashed, and copied only if new
    /// (the stage is gone: nothing changes it in between). `budget`: the
    /// bytes the stage may still have read.
    fn keep(
        &self,
        dir: &impl AsFd,
        name: &str,
        only: Option<&HashSet<String>>,
        budget: &mut u64,
    ) -> anyhow::Result<Kept> {
        if !is_package_name(name) {
            return Ok(Kept::Refused);
        }
        let fd = match rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(_) => return Ok(Kept::Refused),
        };
        let mut file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.file_type().is_file()
            || meta.nlink() != 1
            || meta.len() > MAX_PACKAGE
            || meta.len() > *budget
        {
            return Ok(Kept::Refused);
        }
        *budget -= meta.len();
        let mut hash = Sha256::new();
        let copied = copy_capped(&mut file, &mut hash, meta.len())?;
        if copied != meta.len() {
            return Ok(Kept::Refused);
        }
        let sha = hex::encode(hash.finalize());
        if only.is_some_and(|set| !set.contains(&sha)) {
            return Ok(Kept::Refused);
        }
        let path = self.files().join(&sha);
        if path.exists() {
            self.touch(&sha);
            return Ok(Kept::Known);
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.join("tmp"))
            .context("creating a file in the package cache")?;
        std::io::Seek::rewind(&mut file)?;
        let mut again = Sha256::new();
        let mut tee = Tee(&mut again, tmp.as_file_mut());
        if copy_capped(&mut file, &mut tee, meta.len())? != meta.len()
            || hex::encode(again.finalize()) != sha
        {
            return Ok(Kept::Refused);
        }
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o444))?;
        match tmp.persist_noclobber(&path) {
            Ok(_) => {}
            // Another build kept the same bytes meanwhile.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Ok(Kept::Known);
            }
            Err(e) => {
                return Err(e.error)
                    .with_context(|| format!("keeping {name} in the package cache"));
            }
        }
        let _ = std::fs::write(self.dir.join("names").join(&sha), name);
        Ok(Kept::Added(meta.len()))
    }

    /// Marks a cached package used now (eviction goes oldest use first).
    pub fn touch(&self, sha256: &str) {
        if is_sha256(sha256) {
            let _ = File::open(self.files().join(sha256))
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
    }

    /// Every cached package, oldest use first.
    pub fn list(&self) -> anyhow::Result<Vec<Cached>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.files())?.flatten() {
            let sha = e.file_name().to_string_lossy().into_owned();
            if !is_sha256(&sha) {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            let name = std::fs::read_to_string(self.dir.join("names").join(&sha))
                .ok()
                .filter(|n| is_package_name(n))
                .unwrap_or_default();
            out.push(Cached {
                sha256: sha,
                name,
                size: meta.blocks() * 512,
                last_used: meta.mtime(),
            });
        }
        out.sort_by(|a, b| (a.last_used, &a.sha256).cmp(&(b.last_used, &b.sha256)));
        Ok(out)
    }

    /// Lets eviction remove packages, unless a package stage runs.
    pub fn for_eviction(&self) -> anyhow::Result<Option<File>> {
        let f = self.lock_file()?;
        Ok(flock(f.as_fd(), FlockOperation::NonBlockingLockExclusive)
            .is_ok()
            .then_some(f))
    }

    pub fn remove(&self, sha256: &str) -> anyhow::Result<()> {
        if !is_sha256(sha256) {
            return Ok(());
        }
        let _ = std::fs::remove_file(self.dir.join("names").join(sha256));
        match std::fs::remove_file(self.files().join(sha256)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing the cached package {sha256}"))
            }
            _ => Ok(()),
        }
    }
}

enum Kept {
    Added(u64),
    Known,
    Refused,
}

/// Writes to both.
struct Tee<'a, A: Write, B: Write>(&'a mut A, &'a mut B);

impl<A: Write, B: Write> Write for Tee<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

/// Copies at most `max` bytes (one more tells a file that grew); returns
/// how many.
fn copy_capped(from: &mut File, to: &mut impl Write, max: u64) -> std::io::Result<u64> {
    std::io::copy(&mut from.take(max + 1), to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn downloads_are_kept_under_their_own_digest_and_nothing_else_is() {
        let store = tempfile::tempdir().unwrap();
        let cache = PackageCache::open(store.path()).unwrap();
        let incoming = tempfile::tempdir().unwrap();
        let d = incoming.path();
        std::fs::write(d.join("a_1_all.deb"), b"package a").unwrap();
        std::fs::write(d.join("b_1_all.deb"), b"package b").unwrap();
        std::fs::write(d.join("notes.txt"), b"not a package").unwrap();
        std::fs::write(d.join("c_1_all.deb.FAILED"), b"bad").unwrap();
        let outside = store.path().join("secret");
        std::fs::write(&outside, b"host file").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("link_1_all.deb")).unwrap();
        std::fs::hard_link(d.join("b_1_all.deb"), d.join("hard_1_all.deb")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("fifo_1_all.deb"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let got = cache.ingest(d, None, || false).unwrap();
        assert_eq!((got.added, got.added_bytes, got.known), (1, 9, 0));
        let mut refused = got.refused.clone();
        refused.sort();
        assert_eq!(
            refused,
            [
                "b_1_all.deb",
                "c_1_all.deb.FAILED",
                "fifo_1_all.deb",
                "hard_1_all.deb",
                "link_1_all.deb",
                "notes.txt"
            ]
        );
        let kept = cache.files().join(digest(b"package a"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"package a");
        assert_eq!(
            std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert_eq!(std::fs::read(&outside).unwrap(), b"host file");
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "a_1_all.deb");
        // Again: known, not added twice.
        let again = cache.ingest(d, None, || false).unwrap();
        assert_eq!((again.added, again.known), (0, 1));
    }

    #[test]
    fn a_file_past_the_size_cap_is_refused_unread_and_ctrl_c_stops_it() {
        let store = tempfile::tempdir().unwrap();
        let cache = PackageCache::open(store.path()).unwrap();
        let incoming = tempfile::tempdir().unwrap();
        // Sparse: costs the stage nothing, would cost the host 4 GiB read.
        File::create(incoming.path().join("huge_1_all.deb"))
            .unwrap()
            .set_len(MAX_PACKAGE + 1)
            .unwrap();
        let got = cache.ingest(incoming.path(), None, || false).unwrap();
        assert_eq!((got.added, got.refused_count), (0, 1));
        assert_eq!(got.refused, ["huge_1_all.deb"]);
        assert_eq!(
            std::fs::read_dir(store.path().join("packages/tmp"))
                .unwrap()
                .count(),
            0
        );
        let e = cache.ingest(incoming.path(), None, || true).unwrap_err();
        assert!(e.to_string().contains("interrupted"), "{e}");
    }

    #[test]
    fn with_a_lock_only_the_locked_digests_are_kept() {
        let store = tempfile::tempdir().unwrap();
        let cache = PackageCache::open(store.path()).unwrap();
        let incoming = tempfile::tempdir().unwrap();
        std::fs::write(incoming.path().join("a_1_all.deb"), b"locked").unwrap();
        std::fs::write(incoming.path().join("b_1_all.deb"), b"not locked").unwrap();
        let only: HashSet<String> = [digest(b"locked")].into();
        let got = cache
            .ingest(incoming.path(), Some(&only), || false)
            .unwrap();
        assert_eq!(got.added, 1);
        assert_eq!(got.refused, ["b_1_all.deb"]);
        assert!(!cache.files().join(digest(b"not locked")).exists());
    }
}
