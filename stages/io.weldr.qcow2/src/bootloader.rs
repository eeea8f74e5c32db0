//! Bootloaders, installed without `grub-install` or `bootctl` (both want
//! the running machine's devices and EFI variables):
//!
//! - GRUB for BIOS: `boot.img`'s code in the MBR, and a `core.img` made by
//!   `grub-mkimage` with its configuration embedded, in the gap after the
//!   MBR (MBR disks) or in the BIOS boot partition (GPT), with the two
//!   sector numbers that point at it set as `grub-bios-setup` would.
//! - GRUB for UEFI: a `grub-mkimage` EFI image with the same embedded
//!   configuration, as the removable-media path `EFI/BOOT/BOOTX64.EFI`,
//!   which firmware boots with no boot entry in its variables.
//! - systemd-boot, when the tree has it: the tree's own EFI binary at the
//!   removable-media path, a Boot Loader Specification entry, and the
//!   kernel and initrd on the ESP.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use osbuild_stage::{Tree, anyhow};

use crate::esp::Staging;
use crate::layout::{Layout, PtType, Role};
use crate::tools::run;

/// Where Debian's systemd-boot package puts its EFI binary.
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const BIOS_MODULES: &str = "/usr/lib/grub/i386-pc";
const EFI_MODULES: &str = "/usr/lib/grub/x86_64-efi";

/// Where `boot.img` keeps the sector of core.img's first sector, and its
/// value when core.img follows the MBR.
const BOOT_IMG_KERNEL_SECTOR: usize = 0x5c;
/// Where core.img's first sector keeps the start of the rest of it (a
/// blocklist entry: sector u64, count u16, segment u16), and its value.
const CORE_IMG_BLOCKLIST: usize = 0x200 - 12;

/// The kernel to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub version: String,
    /// The kernel's parameters, one each (see `layout::parse_cmdline`).
    pub params: Vec<String>,
}

/// The newest `vmlinuz-VERSION` in /boot that has its `initrd.img-VERSION`.
/// Versions with characters a kernel's release never has are passed over:
/// the version ends up in a bootloader's configuration.
pub fn find_kernel(tree: &Tree) -> anyhow::Result<Option<String>> {
    if !tree.exists("/boot")? {
        return Ok(None);
    }
    let mut versions: Vec<String> = tree
        .read_dir("/boot")?
        .into_iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|v| {
            // It names files and directories on the ESP: no `..`.
            let plain = v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.len() <= 128
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c));
            if !plain {
                println!("passing over /boot/vmlinuz-{v:?}: not a kernel release name");
            }
            plain
        })
        .filter(|v| {
            tree.exists(format!("/boot/initrd.img-{v}"))
                .unwrap_or(false)
        })
        .collect();
    versions.sort_by(|a, b| version_cmp(a, b));
    Ok(versions.pop())
}

/// Compares version strings numerically where they hold numbers (`6.1.0-9` < `6.1.0-10`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<(u64, String)> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| (p.parse().unwrap_or(0), p.to_string()))
            .collect()
    };
    split(a).cmp(&split(b))
}

/// The Boot Loader Specification's entry token: the tree's os-release ID.
pub fn entry_token(tree: &Tree) -> anyhow::Result<String> {
    let text = match read_text(tree, "/etc/os-release")? {
        Some(t) => Some(t),
        None => read_text(tree, "/usr/lib/os-release")?,
    };
    let id = text.as_deref().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("ID="))
            .map(|v| v.trim().trim_matches('"').to_string())
    });
    Ok(id
        .filter(|v| {
            // FAT ignores case: `efi` and `loader` are the ESP's own directories.
            !["efi", "loader"].contains(&v.as_str())
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
        .unwrap_or_else(|| "linux".into()))
}

/// The files of a kernel as GRUB or systemd-boot load them: in the root
/// file system's /boot, or copied onto the ESP.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    pub linux: String,
    pub initrd: String,
    pub on_esp: bool,
}

impl KernelFiles {
    pub fn in_boot(version: &str) -> KernelFiles {
        KernelFiles {
            linux: format!("/boot/vmlinuz-{version}"),
            initrd: format!("/boot/initrd.img-{version}"),
            on_esp: false,
        }
    }
    pub fn on_esp(token: &str, version: &str) -> KernelFiles {
        KernelFiles {
            linux: format!("/{token}/{version}/linux"),
            initrd: format!("/{token}/{version}/initrd"),
            on_esp: true,
        }
    }
    /// Copies the kernel and initrd from the tree onto the ESP: together
    /// at most `room` bytes (what the ESP holds), each at most 512 MiB
    /// (each is read whole into memory).
    pub fn stage(
        &self,
        tree: &Tree,
        version: &str,
        esp: &Staging,
        room: u64,
    ) -> anyhow::Result<()> {
        let linux = format!("/boot/vmlinuz-{version}");
        let initrd = format!("/boot/initrd.img-{version}");
        let total = tree
            .metadata(&linux)?
            .size
            .saturating_add(tree.metadata(&initrd)?.size);
        if total > room {
            anyhow::bail!(
                "{linux} and {initrd} take {total} bytes, more than the EFI system partition's {room}: set a larger esp_size"
            );
        }
        esp.put(&self.linux[1..], &read_capped(tree, &linux, 512 << 20)?)?;
        esp.put(&self.initrd[1..], &read_capped(tree, &initrd, 512 << 20)?)?;
        Ok(())
    }
}

