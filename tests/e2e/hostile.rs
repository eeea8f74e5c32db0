//! Hostile inputs against the sandbox (../shared/SECURITY-REVIEW.md): each
//! test aims at a host resource the test owns (a loop device over a scratch
//! file, a file in a temporary directory), checks the exit code and the
//! message, and that the resource is byte-for-byte unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
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
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
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
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
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
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
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
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
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

/// Review: a `--libdir` stage's metadata that is `/dev/zero` (or a FIFO)
/// is refused, not read until the memory is full.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_libdir_stage_file_that_never_ends_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(lib.join("test.z"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/dev/zero", lib.join("test.z.json")).unwrap();
    sh(&format!("mkfifo {}", lib.join("test.f.wasm").display()));
    let p = one_stage(dir.path(), "test.z", json!({}));
    let run = osbuild_within(
        30,
        &[
            "--libdir",
            lib.to_str().unwrap(),
            "audit",
            p.to_str().unwrap(),
        ],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("test.z.json: not a regular file"),
        "{}",
        run.stderr
    );
}

/// Review F5: a tree unpacked under a policy that allowed device nodes is
/// not reused from the store under one that does not.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_cached_archive_tree_is_not_reused_under_a_stricter_policy() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ScratchDisk::new(dir.path());
    let planted = archive(
        dir.path(),
        "planted.tar",
        &format!("add_dir('etc')\nadd_node('disk', BLK, 7, {})", disk.minor),
    );
    let p = one_stage(dir.path(), "io.weldr.hostname", json!({"hostname": "x"}));
    let store = dir.path().join("store");
    let lax = dir.path().join("lax.json");
    std::fs::write(&lax, r#"{"from-device-nodes": true}"#).unwrap();
    let strict = dir.path().join("strict.json");
    std::fs::write(&strict, "{}").unwrap();
    let build = |policy: &Path| {
        osbuild(&[
            "--store",
            store.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--from",
            planted.to_str().unwrap(),
            "--save",
            dir.path().join("saved.tar").to_str().unwrap(),
            p.to_str().unwrap(),
        ])
    };
    build(&lax).ok();
    build(&strict).fails_with(2, "entry \"disk\" is a block device");
    disk.assert_unchanged();
}

