//! `osbuild boot IMAGE`: boot a disk image in QEMU, with its serial console
//! on the terminal.
//!
//! The firmware follows the image: one with an EFI system partition boots
//! with OVMF (UEFI; a private copy of the firmware's variables, thrown
//! away afterwards), any other with SeaBIOS; `--firmware` overrides.
//!
//! The image is opened with `-snapshot`, so nothing the guest writes reaches
//! it. KVM is used where it works, TCG (plain emulation) elsewhere. The
//! guest has no network unless asked for (`--network`: QEMU's user-mode
//! network). osbuild exits with QEMU's exit status: 0 after the guest
//! powered off.

#![allow(unsafe_code, reason = "pre_exec for PR_SET_PDEATHSIG")]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The QEMU binary, and the Debian package that has it.
pub const QEMU: &str = "qemu-system-x86_64";
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(format!("{s:?}: use kvm or tcg")),
        }
    }
}

/// The firmware QEMU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF (EDK II), from Debian's `ovmf` package.
    Uefi,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
}

impl std::str::FromStr for Firmware {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bios" => Ok(Firmware::Bios),
            "uefi" => Ok(Firmware::Uefi),
            _ => Err(format!("{s:?}: use bios or uefi")),
        }
    }
}

/// OVMF's code and variable template, where Debian's `ovmf` puts them.
const OVMF: [(&str, &str); 2] = [
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

const ESP_TYPE_GUID: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

/// The firmware a disk's first sectors call for: UEFI when its partition
/// table (GPT, or MBR) has an EFI system partition, else BIOS.
pub fn firmware_of(head: &[u8]) -> Firmware {
    let le32 = |at: usize| {
        head.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let le64 = |at: usize| {
        head.get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let esp = if head.get(512..520) == Some(&b"EFI PART"[..]) {
        let (lba, count, size) = (le64(512 + 72), le32(512 + 80), le32(512 + 84));
        let size = size as usize;
        size >= 128
            && (0..count.min(1024) as usize).any(|i| {
                let at = usize::try_from(lba)
                    .ok()
                    .and_then(|l| l.checked_mul(512))
                    .and_then(|b| b.checked_add(i * size));
                at.and_then(|at| head.get(at..at.checked_add(16)?)) == Some(&ESP_TYPE_GUID[..])
            })
    } else {
        head.get(510..512) == Some(&b"\x55\xaa"[..])
            && (0..4).any(|i| head.get(446 + i * 16 + 4) == Some(&0xef))
    };
    if esp { Firmware::Uefi } else { Firmware::Bios }
}

/// The first MiB of the image as the guest sees it (qcow2 read through
/// `qemu-img dd`, after its header was checked), from the descriptor
/// opened once.
fn image_head(image: &Image, format: &str, scratch: &Path) -> anyhow::Result<Vec<u8>> {
    if format == "raw" {
        return Ok(read_at_most(&image.file, 0, 1 << 20)?);
    }
    let out = scratch.join("head.raw");
    let mut cmd = Command::new("qemu-img");
    cmd.args(["dd", "-f", format, "-O", "raw", "bs=512", "count=2048"])
        .arg(format!("if={}", image.fd_path()))
        .arg(format!("of={}", out.display()));
    image.pass_to(&mut cmd);
    let status = cmd
        .status()
        .context("running qemu-img (Debian package qemu-utils)")?;
    if !status.success() {
        bail!(
            "qemu-img dd could not read the partition table of {}",
            image.path.display()
        );
    }
    Ok(std::fs::read(&out)?)
}

/// Up to `len` bytes of `file` from `offset`.
fn read_at_most(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// The image, opened once: what is checked is what QEMU runs, whatever
/// happens to the path meanwhile. QEMU and qemu-img get the descriptor and
/// open it as `/proc/self/fd/N`.
pub struct Image {
    path: PathBuf,
    file: std::fs::File,
}

impl Image {
    pub fn open(path: &Path) -> anyhow::Result<Image> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        if !file.metadata()?.is_file() {
            bail!("{} is not a file", path.display());
        }
        // Started with standard descriptors closed, the image could be
        // one of them, and QEMU's console: move it past them.
        let file = if std::os::fd::AsRawFd::as_raw_fd(&file) < 3 {
            std::fs::File::from(rustix::io::fcntl_dupfd_cloexec(&file, 3)?)
        } else {
            file
        };
        Ok(Image {
            path: path.to_path_buf(),
            file,
        })
    }

    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd as _;
        self.file.as_raw_fd()
    }

    pub fn fd_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd())
    }

    /// Lets `cmd` inherit the descriptor (Rust opens everything close-on-exec).
    fn pass_to(&self, cmd: &mut Command) {
        let fd = self.fd();
        // SAFETY: fcntl is async-signal-safe, and `fd` stays open in the
        // parent until the child has exec'd.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// OVMF's code, and a private copy of its variables in `scratch`.
fn ovmf(scratch: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let Some((code, vars)) = OVMF
        .iter()
        .find(|(c, v)| Path::new(c).is_file() && Path::new(v).is_file())
    else {
        bail!(
            "UEFI firmware not found ({}): install the Debian package ovmf (apt-get install ovmf)",
            OVMF[0].0
        );
    };
    let copy = scratch.join("OVMF_VARS.fd");
    std::fs::copy(vars, &copy).with_context(|| format!("copying {vars}"))?;
    Ok((PathBuf::from(code), copy))
}

/// What to boot, and how.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub image: PathBuf,
    /// Also write the serial console's output to this file.
    pub log: Option<PathBuf>,
    /// Guest memory in MiB.
    pub memory: u64,
    /// Give the guest QEMU's user-mode network (NAT, no inbound).
    pub network: bool,
    /// KVM or TCG; by default KVM where it is usable.
    pub accel: Option<Accel>,
    /// BIOS or UEFI; by default what the image's partition table calls for.
    pub firmware: Option<Firmware>,
}

/// Whether KVM can run an ordinary guest here: `/dev/kvm` opens read-write
/// and a hardware-virtualization KVM module (kvm_intel or kvm_amd) is
/// loaded. `/dev/kvm` alone is not enough: some hosts offer a
/// paravirtual KVM (e.g. kvm_pvm) on which a normal guest hangs in
/// firmware.
pub fn kvm_usable() -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    opens
        && ["kvm_intel", "kvm_amd"]
            .iter()
            .any(|m| Path::new("/sys/module").join(m).exists())
}

