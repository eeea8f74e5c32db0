//! Stages in Rust, Python and JavaScript, as their authors make them:
//! `osbuild stage new`, `osbuild stage build`, `osbuild stage test`, then
//! `--libdir`. Issue 14's acceptance. The Python and JavaScript toolchains
//! come from `tools/setup toolchains` (on PATH).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::json;

use crate::common::*;

const NEEDS: &str = "needs root and the stage toolchains (tools/setup toolchains)";

/// `osbuild ARGS` with the shared store (compiled components are cached
/// there across tests), for the `stage` commands.
fn osbuild_stage(args: &[&str]) -> Run {
    let store = shared_store();
    let mut all = vec!["--store", store.to_str().unwrap()];
    all.extend(args);
    osbuild(&all)
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("languages");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A built project, made once per test binary: a new `motd` project in
/// `lang`, or a copy of `tests/projects/NAME`.
fn built(key: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    if let Some(p) = BUILT.get_or_init(Default::default).lock().unwrap().get(key) {
        return p.clone();
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = BUILT.get().unwrap().lock().unwrap().get(key) {
        return p.clone();
    }
    // No ':' in the folder: cargo cannot put such a path in LD_LIBRARY_PATH.
    let dir = scratch().join(key.replace(':', "-"));
    let _ = std::fs::remove_dir_all(&dir);
    match key.split_once(':') {
        Some(("new", lang)) => {
            let name = format!("io.example.motd-{lang}");
            osbuild_stage(&["stage", "new", &name, "--lang", lang, dir.to_str().unwrap()]).ok();
        }
        Some(("example", name)) => {
            let src = repo_root().join("examples/stages").join(name);
            sh(&format!("cp -r {} {}", src.display(), dir.display()));
        }
        _ => {
            let src = repo_root().join("tests/projects").join(key);
            sh(&format!("cp -r {} {}", src.display(), dir.display()));
        }
    }
    osbuild_stage(&["stage", "build", dir.to_str().unwrap()]).ok();
    BUILT
        .get()
        .unwrap()
        .lock()
        .unwrap()
        .insert(key.to_string(), dir.clone());
    dir
}

#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn a_new_project_in_each_language_builds_and_its_stage_writes_into_the_tree() {
    let _ = NEEDS;
    for lang in ["python", "javascript", "rust"] {
        let project = built(&format!("new:{lang}"));
        let name = format!("io.example.motd-{lang}");
        assert!(project.join(format!("{name}.wasm")).is_file(), "{lang}");
        // The toolchains work in a private folder: the project gets the
        // stage, and nothing else but what it had.
        let mut listing: Vec<String> = std::fs::read_dir(&project)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "target" && n != "Cargo.lock")
            .collect();
        listing.sort();
        let code = match lang {
            "python" => vec!["main.py"],
            "javascript" => vec!["main.js", "osbuild-stage.js"],
            _ => vec!["Cargo.toml", "src", ".osbuild"],
        };
        let mut want: Vec<String> = [".gitignore", "README.md", "stage.json", "tests.json"]
            .iter()
            .chain(&code)
            .map(|s| s.to_string())
            .chain([format!("{name}.wasm")])
            .collect();
        want.sort();
        assert_eq!(listing, want, "{lang}");
        let tmp = tempfile::tempdir().unwrap();
        let p = write_pipeline(
            tmp.path(),
            "p.json",
            json!({"source_epoch": 1700000000, "pipeline": [
                {"name": name, "options": {"text": "Hello from the stage", "mode": 0o640, "uid": 1000, "gid": 100}}
            ]}),
        );
        let out = tmp.path().join("tree.tar");
        osbuild(&[
            "--libdir",
            project.to_str().unwrap(),
            "--save",
            out.to_str().unwrap(),
            p.to_str().unwrap(),
        ])
        .ok();
        let tree = tmp.path().join("tree");
        extract(&out, &tree);
        let snap = snapshot(&tree);
        let motd = &snap["/etc/motd"];
        assert_eq!(motd.content, b"Hello from the stage\n", "{lang}");
        assert_eq!(
            (motd.mode, motd.uid, motd.gid),
            (0o640, 1000, 100),
            "{lang}"
        );
        assert_eq!(
            motd.mtime, 1700000000,
            "{lang}: stamped at the source epoch"
        );
        assert_eq!(
            motd.xattrs.get("user.written-by").map(Vec::as_slice),
            Some(name.as_bytes()),
            "{lang}"
        );
        let link = &snap["/etc/issue.net"];
        assert_eq!(link.link.as_deref(), Some("/etc/motd"), "{lang}");
        // The absolute target names the tree's own file (resolved inside
        // the tree, it is the motd above).
        assert_eq!(snap["/etc/motd"].kind, "file", "{lang}");
        // Its own cases pass too.
        let run = osbuild_stage(&["stage", "test", project.to_str().unwrap()]);
        run.ok();
        assert!(
            run.stderr.contains(": 2 passed, 0 failed"),
            "{lang}: {}",
            run.stderr
        );
    }
}

