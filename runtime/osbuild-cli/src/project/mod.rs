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

impl Project {
    pub fn open(dir: &Path) -> anyhow::Result<Project> {
        let meta_path = dir.join("stage.json");
        let metadata = std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "{}: cannot read it; a stage project has one (`osbuild stage new NAME {}` makes a project)",
                meta_path.display(),
                dir.display()
            )
        })?;
        let meta = osbuild::stage::StageMeta::parse(&metadata)
            .map_err(|e| anyhow::anyhow!("{}: {e}", meta_path.display()))?;
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

    fn work_dir(&self) -> PathBuf {
        self.dir.join(sdk::DIR)
    }
}
