//! The SDKs and the stage world, embedded in the osbuild binary, so a stage
//! project builds outside this repository and offline. The Python and
//! JavaScript SDKs go into `stage build`'s private folder, beside a copy
//! of the sources; the Rust SDK, which a project's Cargo.toml names, into
//! the project's `.osbuild/` (`stage new` and `stage build` write it).
//!
//! The Rust SDK is not on the crates registry: its two crates are copied
//! with manifests that no longer inherit from this workspace.

use std::path::Path;

use anyhow::Context as _;

/// Where in a Rust project the SDK goes (a build artifact, refreshed by
/// every `stage build`; `stage new` puts it in `.gitignore`).
pub const DIR: &str = ".osbuild";

/// The current stage world, as `wit/stage.wit` (in a Rust project's `.osbuild/`).
pub const WIT: (&str, &str) = ("wit/stage.wit", include_str!("../../../../wit/stage.wit"));

macro_rules! files {
    ($base:literal => $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../../", $base, "/", $path)))),*]
    };
}

/// The Python SDK (the `osbuild_stage` package), relative to the folder
/// put on componentize-py's path.
pub const PYTHON: &[(&str, &str)] = files!("stage-guest/python" =>
    "osbuild_stage/__init__.py",
    "osbuild_stage/_console.py",
    "osbuild_stage/_context.py",
    "osbuild_stage/_errors.py",
    "osbuild_stage/_tree.py",
    "osbuild_stage/entry.py",
);

/// The JavaScript SDK (`osbuild-stage.js`) and the component's entry module.
pub const JS_SDK: &str = include_str!("../../../../stage-guest/js/osbuild-stage.js");
pub const JS_ENTRY: &str = include_str!("../../../../stage-guest/js/entry.js");

/// The Rust SDK's sources, relative to `.osbuild/sdk` (tests left out).
pub const RUST: &[(&str, &str)] = files!("." =>
    "stage-guest/osbuild-stage/src/__private.rs",
    "stage-guest/osbuild-stage/src/checks.rs",
    "stage-guest/osbuild-stage/src/context.rs",
    "stage-guest/osbuild-stage/src/error.rs",
    "stage-guest/osbuild-stage/src/formats/accounts.rs",
    "stage-guest/osbuild-stage/src/formats/dropin.rs",
    "stage-guest/osbuild-stage/src/formats/keyvalue.rs",
    "stage-guest/osbuild-stage/src/formats/mod.rs",
    "stage-guest/osbuild-stage/src/formats/passwd.rs",
    "stage-guest/osbuild-stage/src/formats/unit.rs",
    "stage-guest/osbuild-stage/src/host.rs",
    "stage-guest/osbuild-stage/src/lib.rs",
    "stage-guest/osbuild-stage/src/tree/mod.rs",
    "stage-guest/osbuild-stage/src/tree/native.rs",
    "stage-guest/osbuild-stage/src/tree/wasm.rs",
    "runtime/osbuild-tree-fs/src/lib.rs",
    "runtime/osbuild-tree-fs/src/stand_in.rs",
);

/// The manifests the copies are built with: the crates' own, with what
/// they inherit from the workspace written out.
const MANIFESTS: &[(&str, &str)] = &[
    (
        "stage-guest/osbuild-stage",
        include_str!("../../../../stage-guest/osbuild-stage/Cargo.toml"),
    ),
    (
        "runtime/osbuild-tree-fs",
        include_str!("../../../../runtime/osbuild-tree-fs/Cargo.toml"),
    ),
];
const WORKSPACE: &str = include_str!("../../../../Cargo.toml");

/// Where a repository path lands under `.osbuild/sdk` (crates side by side).
fn vendored(path: &str) -> String {
    let mut parts = path.splitn(2, '/');
    let _top = parts.next();
    parts.next().unwrap_or(path).to_string()
}

/// The value of `key = ...` in the workspace's `[section]` (one line each,
/// as this workspace writes them).
fn workspace_value(section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in WORKSPACE.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
            continue;
        }
        if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// A crate manifest with what it inherits written out, the other SDK crate
/// by relative path, and no lints or dev-dependencies (a copy is not
/// developed, only built).
pub fn standalone_manifest(manifest: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut section = String::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_string();
            if section == "[lints]" || section == "[dev-dependencies]" {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if section == "[lints]" || section == "[dev-dependencies]" {
            continue;
        }
        let Some(name) = trimmed.strip_suffix(".workspace = true") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let value = if section == "[package]" {
            workspace_value("workspace.package", name)
        } else if name.starts_with("osbuild-") {
            Some(format!("{{ path = \"../{name}\" }}"))
        } else {
            workspace_value("workspace.dependencies", name)
        }
        .with_context(|| format!("the workspace does not say what {name} is"))?;
        out.push_str(&format!("{name} = {value}\n"));
    }
    Ok(out)
}

