//! Building the image, step by step, with the host's tools.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use osbuild_stage::{OptionError, Tree, anyhow, host};
use sha2::{Digest, Sha256};

use crate::Options;

/// Where the partition starts, in 512-byte sectors: 1 MiB, which leaves
/// room for GRUB's core.img between the MBR and the partition.
const PART_START: u64 = 2048;

/// The image, decided before anything is written.
pub struct Plan {
    tree: PathBuf,
    target: String,
    qcow2: bool,
    size: u64,
    uuid: String,
    label: String,
    epoch: i64,
    kernel: Option<Kernel>,
}

struct Kernel {
    version: String,
    cmdline: String,
}

pub fn parse_size(v: &serde_json::Value) -> Result<u64, String> {
    let bad = || format!("{v} is not a size (bytes, or a number with K, M, G or T)");
    match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(bad),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (num, mult) = match s.chars().last() {
                Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
                Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
                Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
                Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
                _ => (s, 1),
            };
            num.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

fn valid_uuid(u: &str) -> bool {
    let parts: Vec<&str> = u.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && u.chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// A UUID (version 4 layout) derived from `seed`.
pub fn derived_uuid(seed: &str) -> String {
    let h = hex(&Sha256::digest(seed.as_bytes()));
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The UUID of `/` in an fstab, if it names it by UUID.
pub fn fstab_root_uuid(fstab: &str) -> Option<String> {
    fstab.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 2 && f[1] == "/" && !l.trim_start().starts_with('#'))
            .then(|| f[0].strip_prefix("UUID="))
            .flatten()
            .map(str::to_string)
    })
}

/// The kernel command line: the tree's /etc/kernel/cmdline if it has one,
/// else `root=UUID=...`; always read-write and with a serial console.
pub fn kernel_cmdline(from_tree: Option<&str>, uuid: &str) -> String {
    let mut words: Vec<String> = match from_tree.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s.split_whitespace().map(str::to_string).collect(),
        None => vec![format!("root=UUID={uuid}")],
    };
    if !words.iter().any(|w| w == "ro" || w == "rw") {
        words.push("rw".into());
    }
    if !words.iter().any(|w| w.starts_with("console=")) {
        words.push("console=ttyS0".into());
    }
    words.join(" ")
}

/// The newest `vmlinuz-VERSION` in /boot that has its `initrd.img-VERSION`.
fn find_kernel(tree: &Tree) -> anyhow::Result<Option<String>> {
    if !tree.exists("/boot")? {
        return Ok(None);
    }
    let mut versions: Vec<String> = tree
        .read_dir("/boot")?
        .into_iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|v| {
            tree.exists(format!("/boot/initrd.img-{v}"))
                .unwrap_or(false)
        })
        .collect();
    versions.sort_by(|a, b| version_cmp(a, b));
    Ok(versions.pop())
}

/// Compares version strings numerically where they hold numbers (`6.1.0-9` < `6.1.0-10`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| (p.parse().unwrap_or(0), p.to_string()))
            .collect()
    };
    split(a).cmp(&split(b))
}

/// The image size that fits the tree: file data in 4 KiB blocks plus an
/// inode's worth per entry, +25%, +256 MiB (journal, reserve), rounded up to
/// 64 MiB. Computed from sizes, never from `du`, which depends on the host.
fn fitting_size(root: &Path) -> anyhow::Result<u64> {
    let mut bytes: u64 = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let m = entry.metadata()?;
            bytes += 4096;
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() {
                bytes += m.len().div_ceil(4096) * 4096;
            }
        }
    }
    let want = bytes + bytes / 4 + (256 << 20) + (1 << 20);
    Ok(want.div_ceil(64 << 20) * (64 << 20))
}

/// Runs a host tool of this stage (`osbuild_stage::host`), naming the
/// Debian package that provides it.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let package = match cmd.get_program().to_str() {
        Some("qemu-img") => "qemu-utils",
        Some("grub-mkimage") => "grub-common",
        Some("sfdisk") => "fdisk",
        _ => "e2fsprogs",
    };
    host::output(cmd, package)
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