/// L2: trusted.* and foreign security.* attributes come neither from
/// archives nor from stages.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn trusted_xattrs_are_refused_from_archives_and_stages() {
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(dir.path(), "io.weldr.hostname", json!({"hostname": "x"}));
    for key in [
        "trusted.overlay.opaque",
        "security.ima",
        "trusted.evil",
        "user.overlay.opaque",
        "user.osbuild.device",
    ] {
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
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
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
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
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
    .fails_with(2, "pipeline[0].name: stage test.mknod refused: policy: creates device nodes (device-nodes); the policy does not allow it");
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

/// A native stage in a `--libdir` of its own: a shell script and its
/// metadata (`capabilities`, and an options schema with `properties`).
fn shell_stage(
    dir: &Path,
    name: &str,
    capabilities: serde_json::Value,
    properties: serde_json::Value,
    script: &str,
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let libdir = dir.join(format!("libdir-{name}"));
    std::fs::create_dir_all(&libdir).unwrap();
    let exe = libdir.join(name);
    std::fs::write(&exe, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let meta = json!({
        "name": name, "kind": "native", "summary": "a hostile test stage",
        "capabilities": capabilities,
        "schema": {"type": "object", "additionalProperties": false, "properties": properties}
    });
    std::fs::write(
        libdir.join(format!("{name}.json")),
        serde_json::to_string(&meta).unwrap(),
    )
    .unwrap();
    libdir
}

/// C2: `devices` gives the device's nodes and nothing else: no
/// CAP_SYS_ADMIN, no CAP_MKNOD, no remounting the host root, none of the
/// host's loop devices (review of issue 12: a copy of every /dev/loopN let
/// a stage write a loop device the host was using).
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_stage_with_devices_gets_the_nodes_and_no_capability() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Path::new("/etc/osbuild-hostile-c2-marker");
    // A loop device the host is using, over a file this test owns: what a
    // stage holding a copy of /dev/loopN could read and write.
    let scratch = dir.path().join("host-disk.img");
    let mut bytes = b"the host's loop device".to_vec();
    bytes.resize(1 << 20, 0x5a);
    std::fs::write(&scratch, &bytes).unwrap();
    let attached = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&scratch)
        .output()
        .unwrap();
    assert!(attached.status.success(), "{attached:?}");
    let host_loop = String::from_utf8(attached.stdout)
        .unwrap()
        .trim()
        .to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(host_loop.clone());

    let libdir = shell_stage(
        dir.path(),
        "test.devices",
        json!({"tree": "read", "devices": ["fuse"]}),
        json!({}),
        &format!(
            r#"cap=$(awk '/^CapEff/ {{print $2}}' /proc/self/status)
[ $((0x$cap & 0x200000)) -eq 0 ] && echo "no CAP_SYS_ADMIN"
[ $((0x$cap & 0x8000000)) -eq 0 ] && echo "no CAP_MKNOD"
if exec 3<>/dev/fuse; then echo "opened /dev/fuse"; fi
ls /dev/loop-control /dev/loop[0-9]* >/dev/null 2>&1 || echo "no loop device"
if mknod /tmp/l b 7 {minor} 2>/dev/null; then echo PWNED > /tmp/l; echo "MADE a loop node"; fi
if mount -o remount,rw / 2>/dev/null; then
  echo PWNED > /etc/osbuild-hostile-c2-marker
  echo "REMOUNTED the host root"
else
  echo "remount refused"
fi
"#,
            minor = host_loop.trim_start_matches("/dev/loop")
        ),
    );
    let p = one_stage(dir.path(), "test.devices", json!({}));
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"privileged": []}"#).unwrap();
    let run = osbuild_within(
        120,
        &[
            "--libdir",
            libdir.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
    );
    run.ok();
    for want in [
        "no CAP_SYS_ADMIN",
        "no CAP_MKNOD",
        "opened /dev/fuse",
        "no loop device",
        "remount refused",
    ] {
        assert!(run.stderr.contains(want), "{want}:\n{}", run.stderr);
    }
    assert!(!run.stderr.contains("MADE"), "{}", run.stderr);
    assert!(!marker.exists(), "the stage wrote the host's /etc");

    let audit = osbuild(&[
        "--libdir",
        libdir.to_str().unwrap(),
        "audit",
        p.to_str().unwrap(),
    ]);
    audit.ok();
    for want in [
        "/dev/fuse made again for the stage and owned by its root (no capability with it",
        "no CAP_SYS_ADMIN, CAP_MKNOD",
    ] {
        assert!(audit.stdout.contains(want), "{want}:\n{}", audit.stdout);
    }

    // Loop devices are the host's: a stage in a user namespace is refused
    // them before anything runs, and the host's stays as it was.
    let loop_libdir = shell_stage(
        dir.path(),
        "test.loop",
        json!({"tree": "read", "devices": ["loop"]}),
        json!({}),
        "for d in /dev/loop[0-9]*; do echo PWNED > \"$d\"; done\necho RAN\n",
    );
    let lp = write_pipeline(
        dir.path(),
        "loop.json",
        json!({"pipeline": [{"name": "test.loop"}]}),
    );
    let refused = "stage test.loop refused: needs devices (loop), which a stage in a user namespace cannot have: loop devices are shared by the whole host";
    let run = osbuild(&[
        "--libdir",
        loop_libdir.to_str().unwrap(),
        lp.to_str().unwrap(),
    ]);
    run.fails_with(2, refused);
    assert!(!run.stderr.contains("RAN"), "{}", run.stderr);
    let audit = osbuild(&[
        "--libdir",
        loop_libdir.to_str().unwrap(),
        "audit",
        lp.to_str().unwrap(),
    ]);
    for want in [
        "loop devices: refused in a user namespace (they are shared by the whole host)",
        "needs devices (loop), which a stage in a user namespace cannot have",
    ] {
        assert!(audit.stdout.contains(want), "{want}:\n{}", audit.stdout);
    }
    assert!(
        std::fs::read(&scratch).unwrap() == bytes,
        "the host's loop device was written"
    );

    // The policy decides on devices by themselves.
    std::fs::write(&policy, r#"{"devices": []}"#).unwrap();
    osbuild(&[
        "--libdir",
        libdir.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .fails_with(
        2,
        "pipeline[0].name: stage test.devices refused: policy: needs devices (fuse); the policy does not allow it",
    );
}

/// C2: device names come from a closed list.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn an_unknown_device_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let libdir = shell_stage(
        dir.path(),
        "test.sda",
        json!({"devices": ["sda"]}),
        json!({}),
        "exit 0\n",
    );
    let p = one_stage(dir.path(), "test.sda", json!({}));
    osbuild(&["--libdir", libdir.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        "invalid metadata: unknown variant `sda`, expected one of `loop`, `fuse`, `kvm`",
    );
}

/// The review's C3 repository entry: a key "file" that is /dev, and a
/// repository outside anything the operator allowed.
fn dnf_pipeline(dir: &Path, baseurl: &str, gpgkey: &str) -> PathBuf {
    one_stage(
        dir,
        "io.weldr.dnf",
        json!({"packages": ["x"], "repos": [{"baseurl": baseurl, "gpgkey": gpgkey}], "releasever": "40"}),
    )
}

/// C3: no host path is bound unless the operator allows its directory,
/// and /, /dev, /proc, /sys, /run and the store never are.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn host_paths_are_bound_only_from_allowed_directories() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let url = format!("file://{}", repo.display());
    let p = dnf_pipeline(dir.path(), &url, "file:///dev");
    for extra in [&[][..], &["--allow-host-path", "/"][..]] {
        let mut args = extra.to_vec();
        args.extend(["audit", p.to_str().unwrap()]);
        let run = osbuild(&args);
        run.fails_with(
            2,
            "pipeline[0].options.repos[0].gpgkey: stage io.weldr.dnf: host path /dev: resolves to /dev, which osbuild never binds into a stage",
        );
        if extra.is_empty() {
            run.fails_with(
                2,
                &format!(
                    "pipeline[0].options.repos[0].baseurl: stage io.weldr.dnf: host path {}: is not in a directory the operator allows; allow it with --allow-host-path DIR",
                    repo.display()
                ),
            );
        }
    }
    // The store, by a symlink inside an allowed directory.
    std::os::unix::fs::symlink(shared_store(), dir.path().join("store-link")).unwrap();
    let p = dnf_pipeline(
        dir.path(),
        &url,
        &format!("file://{}/store-link/objects", dir.path().display()),
    );
    osbuild(&[
        "--allow-host-path",
        dir.path().to_str().unwrap(),
        "--allow-host-path",
        "/",
        "audit",
        p.to_str().unwrap(),
    ])
    .fails_with(2, "which osbuild never binds into a stage");
    // A colon would split nspawn's --bind argument.
    let colon = dir.path().join("a:b");
    std::fs::create_dir(&colon).unwrap();
    let p = dnf_pipeline(
        dir.path(),
        &format!("file://{}", colon.display()),
        "https://k/k",
    );
    osbuild(&[
        "--allow-host-path",
        dir.path().to_str().unwrap(),
        "audit",
        p.to_str().unwrap(),
    ])
    .fails_with(2, "holds a control character, ':' or ','");
    // The policy allows as the command line does.
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::to_string(&json!({"host-paths": [dir.path()]})).unwrap(),
    )
    .unwrap();
    let p = dnf_pipeline(dir.path(), &url, "https://k/k");
    let audit = osbuild(&[
        "--policy",
        policy.to_str().unwrap(),
        "audit",
        p.to_str().unwrap(),
    ]);
    audit.ok();
    let real = std::fs::canonicalize(&repo).unwrap();
    assert!(
        audit.stdout.contains(&format!(
            "host paths bound read-only, nodev, nosuid, noexec: {}",
            real.display()
        )),
        "{}",
        audit.stdout
    );
}

