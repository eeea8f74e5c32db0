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

    /// Writes `bytes` at `path` (relative, `/`-separated, plain names) on the ESP.
    pub fn put(&self, path: &str, bytes: &[u8]) -> anyhow::Result<()> {
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            anyhow::bail!("{path:?} is no plain path on the ESP");
        }
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
            set_mtimes(&self.dir, epoch)?;
            // Directories, then each directory's files, in sorted order:
            // the order they reach the FAT is its bytes, and the scratch
            // file system's own listing order differs between kernels.
            let mut dirs = Vec::new();
            let mut files: Vec<(String, Vec<PathBuf>)> = Vec::new();
            walk(&self.dir, "", &mut dirs, &mut files)?;
            let mtools = |program: &str| {
                let mut cmd = Command::new(program);
                // The host's mtools.conf is read whatever MTOOLSRC says:
                // what changes the bytes is set here, which wins.
                cmd.env("MTOOLS_SKIP_CHECK", "1")
                    .env("MTOOLS_NO_VFAT", "0")
                    .env("MTOOLS_LOWER_CASE", "0")
                    .env("MTOOLS_NAME_NUMERIC_TAIL", "1")
                    // FAT keeps local time: ours is UTC; new directories
                    // get the epoch.
                    .env("TZ", "UTC")
                    .env("SOURCE_DATE_EPOCH", epoch.max(FAT_EPOCH).to_string())
                    .arg("-i")
                    .arg(&fs);
                cmd
            };
            if !dirs.is_empty() {
                run(mtools("mmd").args(dirs.iter().map(|d| format!("::/{d}"))))?;
            }
            for (dir, list) in &files {
                run(mtools("mcopy")
                    .args(["-m", "-Q"])
                    .args(list)
                    .arg(format!("::/{dir}")))?;
            }
        }
        run(Command::new("fsck.fat").arg("-n").arg(&fs))?;
        copy_into(&fs, raw, part.offset())?;
        std::fs::remove_file(&fs)?;
        Ok(())
    }
}

/// The directories under `dir` (parents first) and the files of each
/// directory, by name.
fn walk(
    dir: &Path,
    rel: &str,
    dirs: &mut Vec<String>,
    files: &mut Vec<(String, Vec<PathBuf>)>,
) -> anyhow::Result<()> {
    let mut entries: Vec<(String, PathBuf, bool)> = std::fs::read_dir(dir)?
        .map(|e| {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            Ok((name, e.path(), e.file_type()?.is_dir()))
        })
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    let here: Vec<PathBuf> = entries
        .iter()
        .filter(|(_, _, is_dir)| !is_dir)
        .map(|(_, p, _)| p.clone())
        .collect();
    if !here.is_empty() {
        files.push((rel.to_string(), here));
    }
    for (name, path, is_dir) in entries {
        if is_dir {
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            dirs.push(sub.clone());
            walk(&path, &sub, dirs, files)?;
        }
    }
    Ok(())
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
