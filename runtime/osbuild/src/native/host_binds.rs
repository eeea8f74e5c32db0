//! Host paths bound into a native stage: read-only, and `nodev,nosuid,
//! noexec`, so that a device node, a setuid program or a socket beneath
//! an allowed directory is as inert as a plain file.
//!
//! Each path was resolved and allowed when the build was planned
//! ([`crate::reach::host_paths`]); here it is opened once, without
//! following a symlink that may have been planted since, and bound from
//! that descriptor onto a private mount point in osbuild's own mount
//! namespace, which nspawn then binds into the container.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, UnmountFlags};

/// The binds made for one stage; undone on drop.
pub struct HostBinds {
    dir: PathBuf,
    points: Vec<PathBuf>,
}

impl HostBinds {
    /// Binds each of `paths` under `work`; returns the guard and, per
    /// path, (where it is bound now, where the stage sees it).
    pub fn new(
        paths: &[PathBuf],
        work: &Path,
    ) -> anyhow::Result<(HostBinds, Vec<(PathBuf, PathBuf)>)> {
        let dir = work.join("host-paths");
        let mut binds = HostBinds {
            dir: dir.clone(),
            points: Vec::new(),
        };
        let mut pairs = Vec::new();
        if paths.is_empty() {
            return Ok((binds, pairs));
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, path) in paths.iter().enumerate() {
            let point = dir.join(i.to_string());
            bind_one(path, &point)?;
            binds.points.push(point.clone());
            pairs.push((point, path.clone()));
        }
        Ok((binds, pairs))
    }
}

/// Opens the host path as it was resolved when the build was planned: it
/// holds no symlink then, so one in any of its components now (a
/// directory swapped for a link by whoever can write there) is refused,
/// not followed somewhere the rules never allowed.
fn open_resolved(path: &Path) -> anyhow::Result<rustix::fd::OwnedFd> {
    use rustix::fs::ResolveFlags;
    rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => anyhow::anyhow!(
            "the host path {} changed since the build was planned: a part of it is now a symlink; nothing was bound",
            path.display()
        ),
        e => anyhow::Error::from(std::io::Error::from(e))
            .context(format!("opening the host path {}", path.display())),
    })
}

fn bind_one(path: &Path, point: &Path) -> anyhow::Result<()> {
    let fd = open_resolved(path)?;
    let stat = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::Directory => std::fs::create_dir(point),
        rustix::fs::FileType::RegularFile => std::fs::write(point, b""),
        other => anyhow::bail!(
            "the host path {} changed since the build was planned: it is now {other:?}; nothing was bound",
            path.display()
        ),
    }
    .with_context(|| format!("creating the mount point {}", point.display()))?;
    let source = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::mount::mount_bind(source.as_str(), point)
        .map_err(std::io::Error::from)
        .with_context(|| format!("binding the host path {}", path.display()))?;
    let flags = MountFlags::BIND
        | MountFlags::RDONLY
        | MountFlags::NODEV
        | MountFlags::NOSUID
        | MountFlags::NOEXEC;
    if let Err(e) = rustix::mount::mount_remount(point, flags, c"") {
        let _ = rustix::mount::unmount(point, UnmountFlags::DETACH);
        return Err(std::io::Error::from(e)).with_context(|| {
            format!(
                "making the bind of {} read-only, nodev, nosuid, noexec",
                path.display()
            )
        });
    }
    Ok(())
}

impl Drop for HostBinds {
    fn drop(&mut self) {
        for point in &self.points {
            let _ = rustix::mount::unmount(point.as_path(), UnmountFlags::DETACH);
            let _ = std::fs::remove_file(point).or_else(|_| std::fs::remove_dir(point));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_swapped_for_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(allowed.join("x/target")).unwrap();
        std::fs::create_dir_all(outside.join("target")).unwrap();
        let planned = allowed.join("x/target").canonicalize().unwrap();
        assert!(open_resolved(&planned).is_ok());
        std::fs::rename(allowed.join("x"), allowed.join("x.old")).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("x")).unwrap();
        let e = open_resolved(&planned).unwrap_err().to_string();
        assert!(e.contains("a part of it is now a symlink"), "{e}");
    }
}
