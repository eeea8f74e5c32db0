//! Capabilities you can audit: metadata, validation, `osbuild audit`,
//! policies, and enforcement.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{Value, json};

fn mixed(dir: &Path) -> PathBuf {
    write_pipeline(
        dir,
        "mixed.json",
        json!({"pipeline": [
            {"name": "io.weldr.mmdebstrap", "options": {"suite": "bookworm"}},
            {"name": "io.weldr.hostname", "options": {"hostname": "audited"}},
            {"name": "io.weldr.systemd", "options": {"default_target": "multi-user.target"}},
            {"name": "io.weldr.qcow2", "options": {"target": "disk.qcow2"}}
        ]}),
    )
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn audit_prints_every_stage_and_its_json_matches_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = mixed(dir.path());
    let table = osbuild(&["audit", p.to_str().unwrap()]);
    table.ok();
    let json = osbuild(&["audit", "--json", p.to_str().unwrap()]);
    json.ok();
    let audits: Vec<Value> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(audits.len(), 4);
    let rows: Vec<&str> = table
        .stdout
        .lines()
        .filter(|l| l.len() > 3 && l[..3].trim().parse::<usize>().is_ok())
        .collect();
    assert_eq!(rows.len(), 4, "{}", table.stdout);
    for (a, row) in audits.iter().zip(&rows) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], a["name"].as_str().unwrap());
        assert_eq!(cols[2], a["kind"].as_str().unwrap());
        assert!(a["digest"].as_str().unwrap().starts_with(cols[3]), "{row}");
        assert_eq!(cols[4], "ok");
        assert!(a["refused"].as_array().unwrap().is_empty());
    }
    // The capabilities are the declared ones, in both forms.
    assert_eq!(audits[0]["capabilities"]["network"], true);
    assert_eq!(audits[0]["capabilities"]["privileged"], true);
    assert!(
        table.stdout.contains(
            "declares: tree read-write, network, privileged, packages deb, host-tools mmdebstrap apt-get dpkg gpgv"
        ),
        "{}",
        table.stdout
    );
    assert_eq!(audits[3]["capabilities"]["tree"], "read");
    assert_eq!(audits[3]["capabilities"]["output"], true);
    assert!(
        table
            .stdout
            .contains("declares: tree read-only, output, host-tools sfdisk"),
        "{}",
        table.stdout
    );
    // wasm stages show what their binary imports; native ones what nspawn grants.
    assert!(
        audits[1]["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("osbuild:stage/tree@"))
    );
    assert!(audits[0].get("imports").is_none());
    assert!(
        table.stdout.contains("a private network (loopback only)"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("all of nspawn's capabilities"),
        "the privileged stage is flagged:\n{}",
        table.stdout
    );
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_stage_importing_sockets_without_declaring_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = write_pipeline(
        dir.path(),
        "refused.json",
        json!({"pipeline": [{"name": "test.sockets"}]}),
    );
    let why = "stage test.sockets refused: imports wasi:sockets/{";
    osbuild(&[
        "audit",
        "--libdir",
        test_stages(),
        refused.to_str().unwrap(),
    ])
    .fails_with(2, why)
    .fails_with(2, "which need the `network` capability");
    let run = osbuild(&["--libdir", test_stages(), refused.to_str().unwrap()]);
    run.fails_with(2, why);
    assert!(!run.stderr.contains("[1/1]"), "it ran: {}", run.stderr);

    let allowed = write_pipeline(
        dir.path(),
        "allowed.json",
        json!({"pipeline": [{"name": "test.sockets-net"}]}),
    );
    osbuild(&[
        "audit",
        "--libdir",
        test_stages(),
        allowed.to_str().unwrap(),
    ])
    .ok();
    osbuild(&["--libdir", test_stages(), allowed.to_str().unwrap()]).ok();
    // The policy decides whether it may run.
    let deny = dir.path().join("deny.json");
    std::fs::write(&deny, r#"{"network": []}"#).unwrap();
    osbuild(&["--libdir", test_stages(), "--policy", deny.to_str().unwrap(), allowed.to_str().unwrap()])
        .fails_with(2, "stage test.sockets-net refused: policy: declares the network capability; the policy does not allow it the network");
    let permit = dir.path().join("permit.json");
    std::fs::write(&permit, r#"{"network": ["test.sockets-net"]}"#).unwrap();
    osbuild(&[
        "--libdir",
        test_stages(),
        "--policy",
        permit.to_str().unwrap(),
        allowed.to_str().unwrap(),
    ])
    .ok();
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn schema_errors_in_three_stages_are_reported_together_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "test.native-probe", "options": {"action": "write-tree"}},
            {"name": "io.weldr.hostname", "options": {"hostname": 7}},
            {"name": "io.weldr.users", "options": {"users": {"alice": {"uid": "x"}}}},
            {"name": "io.weldr.qcow2", "options": {"target": "../escape.qcow2"}}
        ]}),
    );
    let run = osbuild(&[
        "--libdir",
        test_stages(),
        "--output-directory",
        out.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("osbuild: error: "))
        .collect();
    assert_eq!(errors.len(), 3, "{}", run.stderr);
    assert!(
        errors[0].contains("pipeline[1].options.hostname: 7 is not of type \"string\""),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("pipeline[2].options.users.alice.uid: \"x\" is not of type \"integer\""),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("pipeline[3].options.target: \"../escape.qcow2\" does not match"),
        "{}",
        errors[2]
    );
    assert!(!run.stderr.contains("[1/4]"), "a stage ran: {}", run.stderr);
    assert!(!out.exists());
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_policy_without_native_stages_refuses_the_mixed_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"kinds": ["wasm"]}"#).unwrap();
    let run = osbuild(&[
        "--policy",
        policy.to_str().unwrap(),
        mixed(dir.path()).to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("osbuild: error: "))
        .collect();
    assert_eq!(
        errors,
        [
            "osbuild: error: pipeline[0].name: stage io.weldr.mmdebstrap refused: policy: is a native stage; the policy allows only wasm stages",
            "osbuild: error: pipeline[3].name: stage io.weldr.qcow2 refused: policy: is a native stage; the policy allows only wasm stages",
        ]
    );
    // audit says the same, and exits 2.
    osbuild(&[
        "audit",
        "--policy",
        policy.to_str().unwrap(),
        mixed(dir.path()).to_str().unwrap(),
    ])
    .fails_with(2, "is a native stage; the policy allows only wasm stages");
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_policy_pinning_digests_refuses_a_modified_stage() {
    let dir = tempfile::tempdir().unwrap();
    let libdir = dir.path().join("stages");
    std::fs::create_dir(&libdir).unwrap();
    let wasm = libdir.join("test.noop.wasm");
    std::fs::copy(Path::new(test_stages()).join("test.noop.wasm"), &wasm).unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.noop"}]}),
    );
    let audit: Vec<Value> = serde_json::from_str(
        &osbuild(&[
            "audit",
            "--json",
            "--libdir",
            libdir.to_str().unwrap(),
            p.to_str().unwrap(),
        ])
        .stdout,
    )
    .unwrap();
    let digest = audit[0]["digest"].as_str().unwrap().to_string();
    assert_eq!(digest, format!("sha256:{}", sha256(&wasm)));
    let policy = dir.path().join("pinned.json");
    std::fs::write(
        &policy,
        json!({"digests": {"test.noop": [digest]}}).to_string(),
    )
    .unwrap();
    let pinned = [
        "--libdir",
        libdir.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        p.to_str().unwrap(),
    ];
    osbuild(&pinned).ok();
    // Append a custom section: still a valid component, different code.
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.extend_from_slice(&[0, 6, 5, b'x', b'x', b'x', b'x', b'x']);
    std::fs::write(&wasm, bytes).unwrap();
    osbuild(&pinned)
        .fails_with(2, "stage test.noop refused: policy: its code (sha256:")
        .fails_with(2, "is not one the policy allows");
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_native_stage_without_devices_sees_no_loop_devices() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.native-probe", "options": {"action": "devices"}}]}),
    );
    let run = osbuild(&["--libdir", test_stages(), p.to_str().unwrap()]);
    run.ok();
    assert!(run.stderr.contains("no loop devices"), "{}", run.stderr);
}

#[test]
fn stages_lists_every_built_in_stage_with_its_summary() {
    let run = osbuild(&["stages"]);
    run.ok();
    let root = repo_root();
    let mut builtin = 0;
    for entry in std::fs::read_dir(root.join("stages")).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stage.json")) else {
            continue;
        };
        let meta: Value = serde_json::from_str(&text).unwrap();
        let name = meta["name"].as_str().unwrap();
        let line = run
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{}", run.stdout));
        assert!(line.contains(meta["summary"].as_str().unwrap()), "{line}");
        assert!(line.contains(meta["kind"].as_str().unwrap()), "{line}");
        builtin += 1;
    }
    assert!(builtin >= 20, "only {builtin} built-in stages");
    let show = osbuild(&["stages", "show", "io.weldr.hostname"]);
    show.ok();
    let meta: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(meta["schema"]["required"], json!(["hostname"]));
    assert!(meta["digest"].as_str().unwrap().starts_with("sha256:"));
}
