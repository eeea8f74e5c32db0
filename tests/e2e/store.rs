//! The object store: cached stages, cheap tree handoff, reproducible
//! builds. Each test has a store of its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn probe(action: &str) -> Value {
    json!({"name": "test.native-probe", "options": {"action": action}})
}

fn hostname(name: &str) -> Value {
    json!({"name": "io.weldr.hostname", "options": {"hostname": name}})
}

/// A small tree to start from, as a --from archive.
fn base(dir: &Path) -> PathBuf {
    let src = dir.join("base-src");
    let archive = dir.join("base.tar.gz");
    sh(&format!(
        "mkdir -p {s}/etc {s}/usr/share/doc && echo hello > {s}/usr/share/doc/readme && \
         find {s} -exec touch -h -d @1600000000 {{}} + && tar --numeric-owner -C {s} -czf {a} .",
        s = src.display(),
        a = archive.display()
    ));
    archive
}

/// Stage name → what happened to it ("done", "cached", "FAILED"), in order.
fn outcomes(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, what, word) = (w.next()?, w.next()?, w.next()?);
            (word == "in" && ["done", "cached", "FAILED"].contains(&what))
                .then(|| (name.to_string(), what.to_string()))
        })
        .collect()
}

struct Build<'a> {
    dir: &'a Path,
    store: PathBuf,
}

impl Build<'_> {
    fn run(&self, pipeline: Value, extra: &[&str]) -> Run {
        let p = write_pipeline(self.dir, "pipeline.json", pipeline);
        // Extra arguments first: a --libdir there is searched first.
        let mut args = extra.to_vec();
        args.extend([
            "--store",
            self.store.to_str().unwrap(),
            "--libdir",
            test_stages(),
        ]);
        args.push(p.to_str().unwrap());
        osbuild(&args)
    }
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_second_run_runs_nothing_and_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let archive = base(dir.path());
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let pipeline = json!({"pipeline": [
        hostname("cached"),
        probe("write-tree"),
        {"name": "io.weldr.qcow2", "options": {"target": "disk.qcow2", "bootloader": "none"}}
    ]});
    let mut sums = Vec::new();
    // The third round writes the output directory of the first again.
    for round in 0..3 {
        let out = dir.path().join(format!("out{}", round % 2));
        let save = dir.path().join(format!("tree{round}.tar.gz"));
        let run = b.run(
            pipeline.clone(),
            &[
                "--from",
                archive.to_str().unwrap(),
                "--save",
                save.to_str().unwrap(),
                "--output-directory",
                out.to_str().unwrap(),
            ],
        );
        run.ok();
        let what: Vec<String> = outcomes(&run.stderr).into_iter().map(|(_, w)| w).collect();
        let expected = if round == 0 {
            ["done"; 3]
        } else {
            ["cached"; 3]
        };
        assert_eq!(what, expected, "round {round}:\n{}", run.stderr);
        sums.push((sha256(&save), sha256(&out.join("disk.qcow2"))));
    }
    assert_eq!(sums[0], sums[1]);
    assert_eq!(sums[0], sums[2]);
    // Regression: putting an output over the same stored file left the
    // temporary link behind.
    let mut left: Vec<_> = std::fs::read_dir(dir.path().join("out0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["disk.qcow2"]);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_changed_stage_runs_again_with_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let pipeline = |name: &str| {
        json!({"pipeline": [
            {"name": "io.weldr.mmdebstrap", "options": {"suite": "bookworm", "variant": "essential"}},
            probe("write-tree"),
            hostname(name),
            {"name": "io.weldr.files", "options": {"write": [{"path": "/etc/motd", "content": "hi\n"}]}},
            probe("tmp-check")
        ]})
    };
    let first = b.run(pipeline("one"), &[]);
    first.ok();
    assert_eq!(
        outcomes(&first.stderr)
            .iter()
            .filter(|(_, w)| w == "done")
            .count(),
        5
    );
    let second = b.run(pipeline("two"), &[]);
    second.ok();
    let o = outcomes(&second.stderr);
    assert_eq!(
        o[0],
        ("io.weldr.mmdebstrap".into(), "cached".into()),
        "{}",
        second.stderr
    );
    assert_eq!(o[1], ("test.native-probe".into(), "cached".into()));
    for (name, what) in &o[2..] {
        assert_eq!(
            what, "done",
            "{name} was served from the store after a change before it"
        );
    }
}

