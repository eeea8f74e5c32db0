//! The remote store against a real registry (Debian's docker-registry,
//! started by each test on 127.0.0.1): results pushed by one store are
//! pulled into another, byte for byte; what a registry hands over that
//! is not what it should be is never used.

use std::path::PathBuf;

use crate::common::*;
use serde_json::{Value, json};

/// A pipeline whose layers hold a whiteout (a removed file), an opaque
/// directory (removed and made again) and an output image.
fn pipeline() -> Value {
    json!({"source_epoch": 1700000000, "pipeline": [
        {"name": "io.weldr.files", "options": {
            "remove": ["/usr/share/doc/owned", "/usr/lib/systemd/system"],
            "mkdir": [{"path": "/usr/lib/systemd/system"}],
            "write": [{"path": "/usr/lib/systemd/system/new.service", "content": "[Service]\nExecStart=/bin/true\n"}]
        }},
        {"name": "io.weldr.hostname", "options": {"hostname": "pulled"}},
        {"name": "io.weldr.qcow2", "options": {"target": "disk.qcow2", "bootloader": "none"}}
    ]})
}

struct Setup {
    dir: tempfile::TempDir,
    pipeline: PathBuf,
    base: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let base = small_os_archive(dir.path());
    let pipeline = write_pipeline(dir.path(), "pipeline.json", pipeline());
    Setup {
        dir,
        pipeline,
        base,
    }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds with the store `store`, saving to `NAME.tar` and writing
    /// outputs to `NAME-out/`; `--json`'s result.
    fn build(&self, name: &str, extra: &[&str]) -> (Run, Value) {
        let store = self.path(&format!("store-{name}"));
        let save = self.path(&format!("{name}.tar"));
        let out = self.path(&format!("{name}-out"));
        let mut args = vec![
            "--store",
            store.to_str().unwrap(),
            "--from",
            self.base.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
            "--output-directory",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend(extra);
        args.push(self.pipeline.to_str().unwrap());
        let run = osbuild(&args);
        let result = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        (run, result)
    }
}

fn cached(result: &Value) -> Vec<bool> {
    result["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cached"].as_bool().unwrap())
        .collect()
}

