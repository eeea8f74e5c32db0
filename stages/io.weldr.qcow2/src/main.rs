//! `io.weldr.qcow2`: packs the tree into a disk image in the output
//! directory: an MBR partition table, one ext4 partition populated from the
//! tree by `mkfs.ext4 -d` (no mount, no loop device), and, when the tree has
//! a kernel, GRUB for BIOS (a `core.img` made by `grub-mkimage` with an
//! embedded configuration, written after the MBR; no `grub-install`).
//!
//! The same tree and `SOURCE_DATE_EPOCH` give the same bytes: fixed UUID,
//! hash seed and disk id, a private `mke2fs.conf`, `E2FSPROGS_FAKE_TIME`,
//! every inode's atime and ctime set to the epoch afterwards (mkfs copies
//! them from the host), and the lifetime-writes counter zeroed.

mod image;

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The image's file name in the output directory.
    pub target: String,
    /// `qcow2` (default) or `raw`.
    #[serde(default)]
    pub format: Option<String>,
    /// Image size in bytes, or with a K/M/G suffix; default: fits the tree.
    #[serde(default)]
    pub size: Option<serde_json::Value>,
    /// The root file system's UUID; default: `/` in the tree's /etc/fstab,
    /// else one derived from the target name and the source epoch.
    pub root_fs_uuid: Option<String>,
    #[serde(default = "default_label")]
    pub fs_label: String,
    /// `auto` (GRUB when the tree has a kernel), `grub` or `none`.
    #[serde(default = "default_bootloader")]
    pub bootloader: String,
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
    let size = match &options.size {
        None => None,
        Some(v) => Some(image::parse_size(v).map_err(|e| OptionError::new("size", e))?),
    };
    let plan = image::Plan::new(tree, &options, size, context.source_epoch())?;
    plan.build(output)?;
    Ok(())
}

osbuild_stage::native_stage!(run);
