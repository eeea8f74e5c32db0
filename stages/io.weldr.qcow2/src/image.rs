//! The image, planned from the options and the tree (every check before
//! anything is written), then built step by step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use osbuild_stage::{OptionError, Tree, anyhow};

use crate::Options;
use crate::bootloader::{self, Kernel, KernelFiles};
use crate::esp::Staging;
use crate::formats::{self, Format};
use crate::layout::{
    self, Firmware, Layout, Names, PtType, Role, RootFs, Wants, derived_uuid, derived_volume_id,
};
use crate::rootfs::{self, Root};

const MIB: u64 = 1 << 20;
const DEFAULT_ESP: u64 = 256 * MIB;
/// FAT32 needs 65525 clusters: with 512-byte clusters, 33 MiB; a round
/// floor leaves room for a bootloader.
const MIN_ESP: u64 = 64 * MIB;
const MAX_ESP: u64 = 16 << 30;
/// The smallest ext4 root: below it mkfs.ext4 makes no journal.
const EXT4_MIN: u64 = 32 * MIB;
/// The largest image this stage makes (16 TiB): sizes stay far from
/// overflowing, and a typo does not ask for an exabyte.
pub const MAX_IMAGE: u64 = 16 << 40;

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

/// Which bootloader UEFI firmware starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EfiLoader {
    Grub,
    SystemdBoot,
}

/// The image, decided before anything is written.
pub struct Plan {
    tree: PathBuf,
    target: String,
    format: Format,
    firmware: Firmware,
    table: PtType,
    disk_id: String,
    size: Option<u64>,
    root_fs: RootFs,
    uuid: String,
    label: String,
    esp_size: u64,
    esp_id: String,
    epoch: i64,
    kernel: Option<Kernel>,
    efi_loader: EfiLoader,
    /// Where the bootloaders load the kernel from.
    kernel_files: Option<KernelFiles>,
    token: String,
}

fn option_error(option: &str, message: String) -> anyhow::Error {
    OptionError::new(option, message).into()
}

