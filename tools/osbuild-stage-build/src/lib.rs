//! The one place that knows how stage crates are built: used by the build
//! scripts of `osbuild-builtins` (the stages embedded in the `osbuild`
//! binary) and `osbuild-test-stages` (the test stages, never shipped).
//!
//! A stage is a folder with a `stage.json` (its metadata, read with serde)
//! and a crate: wasm stages are `cdylib`s built for `wasm32-wasip2`, native
//! stages are binaries built for the host. Both are built by a nested
//! `cargo build --release` in a target directory of their own
//! (`<target>/stage-build`), so the nested build never waits for the outer
//! build's lock and is incremental across outer builds.
//!
//! What a build script must rerun on is computed, not guessed: the folders
//! of the stage crates and of every path dependency they reach (from
//! `cargo metadata`), the stage world (`wit/`, which the SDK's bindings read
//! by path), `Cargo.lock` and the workspace manifest.

use std::collections::BTreeSet;
use std::env;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// What kind of program a stage is, as its `stage.json` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Wasm,
    Native,
}

/// The part of `stage.json` a build needs.
#[derive(Debug, Deserialize)]
struct StageJson {
    name: String,
    kind: Kind,
}

/// A stage crate, found in a folder of stages.
#[derive(Debug, Clone)]
pub struct StageCrate {
    /// The stage's folder (holds `stage.json` and `Cargo.toml`).
    pub dir: PathBuf,
    /// The stage's name (`io.weldr.hostname`).
    pub name: String,
    pub kind: Kind,
}

impl StageCrate {
    pub fn metadata_path(&self) -> PathBuf {
        self.dir.join("stage.json")
    }
}

/// A stage crate after the nested build.
#[derive(Debug, Clone)]
pub struct Built {
    pub stage: StageCrate,
    /// The `.wasm` component or the native executable.
    pub artifact: PathBuf,
}