/// C3: under an allowed directory, a device node, a setuid program and a
/// socket stay inert: the bind is read-only, nodev, nosuid, noexec.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn an_allowed_host_path_is_bound_inert() {
    let dir = tempfile::tempdir().unwrap();
    let disk = ScratchDisk::new(dir.path());
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    sh(&format!(
        "mknod {0}/disk b 7 {1} && chmod 666 {0}/disk && cp /bin/sh {0}/suid-sh && chmod 4755 {0}/suid-sh",
        shared.display(),
        disk.minor
    ));
    let libdir = shell_stage(
        dir.path(),
        "test.host-path",
        json!({"tree": "read", "host-paths": ["path"]}),
        json!({"path": {"type": "string"}}),
        r#"dir=$(sed -n 's/.*"path":"\([^"]*\)".*/\1/p')
awk -v d="$dir" '$5 == d {print "mount options: " $6}' /proc/self/mountinfo
if printf PWNED | dd of="$dir/disk" conv=notrunc 2>/dev/null; then echo "WROTE the device"; else echo "device write refused"; fi
if "$dir/suid-sh" -c true 2>/dev/null; then echo "EXECUTED from the host path"; else echo "exec refused"; fi
if touch "$dir/new" 2>/dev/null; then echo "CREATED a file"; else echo "create refused"; fi
"#,
    );
    let p = one_stage(
        dir.path(),
        "test.host-path",
        json!({"path": shared.to_str().unwrap()}),
    );
    let run = osbuild_within(
        120,
        &[
            "--libdir",
            libdir.to_str().unwrap(),
            "--allow-host-path",
            shared.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
    );
    run.ok();
    let options = run
        .stderr
        .lines()
        .find_map(|l| l.split_once("mount options: ").map(|(_, o)| o.to_string()))
        .unwrap_or_else(|| panic!("no mount of the host path:\n{}", run.stderr));
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            options.split(',').any(|o| o == flag),
            "{flag} missing from {options}"
        );
    }
    for want in ["device write refused", "exec refused", "create refused"] {
        assert!(run.stderr.contains(want), "{want}:\n{}", run.stderr);
    }
    disk.assert_unchanged();
    assert!(!shared.join("new").exists());
}

/// H4: a newline in a mirror (a second sources line, `[trusted=yes]`) or
/// in any other option of a native stage is refused before anything runs.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_newline_in_a_native_stages_option_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(
        dir.path(),
        "io.weldr.mmdebstrap",
        json!({"suite": "bookworm", "mirrors": ["http://deb.debian.org/debian\ndeb [trusted=yes] http://127.0.0.1:1/ bookworm main"]}),
    );
    let run = osbuild(&["--inspect", p.to_str().unwrap()]);
    run.fails_with(
        2,
        "pipeline[0].options.mirrors[0]: stage io.weldr.mmdebstrap: holds the control character U+000A",
    );
    // And a space, which would make the rest of the value words of the line.
    let p = one_stage(
        dir.path(),
        "io.weldr.mmdebstrap",
        json!({"suite": "bookworm", "mirrors": ["http://deb.debian.org/debian [trusted=yes]"]}),
    );
    osbuild(&["--inspect", p.to_str().unwrap()]).fails_with(2, "pipeline[0].options.mirrors[0]");
    // A keyring outside the system's keyring directories.
    let p = one_stage(
        dir.path(),
        "io.weldr.mmdebstrap",
        json!({"suite": "bookworm", "keyring": "/etc/shadow"}),
    );
    // (In its user namespace the stage has no /etc/shadow to resolve.)
    osbuild_within(120, &[p.to_str().unwrap()]).fails_with(1, "options.keyring: \"/etc/shadow\"");
    // dnf: a package that would be an option.
    let p = one_stage(
        dir.path(),
        "io.weldr.dnf",
        json!({"packages": ["--setopt=reposdir=/etc/yum.repos.d"], "repos": [{"baseurl": "https://example.org/r"}], "releasever": "40"}),
    );
    osbuild(&["--inspect", p.to_str().unwrap()]).fails_with(2, "pipeline[0].options.packages[0]");
    // dnf: rpm macros in the dbpath (it becomes `%_dbpath PATH`), which
    // would run shell commands as the stage's root (review F4).
    let p = one_stage(
        dir.path(),
        "io.weldr.dnf",
        json!({"packages": ["bash"], "repos": [{"baseurl": "https://example.org/r"}], "releasever": "40",
               "dbpath": "/var/lib/rpm%(id>&2)%{lua:os.execute('id')}"}),
    );
    osbuild(&["--inspect", p.to_str().unwrap()]).fails_with(2, "pipeline[0].options.dbpath");
}

