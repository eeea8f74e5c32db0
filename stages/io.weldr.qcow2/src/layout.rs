//! The disk's layout, decided from the options and the tree before anything
//! is written: the partition table, the partitions with their offsets and
//! identifiers, and what the tree's fstab and kernel command line must
//! agree with. No I/O here.

use std::fmt::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One MiB in 512-byte sectors: where the first partition starts, the
/// alignment of every partition, and the room left for GPT's backup.
pub const MIB_SECTORS: u64 = 2048;
const MIB: u64 = 1 << 20;

/// The disk's partition table.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PtType {
    Mbr,
    Gpt,
}

/// Which firmware boots the image.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
    /// BIOS and UEFI from one GPT disk.
    Hybrid,
}

impl Firmware {
    pub fn bios(self) -> bool {
        matches!(self, Firmware::Bios | Firmware::Hybrid)
    }
    pub fn uefi(self) -> bool {
        matches!(self, Firmware::Uefi | Firmware::Hybrid)
    }
}

/// The root file system's type.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RootFs {
    Ext4,
    /// Read-only, compact, made by `mkfs.erofs`.
    Erofs,
    /// Read-only, compressed, made by `mksquashfs`.
    Squashfs,
}

impl RootFs {
    pub fn name(self) -> &'static str {
        match self {
            RootFs::Ext4 => "ext4",
            RootFs::Erofs => "erofs",
            RootFs::Squashfs => "squashfs",
        }
    }
    pub fn read_only(self) -> bool {
        self != RootFs::Ext4
    }
    /// Whether GRUB 2.06 reads it and finds it by UUID: else the kernel
    /// must be on the ESP.
    pub fn grub_reads(self) -> bool {
        self == RootFs::Ext4
    }
    /// Its UUID, as the fstab may name it (squashfs has none).
    pub fn has_uuid(self) -> bool {
        self != RootFs::Squashfs
    }
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GPT's BIOS boot partition: GRUB's core.img, no file system.
    BiosBoot,
    /// The EFI system partition (FAT32).
    Esp,
    Root,
}

impl Role {
    fn gpt_type(self) -> &'static str {
        match self {
            Role::BiosBoot => "21686148-6449-6E6F-744E-656564454649",
            Role::Esp => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            // The Discoverable Partitions Specification's x86-64 root.
            Role::Root => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        }
    }
    fn mbr_type(self) -> &'static str {
        match self {
            Role::BiosBoot => "unused",
            Role::Esp => "ef",
            Role::Root => "83",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Role::BiosBoot => "BIOS boot",
            Role::Esp => "ESP",
            Role::Root => "root",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub role: Role,
    /// First sector (512 bytes).
    pub start: u64,
    pub sectors: u64,
    /// The partition's unique GUID (GPT), or `DISKID-NN` (MBR), as the
    /// kernel's `root=PARTUUID=` and `/dev/disk/by-partuuid` name it.
    pub partuuid: String,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.start * 512
    }
    pub fn bytes(&self) -> u64 {
        self.sectors * 512
    }
}

/// The disk: its table, identifier, size and partitions in disk order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub table: PtType,
    /// 8 hex digits (MBR) or a GUID (GPT).
    pub disk_id: String,
    pub bytes: u64,
    pub partitions: Vec<Partition>,
}

/// What the layout is made from.
pub struct Wants {
    pub table: PtType,
    pub firmware: Option<Firmware>,
    pub disk_id: String,
    /// The ESP's size in bytes, when there is one.
    pub esp: u64,
    /// The root file system's size in bytes: what it needs at the least.
    pub root_min: u64,
    /// The whole image's size, if the options set one: the root grows to fill it.
    pub size: Option<u64>,
}