/// Writes `contents` to `rel` below `root`, making the folders on the way,
/// never through a symlink and never into anything but a regular file: a
/// project may come from someone else, and a planted `.osbuild -> /etc`
/// must not make a `stage build` run as root write into `/etc`.
pub fn write_beneath(root: &Path, rel: &str, contents: &[u8]) -> anyhow::Result<()> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let shown = root.join(rel);
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let err = |what: &str, e: rustix::io::Errno| {
        anyhow::anyhow!(
            "{}: {what}: {} (osbuild writes project files only as regular files, not through symlinks)",
            shown.display(),
            std::io::Error::from(e)
        )
    };
    let mut dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("opening the project", e))?;
    let rel = Path::new(rel);
    let name = rel.file_name().context("a file name")?;
    for part in rel.parent().into_iter().flat_map(|p| p.components()) {
        match rustix::fs::mkdirat(&dir, part.as_os_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(err("making a folder", e)),
        }
        dir = rustix::fs::openat2(
            &dir,
            part.as_os_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
        .map_err(|e| err("opening a folder", e))?;
    }
    let fd = rustix::fs::openat2(
        &dir,
        name,
        OFlags::RDWR
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
        resolve,
    )
    .map_err(|e| err("opening", e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| err("stat", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        anyhow::bail!("{}: not a regular file", shown.display());
    }
    // A hard link to a file elsewhere would be written there too.
    if st.st_nlink > 1 {
        anyhow::bail!(
            "{}: has other hard links; remove it and build again",
            shown.display()
        );
    }
    let mut file = std::fs::File::from(fd);
    // Unchanged files keep their mtime, so cargo does not rebuild them.
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut old)
        .with_context(|| format!("reading {}", shown.display()))?;
    if old == contents {
        return Ok(());
    }
    file.set_len(0)
        .with_context(|| format!("truncating {}", shown.display()))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    std::io::Write::write_all(&mut file, contents)
        .with_context(|| format!("writing {}", shown.display()))
}

fn write(project: &Path, rel: &str, contents: &str) -> anyhow::Result<()> {
    write_beneath(project, rel, contents.as_bytes())
}

/// Writes the stage world to `project/.osbuild/wit` (the Rust SDK's
/// bindings read it from there).
fn write_wit(project: &Path) -> anyhow::Result<()> {
    write(project, &format!("{DIR}/{}", WIT.0), WIT.1)
}

/// Writes the Rust SDK to `project/.osbuild/sdk` (and the world it reads).
pub fn write_rust(project: &Path) -> anyhow::Result<()> {
    write_wit(project)?;
    for (rel, text) in RUST {
        write(project, &format!("{DIR}/sdk/{}", vendored(rel)), text)?;
    }
    for (krate, manifest) in MANIFESTS {
        let text = standalone_manifest(manifest)?;
        write(
            project,
            &format!("{DIR}/sdk/{}/Cargo.toml", vendored(krate)),
            &text,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source file of the SDK crates is embedded: a new module that
    /// is not listed would break every stage project's build.
    #[test]
    fn every_sdk_source_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut found = Vec::new();
        for krate in [
            "stage-guest/osbuild-stage/src",
            "runtime/osbuild-tree-fs/src",
        ] {
            let mut stack = vec![root.join(krate)];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.file_name().unwrap() != "tests.rs" {
                        found.push(p.strip_prefix(&root).unwrap().to_str().unwrap().to_string());
                    }
                }
            }
        }
        found.sort();
        let mut listed: Vec<&str> = RUST.iter().map(|(p, _)| *p).collect();
        listed.sort();
        assert_eq!(found, listed);
        let mut py: Vec<String> = std::fs::read_dir(root.join("stage-guest/python/osbuild_stage"))
            .unwrap()
            .map(|e| format!("osbuild_stage/{}", e.unwrap().file_name().to_str().unwrap()))
            .filter(|n| n.ends_with(".py"))
            .collect();
        py.sort();
        let listed: Vec<&str> = PYTHON.iter().map(|(p, _)| *p).collect();
        assert_eq!(py, listed);
    }

    /// A project from someone else may hold symlinks where osbuild writes.
    #[test]
    fn project_files_are_never_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("p");
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("file"), "keep").unwrap();
        std::os::unix::fs::symlink(&victim, project.join(".osbuild")).unwrap();
        let e = write_wit(&project).unwrap_err().to_string();
        assert!(e.contains("not through symlinks"), "{e}");
        std::fs::remove_file(project.join(".osbuild")).unwrap();
        std::os::unix::fs::symlink(victim.join("file"), project.join("osbuild-stage.js")).unwrap();
        let e = write_beneath(&project, "osbuild-stage.js", b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not through symlinks"), "{e}");
        assert_eq!(std::fs::read(victim.join("file")).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
        // A FIFO is not opened for writing, and not waited on.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            project.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = write_beneath(&project, "fifo", b"x")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("not a regular file"), "{e}");
        write_wit(&project).unwrap();
        assert_eq!(
            std::fs::read_to_string(project.join(".osbuild/wit/stage.wit")).unwrap(),
            WIT.1
        );
    }

    #[test]
    fn the_sdk_manifest_stands_alone() {
        let m = standalone_manifest(MANIFESTS[0].1).unwrap();
        assert!(!m.contains("workspace"), "{m}");
        assert!(m.contains("edition = \"2024\"\n"), "{m}");
        assert!(
            m.contains("osbuild-tree-fs = { path = \"../osbuild-tree-fs\" }\n"),
            "{m}"
        );
        assert!(m.contains("wit-bindgen = { version = \"0.61\""), "{m}");
        assert!(!m.contains("tempfile"), "{m}");
    }
}