/// M1: a stage asleep in a host call is stopped by --timeout (its sleeps
/// are on its virtual clock) and by Ctrl-C.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_sleeping_stage_is_stopped_by_the_timeout_and_by_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(dir.path(), "test.loop", json!({"mode": "sleep"}));
    osbuild_within(
        60,
        &[
            "--libdir",
            test_stages(),
            "--timeout",
            "2",
            p.to_str().unwrap(),
        ],
    )
    .fails_with(
        1,
        "stage 1 (test.loop, pipeline[0]) failed: stopped after 2s: the stage exceeded its time limit",
    );
    let mut child = Command::new(OSBUILD)
        .args(["--store"])
        .arg(shared_store())
        .args(["--no-cache", "--libdir", test_stages(), p.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed().as_secs() > 30 {
            let _ = child.kill();
            panic!("osbuild ignored SIGINT for 30 s while the stage slept");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
}

/// M2: a stage that writes without newlines costs osbuild a bounded
/// amount of memory, not all it writes.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn output_without_newlines_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(dir.path(), "test.loop", json!({"mode": "flood"}));
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib %M", "--"])
        .arg(OSBUILD)
        .arg("--store")
        .arg(shared_store())
        .args(["--no-cache", "--libdir", test_stages(), "--timeout", "5"])
        .arg(p.to_str().unwrap())
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("peak-rss-kib "))
        .unwrap();
    let kib: u64 = last["peak-rss-kib ".len()..].trim().parse().unwrap();
    assert!(kib < 256 * 1024, "peak RSS {kib} KiB");
    assert!(
        stderr.contains("stopped after 5s: the stage exceeded its time limit"),
        "{}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
    // The last lines shown are split at the cap.
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= 16 * 1024 + 64, "a line of {longest} bytes");
}

/// M3: a stage's metadata cannot take more time than --timeout gives.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn metadata_cannot_raise_the_limits_beyond_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let libdir = shell_stage(
        dir.path(),
        "test.greedy",
        json!({"tree": "read", "timeout-secs": 1000000}),
        json!({}),
        "sleep 60\necho 'outlived the timeout'\n",
    );
    let p = one_stage(dir.path(), "test.greedy", json!({}));
    osbuild_within(
        45,
        &[
            "--libdir",
            libdir.to_str().unwrap(),
            "--timeout",
            "3",
            p.to_str().unwrap(),
        ],
    )
    .fails_with(1, "stopped after 3s");
}