impl Layout {
    pub fn new(w: &Wants) -> Result<Layout, String> {
        let mut roles = Vec::new();
        let firmware = w.firmware;
        if w.table == PtType::Gpt && firmware.is_some_and(Firmware::bios) {
            roles.push((Role::BiosBoot, MIB));
        }
        if firmware.is_some_and(Firmware::uefi) {
            roles.push((Role::Esp, w.esp.div_ceil(MIB) * MIB));
        }
        let tail = match w.table {
            PtType::Mbr => 0,
            PtType::Gpt => MIB,
        };
        let fixed: u64 = MIB + roles.iter().map(|(_, b)| b).sum::<u64>() + tail;
        let root_min = w.root_min.div_ceil(MIB) * MIB;
        let bytes = match w.size {
            None => fixed + root_min,
            Some(s) => {
                let s = s.div_ceil(MIB) * MIB;
                if s < fixed + root_min {
                    return Err(format!(
                        "{} MiB is too small: the partitions need {} MiB (the root file system at least {} MiB)",
                        s / MIB,
                        (fixed + root_min) / MIB,
                        root_min / MIB
                    ));
                }
                s
            }
        };
        roles.push((Role::Root, bytes - fixed));
        let mut start = MIB_SECTORS;
        let mut partitions = Vec::new();
        for (n, (role, size)) in roles.into_iter().enumerate() {
            let partuuid = match w.table {
                PtType::Mbr => format!("{}-{:02x}", w.disk_id, n + 1),
                PtType::Gpt => derived_uuid(&format!("osbuild partition {n} {}", w.disk_id)),
            };
            partitions.push(Partition {
                role,
                start,
                sectors: size / 512,
                partuuid,
            });
            start += size / 512;
        }
        Ok(Layout {
            table: w.table,
            disk_id: w.disk_id.clone(),
            bytes,
            partitions,
        })
    }

    pub fn get(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    pub fn root(&self) -> &Partition {
        self.get(Role::Root).expect("every layout has a root")
    }

    /// The table as `sfdisk` reads it on its stdin.
    pub fn sfdisk_script(&self) -> String {
        let mut s = String::new();
        match self.table {
            PtType::Mbr => {
                let _ = writeln!(s, "label: dos\nlabel-id: 0x{}", self.disk_id);
            }
            PtType::Gpt => {
                let _ = writeln!(s, "label: gpt\nlabel-id: {}", self.disk_id.to_uppercase());
            }
        }
        s.push_str("unit: sectors\n");
        for p in &self.partitions {
            let _ = write!(s, "start={}, size={}", p.start, p.sectors);
            match self.table {
                PtType::Mbr => {
                    let _ = write!(s, ", type={}", p.role.mbr_type());
                    // The flag some BIOSes look for before they run the MBR's code.
                    if p.role == Role::Root {
                        s.push_str(", bootable");
                    }
                }
                PtType::Gpt => {
                    let _ = write!(
                        s,
                        ", type={}, uuid={}, name=\"{}\"",
                        p.role.gpt_type(),
                        p.partuuid.to_uppercase(),
                        p.role.name()
                    );
                }
            }
            s.push('\n');
        }
        s
    }
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

/// A FAT volume id (`ABCD-1234`, as blkid and the fstab write it) derived from `seed`.
pub fn derived_volume_id(seed: &str) -> String {
    let h = hex(&Sha256::digest(seed.as_bytes())).to_uppercase();
    format!("{}-{}", &h[0..4], &h[4..8])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn valid_uuid(u: &str) -> bool {
    let parts: Vec<&str> = u.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && u.chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// A FAT volume id as the fstab names it: `ABCD-1234`, upper case.
pub fn valid_volume_id(v: &str) -> bool {
    v.len() == 9
        && v.char_indices().all(|(i, c)| {
            if i == 4 {
                c == '-'
            } else {
                c.is_ascii_hexdigit() && !c.is_ascii_lowercase()
            }
        })
}

/// One line of an fstab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub line: usize,
    pub spec: String,
    pub path: String,
    pub vfs_type: String,
}

pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .filter_map(|(i, l)| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| FstabEntry {
                line: i + 1,
                spec: f[0].to_string(),
                path: f[1].to_string(),
                vfs_type: f[2].to_string(),
            })
        })
        .collect()
}