/// Builds test.noop again with a one-line change, into its own libdir.
fn rebuilt_noop(dir: &Path) -> PathBuf {
    let root = repo_root();
    let src = dir.join("noop-v2");
    sh(&format!(
        "mkdir -p {0}/src && cp {1}/tests/stages/test.noop/stage.json {0}/",
        src.display(),
        root.display()
    ));
    let lib = std::fs::read_to_string(root.join("tests/stages/test.noop/src/lib.rs")).unwrap();
    let lib = lib.replace("fn run(_tree: &Tree, _options: Options) -> anyhow::Result<()> {", "fn run(_tree: &Tree, _options: Options) -> anyhow::Result<()> {\n    println!(\"version 2\");");
    assert!(lib.contains("version 2"));
    std::fs::write(src.join("src/lib.rs"), lib).unwrap();
    std::fs::write(
        src.join("Cargo.toml"),
        format!(
            "[package]\nname = \"test-noop\"\nversion = \"0.2.0\"\nedition = \"2024\"\n[lib]\ncrate-type = [\"cdylib\"]\n\
             [dependencies]\nosbuild-stage = {{ path = \"{}/stage-guest/osbuild-stage\" }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n[workspace]\n",
            root.display()
        ),
    )
    .unwrap();
    std::fs::copy(root.join("Cargo.lock"), src.join("Cargo.lock")).unwrap();
    // A target dir of its own: in the stages' one, this crate's
    // test_noop.wasm would overwrite the built-in test.noop's.
    let target = root.join("target/stage-build-v2");
    let messages = sh(&format!(
        "cd {} && cargo build --quiet --offline --release --target wasm32-wasip2 --target-dir {} --message-format=json",
        src.display(),
        target.display()
    ));
    let wasm = messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "test_noop")
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .expect("cargo built test_noop.wasm");
    let libdir = dir.join("libdir-v2");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::copy(wasm, libdir.join("test.noop.wasm")).unwrap();
    libdir
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_changed_stage_binary_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let pipeline = json!({"pipeline": [probe("write-tree"), {"name": "test.noop"}]});
    b.run(pipeline.clone(), &[]).ok();
    let again = b.run(pipeline.clone(), &[]);
    assert_eq!(
        outcomes(&again.stderr)
            .iter()
            .map(|(_, w)| w.as_str())
            .collect::<Vec<_>>(),
        ["cached", "cached"]
    );
    let v2 = rebuilt_noop(dir.path());
    let changed = b.run(pipeline, &["--libdir", v2.to_str().unwrap()]);
    changed.ok();
    assert_eq!(
        outcomes(&changed.stderr),
        [
            ("test.native-probe".to_string(), "cached".to_string()),
            ("test.noop".to_string(), "done".to_string())
        ]
    );
    assert!(
        changed.stderr.contains("test.noop: version 2"),
        "{}",
        changed.stderr
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_file_deleted_by_a_later_stage_is_gone_from_the_archive_and_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let out = dir.path().join("out");
    let save = dir.path().join("tree.tar");
    b.run(
        json!({"pipeline": [
            probe("write-tree"),
            {"name": "io.weldr.files", "options": {"remove": ["/etc/native-was-here"], "write": [{"path": "/etc/kept", "content": "k\n"}]}},
            {"name": "io.weldr.qcow2", "options": {"target": "disk.qcow2", "format": "raw", "bootloader": "none"}}
        ]}),
        &["--save", save.to_str().unwrap(), "--output-directory", out.to_str().unwrap()],
    )
    .ok();
    let listing = sh(&format!("tar tf {}", save.display()));
    assert!(listing.contains("./etc/kept"), "{listing}");
    assert!(!listing.contains("native-was-here"), "{listing}");
    let image = format!("{}?offset=1048576", out.join("disk.qcow2").display());
    assert_eq!(
        sh(&format!("debugfs -R 'cat /etc/kept' '{image}' 2>/dev/null")),
        "k\n"
    );
    let gone = Command::new("debugfs")
        .args(["-R", "stat /etc/native-was-here", &image])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("File not found"),
        "{gone:?}"
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn sigkill_in_the_middle_of_a_stage_leaves_nothing_a_later_build_would_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sleeping = json!({"pipeline": [probe("write-tree"), {"name": "test.native-probe", "options": {"action": "sleep", "seconds": 4322}}]});
    let p = write_pipeline(dir.path(), "p.json", sleeping);
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
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        if line.unwrap().contains("sleeping") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mounts(), before);
    assert!(
        !sh("ps -eo args").contains("sleep 4322"),
        "the stage outlived osbuild"
    );
    // Only the finished stage is in the store, and whole.
    let list: Value = serde_json::from_str(&sh(&format!(
        "{OSBUILD} --store {} store list --json",
        store.display()
    )))
    .unwrap();
    let stages: Vec<&str> = list["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["test.native-probe"]);
    // The next build removes the dead one's directory and succeeds.
    let b = Build {
        dir: dir.path(),
        store: store.clone(),
    };
    let next = b.run(
        json!({"pipeline": [probe("write-tree"), probe("tmp-check")]}),
        &[],
    );
    next.ok();
    assert_eq!(
        outcomes(&next.stderr),
        [
            ("test.native-probe".into(), "cached".into()),
            ("test.native-probe".into(), "done".into())
        ]
    );
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn concurrent_builds_share_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let children: Vec<_> = ["left", "right"]
        .iter()
        .map(|name| {
            let p = write_pipeline(
                dir.path(),
                &format!("{name}.json"),
                json!({"pipeline": [probe("write-tree"), hostname(name)]}),
            );
            let save = dir.path().join(format!("{name}.tar"));
            let child = Command::new(OSBUILD)
                .args([
                    "--store",
                    store.to_str().unwrap(),
                    "--libdir",
                    test_stages(),
                    "--save",
                    save.to_str().unwrap(),
                    p.to_str().unwrap(),
                ])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (name, save, child)
        })
        .collect();
    for (name, save, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = dir.path().join(format!("{name}-tree"));
        extract(&save, &tree);
        assert_eq!(
            std::fs::read_to_string(tree.join("etc/hostname")).unwrap(),
            format!("{name}\n")
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("etc/native-was-here")).unwrap(),
            "yes\n"
        );
    }
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_tiny_cache_limit_evicts_and_builds_still_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let list = || -> usize {
        let v: Value = serde_json::from_str(&sh(&format!(
            "{OSBUILD} --store {} store list --json",
            b.store.display()
        )))
        .unwrap();
        v["objects"].as_array().unwrap().len()
    };
    let pipeline = json!({"pipeline": [probe("write-tree"), hostname("a")]});
    b.run(pipeline.clone(), &[]).ok();
    assert_eq!(list(), 2);
    let evicting = b.run(pipeline.clone(), &["--cache-max-size", "1"]);
    evicting.ok();
    assert_eq!(
        list(),
        0,
        "everything over the limit is evicted once no build uses it"
    );
    let after = b.run(pipeline, &["--cache-max-size", "1"]);
    after.ok();
    assert_eq!(
        outcomes(&after.stderr)
            .iter()
            .filter(|(_, w)| w == "done")
            .count(),
        2
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn inspect_shows_ids_and_what_is_cached_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let pipeline = json!({"pipeline": [probe("write-tree"), hostname("x")]});
    let before = b.run(pipeline.clone(), &["--inspect"]);
    before.ok();
    assert_eq!(
        before.stdout.matches(" runs").count(),
        2,
        "{}",
        before.stdout
    );
    assert!(
        before.stderr.is_empty(),
        "inspect ran something: {}",
        before.stderr
    );
    b.run(pipeline.clone(), &[]).ok();
    let after = b.run(pipeline, &["--inspect"]);
    assert_eq!(
        after.stdout.matches(" cached").count(),
        2,
        "{}",
        after.stdout
    );
    let ids: Vec<&str> = after
        .stdout
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert!(ids.iter().all(|id| id.len() == 64), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn builds_from_empty_stores_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let archive = base(dir.path());
    let mut sums = Vec::new();
    for round in 0..2 {
        let b = Build {
            dir: dir.path(),
            store: dir.path().join(format!("store{round}")),
        };
        let out = dir.path().join(format!("out{round}"));
        let save = dir.path().join(format!("tree{round}.tar.gz"));
        b.run(
            json!({"source_epoch": 1700000000, "pipeline": [
                hostname("repro"),
                {"name": "io.weldr.files", "options": {"mkdir": [{"path": "/srv/data", "mode": "0750", "parents": true}], "write": [{"path": "/srv/data/x", "content": "x\n"}]}},
                {"name": "io.weldr.qcow2", "options": {"target": "disk.qcow2", "bootloader": "none"}}
            ]}),
            &["--from", archive.to_str().unwrap(), "--save", save.to_str().unwrap(), "--output-directory", out.to_str().unwrap()],
        )
        .ok();
        sums.push((sha256(&save), sha256(&out.join("disk.qcow2"))));
        // Different inode numbers and ctimes between the runs must not matter.
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(sums[0], sums[1]);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn mmdebstrap_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut sums = Vec::new();
    for round in 0..2 {
        let b = Build {
            dir: dir.path(),
            store: dir.path().join(format!("store{round}")),
        };
        let save = dir.path().join(format!("tree{round}.tar.gz"));
        b.run(
            json!({"source_epoch": 1700000000, "pipeline": [{"name": "io.weldr.mmdebstrap", "options": {"suite": "bookworm", "variant": "minbase"}}]}),
            &["--save", save.to_str().unwrap()],
        )
        .ok();
        sums.push(sha256(&save));
    }
    assert_eq!(sums[0], sums[1]);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn an_output_changed_in_the_output_directory_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let out = dir.path().join("out");
    let pipeline = json!({"pipeline": [
        hostname("linked"),
        {"name": "io.weldr.qcow2", "options": {"target": "disk.img", "format": "raw", "bootloader": "none", "size": "128M"}}
    ]});
    let args = ["--output-directory", out.to_str().unwrap()];
    b.run(pipeline.clone(), &args).ok();
    let image = out.join("disk.img");
    let original = sha256(&image);
    // Reused outputs are hard links into the store, not copies.
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(&image).unwrap()),
        2
    );
    // Someone writes into the image (as a VM booted without -snapshot would).
    sh(&format!(
        "printf 'scribble' | dd of={} bs=1 seek=4096 conv=notrunc status=none",
        image.display()
    ));
    let again = b.run(pipeline, &args);
    again.ok();
    assert_eq!(
        outcomes(&again.stderr).last().unwrap().1,
        "done",
        "the damaged result was reused:\n{}",
        again.stderr
    );
    assert_eq!(sha256(&image), original);
}

