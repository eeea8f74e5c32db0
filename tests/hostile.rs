//! Hostile inputs against the sandbox (../shared/SECURITY-REVIEW.md): each
//! test aims at a host resource the test owns (a loop device over a scratch
//! file, a file in a temporary directory), checks the exit code and the
//! message, and that the resource is byte-for-byte unchanged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;

/// A loop device over a scratch file: what a host disk looks like to a
/// device node `b 7:N` in a tree.
struct ScratchDisk {
    file: PathBuf,
    device: String,
    minor: u32,
    before: Vec<u8>,
}

impl ScratchDisk {
    fn new(dir: &Path) -> ScratchDisk {
        let file = dir.join("disk.img");
        let pattern: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &pattern).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let minor = device.trim_start_matches("/dev/loop").parse().unwrap();
        ScratchDisk {
            file,
            device,
            minor,
            before: pattern,
        }
    }

    #[track_caller]
    fn assert_unchanged(&self) {
        let through_device = std::fs::read(&self.device).unwrap();
        assert!(
            through_device == self.before,
            "{} was written (first bytes {:?})",
            self.device,
            &through_device[..16]
        );
        sh(&format!("blockdev --flushbufs {}", self.device));
        assert!(
            std::fs::read(&self.file).unwrap() == self.before,
            "the scratch disk changed"
        );
    }
}

impl Drop for ScratchDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// Runs osbuild under a watchdog: a stage that hangs fails the test
/// instead of hanging it.
fn osbuild_within(seconds: u32, args: &[&str]) -> Run {
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(seconds.to_string())
        .arg(OSBUILD)
        .arg("--store")
        .arg(shared_store())
        .arg("--no-cache")
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_ne!(
        run.code, 124,
        "osbuild hung for {seconds} s:\n{}",
        run.stderr
    );
    run
}

fn one_stage(dir: &Path, name: &str, options: serde_json::Value) -> PathBuf {
    write_pipeline(
        dir,
        "p.json",
        json!({"pipeline": [{"name": name, "options": options}]}),
    )
}

/// An archive made by Python's tarfile with `body` (helpers `add_file`,
/// `add_node(name, type, major, minor)`, `add_xattr_file(name, key, value)`).
fn archive(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    sh(&format!(
        r#"python3 - <<'PY'
import io, tarfile
tf = tarfile.open('{path}', 'w', format=tarfile.PAX_FORMAT)
def add_dir(name):
    ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; tf.addfile(ti)
def add_file(name, data=b'x'):
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644; tf.addfile(ti, io.BytesIO(data))
def add_node(name, kind, major, minor):
    ti = tarfile.TarInfo(name); ti.type = kind; ti.devmajor = major; ti.devminor = minor; ti.mode = 0o600; tf.addfile(ti)
def add_xattr_file(name, key, value):
    ti = tarfile.TarInfo(name); ti.size = 1; ti.pax_headers = {{'SCHILY.xattr.' + key: value}}; tf.addfile(ti, io.BytesIO(b'x'))
BLK, CHR, FIFO = tarfile.BLKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE
{body}
tf.close()
PY"#,
        path = path.display()
    ));
    path
}

/// C1: a wasm stage without `device-nodes` can make no device node but
/// the harmless ones.
#[test]
fn a_stage_without_the_capability_makes_no_device_node() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ScratchDisk::new(dir.path());
    let p = one_stage(
        dir.path(),
        "test.escape",
        json!({"attempt": "mknod-block", "marker": disk.minor.to_string()}),
    );
    osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]).fails_with(
        1,
        &format!(
            "/disk: making block device 7:{} needs the `device-nodes` capability, which the stage does not declare",
            disk.minor
        ),
    );
    disk.assert_unchanged();
    let p = one_stage(dir.path(), "test.escape", json!({"attempt": "mknod-mem"}));
    osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]).fails_with(
        1,
        "/mem: making character device 1:1 needs the `device-nodes` capability",
    );
}

/// C1: a node a stage may make (it declares `device-nodes`) is never
/// opened by the host: not for writing, not for reading.
#[test]
fn a_device_node_in_the_tree_is_never_the_hosts_device() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ScratchDisk::new(dir.path());
    for (how, flag) in [("writing", "write"), ("reading", "read")] {
        let p = one_stage(
            dir.path(),
            "test.mknod",
            json!({"path": "/disk", "kind": "block", "major": 7, "minor": disk.minor, flag: true}),
        );
        let run = osbuild_within(120, &["--libdir", test_stages(), p.to_str().unwrap()]);
        run.fails_with(1, "refused to open disk: it is a block device; osbuild never opens device nodes, FIFOs or sockets in a tree");
        assert!(
            run.stderr.contains(&format!("{how} /disk: ")),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("ESCAPED"), "{}", run.stderr);
        disk.assert_unchanged();
    }
}

