//! The README's examples, end to end: `examples/debian.json` (BIOS) and
//! `examples/debian-uefi.json` (UEFI: GPT, ESP, GRUB EFI) each build twice
//! into the same bytes (the BIOS one also locked with `osbuild lock` and
//! built from the lock offline and online, to the same bytes again), and
//! each image boots in QEMU (`osbuild boot`,
//! SeaBIOS or OVMF as the image calls for) to a `running` system with the
//! pipeline's hostname, users and services.
//!
//! Needs root, the network (mmdebstrap) and qemu-system-x86 (tools/setup).
//! Under TCG (no KVM) the boot to `login:` takes about a minute.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// Units allowed to fail in the booted example, each with the reason.
/// Empty: the example boots to `running`.
const EXPLAINED_FAILURES: &[(&str, &str)] = &[];

/// Time from QEMU's start to `login:` on the serial console (TCG here takes
/// about 55 s; leave room for a loaded CI machine).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Where Linux shows the firmware's variables, and the namespace of the
/// boot manager's.
const EFIVARS: &str = "/sys/firmware/efi/efivars";
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The description OVMF gives the boot entry it makes for a virtio disk.
const UEFI_BOOT_ENTRY: &str = "UEFI Misc Device";

const BIOS_EXAMPLE: &str = "debian";
const UEFI_EXAMPLE: &str = "debian-uefi";

fn example(name: &str) -> PathBuf {
    repo_root().join(format!("examples/{name}.json"))
}

/// What the pipeline says the booted system must have.
struct Expected {
    hostname: String,
    users: Vec<String>,
    services: Vec<String>,
    root_uuid: String,
    root_password: &'static str,
    image: String,
}

fn expected(name: &str) -> Expected {
    let p: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example(name)).unwrap()).unwrap();
    let stage = |name: &str| {
        p["pipeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("the example has no {name} stage"))["options"]
            .clone()
    };
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    Expected {
        hostname: stage("io.weldr.hostname")["hostname"]
            .as_str()
            .unwrap()
            .into(),
        users: stage("io.weldr.users")["users"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|u| *u != "root")
            .cloned()
            .collect(),
        services: strings(&stage("io.weldr.systemd")["enabled_services"]),
        root_uuid: stage("io.weldr.qcow2")["root_fs_uuid"]
            .as_str()
            .unwrap()
            .into(),
        // The example's root password (its hash is in the pipeline).
        root_password: "osbuild",
        image: stage("io.weldr.qcow2")["target"].as_str().unwrap().into(),
    }
}

/// The console's bytes so far, and whether it has closed.
type Seen = Arc<(Mutex<(Vec<u8>, bool)>, Condvar)>;

/// The serial console of a running `osbuild boot`: everything QEMU printed
/// so far, filled by a reader thread, and the guest's keyboard.
struct Console {
    child: Child,
    stdin: ChildStdin,
    seen: Seen,
    /// Where the next `expect` starts looking.
    pos: usize,
    started: Instant,
    log: PathBuf,
}

