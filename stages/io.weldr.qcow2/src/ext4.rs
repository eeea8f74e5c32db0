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
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
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
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    compat: u32,
    ro_compat: u32,
    backup_bgs: [u64; 2],
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
    let compat = le32(&sb, 0x5c);
    let groups = if blocks_per_group == 0 || first_data_block >= blocks {
        0
    } else {
        (blocks - first_data_block).div_ceil(blocks_per_group)
    };
    let first_ino = u64::from(le32(&sb, 0x54));
    // Only what mke2fs makes with this stage's configuration: dynamic
    // revision, contiguous descriptors, no clusters; counts that agree.
    if le32(&sb, 0x4c) == 0
        || incompat & INCOMPAT_META_BG != 0
        || ro_compat & RO_COMPAT_BIGALLOC != 0
        || groups == 0
        || blocks_per_group > 8 * block_size
        || inodes_per_group == 0
        || inodes_per_group > 8 * block_size
        || groups.checked_mul(inodes_per_group) != Some(u64::from(le32(&sb, 0x00)))
        || first_ino < 11
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
        blocks,
        first_data_block,
        blocks_per_group,
        compat,
        ro_compat,
        backup_bgs: [u64::from(le32(&sb, 0x24c)), u64::from(le32(&sb, 0x250))],
        groups,
        inodes_per_group,
        inode_size,
        first_ino,
        desc_size,
        gdt_block: first_data_block + 1,
        csum_seed,
    })
}

/// The two ways ext4 keeps a time in seconds: the low 32 bits (read as
/// signed), and two more bits in the `_extra` field (nanoseconds zero).
fn split_time(t: i64) -> (u32, u32) {
    let lo = t as i32;
    (lo as u32, (((t - i64::from(lo)) >> 32) & 3) as u32)
}

/// Makes the file system's bytes depend on the tree alone: sets atime and
/// ctime of the root directory and of every inode in use from the first
/// non-reserved one on to `epoch`, and zeroes the superblocks' count of
/// bytes written in their life (mkfs counts what it wrote, which depends
/// on whether the host's file system zeroes ranges for it). Returns how
/// many inodes it changed.
pub fn normalize(f: &File, offset: u64, epoch: i64) -> anyhow::Result<u64> {
    if !(i64::from(i32::MIN)..(1i64 << 34) + i64::from(i32::MIN)).contains(&epoch) {
        anyhow::bail!("source epoch {epoch} is outside the times ext4 holds");
    }
    let g = geometry(f, offset)?;
    let at = |block: u64| -> anyhow::Result<u64> {
        if block >= g.blocks {
            anyhow::bail!("an ext4 group descriptor points past the file system (block {block})");
        }
        Ok(offset + block * g.block_size)
    };
    let mut gdt = vec![0u8; (g.groups as usize) * g.desc_size];
    f.read_exact_at(&mut gdt, at(g.gdt_block)?)?;
    let table_bytes = g.inodes_per_group as usize * g.inode_size;
    let mut table = vec![0u8; table_bytes];
    let mut bitmap = vec![0u8; g.block_size as usize];
    let (lo, extra) = split_time(epoch);
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
        let table_end = table_block + (table_bytes as u64).div_ceil(g.block_size);
        at(table_end - 1)?;
        f.read_exact_at(&mut bitmap, at(bitmap_block)?)?;
        let table_at = at(table_block)?;
        f.read_exact_at(&mut table, table_at)?;
        let mut dirty = false;
        for i in 0..g.inodes_per_group {
            let ino = group * g.inodes_per_group + i + 1;
            let in_use = bitmap[i as usize / 8] & (1 << (i % 8)) != 0;
            if !in_use || !(ino == 2 || ino >= g.first_ino) {
                continue;
            }
            let inode = &mut table[i as usize * g.inode_size..][..g.inode_size];
            if set_inode_times(inode, lo, extra) {
                if let Some(seed) = g.csum_seed {
                    seal_inode(inode, seed, ino as u32);
                }
                dirty = true;
                changed += 1;
            }
        }
        if dirty {
            f.write_all_at(&table, table_at)?;
        }
    }
    zero_kbytes_written(f, offset, &g)?;
    Ok(changed)
}

/// Sets atime and ctime (and their `_extra` fields where the inode has
/// them); whether anything changed.
fn set_inode_times(inode: &mut [u8], lo: u32, extra: u32) -> bool {
    let extra_isize = if inode.len() > GOOD_OLD_INODE_SIZE {
        usize::from(le16(inode, 0x80))
    } else {
        0
    };
    let mut fields = vec![(0x08, lo), (0x0c, lo)];
    // i_ctime_extra ends 8 bytes, i_atime_extra 16 bytes into the extra fields.
    if extra_isize >= 8 {
        fields.push((0x84, extra));
    }
    if extra_isize >= 16 {
        fields.push((0x8c, extra));
    }
    let mut changed = false;
    for (at, value) in fields {
        if le32(inode, at) != value {
            inode[at..at + 4].copy_from_slice(&value.to_le_bytes());
            changed = true;
        }
    }
    changed
}

