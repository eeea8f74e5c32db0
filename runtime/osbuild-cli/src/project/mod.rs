//! Stage projects: `osbuild stage new|build|test`.
//!
//! A stage project is a folder with `stage.json` (the stage's metadata) and
//! its code: `Cargo.toml` (Rust), `main.py` (Python) or `main.js`
//! (JavaScript). `build` makes one `NAME.wasm` in the folder, which
//! `--libdir FOLDER` finds; `test` runs the project's `tests.json` cases
//! through osbuild itself. The SDKs come from this binary ([`sdk`]), so a
//! project needs no checkout of osbuild.

mod build;
mod new;
pub mod sdk;
mod test;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::ValueEnum;

pub use build::build;
pub use new::new;
pub use test::{TestArgs, test};

/// The languages a stage can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Language {
    Rust,
    Python,
    #[value(alias = "js")]
    Javascript,
}

impl Language {
    /// The file that says a folder is a project in this language.
    fn marker(self) -> &'static str {
        match self {
            Language::Rust => "Cargo.toml",
            Language::Python => "main.py",
            Language::Javascript => "main.js",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Javascript => "JavaScript",
        }
    }
}

/// A stage project on disk.
pub struct Project {
    pub dir: PathBuf,
    pub language: Language,
    /// `stage.json`, as text (embedded as is) and its stage name.
    pub metadata: String,
    pub name: String,
}

/// The most osbuild reads of a project's JSON files.
const MAX_JSON: u64 = 1 << 20;

/// A project file's bytes, at most `max`: a regular file, opened without
/// following a symlink or waiting on a FIFO (a project may be someone
/// else's: `stage.json -> /dev/zero` must not fill the memory).
pub fn read_project_file(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    osbuild::stage::read_regular_file(path, max, false).map_err(anyhow::Error::msg)
}

/// A folder osbuild builds in: a real folder (no symlink), owned by the
/// user osbuild runs as, and writable by no one else. Building runs the
/// project's toolchain on it (a Rust project's build.rs), and what a
/// project holds must not change under a build run as root: build a
/// project of someone else's as that user.
pub fn check_owned(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if !m.is_dir() {
        anyhow::bail!(
            "{}: not a folder (a symlink to one is not followed)",
            dir.display()
        );
    }
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me {
        anyhow::bail!(
            "{}: owned by uid {}, not by the user osbuild runs as (uid {me}); build a project as the user who owns it",
            dir.display(),
            m.uid()
        );
    }
    if m.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{}: others can write to it (mode {:04o}); `chmod go-w` it first",
            dir.display(),
            m.mode() & 0o7777
        );
    }
    Ok(())
}

/// No one else can swap `dir` (resolved) during a build: every folder
/// above it is root's or the caller's, and writable by no one else (or
/// sticky). Else root could build, and run the build.rs of, a folder
/// another user swapped in.
pub fn check_above(dir: &Path) -> anyhow::Result<()> {
    let me = rustix::process::geteuid().as_raw();
    osbuild::store::check_ancestors(dir, me).map_err(|u| {
        anyhow::anyhow!(
            "{}: it is inside {}, which {}: another user could swap the project during a build; move it to a folder only root or you can change",
            dir.display(),
            u.dir.display(),
            u.why
        )
    })
}