impl Console {
    fn boot(image: &Path, log: &Path) -> Console {
        let started = Instant::now();
        let mut child = Command::new(OSBUILD)
            .args(["boot", "--memory", "1024", "--log"])
            .arg(log)
            .arg(image)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("running osbuild boot");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let seen: Seen = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*s;
                let mut g = lock.lock().unwrap();
                if n == 0 {
                    g.1 = true;
                    cv.notify_all();
                    return;
                }
                g.0.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        Console {
            child,
            stdin,
            seen,
            pos: 0,
            started,
            log: log.to_path_buf(),
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The last lines of the console, for failure messages.
    fn tail(&self) -> String {
        let g = self.seen.0.lock().unwrap();
        let text = clean(&g.0);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until `needle` appears after the last match; returns what came
    /// before it. Panics with the console's tail on timeout or EOF.
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.seen;
        let mut g = lock.lock().unwrap();
        loop {
            if let Some(i) = find(&g.0[self.pos..], needle.as_bytes()) {
                let before = clean(&g.0[self.pos..self.pos + i]);
                self.pos += i + needle.len();
                return before;
            }
            let now = Instant::now();
            if g.1 || now >= deadline {
                let why = if g.1 { "QEMU exited" } else { "timed out" };
                drop(g);
                panic!(
                    "{why} after {:.1}s waiting for {needle:?} on the serial console \
                     (full log: {}); last lines:\n{}",
                    self.elapsed(),
                    self.log.display(),
                    self.tail()
                );
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("writing to the serial console");
        self.stdin.flush().unwrap();
    }

    /// Runs a shell command in the guest; returns its output and status.
    /// The markers are split by quotes so that the echoed command line
    /// does not match them.
    fn run(&mut self, command: &str, timeout: Duration) -> (String, i32) {
        self.send(&format!(
            "echo '@@''BEGIN'; {command} 2>&1; echo \"@@\"\"END $?\""
        ));
        self.expect("@@BEGIN", timeout);
        let out = self.expect("@@END ", timeout);
        let status = self.expect("\n", timeout);
        let status = status.trim().parse().unwrap_or(-1);
        (out.trim().to_string(), status)
    }

    /// Waits for QEMU (and osbuild boot) to exit; returns the exit code.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // A failed test must not leave QEMU running: osbuild boot passes
        // SIGTERM on to it.
        if let Ok(None) = self.child.try_wait() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&self.child),
                rustix::process::Signal::TERM,
            );
            std::thread::sleep(Duration::from_secs(1));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Console bytes as text: no carriage returns, no terminal escapes.
fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).replace('\r', "");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Builds the example `name` into `dir`'s store (a fresh, empty one the
/// first time) with its SBOM and provenance (`TAG.spdx.json`,
/// `TAG.intoto.json`) in `dir`, and `extra` arguments; returns the image
/// and how long the build took.
fn build(dir: &Path, name: &str, tag: &str, extra: &[&str]) -> (PathBuf, Duration) {
    build_by(osbuild, dir, name, tag, extra)
}

/// [`build`], run by `osbuild` (or [`osbuild_offline`]).
fn build_by(
    osbuild: fn(&[&str]) -> Run,
    dir: &Path,
    name: &str,
    tag: &str,
    extra: &[&str],
) -> (PathBuf, Duration) {
    let store = dir.join("store");
    let out = dir.join("out");
    let started = Instant::now();
    let run = osbuild(
        &[
            &[
                "--store",
                store.to_str().unwrap(),
                "--output-directory",
                out.to_str().unwrap(),
                "--sbom",
                dir.join(format!("{tag}.spdx.json")).to_str().unwrap(),
                "--provenance",
                dir.join(format!("{tag}.intoto.json")).to_str().unwrap(),
            ][..],
            extra,
            &[example(name).to_str().unwrap()],
        ]
        .concat(),
    );
    let took = started.elapsed();
    run.ok();
    // Per-stage times, as osbuild printed them.
    for line in run.stderr.lines().filter(|l| l.contains(" done in ")) {
        eprintln!("  {}", line.trim());
    }
    (out.join(expected(name).image), took)
}

#[test]
#[ignore = "needs root, the Debian mirror and QEMU (tools/run-tests runs it)"]
fn debian_examples_are_reproducible_and_boot_from_bios_and_uefi() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let a = tempfile::Builder::new()
        .prefix("boot-a-")
        .tempdir_in(&base)
        .unwrap();
    let b = tempfile::Builder::new()
        .prefix("boot-b-")
        .tempdir_in(&base)
        .unwrap();

    // A build from an empty store; its packages locked (from the stored
    // result: nothing runs); then the locked build with no network at
    // all, on an empty object store and that package cache; and again
    // online, from an empty store (every package downloaded by the URL
    // and digest the lock gives). One after the other (the mirror is the
    // same in between; sequential so that the timings mean something).
    let (image_a, took_a) = build(a.path(), BIOS_EXAMPLE, "build", &[]);
    eprintln!("build 1: {:.1}s", took_a.as_secs_f64());
    let lock = a.path().join("debian.lock.json");
    let store_a = a.path().join("store");
    osbuild(&[
        "--store",
        store_a.to_str().unwrap(),
        "lock",
        "--output",
        lock.to_str().unwrap(),
        example(BIOS_EXAMPLE).to_str().unwrap(),
    ])
    .ok();
    // Store b: a new store (osbuild makes it), then store a's packages.
    let store_b = b.path().join("store");
    osbuild(&["--store", store_b.to_str().unwrap(), "store", "list"]).ok();
    sh(&format!(
        "rm -rf {b}/packages && cp -a {a}/packages {b}/",
        a = store_a.display(),
        b = store_b.display()
    ));
    let (image_b, took_b) = build_by(
        osbuild_offline,
        b.path(),
        BIOS_EXAMPLE,
        "build",
        &["--lock", lock.to_str().unwrap()],
    );
    eprintln!(
        "build 2 (locked, offline, package cache warm): {:.1}s",
        took_b.as_secs_f64()
    );
    let sum_a = same_bytes(&image_a, &image_b);
    let c = tempfile::Builder::new()
        .prefix("boot-c-")
        .tempdir_in(&base)
        .unwrap();
    let (image_c, took_c) = build(
        c.path(),
        BIOS_EXAMPLE,
        "build",
        &["--lock", lock.to_str().unwrap()],
    );
    eprintln!(
        "build 3 (locked, online, empty store): {:.1}s",
        took_c.as_secs_f64()
    );
    same_bytes(&image_a, &image_c);
    drop(c);
    // Where the image came from: the same SBOM bytes from both builds,
    // and again from a cached rebuild, whose provenance names the same
    // image and the same inputs.
    let tree = a.path().join("tree.tar");
    let started = Instant::now();
    build(
        a.path(),
        BIOS_EXAMPLE,
        "cached",
        &["--save", tree.to_str().unwrap()],
    );
    eprintln!(
        "cached rebuild with --save: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    crate::provenance::check_example(
        &[
            a.path().join("build"),
            b.path().join("build"),
            a.path().join("cached"),
        ],
        &image_a,
        &tree,
    );

    // The UEFI example shares the Debian base (its mmdebstrap stage is the
    // same): each store has it, so these builds run the rest.
    let (uefi_a, took) = build(a.path(), UEFI_EXAMPLE, "uefi", &[]);
    eprintln!("UEFI build 1 (base cached): {:.1}s", took.as_secs_f64());
    // Store b's base is the locked one; the lock fits this pipeline too
    // (its first stage is the same).
    let (uefi_b, took) = build(
        b.path(),
        UEFI_EXAMPLE,
        "uefi",
        &["--lock", lock.to_str().unwrap()],
    );
    eprintln!("UEFI build 2 (base cached): {:.1}s", took.as_secs_f64());
    let uefi_sum = same_bytes(&uefi_a, &uefi_b);
    drop(b);

    let mut con = boot_and_check(
        &image_a,
        &expected(BIOS_EXAMPLE),
        &a.path().join("bios.log"),
    );
    let (efi, _) = con.run(
        "test -d /sys/firmware/efi && echo uefi || echo bios",
        Duration::from_secs(60),
    );
    assert_eq!(efi, "bios", "the BIOS image booted from UEFI firmware");
    power_off(con, &image_a, &sum_a);

    let e = expected(UEFI_EXAMPLE);
    let mut con = boot_and_check(&uefi_a, &e, &a.path().join("uefi.log"));
    // The firmware is UEFI and booted this disk's ESP, mounted where the
    // fstab says.
    let (esp, _) = con.run(
        "findmnt -n -o SOURCE,FSTYPE,UUID /boot/efi",
        Duration::from_secs(60),
    );
    let fields: Vec<&str> = esp.split_whitespace().collect();
    assert_eq!(
        fields.get(1..),
        Some(&["vfat", "7A3C-91E5"][..]),
        "findmnt /boot/efi: {esp}"
    );
    // The kernel came up under UEFI firmware, which started this disk: its
    // BootCurrent variable names the entry OVMF made for the virtio disk
    // (read as efibootmgr reads it; neither efibootmgr nor bootctl is in
    // a minbase Debian 12). efivarfs files do not seek: cat, then tail.
    let (efi, _) = con.run(
        "test -d /sys/firmware/efi && echo uefi || echo bios",
        Duration::from_secs(60),
    );
    assert_eq!(
        efi, "uefi",
        "the UEFI image did not boot from UEFI firmware"
    );
    let (entry, _) = con.run(
        &format!(
            "n=$(od -An -tx2 -j4 -N2 {EFIVARS}/BootCurrent-{GLOBAL} | tr -d ' ' | tr a-f A-F); \
             echo \"Boot$n\"; cat {EFIVARS}/Boot$n-{GLOBAL} | tail -c +11 | tr -d '\\000' | tr -c '[:print:]' '.'"
        ),
        Duration::from_secs(60),
    );
    eprintln!("the firmware's current boot entry: {entry}");
    let mut lines = entry.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.len() == 8 && l.starts_with("Boot"))
            && lines.next().is_some_and(|l| l.starts_with(UEFI_BOOT_ENTRY)),
        "the firmware booted {entry:?}, not the disk"
    );
    power_off(con, &uefi_a, &uefi_sum);
}

