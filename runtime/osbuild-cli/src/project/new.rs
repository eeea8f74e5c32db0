//! `osbuild stage new NAME [--lang L] [DIR]`: a project that builds, with
//! a working stage (it writes `/etc/motd`), its schema, tests and README.

use std::path::Path;

use anyhow::Context as _;

use super::{Language, sdk};

const STAGE_JSON: &str = include_str!("../../templates/stage.json");
const TESTS_JSON: &str = include_str!("../../templates/tests.json");
const README: &str = include_str!("../../templates/README.md");
const PYTHON: &str = include_str!("../../templates/python/main.py");
const JAVASCRIPT: &str = include_str!("../../templates/javascript/main.js");
const RUST: &str = include_str!("../../templates/rust/src/lib.rs");

const GITIGNORE: &str = "# Written by osbuild stage build.\n/.osbuild/\n/*.wasm\n/target/\n/node_modules/\n__pycache__/\n";

/// A stage name: what `--libdir` finds as `NAME.wasm` and a pipeline names.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if !ok {
        anyhow::bail!(
            "stage name {name:?}: use letters, digits, '.', '-' and '_', starting with a letter (e.g. io.example.motd)"
        );
    }
    Ok(())
}

fn cargo_toml(name: &str) -> String {
    let krate: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        r#"[package]
name = "{krate}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# The SDK, written to .osbuild/sdk by `osbuild stage new` and `osbuild stage build`.
osbuild-stage = {{ path = ".osbuild/sdk/osbuild-stage" }}
serde = {{ version = "1", features = ["derive"] }}

[dev-dependencies]
tempfile = "3"

# A project of its own, wherever it is.
[workspace]
"#
    )
}

/// Writes a new project for stage `name` in `dir` (which must be empty or
/// missing).
pub fn new(name: &str, language: Language, dir: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    if let Ok(m) = std::fs::symlink_metadata(dir)
        && !m.is_dir()
    {
        anyhow::bail!(
            "{}: not a folder (a symlink to one is not followed)",
            dir.display()
        );
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{}: not empty; `osbuild stage new` writes a project into an empty or new folder",
            dir.display()
        );
    }
    let (code_path, code, build_note, test_note) = match language {
        Language::Python => ("main.py", PYTHON, " (needs componentize-py)", ""),
        Language::Javascript => (
            "main.js",
            JAVASCRIPT,
            " (needs componentize-js: npm install -g @bytecodealliance/componentize-js@0.23.0)",
            "",
        ),
        Language::Rust => (
            "src/lib.rs",
            RUST,
            " (needs `rustup target add wasm32-wasip2`)",
            ", after cargo test",
        ),
    };
    let fill = |t: &str| {
        t.replace("@NAME@", name)
            .replace("@LANGUAGE@", language.name())
            .replace("@CODE@", code_path)
            .replace("@BUILD_NOTE@", build_note)
            .replace("@TEST_NOTE@", test_note)
    };
    let mut files = vec![
        ("stage.json".to_string(), fill(STAGE_JSON)),
        ("tests.json".to_string(), fill(TESTS_JSON)),
        ("README.md".to_string(), fill(README)),
        (".gitignore".to_string(), GITIGNORE.to_string()),
        (code_path.to_string(), fill(code)),
    ];
    match language {
        Language::Rust => files.push(("Cargo.toml".into(), cargo_toml(name))),
        // For editors and readers: the SDK the code imports.
        Language::Javascript => files.push(("osbuild-stage.js".into(), sdk::JS_SDK.into())),
        Language::Python => {}
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Resolved and checked once made: no one else can swap it from here on.
    let dir = &std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    super::check_owned(dir)?;
    super::check_above(dir)?;
    for (rel, text) in files {
        sdk::write_beneath(dir, &rel, text.as_bytes())?;
    }
    // Its Cargo.toml names the SDK; Python and JavaScript SDKs are put
    // beside the sources only where `stage build` builds them.
    if language == Language::Rust {
        sdk::write_rust(dir)?;
    }
    eprintln!(
        "osbuild: wrote a {} stage {name} in {}; next: osbuild stage build {}",
        language.name(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_file_names_or_stage_names_are_refused() {
        for bad in ["", "../x", "a/b", "-x", ".hidden", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["motd", "io.example.motd", "my_stage-2"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn a_new_project_refuses_a_folder_with_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let e = new("motd", Language::Python, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "not empty; `osbuild stage new` writes a project into an empty or new folder"
            ),
            "{e}"
        );
        assert_eq!(std::fs::read(dir.path().join("keep")).unwrap(), b"x");
    }
}
