//! Sets the access and change times of every inode in use of an ext4 file
//! system (in a disk image, at an offset) to the source epoch, in one pass
//! over its inode tables, with each inode's checksum made anew.
//!
//! `mkfs.ext4 -d` copies atime and ctime from the files it reads, and a
//! ctime cannot be set on the host: this is what makes the file system's
//! bytes depend on the tree alone. It replaces one `debugfs` request per
//! inode (`sif`), which took longer than mkfs itself. Only the fields the
//! on-disk format fixes are read; anything unexpected is an error, and the
//! stage runs `e2fsck -fn` afterwards.

use std::fs::File;
use std::os::unix::fs::FileExt;

use osbuild_stage::anyhow;

use crate::crc32c::crc32c_raw;

const SUPERBLOCK: u64 = 1024;
const EXT4_MAGIC: u16 = 0xef53;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_INODE_UNINIT: u16 = 0x1;
const GOOD_OLD_INODE_SIZE: usize = 128;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// What the superblock says about where the inodes are.
struct Geometry {
    block_size: u64,
    groups: u64,
    inodes_per_group: u64,
    inode_size: usize,
    first_ino: u64,
    desc_size: usize,
    gdt_block: u64,
    csum_seed: Option<u32>,
}

fn geometry(f: &File, offset: u64) -> anyhow::Result<Geometry> {
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, offset + SUPERBLOCK)?;
    if le16(&sb, 0x38) != EXT4_MAGIC {
        anyhow::bail!("no ext4 superblock at offset {offset}");
    }
    let log = le32(&sb, 0x18);
    if log > 6 {
        anyhow::bail!("ext4 block size 2^{} is not one this stage knows", 10 + log);
    }
    let block_size = 1024u64 << log;
    let incompat = le32(&sb, 0x60);
    let blocks = u64::from(le32(&sb, 0x04))
        | if incompat & INCOMPAT_64BIT != 0 {
            u64::from(le32(&sb, 0x150)) << 32
        } else {
            0
        };
    let first_data_block = u64::from(le32(&sb, 0x14));
    let blocks_per_group = u64::from(le32(&sb, 0x20));
    let inodes_per_group = u64::from(le32(&sb, 0x28));
    let inode_size = usize::from(le16(&sb, 0x58));
    let ro_compat = le32(&sb, 0x64);
    let desc_size = if incompat & INCOMPAT_64BIT != 0 {
        usize::from(le16(&sb, 0xfe))
    } else {
        32
    };
    if blocks_per_group == 0
        || first_data_block >= blocks
        || inodes_per_group == 0
        || !(GOOD_OLD_INODE_SIZE..=4096).contains(&inode_size)
        || !inode_size.is_power_of_two()
        || !(32..=1024).contains(&desc_size)
    {
        anyhow::bail!("the ext4 superblock's geometry is not one this stage knows");
    }
    let csum_seed = (ro_compat & RO_COMPAT_METADATA_CSUM != 0).then(|| {
        if incompat & INCOMPAT_CSUM_SEED != 0 {
            le32(&sb, 0x270)
        } else {
            crc32c_raw(!0, &sb[0x68..0x78])
        }
    });
    Ok(Geometry {
        block_size,
        groups: (blocks - first_data_block).div_ceil(blocks_per_group),
        inodes_per_group,
        inode_size,
        first_ino: u64::from(le32(&sb, 0x54)),
        desc_size,
        gdt_block: first_data_block + 1,
        csum_seed,
    })
}

