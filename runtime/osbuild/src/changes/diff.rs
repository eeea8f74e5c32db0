//! Comparing the tree a stage left with the tree it was given.
//!
//! Both sides are read through `osbuild_tree_fs::Root` (every lookup
//! resolved inside the side's root, a final symlink never followed, a
//! device node or FIFO never opened: only regular files are, and only
//! after an `O_PATH` look says they are regular). What a stage left is
//! untrusted content; reading it must not lead anywhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use osbuild_tree_fs::{EntryKind, Metadata, Root};
use sha2::{Digest, Sha256};

use super::{Change, Entry, Field, Kind, Op};
use crate::mtime::Mark;

/// The attributes overlayfs keeps on an upper layer's entries for itself
/// (after its prefix); anything else under the prefix (an escaped
/// `overlay.*` a stage set) is the stage's and recorded.
const OVERLAY_OWN: [&str; 11] = [
    "opaque",
    "redirect",
    "origin",
    "impure",
    "nlink",
    "upper",
    "metacopy",
    "protattr",
    "uuid",
    "whiteout",
    "whiteouts",
];

/// How the side the stage left relates to the side it was given.
#[derive(Debug, Clone, Copy)]
pub enum Layout<'a> {
    /// An overlayfs upper layer over the given tree: only what is in it
    /// changed; a whiteout (a 0:0 character device) removes, a directory
    /// marked opaque (`<prefix>opaque = y`) replaces the one below.
    Overlay { xattr_prefix: &'a str },
    /// The whole tree: entries whose ctime is before `since` are as they
    /// were (the kernel sets ctime on every change; nothing sets it back).
    Full { since: Mark },
}

/// What bounds a comparison: what the stage left is untrusted, and a
/// sparse exabyte file must cost it an error, not the build an eternity.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The most file content hashed, in bytes, both sides together.
    pub max_bytes: u64,
    /// Checked between entries: stop (the build was interrupted).
    pub interrupted: fn() -> bool,
}

/// What changed from `before` (`None`: an empty tree) to `after`.
pub fn diff(
    after: &Path,
    before: Option<&Path>,
    layout: Layout<'_>,
    bounds: Bounds,
) -> anyhow::Result<Vec<Change>> {
    let walker = Walker {
        bounds,
        hashed: std::cell::Cell::new(0),
        after: Root::open(after).with_context(|| format!("opening {}", after.display()))?,
        before: before
            .map(|b| Root::open(b).with_context(|| format!("opening {}", b.display())))
            .transpose()?,
        layout,
    };
    let mut changes = Vec::new();
    let root = PathBuf::from("/");
    let a = walker.after.metadata(&root, false)?;
    let b = match &walker.before {
        Some(before) => Some(before.metadata(&root, false)?),
        None => None,
    };
    walker
        .entry(&root, &a, b.as_ref(), false, &mut changes)
        .with_context(|| {
            format!(
                "comparing {} with the tree before the stage",
                after.display()
            )
        })?;
    changes.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(changes)
}

struct Walker<'a> {
    bounds: Bounds,
    hashed: std::cell::Cell<u64>,
    after: Root,
    before: Option<Root>,
    layout: Layout<'a>,
}

fn kind(k: EntryKind) -> Kind {
    match k {
        EntryKind::File => Kind::File,
        EntryKind::Directory => Kind::Dir,
        EntryKind::Symlink => Kind::Symlink,
        EntryKind::BlockDevice => Kind::Block,
        EntryKind::CharDevice => Kind::Char,
        EntryKind::Fifo => Kind::Fifo,
        EntryKind::Socket => Kind::Socket,
    }
}

fn is_whiteout(m: &Metadata) -> bool {
    m.kind == EntryKind::CharDevice && m.rdev == 0
}