/// H2: the store is its owner's alone.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn the_store_is_private_and_refused_when_others_can_write_it() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(dir.path(), "io.weldr.hostname", json!({"hostname": "x"}));
    let store = dir.path().join("new-store");
    osbuild(&["--store", store.to_str().unwrap(), p.to_str().unwrap()]).ok();
    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o777, 0o700);
    // An old store others could read is made private.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    osbuild(&["--store", store.to_str().unwrap(), p.to_str().unwrap()]).ok();
    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o777, 0o700);
    // One others can write is refused, with the fix.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    osbuild(&["--store", store.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        &format!(
            "--store: {}: the store is writable by every user (mode 777), who could replace what osbuild runs; chmod 700",
            store.display()
        ),
    );
    // One that belongs to another user is refused.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    sh(&format!("chown 65534 {}", store.display()));
    osbuild(&["--store", store.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        "the store belongs to user 65534, not to the user running osbuild (0)",
    );
    // One reached through a directory another user owns, who could swap
    // it for a link to a store of theirs between two uses (review).
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    sh(&format!("chown 65534 {}", theirs.display()));
    let inside = theirs.join("store");
    osbuild(&["--store", inside.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        "which belongs to user 65534; another user could swap the store for one of theirs",
    );
}

/// Review of issue 12: a store path through a symbolic link another user
/// planted (in /tmp, or where XDG_CACHE_HOME points) aimed at a directory
/// of osbuild's user: that directory was made 0700 and old entries of its
/// `tmp/` were removed. Nor may a directory that is not a store be taken
/// for one.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_store_path_through_another_users_link_or_at_a_directory_that_is_no_store_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let p = one_stage(dir.path(), "io.weldr.hostname", json!({"hostname": "x"}));
    // The victim: a directory of root's with an old file in tmp/.
    let victim = dir.path().join("documents");
    std::fs::create_dir_all(victim.join("tmp")).unwrap();
    std::fs::write(victim.join("tmp/notes.txt"), b"keep me\n").unwrap();
    sh(&format!(
        "touch -d '2020-01-01' {}/tmp/notes.txt {}/tmp",
        victim.display(),
        victim.display()
    ));
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let unchanged = |victim: &Path| {
        assert_eq!(std::fs::metadata(victim).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(
            std::fs::read(victim.join("tmp/notes.txt")).unwrap(),
            b"keep me\n"
        );
        let mut names: Vec<_> = std::fs::read_dir(victim)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["tmp"], "osbuild made files in {}", victim.display());
    };

    // In a sticky directory anyone can write, a link of user 65534's.
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = sticky.join("osbuild");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    sh(&format!("chown -h 65534 {}", link.display()));
    let run = osbuild(&["--store", link.to_str().unwrap(), p.to_str().unwrap()]);
    run.fails_with(
        2,
        &format!(
            "--store: {}: the store's path goes through {}, a symbolic link that belongs to user 65534, who could point it anywhere",
            link.display(),
            link.display()
        ),
    );
    unchanged(&victim);
    // Through a second link of root's, and from the default store's
    // variable, the same.
    let ours = dir.path().join("ours");
    std::os::unix::fs::symlink(&sticky, &ours).unwrap();
    osbuild(&[
        "--store",
        ours.join("osbuild").to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .fails_with(2, "a symbolic link that belongs to user 65534");
    let cached = Command::new(OSBUILD)
        .env("XDG_CACHE_HOME", &sticky)
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(cached.status.code(), Some(2), "{cached:?}");
    assert!(
        String::from_utf8_lossy(&cached.stderr)
            .contains("a symbolic link that belongs to user 65534"),
        "{cached:?}"
    );
    unchanged(&victim);

    // Given directly, a directory that is not a store (not empty, no lock).
    osbuild(&["--store", victim.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        &format!(
            "--store: {}: this directory is not an osbuild store (it is not empty and has no lock file)",
            victim.display()
        ),
    );
    unchanged(&victim);

    // A link of root's own to a new store is followed, as before.
    let store_link = dir.path().join("store-link");
    std::os::unix::fs::symlink(dir.path().join("real-store"), &store_link).unwrap();
    std::fs::create_dir(dir.path().join("real-store")).unwrap();
    osbuild(&["--store", store_link.to_str().unwrap(), p.to_str().unwrap()]).ok();
    assert!(dir.path().join("real-store/lock").is_file());
}

/// H1: what a stage leaves in its output directory must be a regular file
/// it wrote: a symlink to a host file is refused, the host file untouched.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn outputs_that_are_not_plain_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"host secret\n").unwrap();
    let out = dir.path().join("out");
    for (what, script, message) in [
        (
            "symlink",
            format!("ln -s {} /run/osbuild/output/shadow\n", secret.display()),
            "output shadow: is a symbolic link; a stage may leave only regular files in its output directory",
        ),
        (
            "directory",
            "mkdir /run/osbuild/output/dir\n".to_string(),
            "output dir: is a directory",
        ),
        (
            "fifo",
            "mkfifo /run/osbuild/output/fifo\n".to_string(),
            "output fifo: is a FIFO",
        ),
    ] {
        let name = format!("test.output-{what}");
        let libdir = shell_stage(
            dir.path(),
            &name,
            json!({"tree": "read", "output": true}),
            json!({}),
            &script,
        );
        let p = one_stage(dir.path(), &name, json!({}));
        osbuild_within(
            60,
            &[
                "--libdir",
                libdir.to_str().unwrap(),
                "--output-directory",
                out.to_str().unwrap(),
                p.to_str().unwrap(),
            ],
        )
        .fails_with(
            1,
            &format!("stage 1 ({name}, pipeline[0]) failed: {message}"),
        );
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"host secret\n");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);

    // A setuid, world-writable file is placed without its setuid bit or
    // write for others (it is a hard link into the store), owned by
    // osbuild's user.
    let libdir = shell_stage(
        dir.path(),
        "test.output-suid",
        json!({"tree": "read", "output": true}),
        json!({}),
        "cp /bin/sh /run/osbuild/output/sh && chown 65534:65534 /run/osbuild/output/sh && chmod 6777 /run/osbuild/output/sh\n",
    );
    let p = one_stage(dir.path(), "test.output-suid", json!({}));
    osbuild_within(
        60,
        &[
            "--libdir",
            libdir.to_str().unwrap(),
            "--output-directory",
            out.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
    )
    .ok();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(out.join("sh")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!((m.uid(), m.gid()), (0, 0));
}

/// M8: `osbuild boot` refuses an image whose header names a host file.
#[test]
fn boot_refuses_an_image_with_a_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.raw");
    std::fs::write(&secret, vec![7u8; 1024 * 1024]).unwrap();
    let image = dir.path().join("evil.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 -F raw -b {} {} 1M",
        secret.display(),
        image.display()
    ));
    let run = osbuild(&["boot", image.to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("its header names a backing file"),
        "{}",
        run.stderr
    );
}

/// M6: a `--libdir` stage cannot take a built-in's name, and with it the
/// built-in's allowances, unless the policy pins its code.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_libdir_stage_does_not_inherit_a_builtins_allowances() {
    let dir = tempfile::tempdir().unwrap();
    let libdir = shell_stage(
        dir.path(),
        "io.weldr.mmdebstrap",
        json!({"tree": "read-write", "privileged": true}),
        json!({"suite": {"type": "string"}}),
        "echo 'PWNED: privileged as the built-in'\n",
    );
    let p = one_stage(
        dir.path(),
        "io.weldr.mmdebstrap",
        json!({"suite": "bookworm"}),
    );
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"privileged": ["io.weldr.mmdebstrap"], "network": ["io.weldr.mmdebstrap"]}"#,
    )
    .unwrap();
    let run = osbuild(&[
        "--libdir",
        libdir.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    run.fails_with(
        2,
        &format!(
            "pipeline[0].name: stage io.weldr.mmdebstrap refused: policy: is loaded from {}/io.weldr.mmdebstrap, in place of the built-in stage of that name",
            libdir.display()
        ),
    );
    assert!(!run.stderr.contains("PWNED"), "{}", run.stderr);
}

/// L6: an archive that unpacks to more than --max-tree-size stops, and
/// leaves nothing in the store.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn an_archive_larger_than_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = archive(
        dir.path(),
        "bomb.tar",
        "add_dir('etc')\nadd_file('etc/a', b'\\0' * (600 * 1024))\nadd_file('etc/b', b'\\0' * (600 * 1024))",
    );
    sh(&format!(
        "zstd -q -19 {0} -o {0}.zst && gzip -9 {0}",
        bomb.display()
    ));
    let p = one_stage(dir.path(), "io.weldr.hostname", json!({"hostname": "x"}));
    let store = dir.path().join("store");
    for bomb in ["bomb.tar.gz", "bomb.tar.zst"] {
        osbuild(&[
            "--store",
            store.to_str().unwrap(),
            "--max-tree-size",
            "1M",
            "--from",
            dir.path().join(bomb).to_str().unwrap(),
            p.to_str().unwrap(),
        ])
        .fails_with(
            2,
            "entry \"etc/b\" would make the tree larger than 1048576 bytes (raise it with --max-tree-size); nothing was built",
        );
    }
    assert_eq!(std::fs::read_dir(store.join("objects")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
}

/// Review F3: a GNU long name (or PAX record) claiming gigabytes is not
/// read into memory: the tar reader's headers are capped at 1 MiB.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_huge_tar_header_extension_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("longname.tar.gz");
    // One 'L' header claiming 1 GiB, then zeros (1 MB gzipped).
    sh(&format!(
        r#"python3 - <<'PY' | gzip -1 > {}
import sys
size = 1 << 30
h = bytearray(512)
h[0:13] = b'././@LongLink'
h[100:108] = b'0000644\0'
h[108:116] = b'0000000\0'
h[116:124] = b'0000000\0'
h[124:136] = b'%011o\0' % size
h[136:148] = b'00000000000\0'
h[156:157] = b'L'
h[257:263] = b'ustar '
h[263:265] = b' \0'
h[148:156] = b' ' * 8
h[148:156] = b'%06o\0 ' % sum(h)
out = sys.stdout.buffer
out.write(bytes(h))
chunk = bytes(1 << 20)
for _ in range(size >> 20):
    out.write(chunk)
PY"#,
        bomb.display()
    ));
    let p = one_stage(dir.path(), "io.weldr.hostname", json!({"hostname": "x"}));
    let run = osbuild_within(
        120,
        &["--from", bomb.to_str().unwrap(), p.to_str().unwrap()],
    );
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("an entry's headers (a GNU long name or PAX record) are over 1024 KiB"),
        "{}",
        run.stderr
    );
}