/// Where overlayfs is not available, results are full copies: the same
/// behaviour, more disk.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn the_copy_handoff_caches_and_deletes_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let archive = base(dir.path());
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let pipeline = json!({"pipeline": [
        probe("write-tree"),
        {"name": "io.weldr.files", "options": {"remove": ["/etc/native-was-here", "/usr/share/doc/readme"]}},
        hostname("copied")
    ]});
    let mut sums = Vec::new();
    for round in 0..2 {
        let save = dir.path().join(format!("tree{round}.tar"));
        let run = b.run(
            pipeline.clone(),
            &[
                "--handoff",
                "copy",
                "--from",
                archive.to_str().unwrap(),
                "--save",
                save.to_str().unwrap(),
            ],
        );
        run.ok();
        let what: Vec<String> = outcomes(&run.stderr).into_iter().map(|(_, w)| w).collect();
        assert_eq!(
            what,
            if round == 0 {
                ["done"; 3]
            } else {
                ["cached"; 3]
            },
            "{}",
            run.stderr
        );
        let listing = sh(&format!("tar tf {}", save.display()));
        assert!(
            listing.contains("./etc/hostname")
                && !listing.contains("readme")
                && !listing.contains("native-was-here"),
            "{listing}"
        );
        sums.push(sha256(&save));
    }
    assert_eq!(sums[0], sums[1]);
    let list: Value = serde_json::from_str(&sh(&format!(
        "{OSBUILD} --store {} store list --json",
        b.store.display()
    )))
    .unwrap();
    assert!(
        list["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["layer"] == "full"),
        "{list}"
    );
}

