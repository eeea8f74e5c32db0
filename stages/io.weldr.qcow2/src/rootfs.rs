//! The root file system, filled from the tree without mounting anything:
//! ext4 written straight into its partition by `mkfs.ext4 -d`; erofs and
//! squashfs made as files (their tools know their size only when done),
//! then copied into the partition.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use osbuild_stage::anyhow;

use crate::layout::{Partition, RootFs, derived_uuid};
use crate::tools::run;

const MIB: u64 = 1 << 20;

/// The root file system to make.
pub struct Root<'a> {
    pub fs: RootFs,
    pub tree: &'a Path,
    pub uuid: &'a str,
    pub label: &'a str,
    pub epoch: i64,
}

/// The size an ext4 root needs for the tree: file data in 4 KiB blocks
/// plus an inode's worth per entry, +25%, +256 MiB (journal, reserve),
/// with the image rounded up to 64 MiB. Computed from sizes, never from
/// `du`, which depends on the host.
pub fn ext4_size(root: &Path) -> anyhow::Result<u64> {
    let mut bytes: u64 = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let m = entry.metadata()?;
            bytes = bytes.saturating_add(4096);
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() {
                bytes = bytes.saturating_add(m.len().div_ceil(4096) * 4096);
            }
            if bytes > crate::image::MAX_IMAGE {
                anyhow::bail!(
                    "the tree's files add up to more than the {} GiB this stage makes",
                    crate::image::MAX_IMAGE >> 30
                );
            }
        }
    }
    let want = bytes + bytes / 4 + (256 << 20) + MIB;
    Ok(want.div_ceil(64 << 20) * (64 << 20) - MIB)
}

/// A read-only root made ahead of the disk: the file and its size.
pub struct Prebuilt {
    pub file: PathBuf,
    pub bytes: u64,
}