/// The inodes in use, from `dumpe2fs`'s free-inode ranges: the root
/// directory and everything from the first non-reserved inode on.
pub fn used_inodes(dumpe2fs: &str) -> Vec<u64> {
    let mut per_group = 0u64;
    let mut first = 11u64;
    let mut group = 0u64;
    let mut used = Vec::new();
    for line in dumpe2fs.lines() {
        if let Some(v) = line.strip_prefix("Inodes per group:") {
            per_group = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("First inode:") {
            first = v.trim().parse().unwrap_or(11);
        } else if let Some(rest) = line.strip_prefix("Group ") {
            group = rest
                .split(':')
                .next()
                .and_then(|g| g.trim().parse().ok())
                .unwrap_or(group);
        } else if let Some(ranges) = line.trim_start().strip_prefix("Free inodes:") {
            let mut free = std::collections::HashSet::new();
            for r in ranges.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                    free.extend(a..=b);
                }
            }
            for ino in group * per_group + 1..=(group + 1) * per_group {
                if !free.contains(&ino) && (ino == 2 || ino >= first) {
                    used.push(ino);
                }
            }
        }
    }
    used
}

impl Plan {
    pub fn new(tree: &Tree, o: &Options, size: Option<u64>, epoch: i64) -> anyhow::Result<Plan> {
        let qcow2 = match o.format.as_deref() {
            None | Some("qcow2") => true,
            Some("raw") => false,
            Some(other) => {
                return Err(
                    OptionError::new("format", format!("{other:?}: use qcow2 or raw")).into(),
                );
            }
        };
        let uuid = match &o.root_fs_uuid {
            Some(u) if valid_uuid(u) => u.clone(),
            Some(u) => {
                return Err(OptionError::new(
                    "root_fs_uuid",
                    format!("{u:?} is not a lower-case UUID"),
                )
                .into());
            }
            None => tree
                .read_optional("/etc/fstab")?
                .as_deref()
                .and_then(fstab_root_uuid)
                .filter(|u| valid_uuid(u))
                .unwrap_or_else(|| derived_uuid(&format!("osbuild root {} {epoch}", o.target))),
        };
        let kernel = match o.bootloader.as_str() {
            "none" => None,
            "auto" | "grub" => match find_kernel(tree)? {
                Some(version) => {
                    let from_tree = tree.read_optional("/etc/kernel/cmdline")?;
                    Some(Kernel {
                        cmdline: kernel_cmdline(from_tree.as_deref(), &uuid),
                        version,
                    })
                }
                None if o.bootloader == "grub" => {
                    anyhow::bail!(
                        "bootloader \"grub\" asked for, but /boot has no vmlinuz-VERSION with its initrd.img-VERSION"
                    )
                }
                None => None,
            },
            other => {
                return Err(OptionError::new(
                    "bootloader",
                    format!("{other:?}: use auto, grub or none"),
                )
                .into());
            }
        };
        let root = tree.host_path().to_path_buf();
        let size = match size {
            Some(s) => s,
            None => fitting_size(&root)?,
        };
        Ok(Plan {
            tree: root,
            target: o.target.clone(),
            qcow2,
            size: size.div_ceil(1 << 20) * (1 << 20),
            uuid,
            label: o.fs_label.clone(),
            epoch,
            kernel,
        })
    }