#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn stage_test_fails_naming_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("p");
    sh(&format!(
        "cp -r {} {}",
        built("new:python").display(),
        project.display()
    ));
    let tests = project.join("tests.json");
    let text = std::fs::read_to_string(&tests).unwrap();
    std::fs::write(&tests, text.replace("\"0640\"", "\"0600\"")).unwrap();
    let run = osbuild_stage(&["stage", "test", project.to_str().unwrap()]);
    run.fails_with(
        1,
        "FAIL writes the message with its mode and owner: /etc/motd: mode is 0640, expected 0600",
    );
    run.fails_with(1, ": 1 passed, 1 failed");
    run.fails_with(
        1,
        "failed: tests.json[0] (writes the message with its mode and owner)",
    );
}

#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn an_option_error_in_python_or_javascript_names_the_option() {
    for key in ["test.hostile-py", "test.hostile-js"] {
        let project = built(key);
        let tmp = tempfile::tempdir().unwrap();
        let p = write_pipeline(
            tmp.path(),
            "p.json",
            json!({"pipeline": [{"name": "io.weldr.hostname", "options": {"hostname": "x"}},
                                {"name": key, "options": {"attempt": "option-error"}}]}),
        );
        osbuild(&["--libdir", project.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
            1,
            &format!("stage 2 ({key}, pipeline[1]) failed: pipeline[1].options.users.alice.uid: 1000 is taken by bob"),
        );
    }
}

#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn hostile_python_and_javascript_stages_are_stopped_like_rust_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("hostetc")).unwrap();
    let archive = tmp.path().join("base.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        src.display(),
        archive.display()
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let shadow_before = std::fs::metadata("/etc/shadow").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.mode(), m.uid(), m.size(), m.mtime())
    });
    let wasi = "the stage called WASI (";
    let cases: &[(&str, &str, &str)] = &[
        ("test.hostile-py", "open", wasi),
        ("test.hostile-py", "socket", wasi),
        (
            "test.hostile-py",
            "read-dotdot",
            "/../../../../etc/shadow: No such file or directory",
        ),
        (
            "test.hostile-py",
            "host-etc",
            "/hostetc/shadow: No such file or directory",
        ),
        (
            "test.hostile-py",
            "write-through-symlink",
            "/hostetc/osbuild-escape-marker: No such file or directory",
        ),
        (
            "test.hostile-py",
            "chmod-through-symlink",
            "/hostetc/shadow: No such file or directory",
        ),
        (
            "test.hostile-py",
            "loop",
            "stopped after 1s: the stage exceeded its time limit",
        ),
        (
            "test.hostile-py",
            "alloc",
            "the stage tried to use more than its memory limit of 128 MiB",
        ),
        (
            "test.hostile-js",
            "fetch",
            "the stage called WASI ([constructor]fields)",
        ),
        (
            "test.hostile-js",
            "read-dotdot",
            "/../../../../etc/shadow: No such file or directory",
        ),
        (
            "test.hostile-js",
            "host-etc",
            "/hostetc/shadow: No such file or directory",
        ),
        (
            "test.hostile-js",
            "write-through-symlink",
            "/hostetc/osbuild-escape-marker: No such file or directory",
        ),
        (
            "test.hostile-js",
            "chmod-through-symlink",
            "/hostetc/shadow: No such file or directory",
        ),
        (
            "test.hostile-js",
            "loop",
            "stopped after 1s: the stage exceeded its time limit",
        ),
        (
            "test.hostile-js",
            "alloc",
            "the stage tried to use more than its memory limit of 128 MiB",
        ),
    ];
    for (stage, attempt, why) in cases {
        let project = built(stage);
        let p = write_pipeline(
            tmp.path(),
            "p.json",
            json!({"pipeline": [{"name": stage, "options": {"attempt": attempt, "port": port}}]}),
        );
        let run = osbuild(&[
            "--libdir",
            project.to_str().unwrap(),
            "--from",
            archive.to_str().unwrap(),
            "--timeout",
            "1",
            "--memory",
            "128",
            p.to_str().unwrap(),
        ]);
        run.fails_with(1, &format!("stage 1 ({stage}, pipeline[0]) failed: "));
        run.fails_with(1, why);
        assert!(
            !run.stderr.contains("ESCAPED"),
            "{stage} {attempt}: {}",
            run.stderr
        );
    }
    assert!(listener.accept().is_err(), "a stage connected to the host");
    assert!(!Path::new("/etc/osbuild-escape-marker").exists());
    let shadow_after = std::fs::metadata("/etc/shadow").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.mode(), m.uid(), m.size(), m.mtime())
    });
    assert_eq!(
        shadow_before, shadow_after,
        "the host's /etc/shadow changed"
    );
}