/// What a file system in the image is known by: what an fstab entry or a
/// `root=` may name it with.
#[derive(Debug, Clone)]
pub struct Names<'a> {
    pub what: &'a str,
    pub uuid: Option<&'a str>,
    pub label: Option<&'a str>,
    pub partuuid: &'a str,
    pub partlabel: Option<&'a str>,
    pub vfs_types: &'a [&'a str],
}

impl Names<'_> {
    /// Why `spec` (`UUID=...`, `LABEL=...`, `PARTUUID=...`, a device)
    /// does not name this file system, if it does not.
    pub fn disagrees(&self, spec: &str) -> Option<String> {
        let (key, value) = spec.split_once('=').unwrap_or(("", spec));
        let (have, name) = match key {
            "UUID" => (self.uuid, "UUID"),
            "LABEL" => (self.label, "label"),
            "PARTUUID" => (Some(self.partuuid), "partition UUID"),
            "PARTLABEL" => (self.partlabel, "partition label"),
            // A device name (/dev/vda1) depends on the machine: left alone.
            _ => return None,
        };
        match have {
            Some(h) if h.eq_ignore_ascii_case(value) => None,
            Some(h) => Some(format!(
                "names {spec}, but the {what}'s {name} is {h}",
                what = self.what
            )),
            None => Some(format!(
                "names {spec}, but the {what} has no {name}",
                what = self.what
            )),
        }
    }
}

/// What the tree's fstab says that the image contradicts, one message per
/// disagreement (empty: they agree).
pub fn fstab_disagreements(fstab: &[FstabEntry], root: &Names, esp: Option<&Names>) -> Vec<String> {
    let mut out = Vec::new();
    for e in fstab {
        let names = match e.path.as_str() {
            "/" => root,
            "/boot/efi" | "/efi" => match esp {
                Some(esp) => esp,
                None => {
                    out.push(format!(
                        "/etc/fstab line {}: mounts {} {}, but the image has no EFI system partition (boot \"bios\"): use boot \"uefi\" or \"hybrid\", or drop the entry",
                        e.line, e.spec, e.path
                    ));
                    continue;
                }
            },
            _ => continue,
        };
        if let Some(why) = names.disagrees(&e.spec) {
            out.push(format!("/etc/fstab line {}: {} {why}", e.line, e.path));
        }
        if e.vfs_type != "auto" && !names.vfs_types.contains(&e.vfs_type.as_str()) {
            out.push(format!(
                "/etc/fstab line {}: {} has type {}, but the {} is {}",
                e.line,
                e.path,
                e.vfs_type,
                names.what,
                names.vfs_types.join(" or ")
            ));
        }
    }
    out
}

/// A kernel command line split as the kernel splits it: at white space
/// (0xA0 included) outside double quotes, the quotes then dropped. A
/// parameter with a byte outside printable ASCII, a backslash or a single
/// quote is left out (second list): GRUB would escape it, and the kernel
/// does not unescape.
pub fn parse_cmdline(text: &str) -> (Vec<String>, Vec<String>) {
    let mut raw = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
            current.push(c);
        } else if !quoted && (c.is_ascii_whitespace() || c == '\u{a0}' || c == '\u{b}') {
            if !current.is_empty() {
                raw.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        raw.push(current);
    }
    let (mut params, mut dropped) = (Vec::new(), Vec::new());
    for p in raw {
        let plain: String = p.chars().filter(|c| *c != '"').collect();
        if !plain.is_empty()
            && plain
                .chars()
                .all(|c| (' '..='~').contains(&c) && c != '\\' && c != '\'')
        {
            params.push(plain);
        } else {
            dropped.push(p.escape_debug().to_string());
        }
    }
    (params, dropped)
}

/// The `root=` of a command line's parameters: the last, as the kernel takes it.
pub fn cmdline_root(params: &[String]) -> Option<&str> {
    params.iter().rev().find_map(|p| p.strip_prefix("root="))
}