/// H2: a compiled component in the store that osbuild did not write (here:
/// another stage's, swapped in) is not run; the stage is compiled again.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_swapped_compiled_component_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let components = store.join("components");
    let cwasm = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "cwasm"));
        v.sort();
        v
    };
    let hostname = one_stage(
        dir.path(),
        "io.weldr.hostname",
        json!({"hostname": "genuine"}),
    );
    let s = store.to_str().unwrap();
    osbuild(&["--store", s, "--no-cache", hostname.to_str().unwrap()]).ok();
    let first = cwasm(&components);
    assert_eq!(first.len(), 1, "{first:?}");
    let files = write_pipeline(
        dir.path(),
        "files.json",
        json!({"pipeline": [{"name": "io.weldr.files", "options": {"mkdir": [{"path": "/srv", "mode": "0755"}]}}]}),
    );
    osbuild(&["--store", s, "--no-cache", files.to_str().unwrap()]).ok();
    let other = cwasm(&components)
        .into_iter()
        .find(|p| *p != first[0])
        .unwrap();
    std::fs::copy(&other, &first[0]).unwrap();
    let saved = dir.path().join("t.tar");
    let run = osbuild(&[
        "--store",
        s,
        "--no-cache",
        "--save",
        saved.to_str().unwrap(),
        hostname.to_str().unwrap(),
    ]);
    run.ok();
    assert!(
        run.stderr.contains(
            "was not written by this store's osbuild (or changed since); compiling the stage again"
        ),
        "{}",
        run.stderr
    );
    let tree = dir.path().join("tree");
    extract(&saved, &tree);
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/hostname")).unwrap(),
        "genuine\n"
    );
}