/// GRUB's embedded configuration: find the file system holding the
/// kernel by its UUID (GRUB writes a FAT volume id in lower case), boot it.
/// Each parameter is one single-quoted word: GRUB's script language would
/// read `;`, `$` or `#`, and GRUB quotes a parameter with a space for the
/// kernel itself. Parameters hold no `'` or `\` (`parse_cmdline`).
pub fn grub_config(fs_uuid: &str, files: &KernelFiles, params: &[String]) -> String {
    let words: Vec<String> = params.iter().map(|w| format!("'{w}'")).collect();
    format!(
        "search --no-floppy --fs-uuid --set=root {uuid}\nlinux {linux} {words}\ninitrd {initrd}\nboot\n",
        uuid = fs_uuid.to_lowercase(),
        linux = files.linux,
        initrd = files.initrd,
        words = words.join(" ")
    )
}

/// The most of a configuration file read from the tree.
const TEXT_CAP: u64 = 64 << 10;

/// A text file of the tree, if it is there, at most 64 KiB.
/// A symlink that leads nowhere counts as missing.
pub fn read_text(tree: &Tree, path: &str) -> anyhow::Result<Option<String>> {
    match tree.metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let bytes = read_capped(tree, path, TEXT_CAP)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A file of the tree, refused when it is larger than `cap` (the tree is
/// read-only while the stage runs: its size does not change).
pub fn read_capped(tree: &Tree, path: &str, cap: u64) -> anyhow::Result<Vec<u8>> {
    let len = tree.metadata(path)?.size;
    if len > cap {
        anyhow::bail!("{path} in the tree is {len} bytes, more than the {cap} this stage reads");
    }
    Ok(tree.read(path)?)
}

/// GRUB's modules: both partition tables and every file system the kernel
/// may be on.
const GRUB_MODULES: [&str; 7] = [
    "part_msdos",
    "part_gpt",
    "ext2",
    "fat",
    "search",
    "linux",
    "boot",
];

/// Installs GRUB for BIOS into `raw`.
pub fn grub_bios(raw: &Path, layout: &Layout, config: &str, scratch: &Path) -> anyhow::Result<()> {
    let dir = Path::new(BIOS_MODULES);
    if !dir.join("boot.img").exists() {
        anyhow::bail!(
            "GRUB for BIOS is not installed on the build machine: apt-get install grub-pc-bin"
        );
    }
    // Where core.img goes, and how many sectors it may take.
    let (sector, room) = match layout.table {
        PtType::Mbr => (1, layout.partitions[0].start - 1),
        PtType::Gpt => {
            let p = layout.get(Role::BiosBoot).ok_or_else(|| {
                anyhow::anyhow!("a GPT disk booting BIOS needs a BIOS boot partition")
            })?;
            (p.start, p.sectors)
        }
    };
    let cfg = scratch.join("grub-bios.cfg");
    std::fs::write(&cfg, config)?;
    let core = scratch.join("core.img");
    run(Command::new("grub-mkimage")
        .arg("-d")
        .arg(dir)
        .args(["-O", "i386-pc", "-o"])
        .arg(&core)
        .arg("-c")
        .arg(&cfg)
        .args(["-p", "/boot/grub", "biosdisk"])
        .args(GRUB_MODULES))?;
    let mut core = std::fs::read(&core)?;
    if core.len() as u64 > room * 512 {
        anyhow::bail!(
            "GRUB's core.img ({} bytes) does not fit in the {} bytes before the first partition",
            core.len(),
            room * 512
        );
    }
    let mut boot = std::fs::read(dir.join("boot.img"))?;
    if boot.len() != 512 || core.len() < 512 {
        anyhow::bail!(
            "{BIOS_MODULES}/boot.img or the core.img made from it is not what GRUB 2 makes"
        );
    }
    point_at(&mut boot, &mut core, sector)?;
    let mut f = std::fs::OpenOptions::new().write(true).open(raw)?;
    // Only the boot code (bytes 0..440): the disk id and partition table stay.
    f.write_all(&boot[..440])?;
    f.seek(SeekFrom::Start(sector * 512))?;
    f.write_all(&core)?;
    println!(
        "GRUB for BIOS: core.img ({} bytes) at sector {sector}, boot code in the MBR",
        core.len()
    );
    Ok(())
}

/// Points boot.img at core.img in `sector`, and core.img's first sector at
/// the rest of it, as `grub-bios-setup` does. Both hold the values for
/// sector 1 as GRUB makes them; anything else is refused, not patched.
pub fn point_at(boot: &mut [u8], core: &mut [u8], sector: u64) -> anyhow::Result<()> {
    let at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    if at(boot, BOOT_IMG_KERNEL_SECTOR) != 1 || at(core, CORE_IMG_BLOCKLIST) != 2 {
        anyhow::bail!(
            "GRUB's boot.img or core.img does not have the layout this stage knows (GRUB 2.06): cannot point one at the other"
        );
    }
    boot[BOOT_IMG_KERNEL_SECTOR..BOOT_IMG_KERNEL_SECTOR + 8].copy_from_slice(&sector.to_le_bytes());
    core[CORE_IMG_BLOCKLIST..CORE_IMG_BLOCKLIST + 8].copy_from_slice(&(sector + 1).to_le_bytes());
    Ok(())
}

/// GRUB for UEFI, as the removable-media path on the ESP.
pub fn grub_efi(esp: &Staging, config: &str, scratch: &Path) -> anyhow::Result<()> {
    let dir = Path::new(EFI_MODULES);
    if !dir.join("kernel.img").exists() {
        anyhow::bail!(
            "GRUB for UEFI is not installed on the build machine: apt-get install grub-efi-amd64-bin"
        );
    }
    let cfg = scratch.join("grub-efi.cfg");
    std::fs::write(&cfg, config)?;
    let image = scratch.join("grubx64.efi");
    run(Command::new("grub-mkimage")
        .arg("-d")
        .arg(dir)
        .args(["-O", "x86_64-efi", "-o"])
        .arg(&image)
        .arg("-c")
        .arg(&cfg)
        .args(["-p", "/EFI/BOOT"])
        .args(GRUB_MODULES))?;
    esp.put("EFI/BOOT/BOOTX64.EFI", &std::fs::read(&image)?)?;
    println!("GRUB for UEFI: EFI/BOOT/BOOTX64.EFI on the ESP");
    Ok(())
}

/// systemd-boot from the tree, with one entry for `kernel` (whose files
/// are on the ESP).
pub fn systemd_boot(
    tree: &Tree,
    esp: &Staging,
    token: &str,
    kernel: &Kernel,
    files: &KernelFiles,
) -> anyhow::Result<()> {
    let efi = read_capped(tree, SYSTEMD_BOOT, 16 << 20)?;
    esp.put("EFI/BOOT/BOOTX64.EFI", &efi)?;
    esp.put("EFI/systemd/systemd-bootx64.efi", &efi)?;
    let id = format!("{token}-{}", kernel.version);
    esp.put(
        "loader/loader.conf",
        format!("timeout 3\ndefault {id}.conf\n").as_bytes(),
    )?;
    let title = pretty_name(tree)?.unwrap_or_else(|| token.to_string());
    esp.put(
        &format!("loader/entries/{id}.conf"),
        format!(
            "title {title}\nversion {v}\nlinux {linux}\ninitrd {initrd}\noptions {cmdline}\n",
            v = kernel.version,
            linux = files.linux,
            initrd = files.initrd,
            cmdline = crate::layout::render_cmdline(&kernel.params)
        )
        .as_bytes(),
    )?;
    println!("systemd-boot: EFI/BOOT/BOOTX64.EFI and loader/entries/{id}.conf on the ESP");
    Ok(())
}

/// os-release's PRETTY_NAME, one printable line.
fn pretty_name(tree: &Tree) -> anyhow::Result<Option<String>> {
    let text = read_text(tree, "/etc/os-release")?.unwrap_or_default();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| !c.is_control())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_img_is_pointed_at_only_from_the_layout_grub_makes() {
        let mut boot = vec![0u8; 512];
        let mut core = vec![0u8; 1024];
        boot[0x5c] = 1;
        core[0x1f4] = 2;
        point_at(&mut boot, &mut core, 2048).unwrap();
        assert_eq!(&boot[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&core[0x1f4..0x1fc], &2049u64.to_le_bytes());
        // Pointed once: not the layout GRUB makes any more.
        let e = point_at(&mut boot, &mut core, 4096).unwrap_err();
        assert!(e.to_string().contains("GRUB 2.06"), "{e}");
    }

    #[test]
    fn versions_and_configs() {
        assert_eq!(
            version_cmp("6.1.0-9-amd64", "6.1.0-10-amd64"),
            std::cmp::Ordering::Less
        );
        let f = KernelFiles::on_esp("debian", "6.1.0-9-amd64");
        let params: Vec<String> = [
            "root=PARTUUID=x",
            "ro",
            "a;reboot",
            "$x",
            "dyndbg=file a.c +p",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            grub_config("7A3C-91E5", &f, &params),
            "search --no-floppy --fs-uuid --set=root 7a3c-91e5\nlinux /debian/6.1.0-9-amd64/linux 'root=PARTUUID=x' 'ro' 'a;reboot' '$x' 'dyndbg=file a.c +p'\ninitrd /debian/6.1.0-9-amd64/initrd\nboot\n"
        );
    }
}