fn ids(result: &Value) -> Vec<String> {
    result["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn an_empty_store_filled_from_the_registry_runs_nothing_and_gives_the_same_bytes() {
    let registry = Registry::start();
    let s = setup();
    let r = registry.url("team/osbuild-cache");

    let (run, a) = s.build("a", &["--cache-to", &r]);
    run.ok();
    assert_eq!(cached(&a), [false, false, false]);
    // The --from object and one per stage.
    assert_eq!(a["remote"]["pushed"]["objects"], 4, "{a}");
    assert!(
        run.stderr.contains(&format!("{r}: pushed 4 objects")),
        "{}",
        run.stderr
    );
    let ids = ids(&a);
    let manifest = registry.manifest("team/osbuild-cache", &ids[2]);
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.osbuild.object.v1"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        manifest["layers"][1]["annotations"]["org.opencontainers.image.title"],
        "disk.qcow2"
    );

    let (run, b) = s.build("b", &["--cache-from", &r]);
    run.ok();
    assert_eq!(cached(&b), [true, true, true], "{}", run.stderr);
    assert_eq!(b["remote"]["pulled"]["objects"], 4, "{b}");
    assert!(b["remote"]["pulled"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(sha256(&s.path("a.tar")), sha256(&s.path("b.tar")));
    assert_eq!(
        sha256(&s.path("a-out/disk.qcow2")),
        sha256(&s.path("b-out/disk.qcow2"))
    );
    // The whiteout and the opaque directory came through: what the first
    // stage removed is gone from the pulled tree too.
    let listing = sh(&format!("tar -tf {}", s.path("b.tar").display()));
    assert!(!listing.contains("usr/share/doc/owned"), "{listing}");
    assert!(!listing.contains("ssh.service"), "{listing}");
    assert!(
        listing.contains("usr/lib/systemd/system/new.service"),
        "{listing}"
    );

    // Store b's results were pulled: pushed on to another repository,
    // none goes (a registry gets only what its pushers built); to the one
    // they came from, they are there already.
    let other = registry.url("team/elsewhere");
    let (run, on) = s.build("b", &["--cache-to", &other]);
    run.ok();
    assert_eq!(on["remote"]["pushed"]["objects"], 0, "{on}");
    assert!(
        run.stderr.contains(&format!(
            "is not pushed to {other}: pulled from {r}@sha256:"
        )),
        "{}",
        run.stderr
    );
    let (run, back) = s.build("b", &["--cache-to", &r]);
    run.ok();
    assert_eq!(back["remote"]["present"], 4, "{back}");
    assert!(
        back["stages"][2]["pulled"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{r}@sha256:"))
    );

    // A second push of the same results sends nothing.
    let (run, again) = s.build("a", &["--cache-to", &r]);
    run.ok();
    assert_eq!(again["remote"]["pushed"]["objects"], 0, "{again}");
    assert_eq!(again["remote"]["pushed"]["bytes"], 0, "{again}");
    assert_eq!(again["remote"]["present"], 4, "{again}");
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_blob_altered_in_the_registry_is_detected_and_the_stage_runs() {
    let registry = Registry::start();
    let s = setup();
    let r = registry.url("cache");
    let (run, a) = s.build("a", &["--cache-to", &r]);
    run.ok();
    let ids = ids(&a);
    // The hostname stage's tree, changed on the registry's disk behind its
    // manifest (same length: only the digest can tell).
    let manifest = registry.manifest("cache", &ids[1]);
    let digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = registry.blob_path(digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let (run, b) = s.build("b", &["--cache-from", &r]);
    run.ok();
    // The files stage's result is fine and used; the hostname stage and
    // the one on it run.
    assert_eq!(cached(&b), [true, false, false], "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "the tree of object {} in {r}: the content does not match its digest (expected {digest}",
            ids[1]
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("not used; the stage runs instead"),
        "{}",
        run.stderr
    );
    assert_eq!(sha256(&s.path("a.tar")), sha256(&s.path("b.tar")));
    assert_eq!(
        sha256(&s.path("a-out/disk.qcow2")),
        sha256(&s.path("b-out/disk.qcow2"))
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn two_builds_pushing_at_once_both_succeed_and_the_registry_verifies() {
    let registry = Registry::start();
    let s = setup();
    let r = registry.url("shared");
    let args = |name: &str| -> Vec<String> {
        vec![
            "--store".into(),
            s.path(&format!("store-{name}")).display().to_string(),
            "--from".into(),
            s.base.display().to_string(),
            "--save".into(),
            s.path(&format!("{name}.tar")).display().to_string(),
            "--output-directory".into(),
            s.path(&format!("{name}-out")).display().to_string(),
            "--cache-to".into(),
            r.clone(),
            s.pipeline.display().to_string(),
        ]
    };
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| {
            std::process::Command::new(OSBUILD)
                .args(args(n))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(sha256(&s.path("a.tar")), sha256(&s.path("b.tar")));
    // Every blob is what its name says, and the objects are whole: an
    // empty store gets everything from them.
    assert!(registry.verify_blobs() >= 4 * 3);
    let (run, c) = s.build("c", &["--cache-from", &r]);
    run.ok();
    assert_eq!(cached(&c), [true, true, true], "{}", run.stderr);
    assert_eq!(sha256(&s.path("a.tar")), sha256(&s.path("c.tar")));
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_registry_that_is_down_is_skipped_unless_required() {
    let s = setup();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = format!("oci://127.0.0.1:{port}/cache");
    let (run, a) = s.build("a", &["--cache-from", &r, "--cache-to", &r]);
    run.ok();
    assert_eq!(cached(&a), [false, false, false]);
    assert!(
        run.stderr
            .contains(&format!("{r}: cannot reach the registry 127.0.0.1:{port}"))
            && run.stderr.contains("building without it"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("the build's result stands, the registry lacks it"),
        "{}",
        run.stderr
    );
    let (run, _) = s.build("b", &["--cache-from", &r, "--cache-from-required"]);
    run.fails_with(2, "--cache-from-required");
    assert!(!s.path("b.tar").exists());
    // A reference that is not one is refused before anything runs.
    let (run, _) = s.build("c", &["--cache-from", "https://127.0.0.1/cache"]);
    run.fails_with(2, "it must start with oci://");
}

/// A tar header of root's, time 0, `size` bytes.
fn header(kind: tar::EntryType, path: &str, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// A tar with the entries `add` makes, zstd-compressed: a tree layer.
fn layer(add: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut root = header(tar::EntryType::Directory, "./", 0o755, 0);
    root.set_cksum();
    b.append(&root, std::io::empty()).unwrap();
    add(&mut b);
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

/// Pushes a hand-made object under `tag`: `config` and the tree `tree`,
/// plus `extra` layers (media type, content, title).
fn push_object(url: &str, tag: &str, config: &Value, tree: &[u8], extra: &[(&str, &[u8], &str)]) {
    use osbuild_registry::{Descriptor, Manifest, Remote, auth::Credentials};
    let remote = Remote::new(
        osbuild_registry::Location::parse(url).unwrap(),
        &Credentials::default(),
    )
    .unwrap();
    let (config, _) = remote
        .push_bytes(
            "application/vnd.osbuild.object.config.v1+json",
            &serde_json::to_vec(config).unwrap(),
        )
        .unwrap();
    let (tree, _) = remote
        .push_bytes("application/vnd.oci.image.layer.v1.tar+zstd", tree)
        .unwrap();
    let mut layers = vec![tree];
    for (media_type, data, title) in extra {
        let (mut d, _): (Descriptor, u64) = remote.push_bytes(media_type, data).unwrap();
        d.annotations = Some(
            [(
                "org.opencontainers.image.title".to_string(),
                title.to_string(),
            )]
            .into(),
        );
        layers.push(d);
    }
    remote
        .push_manifest(
            tag,
            &Manifest {
                schema_version: 2,
                media_type: Some(osbuild_registry::MANIFEST_TYPE.into()),
                config,
                layers,
                subject: None,
                artifact_type: Some("application/vnd.osbuild.object.v1".into()),
                annotations: None,
            },
        )
        .unwrap();
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn hostile_objects_are_refused_and_the_stage_runs() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "p.json",
        json!({"source_epoch": 1700000000, "pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "honest"}}
        ]}),
    );
    let build = |name: &str, extra: &[&str]| -> (Run, Value) {
        let store = dir.path().join(format!("store-{name}"));
        let save = dir.path().join(format!("{name}.tar"));
        let mut args = vec![
            "--store",
            store.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
            "--json",
        ];
        args.extend(extra);
        args.push(pipeline.to_str().unwrap());
        let run = osbuild(&args);
        let v = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        (run, v)
    };
    let (run, honest) = build("honest", &[]);
    run.ok();
    let id = ids(&honest)[0].clone();
    let format = osbuild::store::ids::RESULT_FORMAT;
    let config = |id: &str, parent: Value| {
        json!({"format": format, "id": id, "parent": parent, "stage": "io.weldr.hostname",
               "layer": "overlay", "outputs": []})
    };
    // A directory of the test's, which a symlink in the tree aims at.
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("hostname"), "host's own\n").unwrap();

    let through_symlink = layer(|b| {
        let mut h = header(tar::EntryType::Symlink, "./etc", 0o777, 0);
        h.set_link_name(&victim).unwrap();
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        let mut h = header(tar::EntryType::Regular, "./etc/hostname", 0o644, 7);
        h.set_cksum();
        b.append(&h, &b"hacked\n"[..]).unwrap();
    });
    let overlay_xattr = layer(|b| {
        b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])])
            .unwrap();
        let mut h = header(tar::EntryType::Directory, "./usr/", 0o755, 0);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    });
    let fine = layer(|_| {});
    // Not a tar at all, its digest right all the same.
    let garbage = zstd::encode_all(&[0x55u8; 4096][..], 3).unwrap();
    let other = "0".repeat(64);
    let mut bomb_config = config(&id, Value::Null);
    bomb_config["outputs"] = json!([{"name": "disk.raw", "size": 1u64 << 50, "mtime_ns": 0}]);
    let bomb = zstd::encode_all(&[0u8; 4096][..], 19).unwrap();
    type Extra<'a> = Vec<(&'a str, &'a [u8], &'a str)>;
    let cases: Vec<(&str, Value, Vec<u8>, Extra, String)> = vec![
        (
            "symlink",
            config(&id, Value::Null),
            through_symlink,
            vec![],
            "passes through a symlink".into(),
        ),
        (
            "xattr",
            config(&id, Value::Null),
            overlay_xattr,
            vec![],
            "carries the extended attribute trusted.overlay.redirect".into(),
        ),
        (
            "garbage",
            config(&id, Value::Null),
            garbage,
            vec![],
            "its tree: reading".into(),
        ),
        (
            "bomb",
            bomb_config,
            fine.clone(),
            vec![(
                "application/vnd.osbuild.object.output.v1+zstd",
                &bomb[..],
                "disk.raw",
            )],
            "are over --max-tree-size".into(),
        ),
        (
            "parent",
            config(&id, json!(other)),
            fine.clone(),
            vec![],
            format!("it sits on {other}, which is not this build's previous result"),
        ),
        (
            "id",
            config(&other, Value::Null),
            fine.clone(),
            vec![],
            format!("its config says it is \"{other}\" of stage \"io.weldr.hostname\""),
        ),
        (
            "output",
            config(&id, Value::Null),
            fine.clone(),
            vec![(
                "application/vnd.osbuild.object.output.v1+zstd",
                b"x",
                "../escape",
            )],
            "an output layer's name \"../escape\" is not a file name".into(),
        ),
    ];
    for (repo, config, tree, extra, why) in cases {
        let url = registry.url(repo);
        push_object(&url, &id, &config, &tree, &extra);
        let (run, result) = build(repo, &["--cache-from", &url]);
        run.ok();
        assert_eq!(cached(&result), [false], "{repo}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("object {id} in {url}")) && run.stderr.contains(&why),
            "{repo}: stderr lacks {why:?}:\n{}",
            run.stderr
        );
        assert_eq!(
            sha256(&dir.path().join(format!("{repo}.tar"))),
            sha256(&dir.path().join("honest.tar")),
            "{repo}"
        );
        assert_eq!(
            std::fs::read_to_string(victim.join("hostname")).unwrap(),
            "host's own\n"
        );
        assert!(!dir.path().join("escape").exists());
    }
    // A tag holding something that is not an osbuild object.
    let url = registry.url("image");
    {
        use osbuild_registry::{Manifest, Remote, auth::Credentials};
        let remote = Remote::new(
            osbuild_registry::Location::parse(&url).unwrap(),
            &Credentials::default(),
        )
        .unwrap();
        let (config, _) = remote
            .push_bytes("application/vnd.oci.image.config.v1+json", b"{}")
            .unwrap();
        remote
            .push_manifest(
                &id,
                &Manifest {
                    schema_version: 2,
                    media_type: Some(osbuild_registry::MANIFEST_TYPE.into()),
                    config,
                    layers: vec![],
                    subject: None,
                    artifact_type: None,
                    annotations: None,
                },
            )
            .unwrap();
    }
    let (run, result) = build("image", &["--cache-from", &url]);
    run.ok();
    assert_eq!(cached(&result), [false]);
    assert!(
        run.stderr.contains("the tag holds something else"),
        "{}",
        run.stderr
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_stage_pushed_to_a_registry_runs_by_digest_and_a_wrong_digest_is_refused() {
    let registry = Registry::start();
    let s = setup();
    let wasm = std::path::Path::new(test_stages()).join("test.motd.wasm");
    let store = s.path("store");
    let store_s = store.to_str().unwrap();
    let push = osbuild(&[
        "--store",
        store_s,
        "stage",
        "push",
        wasm.to_str().unwrap(),
        &format!("{}:v1", registry.url("stages/test.motd")),
    ]);
    push.ok();
    let pinned = push.stdout.trim().to_string();
    let prefix = format!("{}@sha256:", registry.url("stages/test.motd"));
    assert!(pinned.starts_with(&prefix), "{pinned}");
    // The layout wkg reads: one application/wasm layer, the component.
    let manifest = registry.manifest("stages/test.motd", "v1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(
        manifest["layers"][0]["digest"],
        format!("sha256:{}", sha256(&wasm))
    );
    // Pushed again, the same digest.
    let again = osbuild(&[
        "--store",
        store_s,
        "stage",
        "push",
        wasm.to_str().unwrap(),
        &format!("{}:v1", registry.url("stages/test.motd")),
    ]);
    assert_eq!(again.ok().stdout.trim(), pinned);

    let write = |name: &str, stage: &str| {
        write_pipeline(
            s.dir.path(),
            name,
            json!({"source_epoch": 1700000000, "pipeline": [
                {"name": stage, "options": {"text": "from a registry\n"}}
            ]}),
        )
    };
    let good = write("good.json", &pinned);
    let fresh = s.path("fresh-store");
    let saved = s.path("motd.tar");
    let build = |store: &std::path::Path, pipeline: &std::path::Path, save: &std::path::Path| {
        osbuild(&[
            "--store",
            store.to_str().unwrap(),
            "--from",
            s.base.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
            pipeline.to_str().unwrap(),
        ])
    };
    build(&fresh, &good, &saved).ok();
    assert_eq!(
        sh(&format!("tar -xOf {} ./etc/motd", saved.display())),
        "from a registry\n"
    );
    // By tag, a pipeline runs only what `osbuild lock` pinned the tag to.
    let tagged_ref = format!("{}:v1", registry.url("stages/test.motd"));
    let tagged = write("tagged.json", &tagged_ref);
    let locked_save = s.path("locked.tar");
    build(&fresh, &tagged, &locked_save)
        .fails_with(2, "a stage from a registry is named by digest");
    let lock = osbuild(&["--store", store_s, "lock", tagged.to_str().unwrap()]);
    assert!(
        lock.ok()
            .stdout
            .contains(&format!("{tagged_ref}: {pinned}")),
        "{}",
        lock.stdout
    );
    build(&fresh, &tagged, &locked_save).ok();
    assert_eq!(
        sh(&format!("tar -xOf {} ./etc/motd", locked_save.display())),
        "from a registry\n"
    );
    // The tag moves (another component under it): the lock holds, and
    // --update says what moved.
    let moved = s.path("moved.wasm");
    std::fs::copy(&wasm, &moved).unwrap();
    let (key, _) = crate::provenance::keygen(s.dir.path(), "mover");
    osbuild(&[
        "stage",
        "sign",
        moved.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
    .ok();
    let repushed = osbuild(&[
        "--store",
        store_s,
        "stage",
        "push",
        moved.to_str().unwrap(),
        &tagged_ref,
    ]);
    let new_pin = repushed.ok().stdout.trim().to_string();
    assert_ne!(new_pin, pinned);
    let update = osbuild(&[
        "--store",
        store_s,
        "lock",
        "--update",
        tagged.to_str().unwrap(),
    ]);
    assert!(
        update
            .ok()
            .stdout
            .contains(&format!("{tagged_ref}: {pinned} -> {new_pin}")),
        "{}",
        update.stdout
    );

    // Kept in the store: the next build needs no registry.
    let digest_hex = pinned.rsplit(':').next().unwrap();
    assert!(
        fresh
            .join("stages")
            .join(digest_hex)
            .join("stage.wasm")
            .is_file()
    );
    drop(registry);
    std::fs::remove_file(&saved).unwrap();
    std::fs::remove_dir_all(fresh.join("objects")).unwrap();
    build(&fresh, &good, &saved).ok();
    assert!(saved.is_file());

    // One digit off: refused before anything runs.
    let mut wrong = pinned.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let bad = write("bad.json", &wrong);
    let other = s.path("other-store");
    let not_saved = s.path("not.tar");
    build(&other, &bad, &not_saved).fails_with(2, &format!("pipeline[0].name: {wrong}"));
    assert!(!not_saved.exists());
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_pulled_stage_answers_to_the_policy_signers() {
    let registry = Registry::start();
    let s = setup();
    let (key, public) = crate::provenance::keygen(s.dir.path(), "team");
    let policy = s.path("policy.json");
    std::fs::write(
        &policy,
        json!({"signers": {"test.*": [public], "io.weldr.*": ["builtin"]}}).to_string(),
    )
    .unwrap();
    let unsigned = std::path::Path::new(test_stages()).join("test.motd.wasm");
    let signed = s.path("test.motd.wasm");
    std::fs::copy(&unsigned, &signed).unwrap();
    osbuild(&[
        "stage",
        "sign",
        signed.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
    .ok();
    let store = s.path("store");
    let push = |file: &std::path::Path, tag: &str| -> String {
        let run = osbuild(&[
            "--store",
            store.to_str().unwrap(),
            "stage",
            "push",
            file.to_str().unwrap(),
            &format!("{}:{tag}", registry.url("stages/test.motd")),
        ]);
        run.ok().stdout.trim().to_string()
    };
    let run = |reference: &str, name: &str| {
        let p = write_pipeline(
            s.dir.path(),
            &format!("{name}.json"),
            json!({"source_epoch": 1700000000, "pipeline": [
                {"name": reference, "options": {"text": "signed\n"}}
            ]}),
        );
        let save = s.path(&format!("{name}.tar"));
        let r = osbuild(&[
            "--store",
            s.path(&format!("store-{name}")).to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--from",
            s.base.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        (r, save)
    };
    let (r, save) = run(&push(&unsigned, "unsigned"), "unsigned");
    r.fails_with(2, "is not signed as policy.signers[\"test.*\"] requires");
    assert!(!save.exists());
    let (r, save) = run(&push(&signed, "signed"), "signed");
    r.ok();
    assert_eq!(
        sh(&format!("tar -xOf {} ./etc/motd", save.display())),
        "signed\n"
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_policy_with_cache_signers_takes_only_results_its_keys_signed() {
    let registry = Registry::start();
    let s = setup();
    let r = registry.url("signed");
    let (team_key, team) = crate::provenance::keygen(s.dir.path(), "team");
    let (_, stranger) = crate::provenance::keygen(s.dir.path(), "stranger");
    let policy = |name: &str, signers: &[&str]| {
        let path = s.path(name);
        std::fs::write(&path, json!({"cache-signers": signers}).to_string()).unwrap();
        path
    };
    let trusts_team = policy("team.json", &[&team]);
    let trusts_stranger = policy("stranger.json", &[&stranger]);

    let (run, a) = s.build(
        "a",
        &["--cache-to", &r, "--cache-key", team_key.to_str().unwrap()],
    );
    run.ok();
    let ids = ids(&a);
    assert!(
        registry.manifest("signed", &ids[2])["annotations"]["dev.osbuild.object.signature"]
            .is_string()
    );
    let (run, b) = s.build(
        "b",
        &[
            "--cache-from",
            &r,
            "--policy",
            trusts_team.to_str().unwrap(),
        ],
    );
    run.ok();
    assert_eq!(cached(&b), [true, true, true], "{}", run.stderr);
    assert_eq!(sha256(&s.path("a.tar")), sha256(&s.path("b.tar")));

    let (run, c) = s.build(
        "c",
        &[
            "--cache-from",
            &r,
            "--policy",
            trusts_stranger.to_str().unwrap(),
        ],
    );
    run.ok();
    assert_eq!(cached(&c), [false, false, false], "{}", run.stderr);
    assert!(
        run.stderr
            .contains("not signed by any of the policy's cache-signers"),
        "{}",
        run.stderr
    );
    assert_eq!(sha256(&s.path("a.tar")), sha256(&s.path("c.tar")));

    // Another object's signature, moved onto this one's manifest (the
    // hostname stage's result keeps its blobs; the signature is the files
    // stage's): the signature is the team's, the content not what it signed.
    let mut stolen: osbuild_registry::Manifest =
        serde_json::from_value(registry.manifest("signed", &ids[1])).unwrap();
    let donor = registry.manifest("signed", &ids[0]);
    stolen.annotations = Some(
        [(
            "dev.osbuild.object.signature".to_string(),
            donor["annotations"]["dev.osbuild.object.signature"]
                .as_str()
                .unwrap()
                .to_string(),
        )]
        .into(),
    );
    let remote = osbuild_registry::Remote::new(
        osbuild_registry::Location::parse(&r).unwrap(),
        &Default::default(),
    )
    .unwrap();
    remote.push_manifest(&ids[1], &stolen).unwrap();
    let (run, d) = s.build(
        "d",
        &[
            "--cache-from",
            &r,
            "--policy",
            trusts_team.to_str().unwrap(),
        ],
    );
    run.ok();
    assert_eq!(cached(&d), [true, false, false], "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("object {} in {r}: signed by", ids[1]))
            && run.stderr.contains("but for other content"),
        "{}",
        run.stderr
    );
    assert_eq!(sha256(&s.path("a.tar")), sha256(&s.path("d.tar")));

    // Pushing again with the key puts the signature back (the manifest
    // only: the blobs are there).
    let (run, again) = s.build(
        "a",
        &["--cache-to", &r, "--cache-key", team_key.to_str().unwrap()],
    );
    run.ok();
    assert_eq!(again["remote"]["pushed"]["objects"], 1, "{again}");
    assert!(
        again["remote"]["pushed"]["bytes"].as_u64().unwrap() < 4096,
        "{again}"
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_push_killed_halfway_leaves_nothing_a_pull_would_use() {
    let registry = Registry::start();
    let s = setup();
    let r = registry.url("killed");
    // A --from archive with 64 MiB that zstd cannot shrink: its object's
    // tree takes long enough to upload to be caught halfway.
    let big = s.path("big");
    std::fs::create_dir_all(big.join("srv")).unwrap();
    sh(&format!(
        "head -c 67108864 /dev/urandom > {b}/srv/noise && tar -C {b} -cf {a} .",
        b = big.display(),
        a = s.path("big.tar").display()
    ));
    let pipeline = write_pipeline(
        s.dir.path(),
        "big.json",
        json!({"source_epoch": 1700000000, "pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "big"}}
        ]}),
    );
    let args = |store: &str| -> Vec<String> {
        vec![
            "--store".into(),
            s.path(store).display().to_string(),
            "--from".into(),
            s.path("big.tar").display().to_string(),
            "--json".into(),
            pipeline.display().to_string(),
        ]
    };
    let mut child = std::process::Command::new(OSBUILD)
        .args(args("a"))
        .args(["--cache-to", &r])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let uploads = registry
        .data
        .join("docker/registry/v2/repositories/killed/_uploads");
    let started = std::time::Instant::now();
    loop {
        let uploading = std::fs::read_dir(&uploads).is_ok_and(|mut d| d.next().is_some());
        if uploading {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before an upload was seen"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // No manifest: nothing names what was half sent.
    let tags = registry
        .data
        .join("docker/registry/v2/repositories/killed/_manifests/tags");
    assert!(
        std::fs::read_dir(&tags).map_or(true, |mut d| d.next().is_none()),
        "a tag after a killed push"
    );
    let mut b = args("b");
    b.extend(["--cache-from".into(), r.clone()]);
    let run = osbuild(&b.iter().map(String::as_str).collect::<Vec<_>>());
    run.ok();
    let result: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(cached(&result), [false], "{}", run.stderr);
    assert_eq!(result["remote"]["pulled"]["objects"], 0);
    assert!(
        result["remote"]["problems"].as_array().unwrap().is_empty(),
        "{result}"
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_pulled_stage_gets_nothing_by_name_and_comes_only_from_allowed_registries() {
    let registry = Registry::start();
    let s = setup();
    let store = s.path("store");
    let push = |file: &std::path::Path, repo: &str| -> String {
        let run = osbuild(&[
            "--store",
            store.to_str().unwrap(),
            "stage",
            "push",
            file.to_str().unwrap(),
            &registry.url(repo),
        ]);
        run.ok().stdout.trim().to_string()
    };
    let motd = std::path::Path::new(test_stages()).join("test.motd.wasm");
    let pinned = push(&motd, "stages/test.motd");
    // The same component calling itself io.weldr.files (the metadata's
    // bytes rewritten in place, same length).
    let mut bytes = std::fs::read(&motd).unwrap();
    let (from, to) = (
        &b"{\n  \"name\": \"test.motd\",\n  "[..],
        &b"{\"name\":\"io.weldr.files\",  "[..],
    );
    assert_eq!(from.len(), to.len());
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from) {
        bytes[at + i..at + i + from.len()].copy_from_slice(to);
        at += i + from.len();
    }
    assert!(at > 0, "test.motd's metadata not found");
    let fake = s.path("fake.wasm");
    std::fs::write(&fake, &bytes).unwrap();
    let impostor = push(&fake, "stages/fake");

    let build = |name: &str, stage: &str, policy: Value| {
        let p = write_pipeline(
            s.dir.path(),
            &format!("{name}.json"),
            json!({"source_epoch": 1700000000, "pipeline": [
                {"name": stage, "options": {"text": "x\n"}}
            ]}),
        );
        let policy_path = s.path(&format!("{name}.policy.json"));
        std::fs::write(&policy_path, policy.to_string()).unwrap();
        let save = s.path(&format!("{name}.tar"));
        let run = osbuild(&[
            "--store",
            s.path("builds").to_str().unwrap(),
            "--policy",
            policy_path.to_str().unwrap(),
            "--from",
            s.base.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        (run, save)
    };
    let (run, save) = build("impostor", &impostor, json!({}));
    run.fails_with(2, "in place of the built-in stage of that name");
    assert!(!save.exists());
    let writes = json!({"writes": {"test.motd": ["/etc/motd"]}});
    let (run, save) = build("named", &pinned, writes.clone());
    run.fails_with(
        2,
        "which the pipeline names; what the policy allows test.motd by name",
    );
    assert!(!save.exists());
    let mut pinned_policy = writes.clone();
    pinned_policy["digests"] = json!({"test.motd": [format!("sha256:{}", sha256(&motd))]});
    let (run, save) = build("pinned", &pinned, pinned_policy);
    run.ok();
    assert!(save.exists());
    // The audit says where the code came from.
    let audit = osbuild(&[
        "--store",
        s.path("builds").to_str().unwrap(),
        "audit",
        s.path("pinned.json").to_str().unwrap(),
    ]);
    assert!(
        audit.ok().stdout.contains(&format!(
            "from:     {pinned} (pulled by osbuild before anything ran"
        )),
        "{}",
        audit.stdout
    );
    let approved = format!("oci://127.0.0.1:{}/approved", registry.port);
    let (run, save) = build(
        "elsewhere",
        &pinned,
        json!({"stage-registries": [approved]}),
    );
    run.fails_with(2, "the policy's stage-registries do not include it");
    assert!(!save.exists());

    // The kept copy, damaged, is pulled again.
    let hex = pinned.rsplit(':').next().unwrap();
    let kept = s.path("builds").join("stages").join(hex).join("stage.wasm");
    std::fs::write(&kept, b"not a component").unwrap();
    std::fs::remove_file(s.path("pinned.tar")).unwrap();
    let mut again = writes;
    again["digests"] = json!({"test.motd": [format!("sha256:{}", sha256(&motd))]});
    let (run, save) = build("pinned", &pinned, again);
    run.ok();
    assert!(save.exists());
    assert_eq!(sha256(&kept), sha256(&motd));
}