/// H1: a symlink planted in the output directory under an output's name
/// (here to a file the test owns; in the review, into the store) is
/// replaced, never written through.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_planted_symlink_in_the_output_directory_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep me\n").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("image")).unwrap();
    let libdir = shell_stage(
        dir.path(),
        "test.output-image",
        json!({"tree": "read", "output": true}),
        json!({}),
        "echo image > /run/osbuild/output/image\n",
    );
    let p = one_stage(dir.path(), "test.output-image", json!({}));
    osbuild_within(
        60,
        &[
            "--libdir",
            libdir.to_str().unwrap(),
            "--output-directory",
            out.to_str().unwrap(),
            p.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me\n");
    let placed = std::fs::symlink_metadata(out.join("image")).unwrap();
    assert!(placed.file_type().is_file());
    assert_eq!(std::fs::read(out.join("image")).unwrap(), b"image\n");
}

/// L9: a stage's id covers what the host paths it reads hold: a changed
/// repository is built from, not answered from the cache.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_changed_host_path_is_not_answered_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("repo");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("package"), b"v1\n").unwrap();
    let libdir = shell_stage(
        dir.path(),
        "test.reads-host-path",
        json!({"tree": "read-write", "host-paths": ["path"]}),
        json!({"path": {"type": "string"}}),
        r#"dir=$(sed -n 's/.*"path":"\([^"]*\)".*/\1/p')
cp "$dir/package" /run/osbuild/tree/package
"#,
    );
    let p = one_stage(
        dir.path(),
        "test.reads-host-path",
        json!({"path": shared.to_str().unwrap()}),
    );
    let store = dir.path().join("store");
    let saved = dir.path().join("t.tar");
    let build = || {
        let run = Command::new(OSBUILD)
            .args(["--store", store.to_str().unwrap()])
            .args(["--libdir", libdir.to_str().unwrap()])
            .args(["--allow-host-path", shared.to_str().unwrap()])
            .args(["--save", saved.to_str().unwrap(), "--json"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let tree = dir.path().join("tree");
        let _ = std::fs::remove_dir_all(&tree);
        extract(&saved, &tree);
        (
            result["stages"][0]["cached"].as_bool().unwrap(),
            std::fs::read_to_string(tree.join("package")).unwrap(),
        )
    };
    assert_eq!(build(), (false, "v1\n".to_string()));
    assert_eq!(build(), (true, "v1\n".to_string()));
    std::fs::write(shared.join("package"), b"v2\n").unwrap();
    assert_eq!(build(), (false, "v2\n".to_string()));
    // Rewritten in place, same size, its old mtime put back: the ctime
    // still tells (review).
    sh(&format!(
        "f={}; t=$(stat -c %y $f); printf 'v3\\n' > $f; touch -d \"$t\" $f",
        shared.join("package").display()
    ));
    assert_eq!(build(), (false, "v3\n".to_string()));
}

/// Issue 12 (H3, M9): a native stage, even a `privileged` one, runs as an
/// unprivileged range of host ids in a user namespace of its own, on a
/// root that holds none of the host's secrets, the store or other trees.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_native_stage_holds_no_host_privilege_and_sees_no_host_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store();
    let script = format!(
        r#"echo "uid_map: $(awk '{{print $1, $2, $3}}' /proc/self/uid_map)"
cat /etc/shadow >/dev/null 2>&1 && echo READ-SHADOW
[ -n "$(ls -A /root 2>/dev/null)" ] && echo LISTED-ROOT
ls {store} >/dev/null 2>&1 && echo SAW-STORE
ls {test_dir} >/dev/null 2>&1 && echo SAW-TEST-DIR
mount -o remount,rw / 2>/dev/null && echo REMOUNTED-ROOT
mount -o remount,rw /usr 2>/dev/null && echo REMOUNTED-USR
touch /usr/osbuild-marker 2>/dev/null && echo WROTE-USR
sleep 4242 || true
echo probed
"#,
        store = store.display(),
        test_dir = dir.path().display(),
    );
    let libdir = shell_stage(
        dir.path(),
        "test.identity",
        json!({"tree": "read-write", "privileged": true}),
        json!({}),
        &script,
    );
    let p = one_stage(dir.path(), "test.identity", json!({}));
    let root_line = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap()
            .to_string()
    };
    let before = root_line();
    let child = Command::new(OSBUILD)
        .args(["--store", store.to_str().unwrap(), "--no-cache"])
        .args(["--libdir", libdir.to_str().unwrap(), p.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The stage's sleep, seen from the host.
    let mut pid = None;
    for _ in 0..600 {
        let out = Command::new("pgrep")
            .args(["-f", "^sleep 4242$"])
            .output()
            .unwrap();
        if let Some(line) = String::from_utf8_lossy(&out.stdout).lines().next() {
            pid = Some(line.trim().to_string());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = pid.expect("the stage's sleep never showed up");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let host_uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let their_ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    let our_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    sh(&format!("kill {pid}"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("probed"), "{text}");
    assert!(
        host_uid >= 0x6000_0000,
        "the stage is uid {host_uid} on the host"
    );
    assert_ne!(
        their_ns, our_ns,
        "the stage shares the host's user namespace"
    );
    assert!(
        text.contains(&format!("uid_map: 0 {host_uid} 65536")),
        "{text}"
    );
    for leak in [
        "READ-SHADOW",
        "LISTED-ROOT",
        "SAW-STORE",
        "SAW-TEST-DIR",
        "REMOUNTED-ROOT",
        "REMOUNTED-USR",
        "WROTE-USR",
    ] {
        assert!(!text.contains(leak), "{leak}:\n{text}");
    }
    assert_eq!(root_line(), before, "the host's root mount changed");
    assert!(!Path::new("/usr/osbuild-marker").exists());
}

/// Issue 12: a `network` native stage has a network of its own: it reaches
/// the Debian mirror, but not a listener on the host's 127.0.0.1, sees no
/// host interface, and cannot open a packet socket.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_network_stage_reaches_the_mirror_and_nothing_of_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    let script = format!(
        r#"python3 - <<'PY'
import socket, os
for host in ('127.0.0.1', '10.0.2.2'):
    try:
        socket.create_connection((host, {port}), timeout=3)
        print('REACHED-HOST-LOOPBACK', host)
    except OSError as e:
        print('no host loopback via', host, e)
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    print('OPENED-PACKET-SOCKET')
except OSError as e:
    print('no packet socket:', e)
print('interfaces:', ' '.join(sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else [n for _, n in socket.if_nameindex()]))
s = socket.create_connection(('deb.debian.org', 80), timeout=20)
s.sendall(b'HEAD /debian/dists/bookworm/Release HTTP/1.1\r\nHost: deb.debian.org\r\nConnection: close\r\n\r\n')
print('mirror says', s.recv(12))
PY
"#
    );
    let libdir = shell_stage(
        dir.path(),
        "test.net-probe",
        json!({"tree": "read", "network": true}),
        json!({}),
        &script,
    );
    let p = one_stage(dir.path(), "test.net-probe", json!({}));
    let run = osbuild_within(
        120,
        &["--libdir", libdir.to_str().unwrap(), p.to_str().unwrap()],
    );
    let text = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{text}");
    assert!(text.contains("mirror says b'HTTP/1.1"), "{text}");
    assert!(!text.contains("REACHED-HOST-LOOPBACK"), "{text}");
    assert!(!text.contains("OPENED-PACKET-SOCKET"), "{text}");
    let seen = text
        .lines()
        .find_map(|l| l.split("interfaces: ").nth(1))
        .unwrap_or_default();
    for name in &host_ifaces {
        assert!(
            !seen.split_whitespace().any(|n| n == name),
            "the stage sees the host's {name}: {seen}"
        );
    }
    drop(listener);
}

/// Issue 12: the device-node requests a native stage leaves (it cannot
/// make nodes in its user namespace) are a file the stage controls: only
/// harmless character devices, only where it left an empty regular file,
/// and never through a symlink to a host file.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_native_stages_node_requests_make_only_harmless_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"host secret\n").unwrap();
    let cases = [
        (
            "mem",
            ": > /run/osbuild/tree/mem\necho \"c 1 1 /mem\" >> \"$OSBUILD_NODE_REQUESTS\"\n"
                .to_string(),
            "the device node /mem (1:1): a native stage may ask only for null, zero, full, random, urandom, tty, console or ptmx",
        ),
        (
            "link",
            format!(
                "ln -s {} /run/osbuild/tree/null\necho \"c 1 3 /null\" >> \"$OSBUILD_NODE_REQUESTS\"\n",
                secret.display()
            ),
            "the device node /null (1:3): the stage left something other than an empty file there",
        ),
        (
            "block",
            ": > /run/osbuild/tree/disk\necho \"b 7 0 /disk\" >> \"$OSBUILD_NODE_REQUESTS\"\n"
                .to_string(),
            "the stage asked for a device node in a form osbuild does not know: \"b 7 0 /disk\"",
        ),
    ];
    for (what, script, message) in cases {
        let name = format!("test.nodes-{what}");
        let libdir = shell_stage(
            dir.path(),
            &name,
            json!({"tree": "read-write"}),
            json!({}),
            &script,
        );
        let p = one_stage(dir.path(), &name, json!({}));
        let saved = dir.path().join(format!("{what}.tar"));
        osbuild_within(
            60,
            &[
                "--libdir",
                libdir.to_str().unwrap(),
                "--save",
                saved.to_str().unwrap(),
                p.to_str().unwrap(),
            ],
        )
        .fails_with(
            1,
            &format!("stage 1 ({name}, pipeline[0]) failed: {message}"),
        );
        assert!(!saved.exists(), "{what}: a tree was saved");
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"host secret\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::symlink_metadata(&secret).unwrap().mode() & 0o170000,
        0o100000
    );
}