/// The template's Python stage built by hand with componentize-py against
/// the world in `wit` (WASI stubbed out or not) and `stage.json` renamed
/// `name`: what another toolchain than `osbuild stage build` makes.
/// Returns a `--libdir` holding it. Built from copies: componentize-py
/// leaves `__pycache__` where it reads.
fn hand_built_python(tmp: &Path, name: &str, wit: &Path, stub: bool) -> PathBuf {
    let project = built("new:python");
    let src = tmp.join("src");
    let sdk = tmp.join("sdk");
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(project.join("main.py"), src.join("main.py")).unwrap();
    sh(&format!(
        "cp -r {} {}",
        repo_root().join("stage-guest/python").display(),
        sdk.display()
    ));
    let out = tmp.join("hand-built.wasm");
    sh(&format!(
        "componentize-py -d {w} -w stage componentize {stub} osbuild_stage.entry -p {sdk} -p {src} -o {o}",
        w = wit.display(),
        stub = if stub { "--stub-wasi" } else { "" },
        sdk = sdk.display(),
        src = src.display(),
        o = out.display()
    ));
    let meta = std::fs::read_to_string(project.join("stage.json"))
        .unwrap()
        .replace("io.example.motd-python", name);
    let bytes = osbuild::stage::metadata::embed_wasm_metadata(&std::fs::read(&out).unwrap(), &meta)
        .unwrap();
    let lib = tmp.join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(lib.join(format!("{name}.wasm")), bytes).unwrap();
    lib
}

/// Built without `--stub-wasi`, a Python component imports CPython's WASI,
/// sockets included: refused before it runs, as a Rust stage would be.
#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn a_python_component_with_wasi_sockets_is_refused_like_a_rust_one() {
    let project = built("new:python");
    let tmp = tempfile::tempdir().unwrap();
    let lib = hand_built_python(
        tmp.path(),
        "test.full-wasi",
        &repo_root().join("wit"),
        false,
    );
    let p = write_pipeline(
        tmp.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.full-wasi", "options": {"text": "x"}}]}),
    );
    osbuild(&[
        "--libdir",
        lib.to_str().unwrap(),
        "audit",
        p.to_str().unwrap(),
    ])
    .fails_with(2, "stage test.full-wasi refused: imports wasi:sockets/{");
    osbuild(&["--libdir", lib.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        "which need the `network` capability; the stage does not declare it",
    );
    // The stubbed build imports the stage world and nothing else.
    let audit = osbuild(&[
        "--libdir",
        project.to_str().unwrap(),
        "audit",
        write_pipeline(
            tmp.path(),
            "q.json",
            json!({"pipeline": [{"name": "io.example.motd-python", "options": {"text": "x"}}]}),
        )
        .to_str()
        .unwrap(),
    ]);
    audit.ok();
    assert!(
        audit
            .stdout
            .contains("imports:  osbuild:stage/{console,context,tree,types}@0.2.0\n"),
        "{}",
        audit.stdout
    );
}

/// A component built for a stage world osbuild does not know is refused
/// before it runs, saying which world it was built for.
#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn a_stage_built_for_an_unknown_world_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let wit = tmp.path().join("wit");
    std::fs::create_dir(&wit).unwrap();
    let text = std::fs::read_to_string(repo_root().join("wit/stage.wit")).unwrap();
    std::fs::write(wit.join("stage.wit"), text.replace("@0.2.0", "@0.9.0")).unwrap();
    let lib = hand_built_python(tmp.path(), "test.future", &wit, true);
    let p = write_pipeline(
        tmp.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.future", "options": {"text": "x"}}]}),
    );
    osbuild(&["--libdir", lib.to_str().unwrap(), p.to_str().unwrap()]).fails_with(
        2,
        "stage test.future refused: was built for osbuild:stage@0.9.0 (imports osbuild:stage/{console,context,tree,types}@0.9.0); \
         this osbuild runs stages built for osbuild:stage@0.2.0 and osbuild:stage@0.1.0",
    );
}

