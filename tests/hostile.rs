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

/// C2: `devices` binds the device's nodes and nothing else: no
/// CAP_SYS_ADMIN, no CAP_MKNOD, no remounting the host root.
#[test]
fn a_stage_with_devices_gets_the_nodes_and_no_capability() {
    let dir = tempfile::tempdir().unwrap();
    let marker = Path::new("/etc/osbuild-hostile-c2-marker");
    let libdir = shell_stage(
        dir.path(),
        "test.devices",
        json!({"tree": "read", "devices": ["loop"]}),
        json!({}),
        r#"cap=$(awk '/^CapEff/ {print $2}' /proc/self/status)
[ $((0x$cap & 0x200000)) -eq 0 ] && echo "no CAP_SYS_ADMIN"
[ $((0x$cap & 0x8000000)) -eq 0 ] && echo "no CAP_MKNOD"
[ -c /dev/loop-control ] && echo "has /dev/loop-control"
if mount -o remount,rw / 2>/dev/null; then
  echo PWNED > /etc/osbuild-hostile-c2-marker
  echo "REMOUNTED the host root"
else
  echo "remount refused"
fi
"#,
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
        "has /dev/loop-control",
        "remount refused",
    ] {
        assert!(run.stderr.contains(want), "{want}:\n{}", run.stderr);
    }
    assert!(!marker.exists(), "the stage wrote the host's /etc");

    let audit = osbuild(&[
        "--libdir",
        libdir.to_str().unwrap(),
        "audit",
        p.to_str().unwrap(),
    ]);
    audit.ok();
    assert!(
        audit
            .stdout
            .contains("/dev/loop-control and /dev/loop[0-9]* bound in (no capability with it)"),
        "{}",
        audit.stdout
    );
    assert!(
        audit.stdout.contains("no CAP_SYS_ADMIN, CAP_MKNOD"),
        "{}",
        audit.stdout
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
        "pipeline[0].name: stage test.devices refused: policy: stage test.devices: needs devices (loop); the policy does not allow it",
    );
}

/// C2: device names come from a closed list.
#[test]
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
    osbuild_within(120, &[p.to_str().unwrap()]).fails_with(
        1,
        "keyring: \"/etc/shadow\" resolves to /etc/shadow, outside /usr/share/keyrings, /etc/apt/trusted.gpg.d, /etc/apt/keyrings",
    );
    // dnf: a package that would be an option.
    let p = one_stage(
        dir.path(),
        "io.weldr.dnf",
        json!({"packages": ["--setopt=reposdir=/etc/yum.repos.d"], "repos": [{"baseurl": "https://example.org/r"}], "releasever": "40"}),
    );
    osbuild(&["--inspect", p.to_str().unwrap()]).fails_with(2, "pipeline[0].options.packages[0]");
}
