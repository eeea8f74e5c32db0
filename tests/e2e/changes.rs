//! Write sets and change records (issue 15): a stage that changes the tree
//! outside its declared write set fails and leaves nothing behind, wasm
//! or native, whatever way it took; every stage's record of what it
//! changed is kept with its result and read back by `osbuild changes`;
//! a policy bounds where stages may declare they write.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";

/// A tree with `/etc/passwd`, `/usr/bin/sudo` (and `/bin` linking to
/// `usr/bin`) and an empty `/srv`, packed.
fn base(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("usr/bin")).unwrap();
    std::fs::create_dir_all(src.join("srv")).unwrap();
    std::os::unix::fs::symlink("usr/bin", src.join("bin")).unwrap();
    std::fs::write(src.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(src.join("usr/bin/sudo"), "binary").unwrap();
    let archive = dir.join("base.tar");
    sh(&format!(
        "find {src} -exec touch -h -d @1600000000 {{}} + && tar --numeric-owner -C {src} -cf {archive} .",
        src = src.display(),
        archive = archive.display()
    ));
    archive
}

fn motd(also: Option<&str>, stage: &str) -> Value {
    match also {
        Some(a) => json!({"name": stage, "options": {"also": a}}),
        None => json!({"name": stage, "options": {}}),
    }
}

/// Runs osbuild on `pipeline` with `store`, the test stages, `--from
/// from` and `extra`.
fn build_in(store: &Path, from: &Path, extra: &[&str], pipeline: &Path) -> Run {
    let mut args = vec![
        "--store",
        store.to_str().unwrap(),
        "--libdir",
        test_stages(),
        "--from",
        from.to_str().unwrap(),
    ];
    args.extend(extra);
    args.push(pipeline.to_str().unwrap());
    osbuild(&args)
}

