//! The EFI system partition: FAT32 made by `mkfs.fat`, filled by `mcopy`
//! from a staging directory this stage writes (bootloader, configuration,
//! kernels), checked by `fsck.fat`. No mount, no loop device.
//!
//! Reproducible: `--invariant` fixes what mkfs.fat would take from the
//! clock or chance, the volume id is given, and every staged file and
//! directory has the source epoch as its mtime, which `mcopy -m` keeps.

use std::path::{Path, PathBuf};
use std::process::Command;

use osbuild_stage::anyhow;

use crate::layout::Partition;
use crate::rootfs::copy_into;
use crate::tools::run;

/// The files to put on the ESP, in a directory of the stage's own.
pub struct Staging {
    pub dir: PathBuf,
}

impl Staging {
    pub fn new(scratch: &Path) -> anyhow::Result<Staging> {
        let dir = scratch.join("esp");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Staging { dir })
    }

    /// Writes `bytes` at `path` (relative, `/`-separated) on the ESP.
    pub fn put(&self, path: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let at = self.dir.join(path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&at, bytes)?;
        Ok(())
    }

    pub fn is_empty(&self) -> anyhow::Result<bool> {
        Ok(std::fs::read_dir(&self.dir)?.next().is_none())
    }

    /// Makes the file system, copies the staged files onto it, checks it,
    /// and writes it into `part` of `raw`. It is made as a file of its own:
    /// mkfs.fat's `--offset` misreads the size of a file holding more.
    pub fn write(
        &self,
        raw: &Path,
        part: &Partition,
        volume_id: &str,
        epoch: i64,
        scratch: &Path,
    ) -> anyhow::Result<()> {
        let fs = scratch.join("esp.img");
        let _ = std::fs::remove_file(&fs);
        std::fs::File::create(&fs)?.set_len(part.bytes())?;
        let id = volume_id.replace('-', "");
        // Clusters small enough that FAT32 has the 65525 it needs.
        let cluster = if part.bytes() <= 512 << 20 { "1" } else { "8" };
        // --invariant first: it sets a volume id of its own, which -i then
        // overrides. -h: the sectors before the partition, as the BPB says.
        run(Command::new("mkfs.fat")
            .args([
                "-F",
                "32",
                "-S",
                "512",
                "-s",
                cluster,
                "-n",
                "ESP",
                "--invariant",
                "-i",
                &id,
            ])
            .arg("-h")
            .arg(part.start.to_string())
            .arg(&fs))?;
        if !self.is_empty()? {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            set_mtimes(&self.dir, epoch)?;
            // A configuration of our own: the host's /etc/mtools.conf stays out.
            let rc = scratch.join("mtoolsrc");
            std::fs::write(&rc, "")?;
            run(Command::new("mcopy")
                .env("MTOOLSRC", &rc)
                .env("MTOOLS_SKIP_CHECK", "1")
                // FAT keeps local time: ours is UTC, whatever the host's is.
                .env("TZ", "UTC")
                .args(["-s", "-m", "-Q", "-i"])
                .arg(&fs)
                .args(&entries)
                .arg("::/"))?;
        }
        run(Command::new("fsck.fat").arg("-n").arg(&fs))?;
        copy_into(&fs, raw, part.offset())?;
        std::fs::remove_file(&fs)?;
        Ok(())
    }
}

/// 1980-01-01T00:00:00Z, the first time FAT can say.
const FAT_EPOCH: i64 = 315_532_800;

/// Sets the mtime of everything under `dir` to `epoch`, directories after
/// what they hold.
fn set_mtimes(dir: &Path, epoch: i64) -> anyhow::Result<()> {
    // FAT's times start in 1980.
    let secs = epoch.max(FAT_EPOCH) as u64;
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            set_mtimes(&path, epoch)?;
        }
        std::fs::File::open(&path)?.set_modified(time)?;
    }
    Ok(())
}