/// Two images have the same bytes; returns their sha256.
fn same_bytes(a: &Path, b: &Path) -> String {
    let (sum_a, sum_b) = (sha256(a), sha256(b));
    eprintln!("sha256 {sum_a} ({})", a.display());
    assert_eq!(
        sum_a,
        sum_b,
        "two builds differ: {} vs {}",
        a.display(),
        b.display()
    );
    sum_a
}

/// Boots `image`, logs in as root and checks what the pipeline promised:
/// a running system, its hostname, users, services and root file system.
fn boot_and_check(image: &Path, e: &Expected, log: &Path) -> Console {
    let mut con = Console::boot(image, log);
    con.expect("login:", LOGIN_TIMEOUT);
    let login_s = con.elapsed();
    eprintln!("{}: QEMU start -> login: {login_s:.1}s", e.image);
    con.send("root");
    con.expect("Password:", Duration::from_secs(60));
    con.send(e.root_password);
    con.expect("# ", Duration::from_secs(120));
    // Nothing may wrap, page or colour the output, and the kernel's
    // messages stay off the console.
    con.run(
        "export TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0; stty cols 500; dmesg -n 1",
        Duration::from_secs(60),
    );

    // systemd may still print status lines while it finishes booting:
    // the state is the last line.
    let (out, _) = con.run("systemctl is-system-running --wait", LOGIN_TIMEOUT);
    let state = out.lines().last().unwrap_or("").trim().to_string();
    eprintln!(
        "is-system-running: {state} ({:.1}s after QEMU start)",
        con.elapsed()
    );
    if state != "running" {
        let (failed, _) = con.run(
            "systemctl --failed --no-legend --plain",
            Duration::from_secs(60),
        );
        eprintln!("failed units:\n{failed}");
        let unexplained: Vec<&str> = failed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|u| !EXPLAINED_FAILURES.iter().any(|(name, _)| name == u))
            .collect();
        assert!(
            state == "degraded" && unexplained.is_empty(),
            "system state {state:?}; unexplained failed units: {unexplained:?}"
        );
    }

    let (hostname, _) = con.run("hostname", Duration::from_secs(60));
    assert_eq!(hostname, e.hostname);
    for user in &e.users {
        let (id, status) = con.run(&format!("id {user}"), Duration::from_secs(60));
        assert_eq!(status, 0, "id {user}: {id}");
        eprintln!("id {user}: {id}");
    }
    for service in &e.services {
        let (state, _) = con.run(
            &format!("systemctl is-active {service}"),
            Duration::from_secs(60),
        );
        assert_eq!(state, "active", "{service}");
    }
    let (root, _) = con.run("findmnt -n -o UUID,OPTIONS /", Duration::from_secs(60));
    assert!(
        root.starts_with(&e.root_uuid) && root.contains("rw"),
        "root file system: {root}"
    );
    let (analyze, _) = con.run("systemd-analyze", Duration::from_secs(60));
    eprintln!("in the guest: {}", analyze.lines().next().unwrap_or(""));
    con
}

/// Powers the guest off; QEMU exits 0 and the image is as it was.
fn power_off(mut con: Console, image: &Path, sum: &str) {
    con.send("poweroff");
    let code = con.wait(Duration::from_secs(180));
    eprintln!(
        "QEMU exited {:?} {:.1}s after it started",
        code,
        con.elapsed()
    );
    assert_eq!(
        code,
        Some(0),
        "QEMU did not exit cleanly after poweroff; last lines:\n{}",
        con.tail()
    );
    drop(con);
    assert_eq!(
        sha256(image),
        sum,
        "booting changed the image (osbuild boot runs QEMU with -snapshot)"
    );
}

#[test]
fn boot_names_the_package_when_qemu_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("x.qcow2");
    std::fs::write(&image, b"QFI\xfb").unwrap();
    let out = Command::new(OSBUILD)
        .args(["boot"])
        .arg(&image)
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("qemu-system-x86"), "{stderr}");

    let out = Command::new(OSBUILD)
        .args(["boot", "/nonexistent.qcow2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent.qcow2"), "{stderr}");
}
