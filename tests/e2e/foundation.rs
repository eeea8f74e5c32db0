//! The foundation, end to end: `osbuild [--from] [--save] PIPELINE` with
//! wasm stages, against real tools (GNU tar, systemctl).

use std::path::Path;

use crate::common::*;
use serde_json::json;

fn pipeline(dir: &Path) -> std::path::PathBuf {
    write_pipeline(
        dir,
        "pipeline.json",
        json!({
            "name": "foundation",
            "pipeline": [
                {"name": "io.weldr.hostname", "options": {"hostname": "testbox"}},
                {"name": "io.weldr.systemd", "options": {
                    "enabled_services": ["ssh.service", "getty@.service", "cups.service"],
                    "disabled_services": ["old.service"]
                }}
            ]
        }),
    )
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let archive = small_os_archive(dir.path());
    let pipeline = pipeline(dir.path());
    (dir, archive, pipeline)
}

fn symlinks_under(
    tree: &std::collections::BTreeMap<String, Entry>,
    prefix: &str,
) -> Vec<(String, String)> {
    tree.iter()
        .filter(|(p, e)| p.starts_with(prefix) && e.kind == "symlink")
        .map(|(p, e)| (p.clone(), e.link.clone().unwrap()))
        .collect()
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn from_and_save_keep_everything_and_change_only_what_stages_did() {
    let (dir, archive, pipeline) = setup();
    let saved = dir.path().join("out.tar.gz");
    osbuild(&[
        "--from",
        archive.to_str().unwrap(),
        "--save",
        saved.to_str().unwrap(),
        pipeline.to_str().unwrap(),
    ])
    .ok();

    let out = dir.path().join("out");
    extract(&saved, &out);
    let before = snapshot(&dir.path().join("src"));
    let after = snapshot(&out);

    // What the stages did, exactly.
    let host = &after["/etc/hostname"];
    assert_eq!(
        (
            host.content.as_slice(),
            host.mode,
            host.uid,
            host.gid,
            host.mtime
        ),
        (&b"testbox\n"[..], 0o644, 0, 0, 0)
    );
    let enabled = symlinks_under(&after, "/etc/systemd");
    assert_eq!(
        enabled,
        vec![
            (
                "/etc/systemd/system/getty.target.wants/getty@tty1.service".into(),
                "/lib/systemd/system/getty@.service".into()
            ),
            (
                "/etc/systemd/system/multi-user.target.wants/ssh.service".into(),
                "/lib/systemd/system/ssh.service".into()
            ),
            (
                "/etc/systemd/system/printer.target.wants/cups.service".into(),
                "/lib/systemd/system/cups.service".into()
            ),
            (
                "/etc/systemd/system/sockets.target.wants/cups.socket".into(),
                "/lib/systemd/system/cups.socket".into()
            ),
            (
                "/etc/systemd/system/sshd.service".into(),
                "/lib/systemd/system/ssh.service".into()
            ),
        ]
    );
    for link in &enabled {
        assert_eq!(
            after[&link.0].mtime, 0,
            "{} carries the source epoch",
            link.0
        );
    }

    // Every other entry is exactly as it was: content, mode, owner, mtime,
    // xattrs, device numbers, hard links. Directories whose entries changed
    // carry the source epoch.
    let changed_dirs = [
        "/etc",
        "/etc/systemd/system",
        "/etc/systemd/system/multi-user.target.wants",
    ];
    for (path, old) in &before {
        if path == "/etc/systemd/system/multi-user.target.wants/old.service" {
            assert!(!after.contains_key(path), "disabled unit still linked");
            continue;
        }
        let new = after.get(path).unwrap_or_else(|| panic!("{path} lost"));
        if changed_dirs.contains(&path.as_str()) {
            assert_eq!(new.mtime, 0, "{path}");
            assert_eq!(
                Entry {
                    mtime: old.mtime,
                    ..new.clone()
                },
                *old,
                "{path}"
            );
        } else {
            assert_eq!(new, old, "{path} changed");
        }
    }
    // The special entries really are in the archive, not just equal by accident.
    assert_eq!(after["/usr/bin/su"].mode, 0o4755);
    assert!(
        after["/usr/bin/ping"]
            .xattrs
            .contains_key("security.capability")
    );
    assert_eq!(
        after["/usr/share/doc/b"].hardlink_of.as_deref(),
        Some("/usr/share/doc/a")
    );
    assert_eq!(
        (after["/dev/null"].kind, after["/dev/null"].rdev),
        ("char", 0x103)
    );
    assert_eq!(after["/run/initctl"].kind, "fifo");
    assert_eq!(
        (
            after["/usr/share/doc/owned"].uid,
            after["/usr/share/doc/owned"].gid
        ),
        (1000, 1001)
    );
    assert_eq!(after["/etc/shadow"].gid, 42);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn systemd_stage_matches_systemctl() {
    let (dir, archive, pipeline) = setup();
    let saved = dir.path().join("out.tar");
    osbuild(&[
        "--from",
        archive.to_str().unwrap(),
        "--save",
        saved.to_str().unwrap(),
        pipeline.to_str().unwrap(),
    ])
    .ok();
    let ours = dir.path().join("ours");
    extract(&saved, &ours);

    let theirs = dir.path().join("systemctl");
    extract(&archive, &theirs);
    sh(&format!(
        "systemctl --root={0} enable ssh.service getty@.service cups.service 2>&1; systemctl --root={0} disable old.service 2>&1",
        theirs.display()
    ));
    let ours = symlinks_under(&snapshot(&ours), "/etc/systemd");
    let theirs = symlinks_under(&snapshot(&theirs), "/etc/systemd");
    assert_eq!(ours, theirs);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn saving_twice_gives_identical_bytes() {
    let (dir, archive, pipeline) = setup();
    let a = dir.path().join("a.tar.gz");
    let b = dir.path().join("b.tar.gz");
    for out in [&a, &b] {
        osbuild(&[
            "--from",
            archive.to_str().unwrap(),
            "--save",
            out.to_str().unwrap(),
            pipeline.to_str().unwrap(),
        ])
        .ok();
    }
    assert_eq!(sha256(&a), sha256(&b));
    // And it is a plain single-member gzip that gzip itself accepts.
    sh(&format!("gzip -t {}", a.display()));

    // In zstd too: the same bytes twice, a stream zstd itself checks, the
    // entries of the .tar.gz, and a tree that unpacks (--from) to the one
    // the .tar.gz holds.
    let z1 = dir.path().join("a.tar.zst");
    let z2 = dir.path().join("b.tzst");
    for out in [&z1, &z2] {
        osbuild(&[
            "--from",
            archive.to_str().unwrap(),
            "--save",
            out.to_str().unwrap(),
            pipeline.to_str().unwrap(),
        ])
        .ok();
    }
    assert_eq!(sha256(&z1), sha256(&z2));
    sh(&format!("zstd -q -t {}", z1.display()));
    let list = |archive: &Path, how: &str| sh(&format!("tar {how} -tvf {}", archive.display()));
    assert_eq!(list(&z1, "--zstd"), list(&a, "-z"));
    let again = dir.path().join("again.tar.gz");
    let empty = write_pipeline(
        dir.path(),
        "empty.json",
        serde_json::json!({"pipeline": []}),
    );
    osbuild(&[
        "--from",
        z1.to_str().unwrap(),
        "--save",
        again.to_str().unwrap(),
        empty.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(sha256(&again), sha256(&a));
}

/// Archives that try to write outside the tree are refused (exit 2), and
/// nothing appears outside.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn hostile_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("outside");
    std::fs::create_dir(&target).unwrap();
    let t = target.display();
    let pipeline = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "io.weldr.hostname", "options": {"hostname": "x"}}]}),
    );
    let cases = [
        (
            "dotdot",
            format!("add_file('../../../../../../../../../../..{t}/pwned')"),
            "would land outside the tree",
        ),
        (
            "absolute",
            format!("add_file('{t}/pwned')"),
            "absolute path",
        ),
        (
            "symlink",
            format!("add_link('evil', '/'); add_file('evil{t}/pwned')"),
            "passes through a symlink",
        ),
        (
            "symlink-dir",
            format!("add_link('evil', '{t}'); add_file('evil/pwned')"),
            "passes through a symlink",
        ),
    ];
    for (name, body, message) in cases {
        let archive = dir.path().join(format!("{name}.tar"));
        sh(&format!(
            r#"python3 - <<'PY'
import io, tarfile
tf = tarfile.open('{archive}', 'w', format=tarfile.PAX_FORMAT)
def add_file(name):
    ti = tarfile.TarInfo(name); data = b'pwned'; ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
def add_link(name, target):
    ti = tarfile.TarInfo(name); ti.type = tarfile.SYMTYPE; ti.linkname = target; tf.addfile(ti)
{body}
tf.close()
PY"#,
            archive = archive.display()
        ));
        // The same checks whatever the compression: zstd too.
        let zst = dir.path().join(format!("{name}.tar.zst"));
        sh(&format!(
            "zstd -q {} -o {}",
            archive.display(),
            zst.display()
        ));
        for archive in [&archive, &zst] {
            osbuild(&[
                "--from",
                archive.to_str().unwrap(),
                pipeline.to_str().unwrap(),
            ])
            .fails_with(2, message);
            assert_eq!(
                std::fs::read_dir(&target).unwrap().count(),
                0,
                "{}: something was written outside",
                archive.display()
            );
        }
    }
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_stage_that_loops_is_stopped_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.loop"}]}),
    );
    osbuild(&[
        "--libdir",
        test_stages(),
        "--timeout",
        "1",
        p.to_str().unwrap(),
    ])
    .fails_with(
        1,
        "stage 1 (test.loop, pipeline[0]) failed: stopped after 1s: the stage exceeded its time limit",
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_stage_that_allocates_without_bound_is_stopped_by_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.alloc"}]}),
    );
    let run = osbuild(&[
        "--libdir",
        test_stages(),
        "--memory",
        "64",
        p.to_str().unwrap(),
    ]);
    run.fails_with(
        1,
        "the stage tried to use more than its memory limit of 64 MiB",
    );
    assert!(!run.stderr.contains("unreachable"), "{}", run.stderr);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_stage_cannot_reach_outside_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("hostetc")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../etc", src.join("up")).unwrap();
    let archive = dir.path().join("base.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        src.display(),
        archive.display()
    ));
    let marker = dir.path().join("marker");
    let attempts = [
        ("read-dotdot", "Operation not permitted"),
        ("read-host-absolute", "No such file or directory"),
        ("read-through-absolute-symlink", "Operation not permitted"),
        ("read-through-relative-symlink", "Operation not permitted"),
        ("write-dotdot", "Operation not permitted"),
        ("write-through-symlink", "Operation not permitted"),
        (
            "tree-dotdot",
            "/../../../../etc/passwd: No such file or directory",
        ),
        (
            "tree-symlink-to-host-etc",
            "/hostetc/passwd: No such file or directory",
        ),
    ];
    for (attempt, why) in attempts {
        let p = write_pipeline(
            dir.path(),
            "p.json",
            json!({"pipeline": [{"name": "test.escape", "options": {"attempt": attempt, "marker": marker.to_str().unwrap()}}]}),
        );
        let run = osbuild(&[
            "--libdir",
            test_stages(),
            "--from",
            archive.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        run.fails_with(1, &format!("attempt {attempt} was refused: "));
        run.fails_with(1, why);
        // The path is named once (the SDK names it; the host does not).
        if let Some((path, _)) = why.split_once(": ") {
            assert_eq!(run.stderr.matches(path).count(), 1, "{}", run.stderr);
        }
        assert!(!run.stderr.contains("ESCAPED"), "{attempt}: {}", run.stderr);
    }
    assert!(!marker.exists());
    assert!(!Path::new("/etc/osbuild-escape-marker").exists());
    let shadow_mode = std::fs::metadata("/etc/shadow")
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_ne!(
        shadow_mode.ok(),
        Some(0o777),
        "the host's /etc/shadow was chmodded"
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn bad_pipelines_exit_2_with_the_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 7] = [
        (
            r#"{"pipeline": [{"name": "io.weldr.hostname", "options": {"hostname": "a"}}, {"name": "io.weldr.nope"}]}"#,
            "pipeline[1].name: unknown stage \"io.weldr.nope\"; known stages: io.weldr.chrony, io.weldr.dnf, io.weldr.files, io.weldr.fstab, io.weldr.groups, io.weldr.hostname,",
        ),
        (
            r#"{"pipeline": [{"options": {}}]}"#,
            "pipeline[0].name: missing",
        ),
        (
            r#"{"pipeline": [{"name": "io.weldr.hostname", "options": ["hostname"]}]}"#,
            "pipeline[0].options: must be an object, found an array",
        ),
        (
            r#"{"pipeline": []} {"more": 1}"#,
            "not valid JSON: trailing characters at line 1 column 18",
        ),
        (
            r#"{"pipeline": [{"name": "io.weldr.hostname", "options": {"hostname": "bad_name!"}}]}"#,
            "pipeline[0].options.hostname: \"bad_name!\" does not match",
        ),
        (
            r#"{"pipeline": [{"name": "io.weldr.hostname", "options": {}}]}"#,
            "pipeline[0].options: \"hostname\" is a required property",
        ),
        (
            r#"{"pipeline": [{"name": "io.weldr.systemd", "options": {"enabled_services": ["nope.service"]}}]}"#,
            "unit nope.service does not exist in the tree",
        ),
    ];
    for (i, (text, message)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("p{i}.json"));
        std::fs::write(&p, text).unwrap();
        let code = if message.contains("does not exist in the tree") {
            1
        } else {
            2
        };
        osbuild(&[p.to_str().unwrap()]).fails_with(code, message);
    }
    // The missing unit error names the option.
    let p = dir.path().join("p6.json");
    osbuild(&[p.to_str().unwrap()]).fails_with(
        1,
        "pipeline[0].options.enabled_services[0]: unit nope.service",
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_user_stage_in_a_libdir_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.noop", "options": {"n": 1}}]}),
    );
    osbuild(&[p.to_str().unwrap()]).fails_with(2, "unknown stage \"test.noop\"");
    osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]).ok();
}
