//! The host tools this stage runs, each with the Debian package that has
//! it, so that a missing one is named with what to install.

use std::process::Command;

use osbuild_stage::{anyhow, host};

fn package(program: &str) -> &'static str {
    match program {
        "qemu-img" => "qemu-utils",
        "grub-mkimage" => "grub-common",
        "sfdisk" => "fdisk",
        "mkfs.fat" | "fsck.fat" => "dosfstools",
        "mcopy" | "mmd" => "mtools",
        "mkfs.erofs" | "fsck.erofs" => "erofs-utils",
        "mksquashfs" | "unsquashfs" => "squashfs-tools",
        _ => "e2fsprogs",
    }
}

/// Runs a host tool; returns its stdout.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    host::output(cmd, package(&program))
}

/// Runs a host tool with `input` on its stdin.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> anyhow::Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    host::output_with_input(cmd, input, package(&program))
}
