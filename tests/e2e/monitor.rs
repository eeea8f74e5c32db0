//! What a build shows while it runs: `--monitor json` events, the `--json`
//! result, and the live view on a terminal.

use crate::common::*;
use serde_json::{Value, json};

fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn monitor_json_has_a_start_and_a_finish_for_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"name": "monitored", "pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "m"}},
            {"name": "test.native-probe", "options": {"action": "write-tree"}},
            {"name": "test.noop"}
        ]}),
    );
    let run = osbuild(&[
        "--libdir",
        test_stages(),
        "--monitor",
        "json",
        p.to_str().unwrap(),
    ]);
    run.ok();
    let ev = events(&run.stdout);
    assert_eq!(ev.first().unwrap()["event"], "build-started");
    assert_eq!(ev.first().unwrap()["stages"], 3);
    for (i, name) in ["io.weldr.hostname", "test.native-probe", "test.noop"]
        .iter()
        .enumerate()
    {
        let started: Vec<&Value> = ev
            .iter()
            .filter(|e| e["event"] == "stage-started" && e["index"] == i)
            .collect();
        let finished: Vec<&Value> = ev
            .iter()
            .filter(|e| e["event"] == "stage-finished" && e["index"] == i)
            .collect();
        assert_eq!((started.len(), finished.len()), (1, 1), "stage {i}: {ev:?}");
        assert_eq!(finished[0]["name"], *name);
        assert_eq!(finished[0]["success"], true);
        assert_eq!(finished[0]["cached"], false);
        assert!(finished[0]["duration_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(finished[0]["id"].as_str().unwrap().len(), 64);
        assert_eq!(started[0]["id"], finished[0]["id"]);
    }
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "build-finished");
    assert_eq!(last["success"], true);
    assert_eq!(last["pipeline"], "monitored");
    assert_eq!(last["stages"].as_array().unwrap().len(), 3);
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_failing_stage_shows_its_error_in_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [{"name": "test.native-probe", "options": {"action": "fail"}}]}),
    );
    let run = osbuild(&[
        "--libdir",
        test_stages(),
        "--monitor",
        "json",
        p.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1);
    let ev = events(&run.stdout);
    let output: Vec<&Value> = ev.iter().filter(|e| e["event"] == "output").collect();
    assert!(
        output.iter().any(|e| e["line"] == "about to fail"),
        "{ev:?}"
    );
    let finished = ev.iter().find(|e| e["event"] == "stage-finished").unwrap();
    assert_eq!(finished["success"], false);
    assert_eq!(finished["error"], "exited with status 3");
    let result = ev.last().unwrap();
    assert_eq!(result["event"], "build-finished");
    assert_eq!(result["success"], false);
    assert_eq!(result["exit_code"], 1);
    assert_eq!(result["error"]["kind"], "stage");
    assert_eq!(result["error"]["stage"]["name"], "test.native-probe");
    assert_eq!(result["error"]["message"], "exited with status 3");
    assert_eq!(result["error"]["output_tail"], json!(["about to fail"]));
}

#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn json_result_lists_outputs_with_their_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "j"}},
            {"name": "io.weldr.qcow2", "options": {"target": "j.qcow2", "bootloader": "none"}}
        ]}),
    );
    let save = dir.path().join("t.tar");
    let run = osbuild(&[
        "--json",
        "--output-directory",
        out.to_str().unwrap(),
        "--save",
        save.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    run.ok();
    let result: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(result["success"], true);
    let outputs = result["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(
        outputs[0]["path"],
        out.join("j.qcow2").display().to_string()
    );
    assert_eq!(outputs[0]["sha256"], sha256(&out.join("j.qcow2")));
    assert_eq!(result["saved"]["sha256"], sha256(&save));
    // Bad input is a result too.
    let bad = write_pipeline(
        dir.path(),
        "bad.json",
        json!({"pipeline": [{"name": "io.weldr.nope"}]}),
    );
    let run = osbuild(&["--json", bad.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    let result: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(result["error"]["kind"], "input");
    assert_eq!(result["error"]["errors"][0]["path"], "pipeline[0].name");
}

/// On a terminal (a pty, through `script`): a line per stage with a mark,
/// its output indented, and no colour codes under NO_COLOR.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn a_terminal_gets_a_line_per_stage() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "tty"}},
            {"name": "test.native-probe", "options": {"action": "fail"}}
        ]}),
    );
    let cmd = format!(
        "{OSBUILD} --store {} --no-cache --libdir {} {}",
        shared_store().display(),
        test_stages(),
        p.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✓ [1/2] io.weldr.hostname"), "{text}");
    assert!(text.contains("    about to fail"), "{text}");
    assert!(
        text.contains("✗ [2/2] test.native-probe failed after"),
        "{text}"
    );
    assert!(
        !text.contains("\u{1b}[3"),
        "colour codes despite NO_COLOR: {text:?}"
    );
}