/// A component built for the first world (0.1.0) runs unchanged.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_stage_built_for_world_0_1_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        tmp.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.world-0.1"}]}),
    );
    let out = tmp.path().join("t.tar");
    let audit = osbuild(&["--libdir", test_stages(), "audit", p.to_str().unwrap()]);
    audit.ok();
    assert!(
        audit.stdout.contains("osbuild:stage/{tree,types}@0.1.0"),
        "{}",
        audit.stdout
    );
    osbuild(&[
        "--libdir",
        test_stages(),
        "--save",
        out.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .ok();
    let tree = tmp.path().join("tree");
    extract(&out, &tree);
    let snap = snapshot(&tree);
    let world = &snap["/etc/world"];
    assert_eq!(world.content, b"0.1.0\n");
    assert_eq!((world.mode, world.uid, world.gid), (0o600, 7, 8));
    let p = write_pipeline(
        tmp.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.world-0.1", "options": {"fail": "no good"}}]}),
    );
    osbuild(&["--libdir", test_stages(), p.to_str().unwrap()])
        .fails_with(1, "pipeline[0].options.fail: no good");
}

/// A Rust, a Python, a JavaScript, a built-in and a native stage in one
/// pipeline: the same bytes twice.
#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn a_pipeline_mixing_languages_and_a_native_stage_is_reproducible() {
    let libs: Vec<PathBuf> = ["new:rust", "new:python", "new:javascript"]
        .iter()
        .map(|k| built(k))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        tmp.path(),
        "p.json",
        json!({"source_epoch": 1700000000, "pipeline": [
            {"name": "test.native-probe", "options": {"action": "write-tree"}},
            {"name": "io.example.motd-rust", "options": {"text": "rust"}},
            {"name": "io.example.motd-python", "options": {"text": "python", "uid": 5}},
            {"name": "io.example.motd-javascript", "options": {"text": "javascript", "mode": 0o600}},
            {"name": "io.weldr.hostname", "options": {"hostname": "mixed"}},
        ]}),
    );
    let mut sums = Vec::new();
    for i in 0..2 {
        let out = tmp.path().join(format!("t{i}.tar"));
        let mut args = vec![];
        for l in &libs {
            args.extend(["--libdir", l.to_str().unwrap()]);
        }
        args.extend(["--libdir", test_stages()]);
        args.extend(["--save", out.to_str().unwrap(), p.to_str().unwrap()]);
        osbuild(&args).ok();
        sums.push(sha256(&out));
        if i == 0 {
            let tree = tmp.path().join("tree");
            extract(&out, &tree);
            let snap = snapshot(&tree);
            assert_eq!(snap["/etc/motd"].content, b"javascript\n");
            assert_eq!((snap["/etc/motd"].mode, snap["/etc/motd"].uid), (0o600, 0));
            assert_eq!(snap["/etc/native-was-here"].content, b"yes\n");
            assert_eq!(snap["/etc/hostname"].content, b"mixed\n");
        }
    }
    assert_eq!(sums[0], sums[1]);
}