/// Regression: a store built with the overlay handoff, read back with
/// `--handoff copy`, gave `--save` only the top layer (with overlayfs's
/// `trusted.overlay.*` attributes) when every stage was cached.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_store_of_layers_read_with_the_copy_handoff_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let archive = base(dir.path());
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let pipeline = json!({"pipeline": [
        hostname("layers"),
        {"name": "io.weldr.files", "options": {
            "remove": ["/usr/share/doc"],
            "mkdir": [{"path": "/usr/share/doc"}],
            "write": [{"path": "/usr/share/doc/new", "content": "x"}]
        }}
    ]});
    let mut sums = Vec::new();
    for (round, handoff) in ["overlay", "copy", "copy"].iter().enumerate() {
        let save = dir.path().join(format!("tree{round}.tar"));
        let mut args = vec!["--handoff", handoff, "--from", archive.to_str().unwrap()];
        args.extend(["--save", save.to_str().unwrap()]);
        let run = b.run(pipeline.clone(), &args);
        run.ok();
        let what: Vec<String> = outcomes(&run.stderr).into_iter().map(|(_, w)| w).collect();
        assert_eq!(
            what,
            [if round == 0 { "done" } else { "cached" }; 2],
            "{}",
            run.stderr
        );
        let listing = sh(&format!(
            "tar --xattrs -tvf {} --numeric-owner",
            save.display()
        ));
        assert!(
            listing.contains("./etc/hostname")
                && listing.contains("./usr/share/doc/new")
                && !listing.contains("readme")
                && !listing.contains("overlay"),
            "{listing}"
        );
        sums.push(sha256(&save));
    }
    assert_eq!(sums[0], sums[1]);
    assert_eq!(sums[0], sums[2]);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn an_unchanged_from_archive_is_not_read_again_and_a_changed_one_always_is() {
    let dir = tempfile::tempdir().unwrap();
    // Uncompressed: a file's bytes can change with the archive's size kept.
    let archive = dir.path().join("base.tar");
    sh(&format!(
        "mkdir -p {s}/etc && echo hello > {s}/etc/motd && \
         find {s} -exec touch -h -d @1600000000 {{}} + && tar --numeric-owner -C {s} -cf {a} .",
        s = dir.path().join("src").display(),
        a = archive.display()
    ));
    let b = Build {
        dir: dir.path(),
        store: dir.path().join("store"),
    };
    let save = dir.path().join("saved.tar");
    let build = |expect: &str| -> (bool, String) {
        let run = b.run(
            json!({"pipeline": [hostname("from")]}),
            &[
                "--json",
                "--from",
                archive.to_str().unwrap(),
                "--save",
                save.to_str().unwrap(),
            ],
        );
        run.ok();
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        let what: Vec<String> = outcomes(&run.stderr).into_iter().map(|(_, w)| w).collect();
        assert_eq!(what, [expect], "{}", run.stderr);
        (
            report["from"]["hashed"].as_bool().unwrap(),
            report["from"]["sha256"].as_str().unwrap().to_string(),
        )
    };
    let original = sha256(&archive);
    // A file changed within the last two seconds is never remembered
    // (file times move in clock ticks): let it age.
    let age = || std::thread::sleep(Duration::from_millis(2100));
    age();
    assert_eq!(build("done"), (true, original.clone()));
    assert_eq!(build("cached"), (false, original.clone()));
    // Same size, same mtime, other bytes: only the ctime tells, and it does.
    let mtime = std::fs::metadata(&archive).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.windows(6).position(|w| w == b"hello\n").unwrap();
    bytes[at] = b'j';
    std::fs::write(&archive, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&archive).unwrap().modified().unwrap(),
        mtime
    );
    let changed = sha256(&archive);
    assert_ne!(changed, original);
    assert_eq!(build("done"), (true, changed.clone()));
    assert_eq!(
        sh(&format!("tar -xOf {} ./etc/motd", save.display())),
        "jello\n"
    );
    // The original bytes back (a new ctime again): hashed, its tree reused.
    bytes[at] = b'h';
    std::fs::write(&archive, &bytes).unwrap();
    age();
    assert_eq!(build("cached"), (true, original.clone()));
    assert_eq!(build("cached"), (false, original));
}
