//! The mirrors' package indexes, fetched and signature-checked by apt in
//! a scratch directory of the stage's own before mmdebstrap runs: they
//! say which cached files are the packages the mirrors offer today (by
//! the sha256 the signed index states) and, after the build, where each
//! installed package came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use osbuild_lock::guest as packages;
use osbuild_lock::{IndexFile, Package, Repository};
use osbuild_stage::anyhow::{self, Context as _};
use sha2::{Digest, Sha256};

use crate::deb822;

/// One package the indexes offer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its paragraph in the index, as the mirror signed it.
    pub stanza: String,
    pub package: Package,
}

/// Every package of every index, by (name, version, architecture).
pub struct Index {
    pub entries: HashMap<(String, String, String), Entry>,
    pub repositories: Vec<Repository>,
}

pub struct Scratch {
    dir: PathBuf,
    keyring: String,
    arch: String,
}

impl Scratch {
    /// apt's state for `mirrors` in `dir` (which must not exist).
    pub fn new(
        dir: &Path,
        mirrors: &[String],
        suite: &str,
        components: &[String],
        keyring: &str,
        arch: &str,
    ) -> anyhow::Result<Scratch> {
        for sub in ["lists/partial", "cache/archives/partial", "trusted.gpg.d"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let components = if components.is_empty() {
            "main".to_string()
        } else {
            components.join(" ")
        };
        let sources: String = mirrors
            .iter()
            .map(|m| format!("deb {m} {suite} {components}\n"))
            .collect();
        std::fs::write(dir.join("sources.list"), sources)?;
        Ok(Scratch {
            dir: dir.to_path_buf(),
            keyring: keyring.to_string(),
            arch: arch.to_string(),
        })
    }

    fn apt(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let (trusted, parts) = if Path::new(&self.keyring).is_dir() {
            (d("no-keyring.gpg"), self.keyring.clone())
        } else {
            (self.keyring.clone(), d("trusted.gpg.d"))
        };
        let mut cmd = Command::new(program);
        for opt in [
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::Etc::Trusted={trusted}"),
            format!("Dir::Etc::TrustedParts={parts}"),
            "Dir::State::status=/dev/null".into(),
            format!("Dir::Cache={}", d("cache")),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            "Acquire::Languages=none".into(),
            "Debug::NoLocking=true".into(),
            // The stage's /tmp is root's: apt's sandbox user could not
            // write its temporary files there (the stage is the sandbox).
            "APT::Sandbox::User=root".into(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    /// `apt-get update`: fetches the indexes and checks their signatures.
    pub fn update(&self) -> anyhow::Result<()> {
        let mut cmd = self.apt("apt-get");
        cmd.args(["-q", "update", "--error-on=any"]);
        osbuild_stage::host::run(&mut cmd, "apt")
            .context("fetching the mirrors' package indexes (apt-get update)")
    }

    /// Every package of the fetched indexes.
    pub fn index(&self) -> anyhow::Result<Index> {
        let mut cmd = self.apt("apt-get");
        cmd.args(["indextargets", "Created-By: Packages"]);
        let targets = osbuild_stage::host::output(&mut cmd, "apt")?;
        let mut entries = HashMap::new();
        let mut repositories: Vec<Repository> = Vec::new();
        for target in deb822::paragraphs(&targets) {
            let (Some(file), Some(repo)) = (target.field("Filename"), target.field("Repo-URI"))
            else {
                continue;
            };
            if target.field("Trusted") != Some("yes") {
                anyhow::bail!("the index {file} is not signed by the keyring; nothing was built");
            }
            if !repositories.iter().any(|r| r.url == repo) {
                let release = target.field("Base-URI").and_then(|base| self.release(base));
                repositories.push(Repository {
                    url: repo.to_string(),
                    date: release.as_ref().and_then(|(_, date)| date.clone()),
                    release_sha256: release.map(|(sha, _)| sha),
                    indexes: Vec::new(),
                });
            }
            let mut cat = Command::new("/usr/lib/apt/apt-helper");
            cat.args(["cat-file", file]);
            let text = osbuild_stage::host::output(&mut cat, "apt")?;
            // The index as the release names it, kept for locked builds
            // to check packages against offline.
            if let (Some(path), Some(r)) = (
                target.field("MetaKey"),
                repositories.iter_mut().find(|r| r.url == repo),
            ) {
                let sha = keep(&format!("{}_Packages", flat(file)), text.as_bytes())?;
                r.indexes.push(IndexFile {
                    path: path.to_string(),
                    sha256: sha,
                });
            }
            for p in deb822::paragraphs(&text) {
                let (Some(name), Some(version), Some(arch), Some(filename), Some(sha), Some(size)) = (
                    p.field("Package"),
                    p.field("Version"),
                    p.field("Architecture"),
                    p.field("Filename"),
                    p.field("SHA256"),
                    p.field("Size").and_then(|s| s.parse().ok()),
                ) else {
                    continue;
                };
                let package = Package {
                    name: name.into(),
                    version: version.into(),
                    architecture: arch.into(),
                    url: format!("{}{filename}", repo),
                    sha256: sha.to_ascii_lowercase(),
                    size,
                };
                // The first index that has a package wins, as with apt.
                entries
                    .entry((name.into(), version.into(), arch.into()))
                    .or_insert(Entry {
                        stanza: p.text.to_string(),
                        package,
                    });
            }
        }
        Ok(Index {
            entries,
            repositories,
        })
    }

    /// The signed Release file for `base` (`http://m/debian/dists/bookworm/`)
    /// as apt fetched it: kept for osbuild (its sha256), with its `Date`.
    fn release(&self, base: &str) -> Option<(String, Option<String>)> {
        let bare = base.split_once("://").map_or(base, |(_, rest)| rest);
        let bare = bare.rsplit_once('@').map_or(bare, |(_, host)| host);
        let name = format!("{}InRelease", bare.replace('/', "_"));
        let bytes = std::fs::read(self.dir.join("lists").join(&name)).ok()?;
        let sha = keep(&name, &bytes).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let date = text
            .split("\n\n")
            .find(|p| p.contains("\nDate:") || p.starts_with("Date:"))
            .and_then(|header| deb822::Paragraph { text: header }.field("Date"))
            .map(str::to_string);
        Some((sha, date))
    }
}

/// A list file's name without apt's compression extension.
fn flat(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let name = [".lz4", ".gz", ".xz", ".zst", ".bz2", ".lzma"]
        .iter()
        .find_map(|e| name.strip_suffix(e))
        .unwrap_or(name);
    name.strip_suffix("_Packages").unwrap_or(name).to_string()
}

/// Hands `bytes` to osbuild's package cache as `name`; their sha256.
pub fn keep(name: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let sha = hex::encode(Sha256::digest(bytes));
    if packages::cached(&sha).is_none() {
        let path = packages::new_dir().join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(sha)
}
