//! Reproducible mtimes: every entry a stage created or changed gets the
//! source epoch as its mtime (or keeps an older one a stage set on purpose);
//! entries no stage touched keep theirs exactly.
//!
//! "Touched" is read from the inode change time: the kernel sets ctime on
//! every change to an entry, and nothing can set it back. Entries whose
//! ctime is at or after the moment the stages began were touched.

use std::path::Path;

use anyhow::Context as _;
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT};
use rustix::time::{ClockId, clock_gettime};

/// A point in time on the clock the kernel stamps ctimes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    sec: i64,
    nsec: i64,
}

impl Mark {
    /// Before any ctime: every entry counts as changed.
    pub const BEGINNING: Mark = Mark {
        sec: i64::MIN,
        nsec: 0,
    };

    /// Now, on the ctime clock (no waiting for its next tick: see [`mark`]).
    pub fn now() -> Mark {
        coarse_now()
    }

    /// The start of the mark's second: a file system that keeps ctimes in
    /// whole seconds (ext4 with small inodes) stamps a change made just
    /// after the mark with a time before it; from the second's start, such
    /// a change is still seen (and one made just before it is compared
    /// again, which costs time, not correctness).
    pub fn whole_second(self) -> Mark {
        Mark {
            sec: self.sec,
            nsec: 0,
        }
    }

    /// Whether an entry with this ctime was changed at or after the mark.
    pub fn saw_change(self, ctime_sec: i64, ctime_nsec: u32) -> bool {
        Mark {
            sec: ctime_sec,
            nsec: ctime_nsec as i64,
        } >= self
    }
}

fn coarse_now() -> Mark {
    let t = clock_gettime(ClockId::RealtimeCoarse);
    Mark {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    }
}

/// Timestamps that set the mtime and leave the atime alone.
fn mtime_only(sec: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
    }
}

/// Marks the start of a run of stages. ctimes come from the coarse clock,
/// which moves in ticks of a few milliseconds, or (multigrain timestamps,
/// Linux 6.13 and later) from the fine clock, ahead of the coarse one:
/// wait until the coarse clock has passed the fine clock's present, so
/// that nothing written before the mark (an unpacked `--from` archive)
/// shares its timestamp or seems newer.
pub fn mark() -> Mark {
    let t = clock_gettime(ClockId::Realtime);
    let start = Mark {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    };
    loop {
        let now = coarse_now();
        if now > start {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// Sets `mtime = min(mtime, epoch)` on every entry under `tree` changed
/// since `since`. Returns how many entries it changed.
pub fn clamp(tree: &Path, since: Mark, epoch: i64) -> anyhow::Result<usize> {
    let mut changed = 0;
    clamp_entry(tree, since, epoch, &mut changed)?;
    Ok(changed)
}

fn clamp_entry(path: &Path, since: Mark, epoch: i64, changed: &mut usize) -> anyhow::Result<()> {
    let st = rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("reading {}", path.display()))?;
    let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    if is_dir {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            clamp_entry(&path.join(name), since, epoch, changed)?;
        }
    }
    let ctime = Mark {
        sec: st.st_ctime,
        nsec: st.st_ctime_nsec as i64,
    };
    let after_epoch = (st.st_mtime, st.st_mtime_nsec as i64) > (epoch, 0);
    if ctime >= since && after_epoch {
        let times = mtime_only(epoch);
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("setting the mtime of {}", path.display()))?;
        *changed += 1;
    }
    Ok(())
}

/// The overlayfs version of [`clamp`]: the entries in `upper` are the ones
/// changed since the layer was mounted, except directories that were only
/// copied up because something below them changed. A directory counts as
/// touched when it is new (or replaced a deleted one), or its mtime, mode
/// or owner differ from the one in the layers below. Changes go through
/// `merged` (an overlay's layers must not be written to directly).
pub fn clamp_overlay(
    merged: &Path,
    upper: &Path,
    lowers: &[std::path::PathBuf],
    epoch: i64,
) -> anyhow::Result<usize> {
    let mut changed = 0;
    let lowers = lowers
        .iter()
        .map(osbuild_tree_fs::Root::open)
        .collect::<std::io::Result<Vec<_>>>()
        .context("opening the layers below the tree")?;
    clamp_upper_entry(
        merged,
        upper,
        &lowers,
        Path::new(""),
        false,
        epoch,
        &mut changed,
    )?;
    Ok(changed)
}

