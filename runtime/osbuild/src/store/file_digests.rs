//! Digests of files outside the store (`--from` archives), remembered by
//! what identifies a file's content without reading it: device, inode,
//! size, modification time and change time. A write to the file moves its
//! ctime, which no one but root (who is trusted) can set back, so a
//! changed file is always hashed again; a rebuild from an unchanged
//! archive reads none of it.
//!
//! One small file per inode under `STORE/file-digests/`, written whole
//! and renamed into place, so concurrent builds only ever see a complete
//! entry; a damaged or foreign entry is a miss.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A file changed more recently than this (ns) when it was hashed is not
/// remembered: file times move in ticks, coarse on older kernels.
pub const RACY_NS: i128 = 2_000_000_000;

/// At most this many entries are kept; the least recently written go
/// first (one per archive a build started from).
const MAX_ENTRIES: usize = 256;

/// What a file was when its digest was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    fn key(&self) -> String {
        format!("{:x}-{:x}", self.dev, self.ino)
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    identity: Identity,
    sha256: String,
}

pub struct FileDigests {
    dir: PathBuf,
}

impl FileDigests {
    /// The store's memory of file digests (`store_root` already checked).
    pub fn in_store(store_root: &Path) -> FileDigests {
        FileDigests {
            dir: store_root.join("file-digests"),
        }
    }

    /// The digest taken of the file when it was exactly `identity`.
    pub fn lookup(&self, identity: &Identity) -> Option<String> {
        let text = std::fs::read(self.dir.join(identity.key())).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        (entry.identity == *identity && osbuild_lock::is_sha256(&entry.sha256))
            .then_some(entry.sha256)
    }

    /// Remembers a digest; failing to is no error (the next build hashes
    /// the file again).
    fn remember(&self, identity: &Identity, sha256: &str) {
        let _ = self.write(identity, sha256);
    }

    /// [`remember`](Self::remember), unless the file changed within the
    /// last [`RACY_NS`]: a write in the same tick of the clock as the one
    /// hashed would leave its times as they were (git's "racy clean").
    pub fn remember_unless_racy(&self, identity: &Identity, sha256: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        if now - identity.ctime_ns.max(identity.mtime_ns) > RACY_NS {
            self.remember(identity, sha256);
        }
    }

    fn write(&self, identity: &Identity, sha256: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let entry = Entry {
            identity: identity.clone(),
            sha256: sha256.to_string(),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        serde_json::to_writer(&mut tmp, &entry)?;
        tmp.persist(self.dir.join(identity.key()))
            .map_err(|e| e.error)?;
        self.prune();
        Ok(())
    }

    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut all: Vec<(i64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.mtime(), e.path())))
            .collect();
        if all.len() <= MAX_ENTRIES {
            return;
        }
        all.sort();
        for (_, path) in &all[..all.len() - MAX_ENTRIES] {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_digest_is_found_only_for_the_same_unchanged_file() {
        let store = tempfile::tempdir().unwrap();
        let digests = FileDigests::in_store(store.path());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"archive").unwrap();
        let before = Identity::of(&f.as_file().metadata().unwrap());
        assert_eq!(digests.lookup(&before), None);
        let sha = "a".repeat(64);
        digests.remember(&before, &sha);
        assert_eq!(digests.lookup(&before), Some(sha.clone()));
        // The same size, written again: its ctime moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::os::unix::fs::FileExt::write_all_at(f.as_file(), b"ARCHIVE", 0).unwrap();
        let after = Identity::of(&f.as_file().metadata().unwrap());
        assert_eq!(after.size, before.size);
        assert_ne!(after.ctime_ns, before.ctime_ns);
        assert_eq!(digests.lookup(&after), None);
    }

    #[test]
    fn a_file_changed_just_now_is_not_remembered() {
        let store = tempfile::tempdir().unwrap();
        let digests = FileDigests::in_store(store.path());
        let f = tempfile::NamedTempFile::new().unwrap();
        let fresh = Identity::of(&f.as_file().metadata().unwrap());
        digests.remember_unless_racy(&fresh, &"a".repeat(64));
        assert_eq!(digests.lookup(&fresh), None);
        let old = Identity {
            ctime_ns: fresh.ctime_ns - 2 * RACY_NS,
            mtime_ns: fresh.mtime_ns - 2 * RACY_NS,
            ..fresh
        };
        digests.remember_unless_racy(&old, &"a".repeat(64));
        assert_eq!(digests.lookup(&old), Some("a".repeat(64)));
    }

    #[test]
    fn a_damaged_entry_is_a_miss() {
        let store = tempfile::tempdir().unwrap();
        let digests = FileDigests::in_store(store.path());
        let f = tempfile::NamedTempFile::new().unwrap();
        let id = Identity::of(&f.as_file().metadata().unwrap());
        digests.remember(&id, "not a digest");
        assert_eq!(digests.lookup(&id), None);
        std::fs::write(store.path().join("file-digests").join(id.key()), b"{").unwrap();
        assert_eq!(digests.lookup(&id), None);
    }
}