/// The store's objects made by stages (not unpacked `--from` archives).
fn objects(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.join("objects"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let info: Value =
                        serde_json::from_slice(&std::fs::read(e.path().join("info.json")).unwrap())
                            .unwrap();
                    info["stage"] != "--from"
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `stage` with each way of changing `/etc/passwd` in `ways`: each
/// fails with exit 1 naming the path and the declared set, writes no
/// archive and stores nothing; then the stage without them builds a tree
/// holding none of those changes.
fn held_to_its_write_set(stage: &str, ways: &[&str], extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let from = base(dir.path());
    let store = dir.path().join("store");
    let saved = dir.path().join("saved.tar");
    let run = |pipeline: &Path| {
        let mut args = vec!["--save", saved.to_str().unwrap()];
        args.extend(extra);
        build_in(&store, &from, &args, pipeline)
    };
    assert!(objects(&store).is_empty());
    for way in ways {
        let p = write_pipeline(
            dir.path(),
            "bad.json",
            json!({"source_epoch": 1700000000, "pipeline": [motd(Some(way), stage)]}),
        );
        let r = run(&p);
        r.fails_with(1, &format!("stage 1 ({stage}, pipeline[0]) failed"));
        let target = if *way == "mkdir-etc-new" {
            "/etc/new"
        } else {
            "/etc/passwd"
        };
        // WASI, and what reaches /etc/passwd only through what the stage
        // made in its set, are caught from the change set after the stage;
        // a wasm stage's direct `tree` calls are refused where they are made.
        let after_the_stage = stage.contains("native")
            || way.starts_with("wasi-")
            || ["tree-hardlink", "symlink-then-write"].contains(way);
        let expected = if after_the_stage {
            format!("changed the tree outside its write set: {target} (")
        } else {
            format!("{target} is outside the stage's write set [\"/etc/motd\"]")
        };
        assert!(
            r.stderr.contains(&expected),
            "{way}: expected {expected:?}:\n{}",
            r.stderr
        );
        if after_the_stage {
            assert!(
                r.stderr.contains(
                    r#"it declares it writes only ["/etc/motd"]. Nothing the stage did was kept"#
                ),
                "{way}: the message names the declared set:\n{}",
                r.stderr
            );
        }
        assert!(!saved.exists(), "{way}: no archive is written");
        assert!(objects(&store).is_empty(), "{way}: nothing is stored");
    }
    let good = write_pipeline(
        dir.path(),
        "good.json",
        json!({"source_epoch": 1700000000, "pipeline": [motd(None, stage)]}),
    );
    run(&good).ok();
    let out = dir.path().join("out");
    extract(&saved, &out);
    let tree = snapshot(&out);
    assert_eq!(tree["/etc/passwd"].content, PASSWD.as_bytes());
    assert_eq!(tree["/etc/passwd"].kind, "file");
    assert_eq!(tree["/etc/passwd"].mode, 0o644);
    assert_eq!((tree["/etc/passwd"].uid, tree["/etc/passwd"].gid), (0, 0));
    assert!(tree["/etc/passwd"].xattrs.is_empty());
    assert_eq!(tree["/etc/passwd"].mtime, 1600000000);
    assert_eq!(tree["/etc/motd"].content, b"hello\n");
    assert!(!tree.contains_key("/etc/new"));
    let names: Vec<&String> = tree.keys().collect();
    assert_eq!(
        names,
        [
            "/",
            "/bin",
            "/etc",
            "/etc/motd",
            "/etc/passwd",
            "/srv",
            "/usr",
            "/usr/bin",
            "/usr/bin/sudo"
        ]
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_wasm_stage_that_writes_outside_its_set_fails_and_nothing_of_it_is_kept() {
    held_to_its_write_set(
        "test.motd",
        &[
            "wasi-write",
            "wasi-remove",
            "tree-write",
            "tree-chmod",
            "tree-chown",
            "tree-symlink",
            "tree-xattr",
            "tree-remove",
            "tree-rename",
            "tree-mtime",
            "tree-hardlink",
            "symlink-then-write",
        ],
        &[],
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn with_the_copy_handoff_and_without_the_cache_the_set_holds_as_well() {
    held_to_its_write_set(
        "test.motd",
        &["wasi-write", "tree-xattr", "mkdir-etc-new"],
        &["--handoff", "copy"],
    );
    // Without the cache nothing is stored anyway; the layers of the build
    // directory tell the stage's changes apart all the same.
    let dir = tempfile::tempdir().unwrap();
    let from = base(dir.path());
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "io.weldr.hostname", "options": {"hostname": "box"}}, motd(Some("wasi-remove"), "test.motd")]}),
    );
    for handoff in ["overlay", "copy"] {
        osbuild(&[
            "--libdir",
            test_stages(),
            "--handoff",
            handoff,
            "--from",
            from.to_str().unwrap(),
            p.to_str().unwrap(),
        ])
        .fails_with(1, "stage 2 (test.motd, pipeline[1]) failed: changed the tree outside its write set: /etc/passwd (removed)");
    }
}

#[test]
#[ignore = "needs root: native stages run under systemd-nspawn (tools/run-tests runs it)"]
fn a_native_stage_is_held_to_its_write_set_by_its_change_set() {
    held_to_its_write_set(
        "test.native-motd",
        &[
            "direct-write",
            "direct-chmod",
            "tree-write",
            "tree-symlink",
            "tree-xattr",
            "tree-remove",
            "symlink-then-write",
        ],
        &[],
    );
}

/// `osbuild changes` for the pipeline `p`.
fn changes(store: &Path, from: &Path, p: &Path, extra: &[&str]) -> Run {
    // The subcommand first: its own --from.
    let mut args = vec![
        "changes",
        "--store",
        store.to_str().unwrap(),
        "--libdir",
        test_stages(),
        "--from",
        from.to_str().unwrap(),
    ];
    args.extend(extra);
    args.push(p.to_str().unwrap());
    osbuild(&args)
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn changes_prints_every_stages_record_from_the_store_the_same_when_cached() {
    let dir = tempfile::tempdir().unwrap();
    let from = base(dir.path());
    let store = dir.path().join("store");
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"source_epoch": 1700000000, "pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "box"}},
            {"name": "test.motd", "options": {"text": "hi\n"}},
            {"name": "io.weldr.files", "options": {"remove": ["/usr/bin/sudo"], "mkdir": [{"path": "/srv/www", "mode": "0750"}]}}
        ]}),
    );
    let build = || build_in(&store, &from, &["--json"], &p);
    // Before a build there is nothing to show, and it says so.
    changes(&store, &from, &p, &[]).fails_with(
        2,
        "stage 1 (io.weldr.hostname), stage 2 (test.motd), stage 3 (io.weldr.files) have no change record in the store",
    );
    let cold = build();
    cold.ok();
    let text = changes(&store, &from, &p, &[]).ok().stdout.clone();
    let sha = |s: &str| sha256_bytes(s.as_bytes());
    assert_eq!(
        text,
        format!(
            "# stage 1 io.weldr.hostname (1 created, 1 modified, 0 removed)\n\
             ~ /etc/  dir 0755 0:0 (mtime)\n\
             + /etc/hostname  file 0644 0:0 sha256:{}\n\
             # stage 2 test.motd (1 created, 0 modified, 0 removed)\n\
             + /etc/motd  file 0644 0:0 sha256:{}\n\
             # stage 3 io.weldr.files (1 created, 2 modified, 1 removed)\n\
             ~ /srv/  dir 0755 0:0 (mtime)\n\
             + /srv/www/  dir 0750 0:0\n\
             ~ /usr/bin/  dir 0755 0:0 (mtime)\n\
             - /usr/bin/sudo  file\n",
            sha("box\n"),
            sha("hi\n")
        )
    );
    // --json: the counts as --json reported them, the record where it said.
    let cold_json: Value = serde_json::from_str(&cold.stdout).unwrap();
    let recorded: Value =
        serde_json::from_str(&changes(&store, &from, &p, &["--json"]).ok().stdout).unwrap();
    for (i, stage) in cold_json["stages"].as_array().unwrap().iter().enumerate() {
        let c = &stage["changes"];
        let r = &recorded[i];
        assert_eq!(r["counts"]["created"], c["created"], "{i}");
        assert_eq!(r["counts"]["modified"], c["modified"], "{i}");
        assert_eq!(r["counts"]["removed"], c["removed"], "{i}");
        assert_eq!(r["record"], c["record"], "{i}");
        let path = PathBuf::from(c["record"].as_str().unwrap());
        assert!(path.starts_with(&store), "{}", path.display());
        let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk["changes"], r["changes"]);
    }
    assert_eq!(
        recorded[2]["changes"][1],
        json!({"path": "/srv/www", "op": "created", "kind": "dir", "mode": "0750", "uid": 0, "gid": 0, "mtime": 1700000000})
    );
    // One stage, by number or by name.
    let one = changes(&store, &from, &p, &["--stage", "2"])
        .ok()
        .stdout
        .clone();
    assert_eq!(
        one,
        format!(
            "# stage 2 test.motd (1 created, 0 modified, 0 removed)\n+ /etc/motd  file 0644 0:0 sha256:{}\n",
            sha("hi\n")
        )
    );
    assert_eq!(
        changes(&store, &from, &p, &["--stage", "test.motd"])
            .ok()
            .stdout,
        one
    );
    changes(&store, &from, &p, &["--stage", "9"]).fails_with(
        2,
        "--stage: \"9\": the pipeline has no such stage (give its number, 1 to 3, or its name)",
    );
    // A fully cached rebuild: the same records, the same counts and places.
    let warm = build();
    warm.ok();
    let warm_json: Value = serde_json::from_str(&warm.stdout).unwrap();
    for (c, w) in cold_json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .zip(warm_json["stages"].as_array().unwrap())
    {
        assert_eq!(w["cached"], true);
        assert_eq!(w["changes"], c["changes"]);
    }
    assert_eq!(changes(&store, &from, &p, &[]).ok().stdout, text);
    // --monitor json: each stage-finished event carries them too.
    let monitor = build_in(&store, &from, &["--monitor", "json"], &p);
    monitor.ok();
    let finished: Vec<Value> = monitor
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "stage-finished")
        .collect();
    assert_eq!(finished.len(), 3);
    for (f, c) in finished.iter().zip(cold_json["stages"].as_array().unwrap()) {
        assert_eq!(f["changes"], c["changes"]);
    }
}