/// One command line as text (a boot entry's `options`, the build log): a
/// parameter with a space in its value is quoted as the kernel reads it.
pub fn render_cmdline(params: &[String]) -> String {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            _ if !p.contains(' ') => p.clone(),
            Some((k, v)) if !k.contains(' ') => format!("{k}=\"{v}\""),
            _ => format!("\"{p}\""),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kernel's parameters: the tree's /etc/kernel/cmdline's, with `root=`
/// naming the root file system unless they name one; read-write unless the
/// root file system is read-only; always with a serial console.
pub fn kernel_params(from_tree: &[String], root_spec: &str, read_only: bool) -> Vec<String> {
    let mut words = from_tree.to_vec();
    if cmdline_root(&words).is_none() {
        words.insert(0, format!("root={root_spec}"));
    }
    if read_only {
        words.retain(|w| w != "rw");
    }
    if !words.iter().any(|w| w == "ro" || w == "rw") {
        words.push(if read_only { "ro" } else { "rw" }.into());
    }
    if !words.iter().any(|w| w.starts_with("console=")) {
        words.push("console=ttyS0".into());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(table: PtType, firmware: Option<Firmware>) -> Wants {
        Wants {
            table,
            firmware,
            disk_id: match table {
                PtType::Mbr => "2b8f5c1e".into(),
                PtType::Gpt => derived_uuid("disk"),
            },
            esp: 256 * MIB,
            root_min: 300 * MIB + 5,
            size: None,
        }
    }

    #[test]
    fn mbr_bios_is_todays_layout() {
        let l = Layout::new(&wants(PtType::Mbr, Some(Firmware::Bios))).unwrap();
        assert_eq!(l.bytes, 302 * MIB);
        assert_eq!(l.partitions.len(), 1);
        assert_eq!(l.root().start, 2048);
        assert_eq!(l.root().bytes(), 301 * MIB);
        assert_eq!(l.root().partuuid, "2b8f5c1e-01");
        assert_eq!(
            l.sfdisk_script(),
            "label: dos\nlabel-id: 0x2b8f5c1e\nunit: sectors\nstart=2048, size=616448, type=83, bootable\n"
        );
    }

    #[test]
    fn gpt_hybrid_has_bios_boot_esp_root_and_room_for_the_backup() {
        let l = Layout::new(&wants(PtType::Gpt, Some(Firmware::Hybrid))).unwrap();
        let roles: Vec<Role> = l.partitions.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::BiosBoot, Role::Esp, Role::Root]);
        assert_eq!(l.bytes, (1 + 1 + 256 + 301 + 1) * MIB);
        assert_eq!(l.get(Role::Esp).unwrap().start, 4096);
        assert_eq!(l.root().start, (2 + 256) * 2048);
        let end = l.root().start + l.root().sectors;
        assert_eq!(end * 512 + MIB, l.bytes, "the last MiB is GPT's backup");
        let script = l.sfdisk_script();
        assert!(script.contains("label: gpt\n"), "{script}");
        assert!(
            script.contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "{script}"
        );
        // Partition GUIDs come from the disk's id: the same each time,
        // different per partition and per disk.
        let again = Layout::new(&wants(PtType::Gpt, Some(Firmware::Hybrid))).unwrap();
        assert_eq!(l, again);
        assert_ne!(l.partitions[1].partuuid, l.partitions[2].partuuid);
        let mut other = wants(PtType::Gpt, Some(Firmware::Hybrid));
        other.disk_id = derived_uuid("other disk");
        assert_ne!(
            Layout::new(&other).unwrap().root().partuuid,
            l.root().partuuid
        );
    }

    #[test]
    fn a_size_grows_the_root_and_too_small_a_size_is_refused() {
        let mut w = wants(PtType::Mbr, Some(Firmware::Uefi));
        w.size = Some(1 << 30);
        let l = Layout::new(&w).unwrap();
        assert_eq!(l.bytes, 1 << 30);
        assert_eq!(l.root().bytes(), (1024 - 1 - 256) * MIB);
        assert_eq!(l.get(Role::Esp).unwrap().partuuid, "2b8f5c1e-01");
        w.size = Some(500 * MIB);
        let e = Layout::new(&w).unwrap_err();
        assert_eq!(
            e,
            "500 MiB is too small: the partitions need 558 MiB (the root file system at least 301 MiB)"
        );
    }

    #[test]
    fn fstab_and_image_disagreements_are_named() {
        let fstab = parse_fstab(
            "# c\nUUID=aaaa /  ext4 defaults 0 1\nUUID=7A3C-91E5 /boot/efi vfat umask=0077 0 1\n/dev/sdb1 /srv ext4 defaults 0 0\n",
        );
        let root = Names {
            what: "root file system",
            uuid: Some("aaaa"),
            label: Some("root"),
            partuuid: "p1",
            partlabel: Some("root"),
            vfs_types: &["ext4"],
        };
        let esp = Names {
            what: "EFI system partition",
            uuid: Some("7A3C-91E5"),
            label: Some("ESP"),
            partuuid: "p2",
            partlabel: Some("ESP"),
            vfs_types: &["vfat"],
        };
        assert!(fstab_disagreements(&fstab, &root, Some(&esp)).is_empty());
        let other_esp = Names {
            uuid: Some("1111-2222"),
            ..esp.clone()
        };
        assert_eq!(
            fstab_disagreements(&fstab, &root, Some(&other_esp)),
            [
                "/etc/fstab line 3: /boot/efi names UUID=7A3C-91E5, but the EFI system partition's UUID is 1111-2222"
            ]
        );
        let e = fstab_disagreements(&fstab, &root, None);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("the image has no EFI system partition"),
            "{e:?}"
        );
        let erofs = Names {
            uuid: None,
            vfs_types: &["erofs"],
            ..root.clone()
        };
        assert_eq!(
            fstab_disagreements(&fstab, &erofs, Some(&esp)),
            [
                "/etc/fstab line 2: / names UUID=aaaa, but the root file system has no UUID",
                "/etc/fstab line 2: / has type ext4, but the root file system is erofs"
            ]
        );
        let by_part = parse_fstab("PARTUUID=P1 / auto ro 0 0\n");
        assert!(fstab_disagreements(&by_part, &erofs, None).is_empty());
    }

    #[test]
    fn kernel_command_lines() {
        let params = |s: &str| parse_cmdline(s).0;
        let line = |tree: &str, spec: &str, ro: bool| {
            render_cmdline(&kernel_params(&params(tree), spec, ro))
        };
        assert_eq!(line("", "UUID=u", false), "root=UUID=u rw console=ttyS0");
        assert_eq!(
            line("root=UUID=u ro quiet", "x", false),
            "root=UUID=u ro quiet console=ttyS0"
        );
        assert_eq!(
            line("root=PARTUUID=p rw", "x", true),
            "root=PARTUUID=p ro console=ttyS0"
        );
        assert_eq!(cmdline_root(&params("a root=x b root=y")), Some("y"));
        // Split as the kernel splits: quotes keep spaces, 0xA0 is a space.
        let (p, dropped) = parse_cmdline(
            "dyndbg=\"file foo.c +p\" quiet\u{a0}root=/dev/x \"it's\" a\\b \u{1b}[2J",
        );
        assert_eq!(p, ["dyndbg=file foo.c +p", "quiet", "root=/dev/x"]);
        assert_eq!(dropped.len(), 3, "{dropped:?}");
        assert_eq!(
            render_cmdline(&p),
            "dyndbg=\"file foo.c +p\" quiet root=/dev/x"
        );
        assert_eq!(cmdline_root(&p), Some("/dev/x"));
        assert!(valid_volume_id("7A3C-91E5"));
        assert!(!valid_volume_id("7a3c-91e5"));
        assert!(!valid_volume_id("7A3C91E5"));
        let v = derived_volume_id("x");
        assert!(valid_volume_id(&v), "{v}");
    }
}