/// Finds `name` in `$PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The image's format from its first bytes: qcow2 or raw. A qcow2 image
/// that names another file (a backing file, an external data file) is
/// refused: QEMU, as root, would open whatever host file its header names.
fn image_format(image: &Image) -> anyhow::Result<&'static str> {
    let header = read_at_most(&image.file, 0, 80)?;
    let n = header.len();
    let image = &image.path;
    if n >= 8 && (header[..4] == *b"KDMV" || header[..8] == *b"vhdxfile") {
        bail!(
            "{} is a VMDK or VHDX image; osbuild boot runs raw, qcow2 and fixed VHD images: convert it first (qemu-img convert -O qcow2 IMAGE NEW.qcow2)",
            image.display()
        );
    }
    if n < 4 || header[..4] != *b"QFI\xfb" {
        return Ok("raw");
    }
    if let Some(why) = qcow2_names_another_file(&header[..n]) {
        bail!(
            "{}: {why}; osbuild boot runs only self-contained images (make one with qemu-img convert -O qcow2 IMAGE NEW.qcow2)",
            image.display()
        );
    }
    Ok("qcow2")
}

/// Why a qcow2 header (its first 80 bytes) is refused: it is truncated, or
/// it makes QEMU open another file.
fn qcow2_names_another_file(header: &[u8]) -> Option<&'static str> {
    let be64 = |at: usize| {
        header
            .get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    };
    let version = header
        .get(4..8)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
    // Version 2's header is 72 bytes; a shorter file is no image QEMU
    // would run, and saying "backing file" about it would mislead.
    if header.len() < 72 {
        return Some("its qcow2 header is truncated");
    }
    if be64(8).is_none_or(|offset| offset != 0) {
        return Some("its header names a backing file");
    }
    // Version 3's incompatible feature bit 2: the data lives in an
    // external file named by a header extension.
    if version.is_some_and(|v| v >= 3) && be64(72).is_none_or(|f| f & (1 << 2) != 0) {
        return Some("its data is in an external data file");
    }
    None
}