    pub fn build(&self, output: &Path) -> anyhow::Result<()> {
        let scratch = std::env::temp_dir().join("osbuild-qcow2");
        std::fs::create_dir_all(&scratch)?;
        let raw = output.join(format!(".{}.raw.partial", self.target));
        let partial = output.join(format!(".{}.partial", self.target));
        let result = self.build_raw(&raw, &scratch).and_then(|()| {
            if self.qcow2 {
                println!("converting to qcow2");
                let started = Instant::now();
                run(Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(&partial))?;
                let converted = started.elapsed();
                std::fs::remove_file(&raw)?;
                println!(
                    "converted in {:.1}s, raw image removed in {:.1}s",
                    converted.as_secs_f64(),
                    (started.elapsed() - converted).as_secs_f64()
                );
            } else {
                std::fs::rename(&raw, &partial)?;
            }
            std::fs::rename(&partial, output.join(&self.target))?;
            Ok(())
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&raw);
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    fn build_raw(&self, raw: &Path, scratch: &Path) -> anyhow::Result<()> {
        let offset = PART_START * 512;
        let epoch = self.epoch.to_string();
        // e2fsprogs reads a fake time of 0 as "not set" (and then stamps
        // the real time): the file system's own times are 1 at the least.
        let fake_time = self.epoch.max(1).to_string();
        println!(
            "image {} MiB, root file system {} ({}), {}",
            self.size >> 20,
            self.uuid,
            self.label,
            match &self.kernel {
                Some(k) => format!("GRUB booting {} with \"{}\"", k.version, k.cmdline),
                None => "no bootloader".into(),
            }
        );
        let file = std::fs::File::create(raw)?;
        file.set_len(self.size)?;
        drop(file);

        let disk_id = &self.uuid[..8];
        let table = format!(
            "label: dos\nlabel-id: 0x{disk_id}\nunit: sectors\nstart={PART_START}, type=83, bootable\n"
        );
        host::output_with_input(
            Command::new("sfdisk")
                .args([
                    "--quiet",
                    "--wipe",
                    "never",
                    "--no-reread",
                    "--no-tell-kernel",
                ])
                .arg(raw),
            table.as_bytes(),
            "fdisk",
        )?;

        let conf = scratch.join("mke2fs.conf");
        std::fs::write(&conf, MKE2FS_CONF)?;
        let seed = derived_uuid(&format!("hash_seed:{}", self.uuid));
        let fs_kib = (self.size - offset) / 1024;
        println!("mkfs.ext4 -d (populating the file system from the tree)");
        let started = Instant::now();
        run(Command::new("mkfs.ext4")
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", &fake_time)
            .env("LC_ALL", "C")
            .args(["-q", "-F", "-t", "ext4", "-T", "default", "-L", &self.label, "-U", &self.uuid])
            .args(["-O", "^metadata_csum_seed,^orphan_file"])
            .arg("-E")
            .arg(format!(
                "offset={offset},hash_seed={seed},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard"
            ))
            .arg("-d")
            .arg(&self.tree)
            .arg(raw)
            .arg(format!("{fs_kib}k")))?;

        // mkfs copies atime and ctime from the host's files: set them to
        // the epoch in every inode, and zero the lifetime-writes counter.
        let fs = format!("{}?offset={offset}", raw.display());
        let dump = run(Command::new("dumpe2fs").arg(&fs))?;
        let inodes = used_inodes(&dump);
        if inodes.is_empty() {
            anyhow::bail!("dumpe2fs listed no inodes in use");
        }
        let mut cmds = String::with_capacity(inodes.len() * 48);
        for ino in &inodes {
            let _ = writeln!(
                cmds,
                "sif <{ino}> atime @{epoch}\nsif <{ino}> ctime @{epoch}"
            );
        }
        cmds.push_str("ssv kbytes_written 0\n");
        let cmd_file = scratch.join("debugfs.cmds");
        std::fs::write(&cmd_file, cmds)?;
        let log = run(Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", &fake_time)
            .arg("-w")
            .arg("-f")
            .arg(&cmd_file)
            .arg(&fs)
            .stderr(Stdio::piped()))?;
        if let Some(bad) = log
            .lines()
            .find(|l| !l.starts_with("debugfs") && !l.trim().is_empty())
        {
            anyhow::bail!("debugfs: {bad}");
        }
        run(Command::new("e2fsck").arg("-fn").arg(&fs))?;
        println!(
            "file system written in {:.1}s; timestamps of {} inodes set to {epoch}; e2fsck clean",
            started.elapsed().as_secs_f64(),
            inodes.len()
        );

        if let Some(k) = &self.kernel {
            self.install_grub(raw, scratch, k)?;
        }
        Ok(())
    }

    fn install_grub(&self, raw: &Path, scratch: &Path, k: &Kernel) -> anyhow::Result<()> {
        let grub_dir = Path::new("/usr/lib/grub/i386-pc");
        if !grub_dir.join("boot.img").exists() {
            anyhow::bail!(
                "GRUB for BIOS is not installed on the build machine: apt-get install grub-pc-bin"
            );
        }
        let cfg = format!(
            "search --no-floppy --fs-uuid --set=root {uuid}\nlinux /boot/vmlinuz-{v} {cmdline}\ninitrd /boot/initrd.img-{v}\nboot\n",
            uuid = self.uuid,
            v = k.version,
            cmdline = k.cmdline
        );
        let cfg_path = scratch.join("embed.cfg");
        std::fs::write(&cfg_path, cfg)?;
        let core = scratch.join("core.img");
        run(Command::new("grub-mkimage")
            .arg("-d")
            .arg(grub_dir)
            .args(["-O", "i386-pc", "-o"])
            .arg(&core)
            .arg("-c")
            .arg(&cfg_path)
            .args([
                "-p",
                "(hd0,msdos1)/boot/grub",
                "biosdisk",
                "part_msdos",
                "ext2",
                "search",
                "linux",
                "boot",
            ]))?;
        let core_bytes = std::fs::read(&core)?;
        if core_bytes.len() as u64 > (PART_START - 1) * 512 {
            anyhow::bail!(
                "GRUB's core.img ({} bytes) does not fit before the partition",
                core_bytes.len()
            );
        }
        let boot = std::fs::read(grub_dir.join("boot.img"))?;
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(raw)?;
        // Only the boot code (bytes 0..440): the disk id and partition table stay.
        f.write_all(&boot[..440])?;
        // core.img at sector 1, where boot.img looks for it.
        f.seek(SeekFrom::Start(512))?;
        f.write_all(&core_bytes)?;
        println!(
            "GRUB core.img ({} bytes) and boot code written",
            core_bytes.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_size_too_large_is_an_error_not_a_wrap() {
        let e = parse_size(&serde_json::json!("99999999999T")).unwrap_err();
        assert!(e.contains("is not a size"), "{e}");
        assert_eq!(parse_size(&serde_json::json!("2G")), Ok(2 << 30));
    }

    use super::*;

    #[test]
    fn sizes_uuids_cmdlines() {
        assert_eq!(parse_size(&serde_json::json!("2G")).unwrap(), 2 << 30);
        assert_eq!(parse_size(&serde_json::json!(4096)).unwrap(), 4096);
        assert!(parse_size(&serde_json::json!("lots")).is_err());
        let u = derived_uuid("x");
        assert!(valid_uuid(&u), "{u}");
        assert_eq!(u, derived_uuid("x"));
        assert_eq!(
            fstab_root_uuid("# c\nUUID=abc\t/\text4\tdefaults\t0\t1\n").as_deref(),
            Some("abc")
        );
        assert_eq!(kernel_cmdline(None, "u"), "root=UUID=u rw console=ttyS0");
        assert_eq!(
            kernel_cmdline(Some("root=UUID=u ro quiet"), "u"),
            "root=UUID=u ro quiet console=ttyS0"
        );
        assert_eq!(
            version_cmp("6.1.0-9-amd64", "6.1.0-10-amd64"),
            std::cmp::Ordering::Less
        );
    }

    #[test]
    fn used_inodes_from_dumpe2fs() {
        let dump = "Inodes per group:         16\nFirst inode:              11\nGroup 0: (Blocks 0-1)\n  Free inodes: 14-16\nGroup 1: (Blocks 2-3)\n  Free inodes: 17, 19-32\n";
        assert_eq!(used_inodes(dump), vec![2, 11, 12, 13, 18]);
    }
}