impl Project {
    pub fn open(dir: &Path) -> anyhow::Result<Project> {
        // Absolute, so the toolchains (run in the project) see the same paths.
        let dir = &std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
        check_owned(dir)?;
        check_above(dir)?;
        if std::fs::symlink_metadata(dir.join(sdk::DIR)).is_ok() {
            check_owned(&dir.join(sdk::DIR))?;
        }
        let meta_path = dir.join("stage.json");
        let metadata = read_project_file(&meta_path, MAX_JSON)
            .map_err(|e| {
                e.context(format!(
                    "a stage project has a stage.json (`osbuild stage new NAME {}` makes a project)",
                    dir.display()
                ))
            })
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| anyhow::anyhow!("{}: not UTF-8", meta_path.display()))
            })?;
        let meta = osbuild::stage::StageMeta::parse(&metadata)
            .map_err(|e| anyhow::anyhow!("{}: {e}", meta_path.display()))?;
        if !osbuild::stage::valid_name(&meta.name) {
            anyhow::bail!(
                "{}: name {:?}: a stage name has letters, digits, '.', '-' and '_' (it names the built NAME.wasm)",
                meta_path.display(),
                meta.name
            );
        }
        if meta.kind != osbuild::stage::Kind::Wasm {
            anyhow::bail!(
                "{}: kind is {}; `osbuild stage build` builds wasm stages",
                meta_path.display(),
                meta.kind
            );
        }
        let found: Vec<Language> = [Language::Rust, Language::Python, Language::Javascript]
            .into_iter()
            .filter(|l| dir.join(l.marker()).is_file())
            .collect();
        let language = match found[..] {
            [one] => one,
            [] => anyhow::bail!(
                "{}: no Cargo.toml, main.py or main.js: which language is this stage in?",
                dir.display()
            ),
            _ => anyhow::bail!(
                "{}: has {}: keep one language's entry point",
                dir.display(),
                found
                    .iter()
                    .map(|l| l.marker())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        };
        Ok(Project {
            dir: dir.to_path_buf(),
            language,
            name: meta.name.clone(),
            metadata,
        })
    }

    /// The built stage: `NAME.wasm` in the project, where `--libdir` finds it.
    pub fn artifact(&self) -> PathBuf {
        self.dir.join(format!("{}.wasm", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str =
        r#"{"name": "NAME", "kind": "wasm", "summary": "s", "schema": {"type": "object"}}"#;

    fn project(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stage.json"), META.replace("NAME", name)).unwrap();
        std::fs::write(dir.path().join("main.py"), "").unwrap();
        dir
    }

    fn error(dir: &Path) -> String {
        match Project::open(dir) {
            Ok(_) => panic!("{} opened", dir.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Review finding: the name chose where the built .wasm went.
    #[test]
    fn a_stage_name_that_is_a_path_is_refused() {
        for bad in ["/tmp/x", "../x", "a/b", ".x"] {
            let dir = project(bad);
            assert!(
                error(dir.path()).contains("a stage name has letters, digits"),
                "{bad}"
            );
        }
        let dir = project("io.example.ok");
        let p = Project::open(dir.path()).unwrap();
        assert_eq!(
            p.artifact(),
            dir.path()
                .canonicalize()
                .unwrap()
                .join("io.example.ok.wasm")
        );
        assert_eq!(p.language, Language::Python);
    }

    /// Review finding: `stage.json -> /dev/zero` filled the memory; a FIFO hung.
    #[test]
    fn project_files_are_read_only_if_they_are_small_regular_files() {
        let dir = project("x");
        let meta = dir.path().join("stage.json");
        std::fs::remove_file(&meta).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &meta).unwrap();
        assert!(
            error(dir.path()).contains("stage.json"),
            "{}",
            error(dir.path())
        );
        std::fs::remove_file(&meta).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &meta,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(error(dir.path()).contains("not a regular file"));
        std::fs::remove_file(&meta).unwrap();
        std::fs::write(&meta, vec![b' '; (MAX_JSON + 1) as usize]).unwrap();
        assert!(error(dir.path()).contains("more than the 1048576 osbuild reads of it"));
    }

    /// Review finding: root built a project another user could swap (its
    /// parent folder was theirs to change).
    #[test]
    fn a_project_inside_a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let outer = tempfile::tempdir().unwrap();
        std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let inner = outer.path().join("p");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(inner.join("stage.json"), META.replace("NAME", "x")).unwrap();
        std::fs::write(inner.join("main.py"), "").unwrap();
        let e = error(&inner);
        assert!(
            e.contains("which others can write (mode 777): another user could swap the project"),
            "{e}"
        );
        // Sticky, as /tmp is: others cannot rename what is not theirs.
        std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        Project::open(&inner).unwrap();
        let e = super::new::new("x", Language::Python, &outer.path().join("q"));
        assert!(e.is_ok(), "{e:?}");
        std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = super::new::new("x", Language::Python, &outer.path().join("r")).unwrap_err();
        assert!(
            format!("{e:#}").contains("another user could swap the project"),
            "{e:#}"
        );
    }

    /// Review findings: a project someone else can change under a build
    /// run as root (races on `.osbuild`, the sources, the output).
    #[test]
    fn only_a_project_of_ones_own_that_no_one_else_can_write_is_built() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = project("x");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(error(dir.path()).contains("others can write to it (mode 0775)"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Project::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join(sdk::DIR)).unwrap();
        std::fs::set_permissions(
            dir.path().join(sdk::DIR),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        assert!(error(dir.path()).contains(".osbuild: others can write to it"));
        std::fs::remove_dir(dir.path().join(sdk::DIR)).unwrap();
        std::os::unix::fs::symlink("/tmp", dir.path().join(sdk::DIR)).unwrap();
        assert!(error(dir.path()).contains("not a folder (a symlink to one is not followed)"));
        if rustix::process::geteuid().is_root() {
            std::fs::remove_file(dir.path().join(sdk::DIR)).unwrap();
            rustix::fs::chown(dir.path(), Some(rustix::process::Uid::from_raw(4242)), None)
                .unwrap();
            assert!(
                error(dir.path()).contains("owned by uid 4242, not by the user osbuild runs as")
            );
        }
    }
}
