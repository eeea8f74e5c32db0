//! `io.weldr.qcow2`'s layouts, root file systems and formats, from a small
//! tree: every combination that makes sense built twice from empty stores
//! into the same bytes, and each checked by the tools that own its
//! structures (sfdisk, fsck.vfat, e2fsck, fsck.erofs, unsquashfs,
//! qemu-img), with files read back out without mounting anything.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::*;

const KERNEL: &str = "6.1.0-99-amd64";
const HELLO: &str = "hello from the tree\n";
const ROOT_UUID: &str = "5f0c2d3e-8a41-4b6f-9c27-1e3d5a7b9c0d";
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const SYSTEMD_BOOT: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// A small tree packed as an archive for `--from`: os-release, a kernel and
/// initrd (bytes of chance: nothing boots them here), a file with its own
/// owner and mode, and `extra` shell commands run in it.
fn tree_archive(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    let archive = dir.join(format!("{name}.tar"));
    std::fs::create_dir_all(&src).unwrap();
    sh(&format!(
        r#"
        cd {src}
        mkdir -p etc boot srv
        printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n' > etc/os-release
        head -c 300000 /dev/urandom > boot/vmlinuz-{KERNEL}
        head -c 200000 /dev/urandom > boot/initrd.img-{KERNEL}
        printf '{hello}' > srv/hello.txt && chown 1000:1000 srv/hello.txt && chmod 640 srv/hello.txt
        ln -s hello.txt srv/link
        {extra}
        find . -exec touch -h -d @1600000000 {{}} +
        tar --numeric-owner --format=posix -C {src} -cf {archive} .
        "#,
        src = src.display(),
        archive = archive.display(),
        hello = HELLO.replace('\n', "\\n"),
    ));
    archive
}

fn image_stage(target: &str, options: Value) -> Value {
    let mut o = json!({"target": target, "root_fs_uuid": ROOT_UUID});
    o.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    json!({"name": "io.weldr.qcow2", "options": o})
}