/// The stages ported from osbuild's catalogue (examples/stages): their own
/// cases pass, and the real tools read what they write as intended.
#[test]
#[ignore = "needs root and the stage toolchains (tools/setup toolchains)"]
fn the_ported_stages_pass_their_cases_and_the_real_tools_accept_their_files() {
    let names = ["io.weldr.sudoers", "io.weldr.hosts", "io.weldr.dracut-conf"];
    let mut args = vec![];
    let dirs: Vec<PathBuf> = names
        .iter()
        .map(|n| built(&format!("example:{n}")))
        .collect();
    for (name, dir) in names.iter().zip(&dirs) {
        let run = osbuild_stage(&["stage", "test", dir.to_str().unwrap()]);
        run.ok();
        assert!(
            run.stderr.contains(&format!("osbuild: {name}: ")),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(" passed, 0 failed"), "{}", run.stderr);
        args.extend(["--libdir".to_string(), dir.to_str().unwrap().to_string()]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(
        src.join("etc/sudoers"),
        "root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
    )
    .unwrap();
    std::fs::write(src.join("etc/hosts"), "127.0.0.1\tlocalhost\n").unwrap();
    let archive = tmp.path().join("base.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        src.display(),
        archive.display()
    ));
    let p = write_pipeline(
        tmp.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "io.weldr.sudoers", "options": {"drop-ins": {
                "wheel": {"defaults": ["!requiretty", "env_keep += \"HTTP_PROXY\""], "rules": ["%wheel ALL=(ALL:ALL) ALL"]},
                "ci": {"rules": ["ci ALL=(root) NOPASSWD: /usr/bin/systemctl restart app"]}
            }}},
            {"name": "io.weldr.hosts", "options": {"entries": [
                {"address": "10.0.0.5", "names": ["db.example.com", "db"]},
                {"address": "fd00::5", "names": ["cache.example.com"]}
            ]}},
            {"name": "io.weldr.dracut-conf", "options": {"filename": "50-osbuild.conf", "config": {
                "compress": "zstd", "add_dracutmodules": ["lvm", "crypt"], "add_drivers": ["nvme"], "reproducible": true
            }}}
        ]}),
    );
    let out = tmp.path().join("t.tar");
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend([
        "--from",
        archive.to_str().unwrap(),
        "--save",
        out.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    osbuild(&a).ok();
    let tree = tmp.path().join("tree");
    extract(&out, &tree);
    // sudo's own parser, on each drop-in (and on the whole, through @includedir).
    for d in ["wheel", "ci"] {
        let ok = sh(&format!(
            "visudo -c -f {}/etc/sudoers.d/{d}",
            tree.display()
        ));
        assert!(ok.contains("parsed OK"), "{ok}");
    }
    // glibc's resolver, reading the tree's /etc/hosts in a private mount
    // namespace (the host's file is not touched).
    let got = sh(&format!(
        "unshare -m sh -c 'mount --bind {}/etc/hosts /etc/hosts && getent -s files hosts db && getent -s files ahosts cache.example.com | head -1'",
        tree.display()
    ));
    assert_eq!(
        got,
        "10.0.0.5        db.example.com db\nfd00::5         STREAM cache.example.com\n"
    );
    // dracut sources its drop-ins with bash: the values as dracut sees them.
    let got = sh(&format!(
        "bash -c 'add_dracutmodules=\" base \"; . {}/etc/dracut.conf.d/50-osbuild.conf; printf \"%s|%s|%s|%s\\n\" \"$compress\" \"$add_dracutmodules\" \"$add_drivers\" \"$reproducible\"'",
        tree.display()
    ));
    assert_eq!(got, "zstd| base  lvm crypt | nvme |yes\n");
}

/// Without its toolchain, `stage build` says exactly what to install.
#[test]
fn a_missing_toolchain_is_named_with_the_command_that_installs_it() {
    let tmp = tempfile::tempdir().unwrap();
    for (lang, needle) in [
        (
            "python",
            "componentize-py is not installed (looked at $OSBUILD_COMPONENTIZE_PY and on PATH). Install it: `pip install componentize-py==0.25.1`",
        ),
        (
            "javascript",
            "componentize-js is not installed (looked at $OSBUILD_COMPONENTIZE_JS and on PATH). Install it: `npm install -g @bytecodealliance/componentize-js@0.23.0`",
        ),
    ] {
        let dir = tmp.path().join(lang);
        let run = |args: &[&str]| {
            let out = Command::new(OSBUILD)
                .args(args)
                .env("PATH", "/usr/bin:/bin")
                .env_remove("OSBUILD_COMPONENTIZE_PY")
                .env_remove("OSBUILD_COMPONENTIZE_JS")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, err) = run(&["stage", "new", "x.y", "--lang", lang, dir.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
        // A project's own toolchain is code from the project: never run.
        let marker = tmp.path().join(format!("{lang}-ran"));
        let local = dir.join("node_modules/.bin");
        std::fs::create_dir_all(&local).unwrap();
        for tool in ["componentize-js", "componentize-py"] {
            std::fs::write(
                local.join(tool),
                format!("#!/bin/sh\ntouch {}\n", marker.display()),
            )
            .unwrap();
            std::fs::set_permissions(
                local.join(tool),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
        }
        let (code, err) = run(&["stage", "build", dir.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!dir.join("x.y.wasm").exists());
        assert!(
            !marker.exists(),
            "osbuild ran the project's own {lang} toolchain"
        );
    }
}