/// C1, M1: a FIFO where a config stage writes neither hangs the build nor
/// is opened.
#[test]
fn a_fifo_where_a_stage_writes_does_not_hang_the_build() {
    let dir = tempfile::tempdir().unwrap();
    // FIFOs may come in archives (no policy needed): they reach no device.
    let base = archive(
        dir.path(),
        "base.tar",
        "add_dir('etc')\nadd_node('etc/hostname', FIFO, 0, 0)",
    );
    let p = one_stage(
        dir.path(),
        "io.weldr.hostname",
        json!({"hostname": "pwned"}),
    );
    let run = osbuild_within(
        120,
        &["--from", base.to_str().unwrap(), p.to_str().unwrap()],
    );
    run.fails_with(1, "io.weldr.hostname");
    assert!(
        run.stderr
            .contains("refused to open etc/hostname: it is a FIFO"),
        "{}",
        run.stderr
    );
}

/// C1: an archive may not plant a host device where a built-in stage
/// writes (the review's /etc/hostname as `b 7 0`), unless the policy says
/// so, and even then the host never opens it.
#[test]
fn archives_carry_device_nodes_only_when_the_policy_allows() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ScratchDisk::new(dir.path());
    let planted = archive(
        dir.path(),
        "planted.tar",
        &format!(
            "add_dir('etc')\nadd_node('etc/hostname', BLK, 7, {})",
            disk.minor
        ),
    );
    let p = one_stage(
        dir.path(),
        "io.weldr.hostname",
        json!({"hostname": "pwned"}),
    );
    osbuild(&["--from", planted.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        &format!(
            "entry \"etc/hostname\" is a block device (7:{}); archives may carry only null, zero, full, random, urandom, tty, console and ptmx unless the policy allows \"from-device-nodes\": true",
            disk.minor
        ),
    );
    disk.assert_unchanged();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"from-device-nodes": true}"#).unwrap();
    let run = osbuild_within(
        120,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--from",
            planted.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
    );
    run.fails_with(1, "refused to open etc/hostname: it is a block device");
    disk.assert_unchanged();
    // The harmless ones come through without the policy.
    let dev = archive(
        dir.path(),
        "dev.tar",
        "add_dir('etc')\nadd_dir('dev')\nadd_node('dev/null', CHR, 1, 3)\nadd_node('dev/ptmx', CHR, 5, 2)",
    );
    let saved = dir.path().join("saved.tar");
    osbuild(&[
        "--from",
        dev.to_str().unwrap(),
        "--save",
        saved.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .ok();
    let listing = sh(&format!("tar -tvf {}", saved.display()));
    let null = listing
        .lines()
        .find(|l| l.ends_with("./dev/null"))
        .unwrap_or_default();
    assert!(
        null.starts_with("crw-------") && null.contains(" 1,3 "),
        "{listing}"
    );
}

/// L2: trusted.* and foreign security.* attributes come neither from
/// archives nor from stages.
#[test]
fn trusted_xattrs_are_refused_from_archives_and_stages() {
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(dir.path(), "io.weldr.hostname", json!({"hostname": "x"}));
    for key in ["trusted.overlay.opaque", "security.ima", "trusted.evil"] {
        let a = archive(
            dir.path(),
            "x.tar",
            &format!("add_dir('etc')\nadd_xattr_file('etc/motd', '{key}', 'y')"),
        );
        osbuild(&["--from", a.to_str().unwrap(), p.to_str().unwrap()])
            .fails_with(2, &format!("carries the extended attribute {key}"));
    }
    let p = one_stage(
        dir.path(),
        "test.escape",
        json!({"attempt": "set-trusted-xattr"}),
    );
    osbuild(&["--libdir", test_stages(), p.to_str().unwrap()])
        .fails_with(1, "not trusted.overlay.opaque");
}

/// L1: a NUL byte in a path is an error, not a crash.
#[test]
fn a_nul_byte_in_a_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(dir.path(), "test.escape", json!({"attempt": "tree-nul"}));
    let run = osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]);
    run.fails_with(1, "a path with a NUL byte");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// `device-nodes` is shown by audit and refused by a policy that does not
/// name the stage, before anything runs.
#[test]
fn the_device_nodes_capability_is_audited_and_refusable() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let p = one_stage(
        dir.path(),
        "test.mknod",
        json!({"path": "/null", "kind": "char", "major": 1, "minor": 3}),
    );
    let audit = osbuild(&["--libdir", test_stages(), "audit", p.to_str().unwrap()]);
    audit.ok();
    assert!(audit.stdout.contains("device-nodes"), "{}", audit.stdout);
    assert!(
        audit.stdout.contains("may create any device node"),
        "{}",
        audit.stdout
    );
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"device-nodes": []}"#).unwrap();
    let out = dir.path().join("out");
    osbuild(&[
        "--libdir",
        test_stages(),
        "--policy",
        policy.to_str().unwrap(),
        "--output-directory",
        out.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .fails_with(2, "pipeline[0].name: stage test.mknod refused: policy: stage test.mknod: creates device nodes (device-nodes); the policy does not allow it");
    assert!(!marker.exists());
    osbuild(&[
        "--libdir",
        test_stages(),
        "--policy",
        policy.to_str().unwrap(),
        "audit",
        p.to_str().unwrap(),
    ])
    .fails_with(2, "creates device nodes (device-nodes)");
}
