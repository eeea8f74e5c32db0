//! `osbuild stage build`: one `NAME.wasm` from a project, with cargo,
//! componentize-py or componentize-js, and the stage's metadata embedded.
//!
//! Python and JavaScript components are built with WASI stubbed out
//! (`--stub-wasi`; every componentize-js feature disabled): they import
//! nothing but the stage world, which is what keeps their imports honest
//! (CPython's full runtime imports `wasi:sockets`, StarlingMonkey's
//! `wasi:http`). The result is checked like any stage before it is kept.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::{Language, Project, sdk};

/// The toolchain versions osbuild is tested with, for the install hints.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// The most osbuild reads of a built component.
const MAX_COMPONENT: u64 = 512 << 20;

/// Builds the project in `dir`; returns the path of `NAME.wasm`.
///
/// The Python and JavaScript toolchains work in a private folder of
/// osbuild's (the SDK, the world, the staged sources and their output),
/// never in the project: nothing the project holds can redirect what they
/// write.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let project = Project::open(dir)?;
    let scratch = tempfile::Builder::new()
        .prefix("osbuild-stage-build-")
        .tempdir()
        .context("creating a private build folder")?;
    let component = match project.language {
        Language::Python => python(&project, scratch.path())?,
        Language::Javascript => javascript(&project, scratch.path())?,
        Language::Rust => rust(&project)?,
    };
    let bytes = super::read_project_file(&component, MAX_COMPONENT)
        .context("reading the built component")?;
    let bytes = match project.language {
        // The SDK's `stage!` embeds stage.json at compile time.
        Language::Rust => bytes,
        _ => osbuild::stage::metadata::embed_wasm_metadata(&bytes, &project.metadata)
            .with_context(|| format!("embedding {}/stage.json", project.dir.display()))?,
    };
    check(&project, &bytes)?;
    let out = project.artifact();
    let mut tmp = tempfile::NamedTempFile::new_in(&project.dir)
        .with_context(|| format!("creating a file in {}", project.dir.display()))?;
    // Through the descriptor: the name is in the project's folder.
    std::io::Write::write_all(tmp.as_file_mut(), &bytes)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    tmp.persist(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "osbuild: built {} ({} stage, {:.1} MB)",
        out.display(),
        project.language.name(),
        bytes.len() as f64 / 1e6
    );
    Ok(out)
}

/// The stage as osbuild will load it: its metadata must parse, its
/// imports must be what its capabilities allow.
fn check(project: &Project, bytes: &[u8]) -> anyhow::Result<()> {
    use osbuild::stage::metadata;
    let text = metadata::wasm_metadata(bytes)?.with_context(|| {
        format!(
            "{}: the component has no `{}` section: a Rust stage ends with `osbuild_stage::stage!(run);`",
            project.dir.display(),
            metadata::WASM_SECTION
        )
    })?;
    let meta = osbuild::stage::StageMeta::parse(&String::from_utf8_lossy(&text))
        .map_err(|e| anyhow::anyhow!("the embedded stage.json: {e}"))?;
    let imports = metadata::wasm_imports(bytes)?;
    let refused = osbuild::reach::imports::refusals(&meta.capabilities, &imports);
    if !refused.is_empty() {
        let why: Vec<String> = refused.iter().map(|r| r.to_string()).collect();
        anyhow::bail!(
            "{}: osbuild would refuse this stage: it {}",
            project.name,
            why.join("; ")
        );
    }
    eprintln!(
        "osbuild: {} imports {}",
        project.name,
        osbuild::reach::imports::compact(&imports)
    );
    Ok(())
}

/// A program: `$VAR` if set, else `name` on `PATH`.
fn find_tool(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs a toolchain command in the project; on failure says which command
/// failed (its own output has gone to the terminal).
fn run(project: &Project, program: &Path, args: &[&OsStr]) -> anyhow::Result<()> {
    let shown = std::iter::once(program.as_os_str())
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("osbuild: {shown}");
    let status = Command::new(program)
        .args(args)
        // No __pycache__ left in the project by componentize-py.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&project.dir)
        .stdout(std::process::Stdio::inherit())
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        anyhow::bail!(
            "building {} failed: `{shown}` exited with {status}",
            project.name
        );
    }
    Ok(())
}