/// The QEMU command line for `opts` (without the binary); `ovmf` is the
/// UEFI firmware's code and variables, for UEFI.
pub fn qemu_args(
    opts: &BootOptions,
    drive: &str,
    accel: Accel,
    format: &str,
    ovmf: Option<&(PathBuf, PathBuf)>,
) -> Vec<String> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().min(2))
        .unwrap_or(1);
    let mut args: Vec<String> = vec![
        "-accel".into(),
        accel.as_str().into(),
        "-m".into(),
        opts.memory.to_string(),
        "-smp".into(),
        cpus.to_string(),
        "-snapshot".into(),
        // No display; with it QEMU tells the firmware to use the serial
        // port, so SeaBIOS and GRUB show up on the console too.
        "-nographic".into(),
    ];
    if accel == Accel::Kvm {
        args.extend(["-cpu".into(), "host".into()]);
    }
    if let Some((code, vars)) = ovmf {
        let q = |p: &Path| p.display().to_string().replace(',', ",,");
        args.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={}", q(code)),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", q(vars)),
        ]);
    }
    // The drive: virtio-blk (Debian's initramfs carries the driver). A
    // comma in the path is doubled, as QEMU's option syntax wants.
    let file = drive.replace(',', ",,");
    args.extend([
        "-drive".into(),
        format!("file={file},format={format},if=virtio"),
    ]);
    // Serial console and QEMU monitor multiplexed on stdio, as -nographic
    // does (Ctrl-A x quits, Ctrl-A c switches to the monitor); Ctrl-C goes
    // to the guest. --log keeps a copy of everything the console prints.
    let mut chardev = String::from("stdio,id=console,mux=on,signal=off");
    if let Some(log) = &opts.log {
        chardev.push_str(&format!(
            ",logfile={},logappend=off",
            log.display().to_string().replace(',', ",,")
        ));
    }
    args.extend([
        "-chardev".into(),
        chardev,
        "-serial".into(),
        "chardev:console".into(),
        "-mon".into(),
        "chardev=console,mode=readline".into(),
    ]);
    if opts.network {
        args.extend(["-nic".into(), "user,model=virtio-net-pci".into()]);
    } else {
        args.extend(["-nic".into(), "none".into()]);
    }
    args
}