/// Whether group `g` holds a copy of the superblock.
fn has_super(geo: &Geometry, g: u64) -> bool {
    if g == 0 {
        return true;
    }
    if geo.compat & COMPAT_SPARSE_SUPER2 != 0 {
        return geo.backup_bgs.contains(&g);
    }
    if geo.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
        return true;
    }
    let power_of = |b: u64| {
        let mut n = g;
        while n.is_multiple_of(b) {
            n /= b;
        }
        n == 1
    };
    g == 1 || power_of(3) || power_of(5) || power_of(7)
}

/// Zeroes `s_kbytes_written` in the superblock and each of its copies,
/// each copy's checksum made anew.
fn zero_kbytes_written(f: &File, offset: u64, g: &Geometry) -> anyhow::Result<()> {
    for group in (0..g.groups).filter(|n| has_super(g, *n)) {
        let at = if group == 0 {
            offset + SUPERBLOCK
        } else {
            offset + (group * g.blocks_per_group + g.first_data_block) * g.block_size
        };
        let mut sb = [0u8; 1024];
        f.read_exact_at(&mut sb, at)?;
        if le16(&sb, 0x38) != EXT4_MAGIC {
            anyhow::bail!("no copy of the ext4 superblock in group {group}");
        }
        sb[0x178..0x180].fill(0);
        if g.csum_seed.is_some() {
            let sum = crc32c_raw(!0, &sb[..0x3fc]);
            sb[0x3fc..].copy_from_slice(&sum.to_le_bytes());
        }
        f.write_all_at(&sb, at)?;
    }
    Ok(())
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
    use std::path::Path;
    use std::process::Command;

    const OFFSET: u64 = 1 << 20;

    /// A file system made by mkfs.ext4 -d as the stage makes it (4 KiB
    /// blocks, flex_bg, metadata_csum, a fixed UUID and time) at an
    /// offset in `image`, from `tree`, whose files have the host's times.
    fn mkfs(tree: &Path, image: &Path, env: &[(&str, &str)]) {
        std::fs::File::create(image)
            .unwrap()
            .set_len(OFFSET + (256 << 20))
            .unwrap();
        let status = Command::new("mkfs.ext4")
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .envs(env.iter().copied())
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256"])
            .args(["-O", "metadata_csum,64bit,flex_bg,^metadata_csum_seed,^orphan_file"])
            .args(["-U", "5f0c2d3e-8a41-4b6f-9c27-1e3d5a7b9c0d"])
            .arg("-E")
            .arg(format!(
                "offset={OFFSET},hash_seed=d141e76c-9fc8-472e-a237-872e0a80bf46,lazy_itable_init=0,lazy_journal_init=0"
            ))
            .arg("-d")
            .arg(tree)
            .arg(image)
            .arg("262144k")
            .status()
            .expect("mkfs.ext4 (Debian package e2fsprogs)");
        assert!(status.success());
    }

    fn rw(image: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .unwrap()
    }

    /// After `normalize`, e2fsck finds the file system clean and every
    /// inode has the epoch, past 2038 too; and how mkfs wrote it (zeroing
    /// ranges or writing zeros, as the host's file system allows) no
    /// longer shows in its bytes.
    #[test]
    fn times_and_write_counts_are_set_and_checksums_stay_valid() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        for i in 0..300 {
            std::fs::write(tree.join(format!("a/b/f{i}")), format!("{i}")).unwrap();
        }
        std::os::unix::fs::symlink("a/b/f1", tree.join("link")).unwrap();
        let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
        mkfs(&tree, &a, &[]);
        mkfs(&tree, &b, &[("UNIX_IO_NOZEROOUT", "1")]);
        // 2040-01-01: past what 32 signed bits hold.
        let epoch = 2_208_988_800;
        let n = normalize(&rw(&a), OFFSET, epoch).unwrap();
        assert!(n >= 303, "{n} inodes changed");
        assert_eq!(
            normalize(&rw(&a), OFFSET, epoch).unwrap(),
            0,
            "a second pass changes no inode"
        );
        normalize(&rw(&b), OFFSET, epoch).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "the bytes depend on how mkfs zeroed the inode tables"
        );
        let fs = format!("{}?offset={OFFSET}", a.display());
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
                stat.contains(" ctime: 0x83aa7e80:00000001")
                    && stat.contains(" atime: 0x83aa7e80:00000001"),
                "{path}: {stat}"
            );
            assert!(stat.contains("2040"), "{path}: {stat}");
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
        let e = normalize(&rw(&image), 0, 1).unwrap_err();
        assert!(e.to_string().contains("no ext4 superblock"), "{e}");
    }

    #[test]
    fn times_split_as_ext4_keeps_them() {
        assert_eq!(split_time(1_700_000_000), (1_700_000_000, 0));
        assert_eq!(split_time(2_208_988_800), (0x83aa_7e80, 1));
        assert_eq!(split_time(-1), (u32::MAX, 0));
    }
}