impl Root<'_> {
    /// Makes an erofs or squashfs image of the tree in `scratch` (ext4 is
    /// made in place: None).
    pub fn prebuild(&self, scratch: &Path) -> anyhow::Result<Option<Prebuilt>> {
        let file = scratch.join(format!("root.{}", self.fs.name()));
        let _ = std::fs::remove_file(&file);
        let epoch = self.epoch.max(0).to_string();
        let started = Instant::now();
        match self.fs {
            RootFs::Ext4 => return Ok(None),
            RootFs::Erofs => {
                // SOURCE_DATE_EPOCH is the file system's build time; with
                // --preserve-mtime each file keeps its own (-T would give
                // every file the epoch).
                run(Command::new("mkfs.erofs")
                    .env("SOURCE_DATE_EPOCH", &epoch)
                    .args(["--quiet", "--preserve-mtime", "-U", self.uuid])
                    .arg(&file)
                    .arg(self.tree))?;
                run(Command::new("fsck.erofs").arg(&file))?;
            }
            RootFs::Squashfs => {
                // SOURCE_DATE_EPOCH would also set every file's time: only
                // the file system's own time comes from the epoch. zstd at
                // level 3: 2 s for a 640 MiB tree where Debian's default
                // (xz) takes 80; the kernel reads it, and GRUB need not
                // (the kernel is on the ESP). squashfs holds no POSIX ACLs:
                // mksquashfs says which it leaves out.
                run(Command::new("mksquashfs")
                    .env_remove("SOURCE_DATE_EPOCH")
                    .arg(self.tree)
                    .arg(&file)
                    .args(["-noappend", "-quiet", "-no-progress", "-mkfs-time", &epoch])
                    .args(["-comp", "zstd", "-Xcompression-level", "3"]))?;
            }
        }
        let bytes = std::fs::metadata(&file)?.len();
        println!(
            "{} root file system made in {:.1}s: {} MiB",
            self.fs.name(),
            started.elapsed().as_secs_f64(),
            bytes.div_ceil(MIB)
        );
        Ok(Some(Prebuilt { file, bytes }))
    }

    /// Writes the root file system into its partition of `raw`.
    pub fn write(
        &self,
        raw: &Path,
        part: &Partition,
        prebuilt: Option<&Prebuilt>,
        scratch: &Path,
    ) -> anyhow::Result<()> {
        match prebuilt {
            Some(p) => copy_into(&p.file, raw, part.offset()),
            None => self.ext4(raw, part, scratch),
        }
    }

    fn ext4(&self, raw: &Path, part: &Partition, scratch: &Path) -> anyhow::Result<()> {
        let offset = part.offset();
        let epoch = self.epoch.to_string();
        // e2fsprogs reads a fake time of 0 as "not set" (and then stamps
        // the real time): the file system's own times are 1 at the least.
        let fake_time = self.epoch.max(1).to_string();
        let conf = scratch.join("mke2fs.conf");
        std::fs::write(&conf, MKE2FS_CONF)?;
        let seed = derived_uuid(&format!("hash_seed:{}", self.uuid));
        println!("mkfs.ext4 -d (populating the file system from the tree)");
        let started = Instant::now();
        run(Command::new("mkfs.ext4")
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", &fake_time)
            .env("LC_ALL", "C")
            .args(["-q", "-F", "-t", "ext4", "-T", "default", "-L", self.label, "-U", self.uuid])
            .args(["-O", "^metadata_csum_seed,^orphan_file"])
            .arg("-E")
            .arg(format!(
                "offset={offset},hash_seed={seed},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard"
            ))
            .arg("-d")
            .arg(self.tree)
            .arg(raw)
            .arg(format!("{}k", part.bytes() / 1024)))?;

        // mkfs copies atime and ctime from the host's files: set them to
        // the epoch in every inode, in one pass over the inode tables, and
        // zero the count of bytes mkfs wrote.
        let fs = format!("{}?offset={offset}", raw.display());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(raw)?;
        let inodes = crate::ext4::normalize(&file, offset, self.epoch)?;
        drop(file);
        run(Command::new("e2fsck").arg("-fn").arg(&fs))?;
        println!(
            "file system written in {:.1}s; times of {inodes} inodes set to {epoch}; e2fsck clean",
            started.elapsed().as_secs_f64(),
        );
        Ok(())
    }
}

/// Copies `file` into `raw` at `offset`, its data only: holes stay holes
/// (an ESP is mostly empty), and each run of data is copied in the kernel
/// (copy_file_range).
pub fn copy_into(file: &Path, raw: &Path, offset: u64) -> anyhow::Result<()> {
    use rustix::fs::{SeekFrom, copy_file_range, seek};
    let from = std::fs::File::open(file)?;
    let to = std::fs::OpenOptions::new().write(true).open(raw)?;
    let len = from.metadata()?.len();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(&from, SeekFrom::Data(pos)) {
            Ok(p) => p,
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(&from, SeekFrom::Hole(start))?.min(len);
        let (mut at, mut out) = (start, offset + start);
        while at < end {
            let want = (end - at) as usize;
            let n = match copy_file_range(&from, Some(&mut at), &to, Some(&mut out), want) {
                Ok(n) => n,
                // Between two file systems (the scratch directory may be a
                // tmpfs) the kernel does not copy: read and write.
                Err(rustix::io::Errno::XDEV | rustix::io::Errno::NOSYS) => {
                    copy_range(&from, at, &to, out, end - at)?;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                anyhow::bail!("{} ended while it was copied", file.display());
            }
        }
        pos = end;
    }
    Ok(())
}

fn copy_range(
    from: &std::fs::File,
    at: u64,
    to: &std::fs::File,
    out: u64,
    len: u64,
) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        from.read_exact_at(&mut buf[..n], at + done)?;
        to.write_all_at(&buf[..n], out + done)?;
        done += n as u64;
    }
    Ok(())
}

const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0
\thash_alg = half_md4
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tdefault = {
\t\tinode_ratio = 16384
\t}
";