impl Plan {
    pub fn new(
        tree: &Tree,
        o: &Options,
        size: Option<u64>,
        esp_size: Option<u64>,
        epoch: i64,
    ) -> anyhow::Result<Plan> {
        let firmware = o.boot;
        let table = o.pttype.unwrap_or(match firmware {
            Firmware::Bios => PtType::Mbr,
            _ => PtType::Gpt,
        });
        if firmware == Firmware::Hybrid && table == PtType::Mbr {
            return Err(option_error(
                "pttype",
                "\"mbr\" with boot \"hybrid\": a hybrid image is a GPT disk with a BIOS boot partition for GRUB; use pttype \"gpt\"".into(),
            ));
        }
        if o.target.contains('/') || o.target.starts_with('.') || o.target.is_empty() {
            return Err(option_error(
                "target",
                format!(
                    "{:?}: a file name in the output directory, not hidden",
                    o.target
                ),
            ));
        }
        if o.fs_label.is_empty()
            || o.fs_label.len() > 16
            || !o
                .fs_label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(option_error(
                "fs_label",
                format!("{:?}: 1 to 16 letters, digits, '.', '_' or '-'", o.fs_label),
            ));
        }
        let fstab =
            layout::parse_fstab(&bootloader::read_text(tree, "/etc/fstab")?.unwrap_or_default());
        let fstab_uuid = |path: &str| {
            fstab
                .iter()
                .find(|e| e.path == path)
                .and_then(|e| e.spec.strip_prefix("UUID="))
                .map(str::to_string)
        };
        let uuid = match &o.root_fs_uuid {
            Some(u) if layout::valid_uuid(u) => u.clone(),
            Some(u) => {
                return Err(option_error(
                    "root_fs_uuid",
                    format!("{u:?} is not a lower-case UUID"),
                ));
            }
            None => fstab_uuid("/")
                .filter(|u| layout::valid_uuid(u))
                .unwrap_or_else(|| derived_uuid(&format!("osbuild root {} {epoch}", o.target))),
        };
        let disk_id = match (&o.ptuuid, table) {
            (Some(id), PtType::Mbr) => {
                let id = id.strip_prefix("0x").unwrap_or(id);
                if id.len() != 8 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(option_error(
                        "ptuuid",
                        format!("{id:?}: an MBR disk's id is 8 hex digits"),
                    ));
                }
                id.to_lowercase()
            }
            (Some(id), PtType::Gpt) if layout::valid_uuid(id) => id.clone(),
            (Some(id), PtType::Gpt) => {
                return Err(option_error(
                    "ptuuid",
                    format!("{id:?}: a GPT disk's id is a lower-case GUID"),
                ));
            }
            // Today's MBR images keep their id: the root UUID's first digits.
            (None, PtType::Mbr) => uuid[..8].to_string(),
            (None, PtType::Gpt) => derived_uuid(&format!("osbuild disk {uuid} {}", o.target)),
        };
        let esp_id = match &o.esp_uuid {
            Some(v) if layout::valid_volume_id(v) => v.clone(),
            Some(v) => {
                return Err(option_error(
                    "esp_uuid",
                    format!("{v:?}: a FAT volume id is written ABCD-1234 (upper case)"),
                ));
            }
            None => fstab_uuid("/boot/efi")
                .or_else(|| fstab_uuid("/efi"))
                .filter(|v| layout::valid_volume_id(v))
                .unwrap_or_else(|| derived_volume_id(&format!("osbuild esp {disk_id}"))),
        };
        if let Some(s) = size.filter(|s| *s > MAX_IMAGE) {
            return Err(option_error(
                "size",
                format!("{} GiB: at most {} GiB", s >> 30, MAX_IMAGE >> 30),
            ));
        }
        let esp_size = esp_size.unwrap_or(DEFAULT_ESP);
        if esp_size > MAX_ESP {
            return Err(option_error(
                "esp_size",
                format!("{} MiB: at most {} MiB", esp_size / MIB, MAX_ESP / MIB),
            ));
        }
        if esp_size < MIN_ESP {
            return Err(option_error(
                "esp_size",
                format!(
                    "{} MiB: FAT32 needs at least {} MiB here",
                    esp_size / MIB,
                    MIN_ESP / MIB
                ),
            ));
        }

        let has_sd_boot = tree.exists(bootloader::SYSTEMD_BOOT)?;
        let efi_loader = match o.bootloader.as_str() {
            "systemd-boot" if !firmware.uefi() => {
                return Err(option_error(
                    "bootloader",
                    "\"systemd-boot\" boots only from UEFI: set boot \"uefi\" or \"hybrid\"".into(),
                ));
            }
            "systemd-boot" if !has_sd_boot => {
                return Err(option_error(
                    "bootloader",
                    format!(
                        "\"systemd-boot\", but the tree has no {}: install systemd-boot in it",
                        bootloader::SYSTEMD_BOOT
                    ),
                ));
            }
            "systemd-boot" => EfiLoader::SystemdBoot,
            "auto" if has_sd_boot && firmware.uefi() => EfiLoader::SystemdBoot,
            "auto" | "grub" | "none" => EfiLoader::Grub,
            other => {
                return Err(option_error(
                    "bootloader",
                    format!("{other:?}: use auto, grub, systemd-boot or none"),
                ));
            }
        };
        let version = match o.bootloader.as_str() {
            "none" => None,
            wanted => match bootloader::find_kernel(tree)? {
                Some(v) => Some(v),
                None if wanted != "auto" => anyhow::bail!(
                    "bootloader {wanted:?} asked for, but /boot has no vmlinuz-VERSION with its initrd.img-VERSION"
                ),
                None => None,
            },
        };
        let token = bootloader::entry_token(tree)?;
        // The kernel goes on the ESP for systemd-boot, and for GRUB when
        // the root file system is one GRUB cannot read.
        let on_esp = firmware.uefi()
            && (efi_loader == EfiLoader::SystemdBoot || !o.root_fs_type.grub_reads());
        if version.is_some() && !on_esp && !o.root_fs_type.grub_reads() {
            return Err(option_error(
                "root_fs_type",
                format!(
                    "GRUB 2.06 cannot read {}, and with boot \"bios\" there is no EFI system partition to load the kernel from: use boot \"uefi\" or \"hybrid\" (the kernel goes on the ESP), or root_fs_type \"ext4\"",
                    o.root_fs_type.name()
                ),
            ));
        }
        let kernel_files = version.as_ref().map(|v| {
            if on_esp {
                KernelFiles::on_esp(&token, v)
            } else {
                KernelFiles::in_boot(v)
            }
        });

        let plan = Plan {
            tree: tree.host_path().to_path_buf(),
            target: o.target.clone(),
            format: o.format,
            firmware,
            table,
            disk_id,
            size,
            root_fs: o.root_fs_type,
            uuid,
            label: o.fs_label.clone(),
            esp_size,
            esp_id,
            epoch,
            kernel: None,
            efi_loader,
            kernel_files,
            token,
        };
        // The partitions' ids do not depend on their sizes: what the tree
        // says is checked against a layout before the file systems exist.
        let probe = plan.layout(if plan.root_fs == RootFs::Ext4 {
            EXT4_MIN
        } else {
            MIB
        })?;
        let root_spec = plan.root_spec(&probe);
        let (root_names, esp_names) = plan.names(&probe);
        let mut wrong = layout::fstab_disagreements(&fstab, &root_names, esp_names.as_ref());
        let (from_tree, dropped) = layout::parse_cmdline(
            &bootloader::read_text(tree, "/etc/kernel/cmdline")?.unwrap_or_default(),
        );
        for p in &dropped {
            println!(
                "leaving out {p} from /etc/kernel/cmdline: not printable ASCII, or a quote or backslash GRUB would escape"
            );
        }
        if let Some(spec) = layout::cmdline_root(&from_tree)
            && let Some(why) = root_names.disagrees(spec)
        {
            wrong.push(format!("/etc/kernel/cmdline: root= {why}"));
        }
        if !wrong.is_empty() {
            anyhow::bail!(
                "the tree and the image disagree; fix the tree (its fstab and kernel command line stages) or this stage's options:\n  {}",
                wrong.join("\n  ")
            );
        }
        let kernel = version.map(|version| Kernel {
            params: layout::kernel_params(&from_tree, &root_spec, plan.root_fs.read_only()),
            version,
        });
        Ok(Plan { kernel, ..plan })
    }

    fn layout(&self, root_min: u64) -> anyhow::Result<Layout> {
        let layout = Layout::new(&Wants {
            table: self.table,
            firmware: Some(self.firmware),
            disk_id: self.disk_id.clone(),
            esp: self.esp_size,
            root_min,
            size: self.size,
        })
        .map_err(|e| option_error("size", e))?;
        if layout.bytes > MAX_IMAGE {
            anyhow::bail!(
                "the image would take {} GiB, more than the {} GiB this stage makes",
                layout.bytes >> 30,
                MAX_IMAGE >> 30
            );
        }
        Ok(layout)
    }

    /// How the kernel command line names the root: by UUID where the
    /// initramfs reads it, else by partition.
    fn root_spec(&self, layout: &Layout) -> String {
        if self.root_fs == RootFs::Ext4 {
            format!("UUID={}", self.uuid)
        } else {
            format!("PARTUUID={}", layout.root().partuuid)
        }
    }

    fn names<'a>(&'a self, layout: &'a Layout) -> (Names<'a>, Option<Names<'a>>) {
        let gpt = self.table == PtType::Gpt;
        let root = Names {
            what: "root file system",
            uuid: self.root_fs.has_uuid().then_some(self.uuid.as_str()),
            label: (self.root_fs == RootFs::Ext4).then_some(self.label.as_str()),
            partuuid: &layout.root().partuuid,
            partlabel: gpt.then_some("root"),
            vfs_types: match self.root_fs {
                RootFs::Ext4 => &["ext4"],
                RootFs::Erofs => &["erofs"],
                RootFs::Squashfs => &["squashfs"],
            },
        };
        let esp = layout.get(Role::Esp).map(|p| Names {
            what: "EFI system partition",
            uuid: Some(self.esp_id.as_str()),
            label: Some("ESP"),
            partuuid: &p.partuuid,
            partlabel: gpt.then_some("ESP"),
            vfs_types: &["vfat"],
        });
        (root, esp)
    }

    pub fn build(&self, tree: &Tree, output: &Path) -> anyhow::Result<()> {
        // Scratch space beside the image, on disk (the stage's /tmp is in
        // memory), where copy_file_range can move the file systems made
        // ahead into the image.
        let scratch = output.join(format!(".{}.scratch", self.target));
        std::fs::create_dir_all(&scratch)?;
        let raw = output.join(format!(".{}.raw.partial", self.target));
        // A directory of its own: vmdk names its file inside the image.
        let partial = output.join(format!(".{}.partial", self.target));
        let result = self.build_raw(tree, &raw, &scratch).and_then(|layout| {
            if self.format == Format::Raw {
                std::fs::rename(&raw, output.join(&self.target))?;
                return Ok(());
            }
            println!("converting to {}", self.format.name());
            let started = Instant::now();
            std::fs::create_dir_all(&partial)?;
            let dest = partial.join(&self.target);
            formats::convert(&raw, self.format, &dest, &layout.disk_id, self.epoch)?;
            let converted = started.elapsed();
            std::fs::remove_file(&raw)?;
            println!(
                "converted in {:.1}s, raw image removed in {:.1}s",
                converted.as_secs_f64(),
                (started.elapsed() - converted).as_secs_f64()
            );
            std::fs::rename(&dest, output.join(&self.target))?;
            std::fs::remove_dir(&partial)?;
            Ok(())
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&raw);
            let _ = std::fs::remove_dir_all(&partial);
        }
        let _ = std::fs::remove_dir_all(&scratch);
        result
    }

    fn build_raw(&self, tree: &Tree, raw: &Path, scratch: &Path) -> anyhow::Result<Layout> {
        let root = Root {
            fs: self.root_fs,
            tree: &self.tree,
            uuid: &self.uuid,
            label: &self.label,
            epoch: self.epoch,
        };
        let prebuilt = root.prebuild(scratch)?;
        let root_min = match (&prebuilt, self.size) {
            (Some(p), _) => p.bytes,
            // A size given leaves the root what the other partitions do
            // not take: mkfs.ext4 says if the tree does not fit.
            (None, Some(_)) => EXT4_MIN,
            (None, None) => rootfs::ext4_size(&self.tree)?,
        };
        let layout = self.layout(root_min)?;
        println!(
            "image {} MiB, {} ({}), {}: {}; root file system {} {} ({})",
            layout.bytes / MIB,
            match self.table {
                PtType::Mbr => "MBR",
                PtType::Gpt => "GPT",
            },
            layout.disk_id,
            match self.firmware {
                Firmware::Bios => "BIOS",
                Firmware::Uefi => "UEFI",
                Firmware::Hybrid => "BIOS and UEFI",
            },
            match &self.kernel {
                Some(k) => format!(
                    "booting {} with \"{}\"",
                    k.version,
                    layout::render_cmdline(&k.params)
                ),
                None => "no bootloader".into(),
            },
            self.root_fs.name(),
            if self.root_fs.has_uuid() {
                &self.uuid
            } else {
                ""
            },
            self.label,
        );
        let file = std::fs::File::create(raw)?;
        file.set_len(layout.bytes)?;
        drop(file);
        crate::tools::run_with_input(
            std::process::Command::new("sfdisk")
                .args([
                    "--quiet",
                    "--wipe",
                    "never",
                    "--no-reread",
                    "--no-tell-kernel",
                ])
                .arg(raw),
            layout.sfdisk_script().as_bytes(),
        )?;
        root.write(raw, layout.root(), prebuilt.as_ref(), scratch)?;
        if let Some(p) = prebuilt {
            std::fs::remove_file(&p.file)?;
        }

        if let Some(part) = layout.get(Role::Esp) {
            let esp = Staging::new(scratch)?;
            if let (Some(k), Some(files)) = (&self.kernel, &self.kernel_files) {
                if files.on_esp {
                    files.stage(tree, &k.version, &esp, part.bytes())?;
                }
                match self.efi_loader {
                    EfiLoader::SystemdBoot => {
                        bootloader::systemd_boot(tree, &esp, &self.token, k, files)?
                    }
                    EfiLoader::Grub => bootloader::grub_efi(
                        &esp,
                        &bootloader::grub_config(self.kernel_fs_uuid(), files, &k.params),
                        scratch,
                    )?,
                }
            }
            esp.write(raw, part, &self.esp_id, self.epoch, scratch)?;
            println!("EFI system partition {} written", self.esp_id);
        }
        if self.firmware.bios()
            && let (Some(k), Some(files)) = (&self.kernel, &self.kernel_files)
        {
            let config = bootloader::grub_config(self.kernel_fs_uuid(), files, &k.params);
            bootloader::grub_bios(raw, &layout, &config, scratch)?;
        }
        Ok(layout)
    }

    /// The file system GRUB loads the kernel from: the ESP's when the
    /// kernel is there.
    fn kernel_fs_uuid(&self) -> &str {
        match &self.kernel_files {
            Some(f) if f.on_esp => &self.esp_id,
            _ => &self.uuid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&serde_json::json!("2G")), Ok(2 << 30));
        assert_eq!(parse_size(&serde_json::json!(4096)), Ok(4096));
        assert!(parse_size(&serde_json::json!("lots")).is_err());
        let e = parse_size(&serde_json::json!("99999999999T")).unwrap_err();
        assert!(e.contains("is not a size"), "{e}");
    }
}