/// Builds `stages` on `archive` into `dir/out-TAG` with a store of its own.
fn build(dir: &Path, tag: &str, archive: &Path, stages: &[Value]) -> PathBuf {
    let p = write_pipeline(
        dir,
        &format!("{tag}.json"),
        json!({"source_epoch": 1700000000, "pipeline": stages}),
    );
    let out = dir.join(format!("out-{tag}"));
    let store = dir.join(format!("store-{tag}"));
    osbuild(&[
        "--store",
        store.to_str().unwrap(),
        "--from",
        archive.to_str().unwrap(),
        "--output-directory",
        out.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .ok();
    std::fs::remove_dir_all(&store).unwrap();
    out
}

/// Builds twice from empty stores; every image has the same bytes.
fn build_twice(dir: &Path, archive: &Path, stages: &[Value]) -> PathBuf {
    let a = build(dir, "a", archive, stages);
    let b = build(dir, "b", archive, stages);
    for stage in stages {
        let target = stage["options"]["target"].as_str().unwrap();
        assert_eq!(
            sha256(&a.join(target)),
            sha256(&b.join(target)),
            "two builds of {target} differ"
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = stages
        .iter()
        .map(|s| s["options"]["target"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(
        left, want,
        "the output directory holds the images, nothing else"
    );
    a
}

/// A partition as `sfdisk --json` lists it.
#[derive(Debug)]
struct Part {
    start: u64,
    size: u64,
    kind: String,
    uuid: Option<String>,
}

fn partitions(image: &Path) -> (String, String, Vec<Part>) {
    let j: Value =
        serde_json::from_str(&sh(&format!("sfdisk --json {}", image.display()))).unwrap();
    let t = &j["partitiontable"];
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Part {
            start: p["start"].as_u64().unwrap(),
            size: p["size"].as_u64().unwrap(),
            kind: p["type"].as_str().unwrap().to_string(),
            uuid: p["uuid"].as_str().map(str::to_string),
        })
        .collect();
    (
        t["label"].as_str().unwrap().into(),
        t["id"].as_str().unwrap().into(),
        parts,
    )
}

/// Copies a partition out of `image` into a sparse file of its own.
fn extract_part(image: &Path, p: &Part, to: &Path) -> PathBuf {
    sh(&format!(
        "dd if={} of={} bs=512 skip={} count={} conv=sparse status=none",
        image.display(),
        to.display(),
        p.start,
        p.size
    ));
    to.to_path_buf()
}

fn mtools(cmd: &str, fs: &Path, path: &str) -> Vec<u8> {
    let out = std::process::Command::new(cmd)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(fs)
        .arg(format!("::{path}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

struct Case {
    pt: &'static str,
    boot: &'static str,
    fs: &'static str,
    sd_boot: bool,
}

impl Case {
    fn target(&self) -> String {
        format!(
            "{}-{}-{}{}.raw",
            self.pt,
            self.boot,
            self.fs,
            if self.sd_boot { "-sdboot" } else { "" }
        )
    }
    fn stage(&self) -> Value {
        let mut o =
            json!({"format": "raw", "pttype": self.pt, "boot": self.boot, "root_fs_type": self.fs});
        if self.sd_boot {
            o["bootloader"] = json!("systemd-boot");
        }
        image_stage(&self.target(), o)
    }
}

/// Checks one image of the matrix against what its options asked for.
fn check(case: &Case, image: &Path, tree: &Path, work: &Path) {
    let name = case.target();
    let (label, disk_id, parts) = partitions(image);
    let gpt = case.pt == "gpt";
    assert_eq!(label, if gpt { "gpt" } else { "dos" }, "{name}");
    let bios = case.boot != "uefi";
    let uefi = case.boot != "bios";
    let mut want = Vec::new();
    if gpt && bios {
        want.push(BIOS_BOOT_TYPE);
    }
    if uefi {
        want.push(if gpt { ESP_TYPE } else { "ef" });
    }
    want.push(if gpt { ROOT_TYPE } else { "83" });
    let kinds: Vec<&str> = parts.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, want, "{name}: partition types");
    for p in &parts {
        assert_eq!(p.start % 2048, 0, "{name}: {p:?} is not MiB-aligned");
    }
    let root = parts.last().unwrap();
    let root_partuuid = match &root.uuid {
        Some(u) => u.to_lowercase(),
        None => format!("{}-{:02x}", disk_id.trim_start_matches("0x"), parts.len()),
    };

    // The root file system, checked and read by its own tools.
    let offset = root.start * 512;
    let fs_image = format!("{}?offset={offset}", image.display());
    match case.fs {
        "ext4" => {
            sh(&format!("e2fsck -fn '{fs_image}'"));
            assert_eq!(
                sh(&format!(
                    "debugfs -R 'cat /srv/hello.txt' '{fs_image}' 2>/dev/null"
                )),
                HELLO
            );
            let stat = sh(&format!(
                "debugfs -R 'stat /srv/hello.txt' '{fs_image}' 2>/dev/null"
            ));
            assert!(
                stat.contains("User:  1000   Group:  1000") && stat.contains("Mode:  0640"),
                "{name}: {stat}"
            );
        }
        fs @ ("erofs" | "squashfs") => {
            // Each read-only file system's own tool checks it as it
            // extracts every file.
            let (part, dest) = (
                extract_part(image, root, &work.join(format!("root.{fs}"))),
                work.join(format!("{fs}-root")),
            );
            sh(&if fs == "erofs" {
                format!("fsck.erofs --extract={} {}", dest.display(), part.display())
            } else {
                format!("unsquashfs -q -n -d {} {}", dest.display(), part.display())
            });
            check_extracted(&dest, &name);
        }
        other => panic!("{other}"),
    }

    // The kernel command line names the root as the kernel finds it.
    let cmdline = if case.fs == "ext4" {
        format!("root=UUID={ROOT_UUID} rw console=ttyS0")
    } else {
        format!("root=PARTUUID={root_partuuid} ro console=ttyS0")
    };
    let kernel_on_esp = case.sd_boot || case.fs != "ext4";

    if uefi {
        let esp = &parts[if gpt && bios { 1 } else { 0 }];
        let part = extract_part(image, esp, &work.join("esp"));
        sh(&format!("fsck.vfat -n {}", part.display()));
        let volume_id = sh(&format!("blkid -p -o value -s UUID {}", part.display()));
        let volume_id = volume_id.trim();
        let loader = mtools("mtype", &part, "/EFI/BOOT/BOOTX64.EFI");
        assert_eq!(&loader[..2], b"MZ", "{name}: BOOTX64.EFI is no PE image");
        if kernel_on_esp {
            let linux = mtools("mtype", &part, &format!("/debian/{KERNEL}/linux"));
            assert_eq!(
                linux,
                std::fs::read(tree.join(format!("boot/vmlinuz-{KERNEL}"))).unwrap(),
                "{name}: the kernel on the ESP"
            );
        }
        if case.sd_boot {
            assert_eq!(
                loader,
                std::fs::read(Path::new("/").join(SYSTEMD_BOOT)).unwrap(),
                "{name}: systemd-boot is the tree's"
            );
            let entry = mtools(
                "mtype",
                &part,
                &format!("/loader/entries/debian-{KERNEL}.conf"),
            );
            assert_eq!(
                String::from_utf8(entry).unwrap(),
                format!(
                    "title Debian GNU/Linux 12 (bookworm)\nversion {KERNEL}\nlinux /debian/{KERNEL}/linux\ninitrd /debian/{KERNEL}/initrd\noptions {cmdline}\n"
                ),
                "{name}"
            );
        } else {
            // GRUB's embedded configuration is in the EFI image as text.
            let (fs_uuid, linux) = if kernel_on_esp {
                (volume_id.to_lowercase(), format!("/debian/{KERNEL}/linux"))
            } else {
                (ROOT_UUID.to_string(), format!("/boot/vmlinuz-{KERNEL}"))
            };
            // Each word quoted: GRUB's script language would read `;` or `$`.
            let words: Vec<String> = cmdline.split(' ').map(|w| format!("'{w}'")).collect();
            let config = format!(
                "search --no-floppy --fs-uuid --set=root {fs_uuid}\nlinux {linux} {}\n",
                words.join(" ")
            );
            assert!(
                contains(&loader, &config),
                "{name}: GRUB EFI lacks {config:?}"
            );
        }
    }

    if bios {
        // boot.img's code in the MBR points at core.img, and core.img's
        // first sector at the rest of it.
        let bytes = std::fs::read(image).unwrap();
        let core = if gpt { parts[0].start } else { 1 };
        assert_eq!(
            le64(&bytes, 0x5c),
            core,
            "{name}: boot.img's core.img sector"
        );
        let at = (core * 512) as usize;
        assert_eq!(
            le64(&bytes, at + 0x1f4),
            core + 1,
            "{name}: core.img's blocklist"
        );
        assert_eq!(&bytes[510..512], b"\x55\xaa", "{name}: MBR signature");
    } else {
        let bytes = std::fs::read(image).unwrap();
        assert!(
            bytes[..440].iter().all(|b| *b == 0),
            "{name}: an image booted by UEFI only has no BIOS boot code"
        );
    }
}

fn check_extracted(root: &Path, name: &str) {
    use std::os::unix::fs::MetadataExt;
    let f = root.join("srv/hello.txt");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), HELLO, "{name}");
    let m = std::fs::symlink_metadata(&f).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (1000, 1000, 0o640),
        "{name}"
    );
    assert_eq!(m.mtime(), 1600000000, "{name}: the file's own mtime");
    assert_eq!(
        std::fs::read_link(root.join("srv/link")).unwrap(),
        Path::new("hello.txt"),
        "{name}"
    );
}

#[test]
#[ignore = "needs root and systemd-nspawn (tools/run-tests runs it)"]
fn every_layout_and_root_file_system_is_reproducible_and_checks_clean() {
    let dir = tempfile::Builder::new()
        .prefix("images-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let archive = tree_archive(
        dir.path(),
        "tree",
        &format!("mkdir -p $(dirname {SYSTEMD_BOOT}) && cp /{SYSTEMD_BOOT} {SYSTEMD_BOOT}"),
    );
    let tree = dir.path().join("tree-src");
    let mut cases = Vec::new();
    for (pt, boot) in [
        ("mbr", "bios"),
        ("mbr", "uefi"),
        ("gpt", "bios"),
        ("gpt", "uefi"),
        ("gpt", "hybrid"),
    ] {
        for fs in ["ext4", "erofs", "squashfs"] {
            // GRUB 2.06 reads neither erofs nor squashfs by UUID, and BIOS
            // alone has no ESP for the kernel: refused (tested below).
            if boot == "bios" && fs != "ext4" {
                continue;
            }
            cases.push(Case {
                pt,
                boot,
                fs,
                sd_boot: false,
            });
        }
    }
    cases.push(Case {
        pt: "gpt",
        boot: "uefi",
        fs: "ext4",
        sd_boot: true,
    });
    cases.push(Case {
        pt: "gpt",
        boot: "hybrid",
        fs: "erofs",
        sd_boot: true,
    });
    // auto picks the tree's systemd-boot for UEFI: GRUB is asked for by name.
    let stages: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut s = c.stage();
            if !c.sd_boot {
                s["options"]["bootloader"] = json!("grub");
            }
            s
        })
        .collect();
    let out = build_twice(dir.path(), &archive, &stages);
    for case in &cases {
        let work = tempfile::tempdir_in(dir.path()).unwrap();
        check(case, &out.join(case.target()), &tree, work.path());
        eprintln!("{}: checked", case.target());
    }
}

#[test]
#[ignore = "needs root and systemd-nspawn (tools/run-tests runs it)"]
fn every_format_is_what_its_readers_expect_and_reproducible() {
    let dir = tempfile::Builder::new()
        .prefix("formats-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let archive = tree_archive(dir.path(), "tree", "");
    let formats = ["raw", "qcow2", "vmdk", "vhd", "vhdx"];
    let stages: Vec<Value> = formats
        .iter()
        .map(|f| {
            image_stage(
                &format!("disk.{f}"),
                // One disk id: by default it derives from the target name.
                json!({"format": f, "boot": "hybrid", "size": "1G",
                       "ptuuid": "0e5c1b7a-3d2f-4a6e-8b9c-7f1d2e3a4b5c"}),
            )
        })
        .collect();
    let out = build_twice(dir.path(), &archive, &stages);
    let raw = out.join("disk.raw");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 1 << 30);
    for f in formats {
        let image = out.join(format!("disk.{f}"));
        let qemu_format = if f == "vhd" { "vpc" } else { f };
        let info: Value = serde_json::from_str(&sh(&format!(
            "qemu-img info --output=json -f {qemu_format} {}",
            image.display()
        )))
        .unwrap();
        assert_eq!(info["format"], qemu_format, "{f}: {info}");
        assert_eq!(info["virtual-size"], 1u64 << 30, "{f}: {info}");
        // The same disk, byte for byte, as the raw image.
        sh(&format!(
            "qemu-img compare -q -f raw -F {qemu_format} {} {}",
            raw.display(),
            image.display()
        ));
        if matches!(f, "qcow2" | "vmdk" | "vhdx") {
            sh(&format!(
                "qemu-img check -q -f {qemu_format} {}",
                image.display()
            ));
        }
        match f {
            "vmdk" => assert_eq!(
                info["format-specific"]["data"]["create-type"], "streamOptimized",
                "{info}"
            ),
            "vhd" => {
                // Azure: a fixed VHD whose virtual size is whole MiB, the
                // raw disk followed by a 512-byte footer.
                let bytes = std::fs::read(&image).unwrap();
                assert_eq!(bytes.len() as u64, (1 << 30) + 512);
                let footer = &bytes[bytes.len() - 512..];
                assert_eq!(&footer[..8], b"conectix");
                assert_eq!(
                    u32::from_be_bytes(footer[60..64].try_into().unwrap()),
                    2,
                    "fixed disk type"
                );
                assert_eq!(
                    u64::from_be_bytes(footer[48..56].try_into().unwrap()),
                    1 << 30,
                    "current size"
                );
                // The time stamp is the source epoch, in VHD's own epoch (2000).
                assert_eq!(
                    u32::from_be_bytes(footer[24..28].try_into().unwrap()),
                    1700000000 - 946684800
                );
            }
            _ => {}
        }
    }
}

#[test]
#[ignore = "needs root and systemd-nspawn (tools/run-tests runs it)"]
fn a_tree_and_an_image_that_disagree_are_refused_with_what_disagrees() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tree_archive(
        dir.path(),
        "tree",
        "printf 'UUID=0badc0de-0000-4000-8000-000000000000 / ext4 defaults 0 1\\nUUID=7A3C-91E5 /boot/efi vfat umask=0077 0 2\\n' > etc/fstab",
    );
    let out = dir.path().join("out");
    let run = |options: Value| {
        let p = write_pipeline(
            dir.path(),
            "p.json",
            json!({"pipeline": [{"name": "io.weldr.qcow2", "options": options}]}),
        );
        let r = osbuild(&[
            "--from",
            archive.to_str().unwrap(),
            "--output-directory",
            out.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        // Nothing half-made is left behind.
        let left: Vec<_> = std::fs::read_dir(&out)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        r
    };
    run(json!({"target": "x.qcow2", "root_fs_uuid": ROOT_UUID, "boot": "uefi"})).fails_with(
        1,
        "/etc/fstab line 1: / names UUID=0badc0de-0000-4000-8000-000000000000, but the root file system's UUID is 5f0c2d3e-8a41-4b6f-9c27-1e3d5a7b9c0d",
    );
    run(json!({"target": "x.qcow2", "boot": "bios"})).fails_with(
        1,
        "/etc/fstab line 2: mounts UUID=7A3C-91E5 /boot/efi, but the image has no EFI system partition",
    );
    run(json!({"target": "x.qcow2", "boot": "uefi", "esp_uuid": "1234-ABCD"})).fails_with(
        1,
        "/etc/fstab line 2: /boot/efi names UUID=7A3C-91E5, but the EFI system partition's UUID is 1234-ABCD",
    );
    run(json!({"target": "x.qcow2", "boot": "uefi", "root_fs_type": "squashfs"})).fails_with(
        1,
        "/etc/fstab line 1: / names UUID=0badc0de-0000-4000-8000-000000000000, but the root file system has no UUID",
    );
    let plain = tree_archive(dir.path(), "plain", "");
    let run_plain = |options: Value| {
        let p = write_pipeline(
            dir.path(),
            "q.json",
            json!({"pipeline": [{"name": "io.weldr.qcow2", "options": options}]}),
        );
        osbuild(&[
            "--from",
            plain.to_str().unwrap(),
            "--output-directory",
            out.to_str().unwrap(),
            p.to_str().unwrap(),
        ])
    };
    run_plain(json!({"target": "x.qcow2", "root_fs_type": "erofs"})).fails_with(
        1,
        "GRUB 2.06 cannot read erofs, and with boot \"bios\" there is no EFI system partition",
    );
    run_plain(json!({"target": "x.qcow2", "boot": "hybrid", "pttype": "mbr"}))
        .fails_with(1, "a hybrid image is a GPT disk with a BIOS boot partition");
    run_plain(json!({"target": "x.qcow2", "boot": "uefi", "bootloader": "systemd-boot"}))
        .fails_with(
            1,
            "the tree has no /usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        );
    run_plain(json!({"target": "x.qcow2", "boot": "uefi", "size": "200M"})).fails_with(
        1,
        "200 MiB is too small: the partitions need 290 MiB (the root file system at least 32 MiB)",
    );
}

#[test]
#[ignore = "needs root and systemd-nspawn (tools/run-tests runs it)"]
fn a_hostile_tree_reaches_nothing_outside_it_and_cannot_hang_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let build = |archive: &Path| {
        let p = write_pipeline(
            dir.path(),
            "p.json",
            json!({"pipeline": [image_stage("x.raw", json!({"format": "raw", "boot": "uefi", "root_fs_type": "erofs"}))]}),
        );
        let r = osbuild(&[
            "--from",
            archive.to_str().unwrap(),
            "--output-directory",
            out.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        (r, out.join("x.raw"))
    };
    // The kernel is an absolute symlink to a host file: it resolves inside
    // the tree, so the ESP gets the tree's file, never the host's.
    let archive = tree_archive(
        dir.path(),
        "symlink",
        &format!(
            "rm boot/vmlinuz-{KERNEL} && ln -s /etc/hostname boot/vmlinuz-{KERNEL} && printf 'the tree s own\\n' > etc/hostname"
        ),
    );
    let (run, image) = build(&archive);
    run.ok();
    let (_, _, parts) = partitions(&image);
    let esp = extract_part(&image, &parts[0], &dir.path().join("esp"));
    assert_eq!(
        mtools("mtype", &esp, &format!("/debian/{KERNEL}/linux")),
        b"the tree s own\n",
        "the ESP's kernel is the tree's file"
    );
    std::fs::remove_dir_all(&out).unwrap();

    // A FIFO where os-release is: refused, not opened (it would block).
    let archive = tree_archive(
        dir.path(),
        "fifo",
        "rm etc/os-release && mkfifo etc/os-release",
    );
    let started = std::time::Instant::now();
    let (run, image) = build(&archive);
    run.fails_with(
        1,
        "/etc/os-release: is a FIFO: osbuild never opens device nodes, FIFOs or sockets in a tree",
    );
    assert!(
        started.elapsed().as_secs() < 120,
        "the stage waited on the FIFO"
    );
    assert!(!image.exists());

    // A configuration file far larger than any is refused before it is read.
    let archive = tree_archive(dir.path(), "huge", "truncate -s 1M etc/fstab");
    let (run, image) = build(&archive);
    run.fails_with(
        1,
        "/etc/fstab in the tree is 1048576 bytes, more than the 65536 this stage reads",
    );
    assert!(!image.exists());
}
