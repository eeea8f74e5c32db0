//! `io.weldr.qcow2`: packs the tree into a bootable disk image in the
//! output directory, with no mount and no loop device:
//!
//! - the partition table ([`layout`]): MBR or GPT, an EFI system
//!   partition when UEFI boots it, a BIOS boot partition for GRUB on GPT;
//! - the root file system ([`rootfs`]): ext4 (`mkfs.ext4 -d`), or the
//!   read-only erofs or squashfs, filled from the tree;
//! - the ESP ([`esp`]): FAT32 by `mkfs.fat`, filled by `mcopy`;
//! - the bootloaders ([`bootloader`]): GRUB for BIOS and for UEFI, or the
//!   tree's systemd-boot;
//! - the format ([`formats`]): raw, qcow2, vmdk, vhd or vhdx.
//!
//! The same tree and `SOURCE_DATE_EPOCH` give the same bytes for every
//! layout and format: identifiers derive from the options and the tree's
//! fstab, times from the epoch, and what the tools take from chance or the
//! clock is fixed or set afterwards.

mod bootloader;
mod crc32c;
mod esp;
mod ext4;
mod formats;
mod image;
mod layout;
mod rootfs;
mod tools;

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The image's file name in the output directory.
    pub target: String,
    #[serde(default = "default_format")]
    pub format: formats::Format,
    /// Image size in bytes, or with a K/M/G/T suffix; default: fits the tree.
    #[serde(default)]
    pub size: Option<serde_json::Value>,
    /// The partition table; default: `mbr` for BIOS, `gpt` otherwise.
    #[serde(default)]
    pub pttype: Option<layout::PtType>,
    /// The disk's identifier: 8 hex digits (MBR) or a GUID (GPT).
    #[serde(default)]
    pub ptuuid: Option<String>,
    /// The firmware that boots it: `bios` (default), `uefi` or `hybrid`.
    #[serde(default = "default_boot")]
    pub boot: layout::Firmware,
    #[serde(default = "default_root_fs")]
    pub root_fs_type: layout::RootFs,
    /// The root file system's UUID; default: `/` in the tree's /etc/fstab,
    /// else one derived from the target name and the source epoch.
    pub root_fs_uuid: Option<String>,
    #[serde(default = "default_label")]
    pub fs_label: String,
    /// The EFI system partition's size; default 256 MiB.
    #[serde(default)]
    pub esp_size: Option<serde_json::Value>,
    /// The ESP's volume id (`ABCD-1234`); default: /boot/efi's in the
    /// tree's fstab, else derived from the disk's identifier.
    pub esp_uuid: Option<String>,
    /// `auto`, `grub`, `systemd-boot` or `none`.
    #[serde(default = "default_bootloader")]
    pub bootloader: String,
}

fn default_format() -> formats::Format {
    formats::Format::Qcow2
}

fn default_boot() -> layout::Firmware {
    layout::Firmware::Bios
}

fn default_root_fs() -> layout::RootFs {
    layout::RootFs::Ext4
}

fn default_label() -> String {
    "root".into()
}

fn default_bootloader() -> String {
    "auto".into()
}

fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let context = osbuild_stage::context();
    let output = context
        .output_dir()
        .ok_or_else(|| anyhow::anyhow!("osbuild gave this stage no output directory"))?;
    let size = |name: &str, v: &Option<serde_json::Value>| match v {
        None => Ok(None),
        Some(v) => image::parse_size(v)
            .map(Some)
            .map_err(|e| OptionError::new(name, e)),
    };
    let plan = image::Plan::new(
        tree,
        &options,
        size("size", &options.size)?,
        size("esp_size", &options.esp_size)?,
        context.source_epoch(),
    )?;
    plan.build(tree, output)?;
    Ok(())
}

osbuild_stage::native_stage!(run);