/// Why stages could not be built; a build script panics with it, so the
/// message says what to do.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn error(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// Every stage folder directly under `parent` (a folder with `stage.json`),
/// sorted by stage name.
pub fn discover(parent: &Path) -> Result<Vec<StageCrate>, Error> {
    // Canonical, as `cargo metadata` names the workspace's folders: a build
    // script's `../../stages` must compare equal to them.
    let parent =
        &fs::canonicalize(parent).map_err(|e| error(format!("{}: {e}", parent.display())))?;
    let entries = fs::read_dir(parent).map_err(|e| error(format!("{}: {e}", parent.display())))?;
    let mut out = Vec::new();
    for entry in entries {
        let dir = entry
            .map_err(|e| error(format!("{}: {e}", parent.display())))?
            .path();
        let meta = dir.join("stage.json");
        if !meta.is_file() {
            continue;
        }
        let text =
            fs::read_to_string(&meta).map_err(|e| error(format!("{}: {e}", meta.display())))?;
        let json: StageJson =
            serde_json::from_str(&text).map_err(|e| error(format!("{}: {e}", meta.display())))?;
        out.push(StageCrate {
            dir,
            name: json.name,
            kind: json.kind,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The workspace as `cargo metadata --no-deps` describes it (the fields
/// used here).
#[derive(Debug, Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_root: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    dependencies: Vec<Dependency>,
    targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

impl Package {
    fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("/"))
    }

    /// The file a stage of `kind` compiles to, relative to the profile
    /// directory.
    fn artifact(&self, kind: Kind) -> Option<String> {
        let wanted = match kind {
            Kind::Wasm => "cdylib",
            Kind::Native => "bin",
        };
        let target = self
            .targets
            .iter()
            .find(|t| t.kind.iter().any(|k| k == wanted))?;
        Some(match kind {
            Kind::Wasm => format!("{}.wasm", target.name.replace('-', "_")),
            Kind::Native => target.name.clone(),
        })
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // The outer build's settings are not the stages': no clippy wrapper, no
    // host RUSTFLAGS leaking into the wasm build, no outer target.
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
    cmd
}

fn metadata(workspace: &Path) -> Result<Metadata, Error> {
    let out = cargo()
        .current_dir(workspace)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .map_err(|e| error(format!("running cargo metadata: {e}")))?;
    if !out.status.success() {
        return Err(error(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| error(format!("cargo metadata: {e}")))
}

/// The folders whose files the given packages are built from: theirs and
/// those of every path dependency they reach.
fn source_dirs<'a>(meta: &'a Metadata, roots: &[&'a Package]) -> BTreeSet<&'a Path> {
    let mut dirs = BTreeSet::new();
    let mut todo: Vec<&Package> = roots.to_vec();
    while let Some(p) = todo.pop() {
        if !dirs.insert(p.dir()) {
            continue;
        }
        for dep in &p.dependencies {
            if let Some(path) = &dep.path
                && let Some(q) = meta.packages.iter().find(|q| q.dir() == path)
            {
                todo.push(q);
            }
        }
    }
    dirs
}

/// Where the nested build keeps its files: beside the outer build's, so it
/// is shared by every build script that uses this crate and survives
/// across outer builds. `out_dir` is the build script's `OUT_DIR`
/// (`<target>/[<triple>/]<profile>/build/<pkg>/out`).
pub fn target_dir(out_dir: &Path) -> Result<PathBuf, Error> {
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .map(|p| p.join("stage-build"))
        .ok_or_else(|| error(format!("unexpected OUT_DIR layout: {}", out_dir.display())))
}

/// Builds `stages` (from the workspace at or above them) into `target_dir`
/// and prints the build script's `rerun-if-changed` lines.
pub fn build(stages: &[StageCrate], target_dir: &Path) -> Result<Vec<Built>, Error> {
    let Some(first) = stages.first() else {
        return Ok(Vec::new());
    };
    let meta = metadata(&first.dir)?;
    let mut packages = Vec::new();
    for s in stages {
        let p = meta
            .packages
            .iter()
            .find(|p| p.dir() == s.dir)
            .ok_or_else(|| {
                error(format!(
                    "{}: has a stage.json but is not a member of the workspace ({})",
                    s.dir.display(),
                    meta.workspace_root.display()
                ))
            })?;
        packages.push(p);
    }

    for dir in source_dirs(&meta, &packages) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for file in ["wit", "Cargo.lock", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            meta.workspace_root.join(file).display()
        );
    }

    let mut built = Vec::new();
    for (kind, triple) in [(Kind::Wasm, Some("wasm32-wasip2")), (Kind::Native, None)] {
        let selected: Vec<(&StageCrate, &Package)> = stages
            .iter()
            .zip(&packages)
            .filter(|(s, _)| s.kind == kind)
            .map(|(s, p)| (s, *p))
            .collect();
        if selected.is_empty() {
            continue;
        }
        let mut cmd = cargo();
        cmd.current_dir(&meta.workspace_root)
            .args(["build", "--release", "--target-dir"])
            .arg(target_dir);
        if let Some(t) = triple {
            cmd.args(["--target", t]);
        }
        for (_, p) in &selected {
            cmd.args(["-p", &p.name]);
        }
        let status = cmd
            .status()
            .map_err(|e| error(format!("running cargo for the stages: {e}")))?;
        if !status.success() {
            return Err(error(match kind {
                Kind::Wasm => {
                    "building the wasm stages failed (cargo's output is above); if the target is missing, run `rustup target add wasm32-wasip2`"
                }
                Kind::Native => "building the native stages failed (cargo's output is above)",
            }));
        }
        let profile = match triple {
            Some(t) => target_dir.join(t).join("release"),
            None => target_dir.join("release"),
        };
        for (s, p) in selected {
            let file = p.artifact(kind).ok_or_else(|| {
                error(format!(
                    "{}: a {kind:?} stage's crate needs a {} target",
                    p.manifest_path.display(),
                    if kind == Kind::Wasm { "cdylib" } else { "bin" }
                ))
            })?;
            built.push(Built {
                stage: s.clone(),
                artifact: profile.join(file),
            });
        }
    }
    built.sort_by(|a, b| a.stage.name.cmp(&b.stage.name));
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_reads_name_and_kind_with_serde() {
        let dir = tempfile::tempdir().unwrap();
        let stage = |name: &str, json: &str| {
            let d = dir.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("stage.json"), json).unwrap();
        };
        // Key order and a "name" inside the description are what the old
        // substring search got wrong.
        stage(
            "b",
            r#"{"summary": "the \"name\": trap", "kind": "native", "name": "x.b"}"#,
        );
        stage("a", r#"{"name": "x.a", "kind": "wasm"}"#);
        fs::create_dir(dir.path().join("not-a-stage")).unwrap();
        let found = discover(dir.path()).unwrap();
        let got: Vec<(&str, Kind)> = found.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(got, [("x.a", Kind::Wasm), ("x.b", Kind::Native)]);
    }

    #[test]
    fn a_bad_stage_json_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("s")).unwrap();
        fs::write(
            dir.path().join("s/stage.json"),
            r#"{"name": "s", "kind": "elf"}"#,
        )
        .unwrap();
        let err = discover(dir.path()).unwrap_err().to_string();
        assert!(err.contains("s/stage.json") && err.contains("elf"), "{err}");
    }

    #[test]
    fn the_target_dir_sits_beside_the_outer_profile() {
        let out = Path::new("/t/debug/build/osbuild-builtins-0123/out");
        assert_eq!(target_dir(out).unwrap(), Path::new("/t/stage-build"));
        let out = Path::new("/t/x86_64-unknown-linux-gnu/release/build/p-1/out");
        assert_eq!(
            target_dir(out).unwrap(),
            Path::new("/t/x86_64-unknown-linux-gnu/stage-build")
        );
        assert!(target_dir(Path::new("/nowhere/out")).is_err());
    }
}