fn sha256_bytes(b: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b).unwrap();
    sha256(&f)
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_policy_over_paths_refuses_a_stage_that_may_write_there_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let from = base(dir.path());
    let store = dir.path().join("store");
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        json!({"writes": {"*": ["!/usr/bin/**", "!/root/**"], "test.motd": ["/etc/motd"]}})
            .to_string(),
    )
    .unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "test.motd", "options": {}},
            {"name": "test.world-0.1", "options": {}},
            {"name": "io.weldr.files", "options": {"write": [{"path": "/etc/issue", "content": "x\n"}, {"path": "/usr/bin/evil", "content": "x\n"}]}}
        ]}),
    );
    let saved = dir.path().join("saved.tar");
    let build = |p: &Path| {
        let extra = [
            "--policy",
            policy.to_str().unwrap(),
            "--save",
            saved.to_str().unwrap(),
        ];
        build_in(&store, &from, &extra, p)
    };
    let r = build(&p);
    r.fails_with(2, "pipeline[1].name: stage test.world-0.1 refused: policy: may write /** (its tree capability is read-write), which policy.writes[\"*\"][0] (\"!/usr/bin/**\") forbids");
    for also in [
        "pipeline[1].name: stage test.world-0.1 refused: policy: may write /** (its tree capability is read-write), which policy.writes[\"*\"][1] (\"!/root/**\") forbids",
        "pipeline[2].name: stage io.weldr.files refused: policy: may write /usr/bin/evil (options.write[1].path), which policy.writes[\"*\"][0] (\"!/usr/bin/**\") forbids",
    ] {
        assert!(
            r.stderr.contains(also),
            "every violation is listed: {also}\n{}",
            r.stderr
        );
    }
    assert!(!r.stderr.contains("test.motd refused"), "{}", r.stderr);
    assert!(!r.stderr.contains("/etc/issue"), "{}", r.stderr);
    assert!(!saved.exists());
    assert!(objects(&store).is_empty(), "nothing ran, nothing is stored");
    // An option's path that reaches an excluded place through a symlink in
    // the tree is caught where it lands, after the stage, before anything
    // of it is kept.
    let through = write_pipeline(
        dir.path(),
        "through.json",
        json!({"pipeline": [
            {"name": "io.weldr.files", "options": {"write": [{"path": "/bin/evil", "content": "x\n"}]}}
        ]}),
    );
    build(&through).fails_with(1, "stage 1 (io.weldr.files, pipeline[0]) failed: changed the tree where the policy does not let it write: /usr/bin/evil (created file); the policy's writes for it are [\"!/usr/bin/**\", \"!/root/**\", \"/**\"]. Nothing the stage did was kept");
    assert!(!saved.exists());
    assert!(objects(&store).is_empty());
    // Without the policy, the same stage writes there: its own write set
    // holds the path its option names, as it resolves in the tree.
    build_in(
        &store,
        &from,
        &["--save", saved.to_str().unwrap()],
        &through,
    )
    .ok();
    let out = dir.path().join("out");
    extract(&saved, &out);
    assert_eq!(std::fs::read(out.join("usr/bin/evil")).unwrap(), b"x\n");
    // A stage declaring more than its policy entry allows is refused too.
    std::fs::write(
        &policy,
        json!({"writes": {"test.motd": ["/etc/hostname"]}}).to_string(),
    )
    .unwrap();
    osbuild(&[
        "audit",
        "--libdir",
        test_stages(),
        "--policy",
        policy.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .fails_with(2, "stage test.motd refused: policy: may write /etc/motd (capabilities.tree.write), which policy.writes does not allow it (it allows /etc/hostname at policy.writes[\"test.motd\"][0])");
    // A bad pattern in the policy is named with its JSON path.
    std::fs::write(&policy, json!({"writes": {"*": ["usr/bin"]}}).to_string()).unwrap();
    osbuild(&["--policy", policy.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        "writes[\"*\"][0]: \"usr/bin\": a tree path pattern is absolute",
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn audit_shows_write_sets_and_after_a_build_what_each_stage_changed() {
    let dir = tempfile::tempdir().unwrap();
    let from = base(dir.path());
    let store = dir.path().join("store");
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "test.motd", "options": {}},
            {"name": "test.world-0.1", "options": {}},
            {"name": "io.weldr.files", "options": {"write": [{"path": "/etc/issue", "content": "x\n"}]}}
        ]}),
    );
    let audit = |extra: &[&str]| {
        let mut a = vec![
            "audit",
            "--store",
            store.to_str().unwrap(),
            "--libdir",
            test_stages(),
        ];
        a.extend(extra);
        a.push(p.to_str().unwrap());
        osbuild(&a)
    };
    let plain = audit(&[]);
    plain.ok();
    assert!(
        plain.stdout.contains("     writes:   /etc/issue\n"),
        "the path its option names: {}",
        plain.stdout
    );
    assert!(
        plain.stdout.contains("     writes:   /etc/motd\n"),
        "{}",
        plain.stdout
    );
    assert!(
        plain
            .stdout
            .contains("     writes:   anywhere in the tree\n"),
        "{}",
        plain.stdout
    );
    assert!(
        plain.stdout.contains("     reads:    the whole tree\n"),
        "{}",
        plain.stdout
    );
    let json: Value = serde_json::from_str(&audit(&["--json"]).ok().stdout).unwrap();
    assert_eq!(
        json[0]["tree"],
        json!({"read": ["/**"], "write": ["/etc/motd"]})
    );
    assert_eq!(json[1]["tree"], json!({"read": ["/**"], "write": ["/**"]}));
    // Before a build: no record.
    let before = audit(&["--changes", "--from", from.to_str().unwrap()]);
    assert!(
        before.stdout.contains("changed:  no record"),
        "{}",
        before.stdout
    );
    build_in(&store, &from, &[], &p).ok();
    let after = audit(&["--changes", "--from", from.to_str().unwrap()]);
    after.ok();
    assert!(
        after.stdout.contains("note:     declares read-write but changed only 1 path in its last build; it would run with \"tree\": {\"write\": [\"/etc/world\"]}"),
        "{}",
        after.stdout
    );
    assert!(
        after
            .stdout
            .contains("changed:  1 created, 1 modified, 0 removed: /etc/motd ("),
        "{}",
        after.stdout
    );
    let json: Value = serde_json::from_str(
        &audit(&["--changes", "--from", from.to_str().unwrap(), "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(json[1]["changed"]["suggested_write"], json!(["/etc/world"]));
    assert_eq!(json[2]["tree"]["write"], json!(["/etc/issue"]));
    assert_eq!(
        json[1]["changed"]["counts"],
        json!({"created": 1, "modified": 0, "removed": 0})
    );
}

/// Every stage is a layer: a pipeline longer than `mount(2)`'s page of
/// options holds (some 35 store paths) still mounts, wasm and native
/// stages alike, cold and cached.
#[test]
#[ignore = "needs root: native stages run under systemd-nspawn (tools/run-tests runs it)"]
fn a_pipeline_of_sixty_stages_stacks_sixty_layers() {
    let dir = tempfile::tempdir().unwrap();
    let from = base(dir.path());
    let store = dir.path().join("store");
    let mut stages: Vec<Value> = (0..59)
        .map(|i| json!({"name": "test.motd", "options": {"text": format!("{i}\n")}}))
        .collect();
    stages.push(json!({"name": "test.native-motd", "options": {"text": "last"}}));
    let p = write_pipeline(dir.path(), "long.json", json!({"pipeline": stages}));
    let saved = dir.path().join("saved.tar");
    let build = || {
        build_in(
            &store,
            &from,
            &["--save", saved.to_str().unwrap(), "--json"],
            &p,
        )
    };
    let cold: Value = serde_json::from_str(&build().ok().stdout).unwrap();
    assert_eq!(cold["stages"].as_array().unwrap().len(), 60);
    assert_eq!(objects(&store).len(), 60, "a layer per stage");
    let out = dir.path().join("out");
    extract(&saved, &out);
    assert_eq!(std::fs::read(out.join("etc/motd")).unwrap(), b"last");
    assert_eq!(
        std::fs::read(out.join("etc/passwd")).unwrap(),
        PASSWD.as_bytes()
    );
    let warm: Value = serde_json::from_str(&build().ok().stdout).unwrap();
    assert!(
        warm["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["cached"] == true)
    );
    assert_eq!(warm["saved"]["sha256"], cold["saved"]["sha256"]);
}
