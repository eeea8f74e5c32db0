//! The device nodes a stage declares (`devices`), for a stage in a user
//! namespace: the host's nodes belong to root and a group such as `disk`,
//! which mean nothing inside, so binding them would give a node no one in
//! the stage can open. Instead each named node is made again (same kind
//! and number) on a tmpfs of the stage's own, owned by the stage's root
//! and mode 0600, and bound at its `/dev` path. The stage can open exactly
//! those nodes and gets no capability on the host with them. Only devices
//! whose every open is private to the opener come here (`fuse`, `kvm`);
//! loop devices are shared by the whole host and are refused before this
//! (`LOOP_IN_USERNS`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustix::fs::FileType;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::userns::IdMap;

/// The tmpfs holding one stage's device nodes; unmounted on drop.
pub struct DeviceNodes {
    dir: PathBuf,
    binds: Vec<String>,
}

impl DeviceNodes {
    /// Makes copies of `nodes` (host paths under `/dev`) in `work`.
    pub fn make(work: &Path, nodes: &[String], map: &IdMap) -> anyhow::Result<DeviceNodes> {
        let dir = work.join("devices");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // No `nodev`: these nodes are meant to be opened, by the stage.
        // Nothing is executable or setuid here.
        rustix::mount::mount(
            "osbuild-devices",
            &dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            c"mode=0700,size=64k,nr_inodes=1024",
        )
        .map_err(std::io::Error::from)
        .context("mounting the stage's device directory (tmpfs)")?;
        let mut made = DeviceNodes {
            dir,
            binds: Vec::new(),
        };
        for node in nodes {
            made.copy(node, map.base())
                .with_context(|| format!("giving the stage {node}"))?;
        }
        Ok(made)
    }

    fn copy(&mut self, node: &str, owner: u32) -> anyhow::Result<()> {
        // lstat only: a host node is never opened.
        let st = rustix::fs::lstat(node).map_err(std::io::Error::from)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::CharacterDevice && kind != FileType::BlockDevice {
            anyhow::bail!("{node} is not a device node here");
        }
        let name = Path::new(node)
            .file_name()
            .context("a device node's path has a name")?;
        let copy = self.dir.join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &copy,
            kind,
            rustix::fs::Mode::from_raw_mode(0o600),
            st.st_rdev,
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("making {}", copy.display()))?;
        rustix::fs::chownat(
            rustix::fs::CWD,
            &copy,
            Some(rustix::fs::Uid::from_raw(owner)),
            Some(rustix::fs::Gid::from_raw(owner)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(std::io::Error::from)?;
        self.binds.push(format!("--bind={}:{node}", copy.display()));
        Ok(())
    }

    pub fn nspawn_args(&self) -> &[String] {
        &self.binds
    }
}

impl Drop for DeviceNodes {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.dir, UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