fn is_whiteout(st: &rustix::fs::Stat) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice
        && st.st_rdev == 0
}

/// The entry at `rel` in the layers below, if any (a whiteout hides it).
/// Looked up inside each layer (`RESOLVE_IN_ROOT`): a symlink a stage left
/// in a layer never leads the lookup out of it.
fn lower_entry(lowers: &[osbuild_tree_fs::Root], rel: &Path) -> Option<rustix::fs::Stat> {
    for l in lowers {
        match l.stat_raw(rel) {
            Ok(st) if is_whiteout(&st) => return None,
            Ok(st) => return Some(st),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        }
    }
    None
}

fn clamp_upper_entry(
    merged: &Path,
    upper: &Path,
    lowers: &[osbuild_tree_fs::Root],
    rel: &Path,
    parent_new: bool,
    epoch: i64,
    changed: &mut usize,
) -> anyhow::Result<()> {
    let path = upper.join(rel);
    let st = rustix::fs::statat(CWD, &path, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("reading {}", path.display()))?;
    if is_whiteout(&st) {
        return Ok(());
    }
    let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    let opaque = is_dir
        && rustix::fs::lgetxattr(
            &path,
            format!("{}opaque", crate::rootless::overlay_xattr_prefix()).as_str(),
            &mut [0u8; 4][..],
        )
        .is_ok_and(|n| n == 1);
    let lower = if parent_new || opaque {
        None
    } else {
        lower_entry(lowers, rel)
    };
    let new = lower.is_none();
    let touched = match &lower {
        None => true,
        Some(_) if !is_dir => true,
        Some(l) => {
            (l.st_mtime, l.st_mtime_nsec) != (st.st_mtime, st.st_mtime_nsec)
                || l.st_mode != st.st_mode
                || (l.st_uid, l.st_gid) != (st.st_uid, st.st_gid)
        }
    };
    if is_dir {
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            clamp_upper_entry(merged, upper, lowers, &rel.join(name), new, epoch, changed)?;
        }
    }
    if touched && (st.st_mtime, st.st_mtime_nsec as i64) > (epoch, 0) {
        let target = merged.join(rel);
        let times = mtime_only(epoch);
        rustix::fs::utimensat(CWD, &target, &times, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("setting the mtime of {}", target.display()))?;
        *changed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn clamps_only_what_changed_after_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::write(&old, b"x").unwrap();
        let t = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: 2_000_000_000,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(CWD, &old, &t, AtFlags::empty()).unwrap();
        let since = mark();
        std::fs::create_dir(dir.path().join("new")).unwrap();
        std::fs::write(dir.path().join("new/file"), b"y").unwrap();
        std::os::unix::fs::symlink("/nowhere", dir.path().join("new/link")).unwrap();
        clamp(dir.path(), since, 1000).unwrap();
        let m = |p: &str| {
            std::fs::symlink_metadata(dir.path().join(p))
                .unwrap()
                .mtime()
        };
        assert_eq!(
            m("old"),
            2_000_000_000,
            "untouched entries keep their mtime"
        );
        assert_eq!(m("new"), 1000);
        assert_eq!(m("new/file"), 1000);
        assert_eq!(m("new/link"), 1000);
        assert_eq!(m("."), 1000, "the root changed: it gained an entry");
    }
}

/// Seconds since 1970, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `secs` since 1970 as an RFC 3339 UTC time (`2023-11-14T22:13:20Z`), as
/// SBOMs and provenance write times.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod rfc3339_tests {
    #[test]
    fn times_are_written_as_date_reads_them() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