/// Boots `opts.image` and waits for QEMU to exit; returns its exit status
/// (128 + signal if it was killed).
pub fn run(opts: &BootOptions) -> anyhow::Result<i32> {
    let Some(qemu) = which(QEMU) else {
        bail!(
            "{QEMU} not found: install the Debian package {QEMU_PACKAGE} \
             (apt-get install {QEMU_PACKAGE}, from the same suite as qemu-utils)"
        );
    };
    let image = Image::open(&opts.image)?;
    let format = image_format(&image)?;
    if opts.memory < 64 {
        bail!("--memory {}: the guest needs at least 64 MiB", opts.memory);
    }
    let accel = match opts.accel {
        Some(a) => a,
        None if kvm_usable() => Accel::Kvm,
        None => Accel::Tcg,
    };
    let scratch = tempfile::Builder::new()
        .prefix("osbuild-boot-")
        .tempdir()
        .context("making a scratch directory for the firmware's variables")?;
    let firmware = match opts.firmware {
        Some(f) => f,
        None => firmware_of(&image_head(&image, format, scratch.path())?),
    };
    let ovmf = match firmware {
        Firmware::Uefi => Some(ovmf(scratch.path())?),
        Firmware::Bios => None,
    };
    let args = qemu_args(opts, &image.fd_path(), accel, format, ovmf.as_ref());
    eprintln!(
        "osbuild: booting {} ({format}, {}, {}, {} MiB, {}); the image is not changed. \
         Ctrl-A x quits QEMU.",
        opts.image.display(),
        firmware.as_str(),
        accel.as_str(),
        opts.memory,
        if opts.network {
            "network"
        } else {
            "no network"
        }
    );
    let mut cmd = Command::new(&qemu);
    cmd.args(&args);
    image.pass_to(&mut cmd);
    // SAFETY: prctl is async-signal-safe; QEMU dies with osbuild.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", qemu.display()))?;
    // osbuild's handlers only note SIGINT/SIGTERM/SIGHUP: pass the first on
    // to QEMU, which then shuts the guest down hard and exits.
    let mut forwarded = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if !forwarded && let Some(sig) = crate::signals::received() {
            if let Some(sig) = rustix::process::Signal::from_named_raw(sig) {
                let _ =
                    rustix::process::kill_process(rustix::process::Pid::from_child(&child), sig);
            }
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    use std::os::unix::process::ExitStatusExt as _;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
    fn qcow2_images_that_name_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let top = dir.path().join("top.qcow2");
        let qemu_img = |args: &[&str]| {
            let s = std::process::Command::new("qemu-img").args(args).output();
            s.is_ok_and(|o| o.status.success())
        };
        assert!(
            qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "1M"]),
            "qemu-img failed or is missing (tools/setup installs qemu-utils)"
        );
        assert_eq!(image_format(&Image::open(&base).unwrap()).unwrap(), "qcow2");
        assert!(qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "/etc/shadow",
            top.to_str().unwrap(),
            "1M"
        ]));
        let e = image_format(&Image::open(&top).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("its header names a backing file"), "{e}");
        let short = dir.path().join("short.qcow2");
        std::fs::write(&short, b"QFI\xfb\0\0\0\x03").unwrap();
        let e = image_format(&Image::open(&short).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("its qcow2 header is truncated"), "{e}");
        let ext = dir.path().join("ext.qcow2");
        assert!(qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", dir.path().join("data.raw").display()),
            ext.to_str().unwrap(),
            "1M"
        ]));
        let e = image_format(&Image::open(&ext).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("external data file"), "{e}");
    }

    #[test]
    fn command_line() {
        let opts = BootOptions {
            image: "/x/a,b.qcow2".into(),
            log: Some("/tmp/log".into()),
            memory: 512,
            network: false,
            accel: None,
            firmware: None,
        };
        let args = qemu_args(&opts, "/x/a,b.qcow2", Accel::Tcg, "qcow2", None).join(" ");
        assert!(args.contains("-accel tcg -m 512 "), "{args}");
        assert!(args.contains("-snapshot"), "{args}");
        assert!(args.contains("file=/x/a,,b.qcow2,format=qcow2"), "{args}");
        assert!(args.contains("logfile=/tmp/log"), "{args}");
        assert!(args.ends_with("-nic none"), "{args}");
        assert!(!args.contains("-cpu host"), "{args}");
        assert!(!args.contains("pflash"), "{args}");
        let ovmf = (
            PathBuf::from("/fw/CODE.fd"),
            PathBuf::from("/tmp/a,b/VARS.fd"),
        );
        let args = qemu_args(&opts, "/x/a,b.qcow2", Accel::Tcg, "qcow2", Some(&ovmf)).join(" ");
        assert!(
            args.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd -drive if=pflash,format=raw,unit=1,file=/tmp/a,,b/VARS.fd"),
            "{args}"
        );
    }

    #[test]
    fn the_firmware_follows_the_partition_table() {
        let mut mbr = vec![0u8; 1 << 20];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        mbr[446 + 4] = 0x83;
        assert_eq!(firmware_of(&mbr), Firmware::Bios);
        mbr[446 + 16 + 4] = 0xef;
        assert_eq!(firmware_of(&mbr), Firmware::Uefi);
        // GPT: a protective MBR, the header at LBA 1, entries at LBA 2.
        let mut gpt = vec![0u8; 1 << 20];
        gpt[510] = 0x55;
        gpt[511] = 0xaa;
        gpt[446 + 4] = 0xee;
        gpt[512..520].copy_from_slice(b"EFI PART");
        gpt[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        gpt[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        gpt[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(firmware_of(&gpt), Firmware::Bios);
        gpt[1024 + 128..1024 + 144].copy_from_slice(&ESP_TYPE_GUID);
        assert_eq!(firmware_of(&gpt), Firmware::Uefi);
        // Entries said to lie past what was read are not read.
        gpt[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(firmware_of(&gpt), Firmware::Bios);
        assert_eq!(firmware_of(&[]), Firmware::Bios);
    }
}
