//! Builds the stages with a nested cargo (its own target directory, so it
//! never waits for the outer build's lock) and generates `builtin.rs`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct StageDir {
    dir: PathBuf,
    name: String,
    package: String,
    kind: String,
}

fn stage_dirs(parent: &Path) -> Vec<StageDir> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs {
        let meta = dir.join("stage.json");
        if !meta.exists() {
            continue;
        }
        let text = fs::read_to_string(&meta).unwrap();
        let field = |key: &str| -> String {
            let pat = format!("\"{key}\"");
            let rest = &text[text
                .find(&pat)
                .unwrap_or_else(|| panic!("{}: no {key}", meta.display()))
                + pat.len()..];
            let start = rest.find('"').unwrap() + 1;
            let end = start + rest[start..].find('"').unwrap();
            rest[start..end].to_string()
        };
        let name = field("name");
        let kind = field("kind");
        let package = dir.file_name().unwrap().to_str().unwrap().replace('.', "-");
        out.push(StageDir {
            dir,
            name,
            package,
            kind,
        });
    }
    out
}

fn cargo(root: &Path, target_dir: &Path, target: Option<&str>, packages: &[&StageDir]) {
    if packages.is_empty() {
        return;
    }
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .arg("build")
        .arg("--release")
        .arg("--target-dir")
        .arg(target_dir);
    if let Some(t) = target {
        cmd.arg("--target").arg(t);
    }
    for p in packages {
        cmd.arg("-p").arg(&p.package);
    }
    // The outer build's settings are not the stages': no clippy wrapper, no
    // host RUSTFLAGS leaking into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the stages");
    if !status.success() {
        if target == Some("wasm32-wasip2") {
            panic!(
                "building the wasm stages failed; if the target is missing, run `rustup target add wasm32-wasip2`"
            );
        }
        panic!("building the native stages failed");
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>/out; keep the
    // nested build beside the outer one so it is shared and incremental.
    let target_root = out
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .expect("OUT_DIR layout")
        .to_path_buf();
    let target_dir = target_root.join("stage-build");

    for watched in [
        "stages",
        "stage-guest",
        "tree-fs",
        "wit",
        "tests/stages",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let builtin = stage_dirs(&root.join("stages"));
    let tests = stage_dirs(&root.join("tests/stages"));
    let wasm: Vec<&StageDir> = builtin
        .iter()
        .chain(&tests)
        .filter(|s| s.kind == "wasm")
        .collect();
    let native: Vec<&StageDir> = builtin
        .iter()
        .chain(&tests)
        .filter(|s| s.kind == "native")
        .collect();
    cargo(&root, &target_dir, Some("wasm32-wasip2"), &wasm);
    cargo(&root, &target_dir, None, &native);

    let artifact = |s: &StageDir| -> PathBuf {
        if s.kind == "wasm" {
            target_dir
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", s.package.replace('-', "_")))
        } else {
            target_dir.join("release").join(&s.package)
        }
    };

    let mut code = String::from(
        "/// The built-in stages, sorted by name.\npub static BUILTIN: &[Builtin] = &[\n",
    );
    let mut sorted: Vec<&StageDir> = builtin.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for s in sorted {
        let kind = if s.kind == "wasm" { "Wasm" } else { "Native" };
        writeln!(
            code,
            "    Builtin {{ name: {:?}, kind: Kind::{kind}, code: include_bytes!({:?}), metadata: include_str!({:?}) }},",
            s.name,
            artifact(s),
            s.dir.join("stage.json"),
        )
        .unwrap();
    }
    code.push_str("];\n");

    // Test stages go into a directory of their own, laid out like a --libdir.
    let test_dir = target_dir.join("test-stages");
    fs::create_dir_all(&test_dir).unwrap();
    for s in &tests {
        if s.kind == "wasm" {
            fs::copy(artifact(s), test_dir.join(format!("{}.wasm", s.name))).unwrap();
        } else {
            fs::copy(artifact(s), test_dir.join(&s.name)).unwrap();
            fs::copy(
                s.dir.join("stage.json"),
                test_dir.join(format!("{}.json", s.name)),
            )
            .unwrap();
        }
    }
    writeln!(
        code,
        "/// The test stages, as a directory to pass to `osbuild --libdir`.\npub const TEST_STAGES_DIR: &str = {:?};",
        test_dir
    )
    .unwrap();
    fs::write(out.join("builtin.rs"), code).unwrap();
}