fn tree_path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Walker<'_> {
    fn before_meta(&self, path: &Path) -> io::Result<Option<Metadata>> {
        let Some(before) = &self.before else {
            return Ok(None);
        };
        match before.metadata(path, false) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Compares one entry present after the stage (`b`: the same path
    /// before it, if it was there), then what is below it.
    fn entry(
        &self,
        path: &Path,
        a: &Metadata,
        b: Option<&Metadata>,
        parent_changed: bool,
        out: &mut Vec<Change>,
    ) -> anyhow::Result<()> {
        // A whole tree: an entry whose ctime is before the mark, under
        // directories none of whose ctimes moved (nothing was created,
        // removed, renamed or exchanged in any of them, so every name on
        // the way still holds the inode it held), is as it was. Below a
        // directory whose ctime moved, everything is compared: a directory
        // moved in keeps its old entries' ctimes, however deep.
        let changed_since_mark = match self.layout {
            Layout::Full { since } => since.saw_change(a.ctime_sec, a.ctime_nsec),
            Layout::Overlay { .. } => true,
        };
        let unchanged_since_mark = b.is_some() && !parent_changed && !changed_since_mark;
        if !unchanged_since_mark {
            let now = self.state(&self.after, path, a, true)?;
            match b {
                None => out.push(Change {
                    path: tree_path(path),
                    op: Op::Created,
                    fields: Vec::new(),
                    entry: now,
                }),
                Some(b) => {
                    let was = self.state(self.before.as_ref().unwrap(), path, b, false)?;
                    let fields = self.differences(path, a, b, &now, &was)?;
                    if !fields.is_empty() {
                        out.push(Change {
                            path: tree_path(path),
                            op: Op::Modified,
                            fields,
                            entry: now,
                        });
                    }
                }
            }
        }
        let was_dir = b.is_some_and(|b| b.kind == EntryKind::Directory);
        if a.kind == EntryKind::Directory {
            self.directory(path, was_dir, changed_since_mark || parent_changed, out)?;
        } else if was_dir {
            // A directory replaced by a file or symlink: all below it is gone.
            let before = self.before.as_ref().unwrap();
            for name in before.read_dir(path)? {
                let child = path.join(name);
                let m = before.metadata(&child, false)?;
                self.removed(&child, &m, out)?;
            }
        }
        Ok(())
    }

    /// The entries of the directory `path` (a directory before the stage
    /// too if `was_dir`).
    fn directory(
        &self,
        path: &Path,
        was_dir: bool,
        changed: bool,
        out: &mut Vec<Change>,
    ) -> anyhow::Result<()> {
        let names = self
            .after
            .read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?;
        // Which entries of the directory before the stage are gone
        // unless seen now: all of them in a whole tree or a directory that
        // replaces the one below; none otherwise (overlayfs shows the
        // lower entries through).
        let replaces = was_dir
            && match self.layout {
                Layout::Full { .. } => true,
                Layout::Overlay { xattr_prefix } => self
                    .after
                    .get_xattr(path, &format!("{xattr_prefix}opaque"), false)?
                    .is_some_and(|v| v == b"y"),
            };
        let mut gone: BTreeSet<OsString> = if replaces {
            self.before
                .as_ref()
                .unwrap()
                .read_dir(path)?
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        for name in names {
            if (self.bounds.interrupted)() {
                anyhow::bail!("interrupted");
            }
            gone.remove(&name);
            let child = path.join(&name);
            let a = self.after.metadata(&child, false)?;
            let b = if was_dir {
                self.before_meta(&child)?
            } else {
                None
            };
            if matches!(self.layout, Layout::Overlay { .. }) && is_whiteout(&a) {
                if let Some(b) = b {
                    self.removed(&child, &b, out)?;
                }
                continue;
            }
            self.entry(&child, &a, b.as_ref(), changed, out)?;
        }
        for name in gone {
            let child = path.join(&name);
            if let Some(b) = self.before_meta(&child)? {
                self.removed(&child, &b, out)?;
            }
        }
        Ok(())
    }

    /// `path` (as `b` was) and everything below it are gone.
    fn removed(&self, path: &Path, b: &Metadata, out: &mut Vec<Change>) -> anyhow::Result<()> {
        let before = self.before.as_ref().unwrap();
        out.push(Change {
            path: tree_path(path),
            op: Op::Removed,
            fields: Vec::new(),
            entry: self.state(before, path, b, false)?,
        });
        if b.kind == EntryKind::Directory {
            for name in before.read_dir(path)? {
                let child = path.join(name);
                let m = before.metadata(&child, false)?;
                self.removed(&child, &m, out)?;
            }
        }
        Ok(())
    }

    /// An entry's state; with `full`, a regular file's digest and the
    /// extended attributes too.
    fn state(&self, root: &Root, path: &Path, m: &Metadata, full: bool) -> anyhow::Result<Entry> {
        let mut e = Entry {
            kind: kind(m.kind),
            mode: format!("{:04o}", m.mode & 0o7777),
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime_sec,
            size: None,
            sha256: None,
            target: None,
            device: None,
            xattrs: BTreeMap::new(),
        };
        match m.kind {
            EntryKind::File => {
                e.size = Some(m.size);
                if full {
                    e.sha256 = Some(self.digest(root, path)?);
                }
            }
            EntryKind::Symlink => {
                e.target = Some(tree_path(&root.read_link(path)?));
            }
            EntryKind::BlockDevice | EntryKind::CharDevice => {
                e.device = Some(format!("{}:{}", m.rdev_major(), m.rdev_minor()));
            }
            _ => {}
        }
        if full {
            e.xattrs = self.xattrs(root, path)?;
        }
        Ok(e)
    }

    fn xattrs(&self, root: &Root, path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
        let mut map = BTreeMap::new();
        let names = match root.list_xattrs(path, false) {
            Ok(n) => n,
            // Symlinks and special files on some file systems take none.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(map),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("listing the attributes of {}", path.display()));
            }
        };
        for name in names {
            // overlayfs's own bookkeeping in an upper layer (under the
            // prefix the mount uses), not the stage's.
            if let Layout::Overlay { xattr_prefix } = self.layout
                && name
                    .strip_prefix(xattr_prefix)
                    .is_some_and(|own| OVERLAY_OWN.contains(&own))
            {
                continue;
            }
            if let Some(v) = root.get_xattr(path, &name, false)? {
                map.insert(name, hex::encode(v));
            }
        }
        Ok(map)
    }

    /// Which of an entry's properties the stage changed.
    fn differences(
        &self,
        path: &Path,
        a: &Metadata,
        b: &Metadata,
        now: &Entry,
        was: &Entry,
    ) -> anyhow::Result<Vec<Field>> {
        let mut f = Vec::new();
        if now.kind != was.kind {
            f.push(Field::Kind);
        } else {
            match a.kind {
                EntryKind::File => {
                    let same = a.size == b.size
                        && now.sha256.as_deref()
                            == Some(self.digest(self.before.as_ref().unwrap(), path)?.as_str());
                    if !same {
                        f.push(Field::Content);
                    }
                }
                EntryKind::Symlink if now.target != was.target => f.push(Field::Target),
                EntryKind::BlockDevice | EntryKind::CharDevice if now.device != was.device => {
                    f.push(Field::Device)
                }
                _ => {}
            }
        }
        // A new name for a file (a hard link) changes it: what is written
        // through one name is written through all. A name fewer is not
        // recorded: overlayfs does not show it below, the whole tree does.
        let linked = match self.layout {
            Layout::Full { .. } => a.nlink > b.nlink,
            // A copy-up is a new inode with one name (index=off): more
            // names than one are links the stage made.
            Layout::Overlay { .. } => a.nlink > 1,
        };
        if a.kind != EntryKind::Directory && linked {
            f.push(Field::Links);
        }
        if a.mode & 0o7777 != b.mode & 0o7777 && a.kind != EntryKind::Symlink {
            f.push(Field::Mode);
        }
        if (a.uid, a.gid) != (b.uid, b.gid) {
            f.push(Field::Owner);
        }
        if now.xattrs != self.xattrs(self.before.as_ref().unwrap(), path)? {
            f.push(Field::Xattrs);
        }
        if (a.mtime_sec, a.mtime_nsec) != (b.mtime_sec, b.mtime_nsec) {
            f.push(Field::Mtime);
        }
        Ok(f)
    }
}

impl Walker<'_> {
    /// sha256 (hex) of the regular file at `path`, within the budget.
    fn digest(&self, root: &Root, path: &Path) -> anyhow::Result<String> {
        use io::Read as _;
        let file = root
            .open_file(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let left = self.bounds.max_bytes.saturating_sub(self.hashed.get());
        let mut h = Sha256::new();
        let n = io::copy(&mut file.take(left.saturating_add(1)), &mut h)
            .with_context(|| format!("reading {}", path.display()))?;
        self.hashed.set(self.hashed.get() + n);
        if n > left {
            anyhow::bail!(
                "{}: the stage left more file content to compare than --max-tree-size ({} bytes) allows",
                path.display(),
                self.bounds.max_bytes
            );
        }
        Ok(hex::encode(h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn full(after: &Path, before: Option<&Path>) -> Vec<String> {
        diff(
            after,
            before,
            Layout::Full {
                since: Mark::BEGINNING,
            },
            Bounds {
                max_bytes: 1 << 30,
                interrupted: || false,
            },
        )
        .unwrap()
        .iter()
        .map(|c| c.render())
        .collect()
    }

    /// Review finding: with the copy handoff, a directory exchanged for a
    /// copy holding one changed file two levels down hid the change (the
    /// file's ctime and its directory's were older than the mark).
    #[test]
    fn a_directory_swapped_in_is_compared_all_the_way_down() {
        let before = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        for d in [before.path(), after.path()] {
            std::fs::create_dir_all(d.join("usr/lib/security")).unwrap();
            std::fs::write(d.join("usr/lib/security/pam_unix.so"), "good").unwrap();
            std::fs::create_dir_all(d.join("srv/lib/security")).unwrap();
            std::fs::write(d.join("srv/lib/security/pam_unix.so"), "evil").unwrap();
        }
        let since = crate::mtime::mark();
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            after.path().join("usr/lib"),
            rustix::fs::CWD,
            after.path().join("srv/lib"),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .unwrap();
        let got: Vec<String> = diff(
            after.path(),
            Some(before.path()),
            Layout::Full { since },
            Bounds {
                max_bytes: 1 << 30,
                interrupted: || false,
            },
        )
        .unwrap()
        .iter()
        .filter(|c| c.fields.contains(&Field::Content))
        .map(|c| c.path.clone())
        .collect();
        assert_eq!(
            got,
            [
                "/srv/lib/security/pam_unix.so",
                "/usr/lib/security/pam_unix.so"
            ]
        );
    }

    /// Review finding: a hard link made to a file outside the write set
    /// let later writes through the new name change it, unrecorded.
    #[test]
    fn a_new_hard_link_is_a_change_to_the_file_it_links() {
        let before = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        for d in [before.path(), after.path()] {
            std::fs::create_dir(d.join("etc")).unwrap();
            std::fs::write(d.join("etc/shadow"), "s").unwrap();
        }
        std::fs::hard_link(
            after.path().join("etc/shadow"),
            after.path().join("etc/conf"),
        )
        .unwrap();
        let got = full(after.path(), Some(before.path()));
        assert!(
            got.iter()
                .any(|l| l.starts_with("~ /etc/shadow  file") && l.contains("(links")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|l| l.starts_with("+ /etc/conf  file")),
            "{got:#?}"
        );
    }

    /// Review finding: a directory replaced by a symlink hid the removal
    /// of everything below it.
    #[test]
    fn a_directory_replaced_by_a_symlink_removes_what_was_below_it() {
        let before = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(before.path().join("etc/ssh")).unwrap();
        std::fs::write(before.path().join("etc/ssh/sshd_config"), "x").unwrap();
        std::fs::create_dir(after.path().join("etc")).unwrap();
        symlink("/var/tmp/x", after.path().join("etc/ssh")).unwrap();
        let got = full(after.path(), Some(before.path()));
        assert!(
            got.iter().any(|l| l == "- /etc/ssh/sshd_config  file"),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|l| l.starts_with("~ /etc/ssh  symlink")),
            "{got:#?}"
        );
    }

    #[test]
    fn a_whole_tree_diff_names_every_kind_of_change() {
        let before = tempfile::tempdir().unwrap();
        let after = tempfile::tempdir().unwrap();
        for d in [before.path(), after.path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::create_dir(d.join("etc")).unwrap();
            std::fs::write(d.join("etc/same"), "same").unwrap();
            std::fs::write(d.join("etc/motd"), "old").unwrap();
            std::fs::create_dir(d.join("etc/gone.d")).unwrap();
            std::fs::write(d.join("etc/mode"), "x").unwrap();
        }
        // Same mtimes on both sides for what did not change.
        let sync = |p: &str| {
            let m = std::fs::symlink_metadata(before.path().join(p)).unwrap();
            let t = std::fs::FileTimes::new().set_modified(m.modified().unwrap());
            std::fs::File::open(after.path().join(p))
                .unwrap()
                .set_times(t)
                .unwrap();
        };
        std::fs::write(before.path().join("etc/gone.d/a"), "a").unwrap();
        std::fs::remove_dir(after.path().join("etc/gone.d")).unwrap();
        std::fs::write(after.path().join("etc/motd"), "new").unwrap();
        std::fs::set_permissions(
            after.path().join("etc/mode"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        symlink("/etc/motd", after.path().join("etc/issue")).unwrap();
        for p in ["etc/same", "etc/motd", "etc/mode", "etc", "."] {
            sync(p);
        }
        let got = full(after.path(), Some(before.path()));
        let sha_new = hex::encode(Sha256::digest(b"new"));
        let sha_x = hex::encode(Sha256::digest(b"x"));
        let me = format!(
            "{}:{}",
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw()
        );
        assert_eq!(
            got,
            vec![
                "- /etc/gone.d/  dir".to_string(),
                "- /etc/gone.d/a  file".to_string(),
                format!("+ /etc/issue  symlink 0777 {me} -> /etc/motd"),
                format!("~ /etc/mode  file 0600 {me} sha256:{sha_x} (mode)"),
                format!("~ /etc/motd  file 0644 {me} sha256:{sha_new} (content)"),
            ]
        );
    }
}
