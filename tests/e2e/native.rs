//! Native stages under systemd-nspawn, and the host-tool stages
//! (mmdebstrap, dnf, qcow2), end to end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn probe(action: &str) -> serde_json::Value {
    json!({"name": "test.native-probe", "options": {"action": action}})
}

/// Reads a file out of partition 1 of a disk image, without mounting it.
fn debugfs(image: &Path, request: &str) -> String {
    let raw = image.with_extension("raw");
    if !raw.exists() {
        sh(&format!(
            "qemu-img convert -O raw {} {}",
            image.display(),
            raw.display()
        ));
    }
    sh(&format!(
        "debugfs -R '{request}' '{}?offset=1048576' 2>/dev/null",
        raw.display()
    ))
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn mixed_pipeline_mmdebstrap_wasm_stages_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "io.weldr.mmdebstrap", "options": {"suite": "bookworm", "variant": "minbase", "packages": ["systemd"]}},
            {"name": "io.weldr.hostname", "options": {"hostname": "mixed"}},
            {"name": "io.weldr.systemd", "options": {"enabled_services": ["systemd-networkd.service"]}},
            {"name": "io.weldr.qcow2", "options": {"target": "disk.qcow2", "root_fs_uuid": "6e1b7c3a-2f0d-4e5b-9a61-3c8d0f2b7a14"}}
        ]}),
    );
    osbuild(&[
        "--output-directory",
        out.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .ok();
    let image = out.join("disk.qcow2");
    assert!(sh(&format!("qemu-img info {}", image.display())).contains("file format: qcow2"));
    assert_eq!(debugfs(&image, "cat /etc/hostname"), "mixed\n");
    let link = debugfs(
        &image,
        "stat /etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
    );
    assert!(
        link.contains("Fast link dest: \"/lib/systemd/system/systemd-networkd.service\""),
        "{link}"
    );
    let alias = debugfs(
        &image,
        "stat /etc/systemd/system/dbus-org.freedesktop.network1.service",
    );
    assert!(
        alias.contains("/lib/systemd/system/systemd-networkd.service"),
        "{alias}"
    );
    // The file system is the one asked for, and holds a whole Debian system.
    let sb = sh(&format!(
        "dumpe2fs -h '{}?offset=1048576' 2>/dev/null",
        image.with_extension("raw").display()
    ));
    assert!(sb.contains("6e1b7c3a-2f0d-4e5b-9a61-3c8d0f2b7a14"), "{sb}");
    assert!(debugfs(&image, "cat /etc/debian_version").starts_with("12."));
    // The tree was nodev, so mmdebstrap bind-mounted /dev for its chroot;
    // the stage put back the nodes mmdebstrap leaves elsewhere.
    let null = debugfs(&image, "stat /dev/null");
    assert!(null.contains("Type: character special"), "{null}");
    assert!(null.contains("Device major/minor number: 01:03"), "{null}");
}

/// A local repository of one rpm, signed with a key made for the test:
/// (repository dir, the public key's file).
fn signed_repo(d: &Path) -> (PathBuf, PathBuf) {
    let key = test_gpg_key(d);
    let d = d.display();
    sh(&format!(
        r#"
        export GNUPGHOME={d}/gnupg HOME={d}
        mkdir -p {d}/rpm/SPECS {d}/repo
        cat > {d}/rpm/SPECS/hello.spec <<'SPEC'
Name:           osbuild-test-hello
Version:        1.2
Release:        3
Summary:        A package for osbuild's tests
License:        MIT
BuildArch:      noarch
%description
Installs one file.
%install
mkdir -p %{{buildroot}}/usr/share/osbuild-test-hello
echo "hello from an rpm" > %{{buildroot}}/usr/share/osbuild-test-hello/hello.txt
%files
/usr/share/osbuild-test-hello/hello.txt
SPEC
        rpmbuild --quiet --define "_topdir {d}/rpm" -bb {d}/rpm/SPECS/hello.spec
        cp {d}/rpm/RPMS/noarch/*.rpm {d}/repo/
        rpmsign --define "_gpg_name test@osbuild.invalid" --define "__gpg /usr/bin/gpg" --addsign {d}/repo/*.rpm </dev/null 2>/dev/null
        createrepo_c --quiet {d}/repo
        "#
    ));
    (PathBuf::from(format!("{d}/repo")), key)
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn dnf_installs_a_signed_local_rpm() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, key) = signed_repo(dir.path());
    let repo = format!("file://{}", repo.display());
    let key = format!("file://{}", key.display());
    let allow = dir.path().to_str().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "io.weldr.dnf", "options": {"packages": ["osbuild-test-hello"], "repos": [{"id": "local", "baseurl": repo, "gpgkey": key}], "releasever": "40"}}]}),
    );
    let saved = dir.path().join("tree.tar");
    let sbom = dir.path().join("sbom.json");
    osbuild(&[
        "--allow-host-path",
        allow,
        "--save",
        saved.to_str().unwrap(),
        "--sbom",
        sbom.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .ok();
    let tree = dir.path().join("tree");
    extract(&saved, &tree);
    // The SBOM lists what rpm says is installed, read from rpm's database.
    let doc = crate::provenance::check_sbom(&sbom);
    let listed: std::collections::BTreeSet<String> = sh(&format!(
        "rpm --root {} --dbpath /var/lib/rpm -qa --qf '%{{NAME}} %{{VERSION}}-%{{RELEASE}} %{{ARCH}} %{{LICENSE}}\\n' | grep -v '^gpg-pubkey '",
        tree.display()
    ))
    .lines()
    .map(str::to_string)
    .collect();
    let in_sbom: std::collections::BTreeSet<String> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-rpm-"))
        .map(|p| {
            format!(
                "{} {} {} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap(),
                crate::provenance::purl_arch(p),
                p["licenseDeclared"].as_str().unwrap()
            )
        })
        .collect();
    assert!(!listed.is_empty());
    assert_eq!(in_sbom, listed, "the SBOM and rpm -qa disagree");
    assert_eq!(
        sh(&format!(
            "rpm --root {} --dbpath /var/lib/rpm -q osbuild-test-hello",
            tree.display()
        ))
        .trim(),
        "osbuild-test-hello-1.2-3.noarch"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("usr/share/osbuild-test-hello/hello.txt")).unwrap(),
        "hello from an rpm\n"
    );
    assert!(
        !tree.join("root/.rpmdb").exists(),
        "the rpm database went to $HOME"
    );
    assert!(
        !tree.join("var/log/dnf.log").exists(),
        "dnf's log was left in the tree"
    );

    let p = write_pipeline(
        dir.path(),
        "missing.json",
        json!({"pipeline": [{"name": "io.weldr.dnf", "options": {"packages": ["no-such-package"], "repos": [{"id": "local", "baseurl": repo, "gpgkey": key}], "releasever": "40"}}]}),
    );
    osbuild(&["--allow-host-path", allow, p.to_str().unwrap()])
        .fails_with(
            1,
            "stage 1 (io.weldr.dnf, pipeline[0]) failed: exited with status 1",
        )
        .fails_with(1, "Unable to find a match: no-such-package");
}

/// C3: signatures are checked by default; an unsigned package is refused
/// unless the pipeline says `gpgcheck: false`, which audit flags.
#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn dnf_refuses_an_unsigned_rpm_unless_told_and_audit_flags_it() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, key) = signed_repo(dir.path());
    // Strip the signature: the package as an unsigned mirror would serve it.
    sh(&format!(
        "rpmsign --delsign {0}/*.rpm >/dev/null && createrepo_c --quiet {0}",
        repo.display()
    ));
    let repo = format!("file://{}", repo.display());
    let key = format!("file://{}", key.display());
    let allow = dir.path().to_str().unwrap();
    let signed = write_pipeline(
        dir.path(),
        "signed.json",
        json!({"pipeline": [{"name": "io.weldr.dnf", "options": {"packages": ["osbuild-test-hello"], "repos": [{"id": "local", "baseurl": repo, "gpgkey": key}], "releasever": "40"}}]}),
    );
    let run = osbuild(&["--allow-host-path", allow, signed.to_str().unwrap()]);
    run.fails_with(1, "stage 1 (io.weldr.dnf, pipeline[0]) failed");
    assert!(
        run.stdout.contains("is not signed") || run.stderr.contains("is not signed"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );

    let unsigned = write_pipeline(
        dir.path(),
        "unsigned.json",
        json!({"pipeline": [{"name": "io.weldr.dnf", "options": {"packages": ["osbuild-test-hello"], "repos": [{"id": "local", "baseurl": repo, "gpgcheck": false}], "releasever": "40"}}]}),
    );
    let audit = osbuild(&[
        "--allow-host-path",
        allow,
        "audit",
        unsigned.to_str().unwrap(),
    ]);
    audit.ok();
    assert!(
        audit.stdout.contains(
            "INSECURE: options.repos[0].gpgcheck is false: packages from this repository are installed without checking their signatures"
        ),
        "{}",
        audit.stdout
    );
    osbuild(&["--allow-host-path", allow, unsigned.to_str().unwrap()]).ok();
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_native_stage_without_network_cannot_connect_one_with_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [probe("connect")]}),
    );
    let run = osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]);
    run.ok();
    assert!(run.stderr.contains("no network: "), "{}", run.stderr);
    let p = write_pipeline(
        dir.path(),
        "net.json",
        json!({"pipeline": [{"name": "test.native-net"}]}),
    );
    let run = osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]);
    run.ok();
    assert!(run.stderr.contains("connected to "), "{}", run.stderr);
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_native_stage_cannot_change_the_host_and_its_tmp_is_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [probe("write-host"), probe("tmp-write"), probe("tmp-check"), probe("write-tree")]}),
    );
    let saved = dir.path().join("t.tar");
    let run = osbuild(&[
        "--libdir",
        test_stages(),
        "--save",
        saved.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    run.ok();
    assert!(
        run.stderr
            .contains("/etc/osbuild-native-marker: Read-only file system"),
        "{}",
        run.stderr
    );
    for marker in [
        "/etc/osbuild-native-marker",
        "/usr/osbuild-native-marker",
        "/osbuild-native-marker",
        "/var/lib/osbuild-native-marker",
    ] {
        assert!(
            !Path::new(marker).exists(),
            "{marker} was written on the host"
        );
    }
    let tree = dir.path().join("tree");
    extract(&saved, &tree);
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/native-was-here")).unwrap(),
        "yes\n"
    );
    assert!(!tree.join("tmp/osbuild-leftover").exists());
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_failing_native_stage_is_named_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [probe("write-tree"), probe("fail")]}),
    );
    osbuild(&["--libdir", test_stages(), p.to_str().unwrap()])
        .fails_with(
            1,
            "stage 2 (test.native-probe, pipeline[1]) failed: exited with status 3",
        )
        .fails_with(1, "about to fail");
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_native_stage_cannot_remount_the_host_root() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [probe("remount")]}),
    );
    let run = osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]);
    run.ok();
    assert!(run.stderr.contains("remount refused: "), "{}", run.stderr);
    assert!(!Path::new("/etc/osbuild-native-marker").exists());
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_native_stage_killed_by_a_signal_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "p.json", json!({"pipeline": [probe("abort")]}));
    osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]).fails_with(
        1,
        "stage 1 (test.native-probe, pipeline[0]) failed: killed by signal 6 (Aborted)",
    );
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_native_stage_gets_source_date_epoch_and_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"source_epoch": 1234567, "pipeline": [probe("env")]}),
    );
    let run = osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]);
    run.ok();
    assert!(
        run.stderr
            .contains("test.native-probe: SOURCE_DATE_EPOCH=1234567"),
        "{}",
        run.stderr
    );
}

/// Regression: nspawn, in a pid namespace whose /proc was the host's, looked
/// its parent up under the wrong pid when tearing down the container's
/// network namespace, and printed "Failed to open parent network namespace"
/// into the stage's output after a stage that ran for a second or more.
#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_native_stage_shows_only_its_own_output() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.native-probe", "options": {"action": "sleep", "seconds": 2}}]}),
    );
    let run = osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]);
    run.ok();
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("test.native-probe:"))
        .collect();
    assert_eq!(lines, ["test.native-probe: sleeping"], "{}", run.stderr);
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn a_native_stage_that_runs_too_long_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "p.json", json!({"pipeline": [probe("sleep")]}));
    let start = Instant::now();
    osbuild(&[
        "--libdir",
        test_stages(),
        "--timeout",
        "2",
        p.to_str().unwrap(),
    ])
    .fails_with(
        1,
        "stage 1 (test.native-probe, pipeline[0]) failed: stopped after 2s: the stage exceeded its time limit",
    );
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn sigint_during_a_native_stage_leaves_no_mounts_and_no_temp_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [probe("write-tree"), {"name": "test.native-probe", "options": {"action": "sleep", "seconds": 4321}}]}),
    );
    let before = mounts();
    let mut child = Command::new(OSBUILD)
        .args([
            "--store",
            store.to_str().unwrap(),
            "--libdir",
            test_stages(),
            p.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("sleeping") {
            break;
        }
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    assert_eq!(mounts(), before, "mounts changed");
    std::thread::sleep(Duration::from_millis(200));
    let procs = sh("ps -eo args");
    assert!(
        !procs.contains("sleep 4321"),
        "the stage outlived osbuild:\n{procs}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
#[ignore = "needs root and systemd-nspawn, some the Debian mirror (tools/run-tests runs it)"]
fn an_image_target_outside_the_output_directory_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["../x.qcow2", "/etc/x", ".hidden", "a/b.qcow2"] {
        let p = write_pipeline(
            dir.path(),
            "p.json",
            json!({"pipeline": [probe("sleep"), {"name": "io.weldr.qcow2", "options": {"target": target}}]}),
        );
        let start = Instant::now();
        osbuild(&["--libdir", test_stages(), p.to_str().unwrap()])
            .fails_with(2, "pipeline[1].options.target: ");
        assert!(start.elapsed() < Duration::from_secs(30), "a stage ran");
    }
}