/// Sets atime and ctime of the root directory and of every inode in use
/// from the first non-reserved one on to `epoch`; returns how many
/// inodes it changed.
pub fn set_times(f: &File, offset: u64, epoch: u32) -> anyhow::Result<u64> {
    let g = geometry(f, offset)?;
    let mut gdt = vec![0u8; (g.groups as usize) * g.desc_size];
    f.read_exact_at(&mut gdt, offset + g.gdt_block * g.block_size)?;
    let table_bytes = g.inodes_per_group as usize * g.inode_size;
    let mut table = vec![0u8; table_bytes];
    let mut bitmap = vec![0u8; g.block_size as usize];
    let mut changed = 0u64;
    for group in 0..g.groups {
        let d = &gdt[group as usize * g.desc_size..][..g.desc_size];
        if le16(d, 0x12) & BG_INODE_UNINIT != 0 {
            continue;
        }
        let hi = |at: usize| {
            if g.desc_size >= 64 {
                u64::from(le32(d, at)) << 32
            } else {
                0
            }
        };
        let bitmap_block = u64::from(le32(d, 0x04)) | hi(0x24);
        let table_block = u64::from(le32(d, 0x08)) | hi(0x28);
        f.read_exact_at(&mut bitmap, offset + bitmap_block * g.block_size)?;
        let table_at = offset + table_block * g.block_size;
        f.read_exact_at(&mut table, table_at)?;
        let mut dirty = false;
        for i in 0..g.inodes_per_group {
            let ino = group * g.inodes_per_group + i + 1;
            let in_use = bitmap
                .get(i as usize / 8)
                .is_some_and(|b| b & (1 << (i % 8)) != 0);
            if !in_use || !(ino == 2 || ino >= g.first_ino) {
                continue;
            }
            let inode = &mut table[i as usize * g.inode_size..][..g.inode_size];
            if le32(inode, 0x08) == epoch && le32(inode, 0x0c) == epoch {
                continue;
            }
            inode[0x08..0x0c].copy_from_slice(&epoch.to_le_bytes());
            inode[0x0c..0x10].copy_from_slice(&epoch.to_le_bytes());
            if let Some(seed) = g.csum_seed {
                seal_inode(inode, seed, ino as u32);
            }
            dirty = true;
            changed += 1;
        }
        if dirty {
            f.write_all_at(&table, table_at)?;
        }
    }
    Ok(changed)
}

/// Sets an inode's checksum (metadata_csum): CRC-32C over its number, its
/// generation and its bytes with the checksum fields zero.
fn seal_inode(inode: &mut [u8], seed: u32, ino: u32) {
    let extra = if inode.len() > GOOD_OLD_INODE_SIZE {
        usize::from(le16(inode, 0x80))
    } else {
        0
    };
    // i_checksum_hi is there when the extra fields reach past it.
    let has_hi = extra >= 4;
    inode[0x7c..0x7e].fill(0);
    if has_hi {
        inode[0x82..0x84].fill(0);
    }
    let generation = le32(inode, 0x64);
    let mut crc = crc32c_raw(seed, &ino.to_le_bytes());
    crc = crc32c_raw(crc, &generation.to_le_bytes());
    crc = crc32c_raw(crc, inode);
    inode[0x7c..0x7e].copy_from_slice(&(crc as u16).to_le_bytes());
    if has_hi {
        inode[0x82..0x84].copy_from_slice(&((crc >> 16) as u16).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A file system made by mkfs.ext4 -d, as the stage makes it, from a
    /// tree whose files have the host's times; after `set_times` e2fsck
    /// finds it clean and every inode has the epoch.
    #[test]
    fn times_are_set_and_checksums_stay_valid() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        for i in 0..300 {
            std::fs::write(tree.join(format!("a/b/f{i}")), format!("{i}")).unwrap();
        }
        std::os::unix::fs::symlink("a/b/f1", tree.join("link")).unwrap();
        let image = dir.path().join("disk.raw");
        let offset = 1 << 20;
        std::fs::File::create(&image)
            .unwrap()
            .set_len(offset + (64 << 20))
            .unwrap();
        let mkfs = Command::new("mkfs.ext4")
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-O",
                "metadata_csum,64bit,^metadata_csum_seed",
            ])
            .arg("-E")
            .arg(format!("offset={offset}"))
            .arg("-d")
            .arg(&tree)
            .arg(&image)
            .arg("65536k")
            .status()
            .expect("mkfs.ext4 (Debian package e2fsprogs)");
        assert!(mkfs.success());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        let n = set_times(&f, offset, 1_600_000_000).unwrap();
        assert!(n >= 303, "{n} inodes changed");
        assert_eq!(
            set_times(&f, offset, 1_600_000_000).unwrap(),
            0,
            "a second pass changes nothing"
        );
        drop(f);
        let fs = format!("{}?offset={offset}", image.display());
        let fsck = Command::new("e2fsck").arg("-fn").arg(&fs).output().unwrap();
        assert!(
            fsck.status.success(),
            "e2fsck: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        for path in ["/", "/a/b/f299", "/link"] {
            let stat = Command::new("debugfs")
                .args(["-R", &format!("stat {path}")])
                .arg(&fs)
                .output()
                .unwrap();
            let stat = String::from_utf8_lossy(&stat.stdout);
            assert!(
                stat.contains(" ctime: 0x5f5e1000:00000000")
                    && stat.contains(" atime: 0x5f5e1000:00000000"),
                "{path}: {stat}"
            );
        }
    }

    #[test]
    fn not_ext4_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("zero.raw");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(8192)
            .unwrap();
        let f = File::open(&image).unwrap();
        let e = set_times(&f, 0, 1).unwrap_err();
        assert!(e.to_string().contains("no ext4 superblock"), "{e}");
    }
}