/// Writes `files` (relative path, text) under `dir`, a private folder.
fn write_private(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn python(project: &Project, scratch: &Path) -> anyhow::Result<PathBuf> {
    let tool = find_tool("OSBUILD_COMPONENTIZE_PY", "componentize-py").with_context(|| {
        format!(
            "componentize-py is not installed (looked at $OSBUILD_COMPONENTIZE_PY and on PATH). Install it: \
             `pip install {COMPONENTIZE_PY}`, or into a venv (`python3 -m venv ~/.local/share/componentize-py && \
             ~/.local/share/componentize-py/bin/pip install {COMPONENTIZE_PY}`) and set \
             OSBUILD_COMPONENTIZE_PY=~/.local/share/componentize-py/bin/componentize-py"
        )
    })?;
    write_private(scratch, &[sdk::WIT])?;
    let sdk_dir = scratch.join("python");
    write_private(&sdk_dir, sdk::PYTHON)?;
    let src = scratch.join("src");
    copy_sources(project, &src, &[".py"])?;
    let wit = scratch.join("wit");
    let out = scratch.join("component.wasm");
    run(
        project,
        &tool,
        &[
            "-d".as_ref(),
            wit.as_os_str(),
            "-w".as_ref(),
            "stage".as_ref(),
            "componentize".as_ref(),
            "--stub-wasi".as_ref(),
            "osbuild_stage.entry".as_ref(),
            "-p".as_ref(),
            sdk_dir.as_os_str(),
            "-p".as_ref(),
            src.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
    )?;
    Ok(out)
}

/// Copies the project's sources (files ending in one of `extensions`)
/// into `to`, a private folder, where the toolchain reads them (and
/// writes what it likes, `__pycache__` say) instead of in the project.
/// Symlinks in the project are not followed, and every folder walked is
/// checked as the project's own is.
fn copy_sources(project: &Project, to: &Path, extensions: &[&str]) -> anyhow::Result<()> {
    let mut stack = vec![(project.dir.clone(), to.to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        super::check_owned(&from)?;
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for e in std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))? {
            let e = e?;
            let name = e.file_name();
            let n = name.to_string_lossy();
            if n.starts_with('.') || ["node_modules", "__pycache__", "target"].contains(&&*n) {
                continue;
            }
            let ty = e.file_type()?;
            if ty.is_dir() {
                stack.push((e.path(), to.join(&name)));
            } else if ty.is_file() && extensions.iter().any(|x| n.ends_with(x)) {
                let text = super::read_project_file(&e.path(), MAX_COMPONENT)?;
                std::fs::write(to.join(&name), text)
                    .with_context(|| format!("copying {}", e.path().display()))?;
            }
        }
    }
    Ok(())
}

fn javascript(project: &Project, scratch: &Path) -> anyhow::Result<PathBuf> {
    // Not the project's own node_modules/.bin: a project is code to build,
    // not a toolchain to run.
    let tool = find_tool("OSBUILD_COMPONENTIZE_JS", "componentize-js").with_context(|| {
        format!(
            "componentize-js is not installed (looked at $OSBUILD_COMPONENTIZE_JS and on PATH). Install it: \
             `npm install -g {COMPONENTIZE_JS}` (Node.js 20 or later), or `npm install --prefix DIR {COMPONENTIZE_JS}` \
             and set OSBUILD_COMPONENTIZE_JS=DIR/node_modules/.bin/componentize-js"
        )
    })?;
    // The project's copy of the SDK (for editors) follows this osbuild's.
    sdk::write_beneath(&project.dir, "osbuild-stage.js", sdk::JS_SDK.as_bytes())?;
    write_private(scratch, &[sdk::WIT])?;
    // componentize-js resolves relative imports only: the SDK goes beside
    // the stage's modules.
    let js = scratch.join("js");
    copy_sources(project, &js, &[".js", ".mjs", ".json"])?;
    write_private(
        &js,
        &[
            ("osbuild-stage.js", sdk::JS_SDK),
            ("osbuild-entry.js", sdk::JS_ENTRY),
        ],
    )?;
    let wit = scratch.join("wit");
    let out = scratch.join("component.wasm");
    let entry = js.join("osbuild-entry.js");
    let mut args: Vec<&OsStr> = vec![
        entry.as_os_str(),
        "--wit".as_ref(),
        wit.as_os_str(),
        "--world-name".as_ref(),
        "stage".as_ref(),
        "--disable".as_ref(),
    ];
    args.extend(["stdio", "random", "clocks", "http", "fetch-event"].map(OsStr::new));
    args.extend(["-o".as_ref(), out.as_os_str()]);
    run(project, &tool, &args)?;
    Ok(out)
}

fn rust(project: &Project) -> anyhow::Result<PathBuf> {
    let cargo = find_tool("CARGO", "cargo").context(
        "cargo is not installed: install Rust with rustup (https://rustup.rs), then `rustup target add wasm32-wasip2`",
    )?;
    sdk::write_rust(&project.dir)?;
    let output = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&project.dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} build", cargo.display()))?;
    if !output.status.success() {
        let hint = if rustc_lacks_wasm_target() {
            ": the wasm32-wasip2 target is not installed; run `rustup target add wasm32-wasip2`"
        } else {
            ""
        };
        anyhow::bail!(
            "building {} failed: `cargo build --release --target wasm32-wasip2` exited with {}{hint}",
            project.name,
            output.status
        );
    }
    // The cdylib's .wasm, from cargo's own account of what it built.
    let text = String::from_utf8_lossy(&output.stdout);
    let mut found = None;
    for line in text.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || msg["manifest_path"].as_str().map(Path::new)
                != Some(&project.dir.join("Cargo.toml").canonicalize()?)
        {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            found = files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
                .or(found);
        }
    }
    found.with_context(|| {
        format!(
            "cargo built no .wasm for {}: its Cargo.toml needs `[lib] crate-type = [\"cdylib\"]`",
            project.name
        )
    })
}

fn rustc_lacks_wasm_target() -> bool {
    Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .map(|o| {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            !o.status.success() || !Path::new(&dir).is_dir()
        })
        .unwrap_or(true)
}
