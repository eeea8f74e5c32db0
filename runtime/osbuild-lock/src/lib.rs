//! # osbuild-lock: which packages, exactly
//!
//! A package stage (`io.weldr.mmdebstrap`, `io.weldr.dnf`) installs what
//! its mirrors offer on the day it runs. This crate is the record of that
//! day, shared by the stages and osbuild:
//!
//! - a stage reports what it installed as [`Resolved`]: every package by
//!   name, version, architecture, the URL it came from and its sha256, and
//!   the repositories with their metadata's date ([`paths::RESOLVED`]);
//! - `osbuild lock` keeps those reports as a [`LockFile`] beside the
//!   pipeline (`PIPELINE.lock.json`);
//! - a build with a lock hands each stage its entries back
//!   ([`paths::LOCK`]), and the stage installs exactly those, each checked
//!   by sha256, from the store's package cache ([`paths::CACHE`]) or
//!   downloaded ([`paths::NEW`]).
//!
//! [`guest`] is the stage's side: the cache, the lock, the report.
//!
//! A lock is input like a pipeline (anyone may hand one over), so every
//! field is checked before it reaches a file name, a URL fetch or a
//! command line: [`LockFile::parse`] and [`Resolved::check`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod guest;

/// The lock file's format; another number is refused, never guessed at.
pub const FORMAT: u32 = 1;

/// Where a native stage with the `packages` capability finds things.
pub mod paths {
    /// The store's package cache, read-only: each file named by its sha256.
    pub const CACHE: &str = "/run/osbuild/packages";
    /// Where the stage leaves what it downloaded, named by file name;
    /// osbuild keeps each one under the sha256 it hashes itself.
    pub const NEW: &str = "/run/osbuild/packages-new";
    /// The stage's entries of the build's lock, if it has one.
    pub const LOCK: &str = "/run/osbuild/lock.json";
    /// What the stage installed, as it reports it.
    pub const RESOLVED: &str = "/run/osbuild/status/packages.json";
}

/// The most packages one stage may name (a full desktop is ~3000).
pub const MAX_PACKAGES: usize = 20_000;

/// One package file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Where it is downloaded from; its last segment is the file's name.
    pub url: String,
    /// Hex, lower case.
    pub sha256: String,
    pub size: u64,
}

/// A repository a stage resolved against.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub url: String,
    /// The `Date` of its signed metadata (Debian's `Release`), or the
    /// `revision` of an RPM repository's `repomd.xml`, as the repository
    /// states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The repository's signed metadata as fetched (Debian's `InRelease`),
    /// by sha256: a locked build checks its signature and every locked
    /// package against the indexes it vouches for, offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_sha256: Option<String>,
    /// The package indexes the packages were found in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexFile>,
}

/// A package index a signed release names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    /// As the release names it: `main/binary-amd64/Packages`.
    pub path: String,
    /// sha256 of the index, uncompressed.
    pub sha256: String,
}

/// What one stage installed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Resolved {
    #[serde(default)]
    pub repositories: Vec<Repository>,
    pub packages: Vec<Package>,
}

/// One stage's entries in a lock file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StageLock {
    /// The stage's place in the pipeline, from 0.
    pub index: usize,
    pub name: String,
    /// sha256 of the stage's options in canonical JSON: a lock made for
    /// other options is stale, and refused as such.
    pub options_sha256: String,
    /// When it was resolved, in seconds since the epoch.
    pub resolved_at: i64,
    pub resolved: Resolved,
}

/// `PIPELINE.lock.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    pub stages: Vec<StageLock>,
    /// Stages a pipeline names by tag (`oci://REG/REPO:TAG`), each pinned
    /// to the reference by digest it had when locked
    /// (`oci://REG/REPO@sha256:…`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub references: std::collections::BTreeMap<String, String>,
}

/// A field of a lock or a report that cannot be used, and where it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{at}: {message}")]
pub struct LockError {
    /// A JSON path: `stages[0].resolved.packages[3].url`.
    pub at: String,
    pub message: String,
}

fn err(at: impl Into<String>, message: impl Into<String>) -> LockError {
    LockError {
        at: at.into(),
        message: message.into(),
    }
}

fn word(at: &str, value: &str, max: usize, extra: &[u8]) -> Result<(), LockError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && !value.starts_with(['-', '.'])
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(
            at,
            format!(
                "{value:?} is not a package field: 1 to {max} of A-Z a-z 0-9 {}, not starting with - or .",
                String::from_utf8_lossy(extra)
            ),
        ))
    }
}

/// The characters a package's file name may have (RPM's have `^` and `~`;
/// Debian's pool names never an epoch's colon).
const FILE_NAME_EXTRA: &[u8] = b"._+~:^-";

/// 64 lower-case hex digits: how every digest here is written.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A URL osbuild and the stages may fetch: http, https or file, printable,
/// without spaces or quotes.
pub fn check_url(at: &str, url: &str) -> Result<(), LockError> {
    let scheme_ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|s| url.starts_with(s) && url.len() > s.len());
    // No `%`: an escape would hide a `..` or a `/` from the checks below
    // (and from the file name), to be decoded by whatever fetches it.
    let chars_ok = url
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"'\\`<>{}|^%".contains(&b));
    if !scheme_ok || !chars_ok || url.len() > 2048 {
        return Err(err(
            at,
            format!(
                "{url:?} is not an http://, https:// or file:/// URL of printable characters without spaces or quotes"
            ),
        ));
    }
    if url.split('/').any(|s| s == "..") {
        return Err(err(at, format!("{url:?} has a .. segment")));
    }
    Ok(())
}

impl Package {
    /// The file's name: the URL's last segment (checked by [`Package::check`]).
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    pub fn check(&self, at: &str) -> Result<(), LockError> {
        word(&format!("{at}.name"), &self.name, 200, b"._+-")?;
        word(&format!("{at}.version"), &self.version, 200, b"._+~:^-")?;
        word(&format!("{at}.architecture"), &self.architecture, 32, b"_-")?;
        check_url(&format!("{at}.url"), &self.url)?;
        let file = self.file_name();
        word(&format!("{at}.url"), file, 255, FILE_NAME_EXTRA)?;
        if ![".deb", ".udeb", ".rpm"].iter().any(|e| file.ends_with(e)) {
            return Err(err(
                format!("{at}.url"),
                format!("{file:?} is not a .deb or .rpm file"),
            ));
        }
        if !is_sha256(&self.sha256) {
            return Err(err(
                format!("{at}.sha256"),
                format!("{:?} is not 64 lower-case hex digits", self.sha256),
            ));
        }
        Ok(())
    }

    /// "name version (architecture)", as messages name a package.
    pub fn label(&self) -> String {
        format!("{} {} ({})", self.name, self.version, self.architecture)
    }
}

impl Resolved {
    /// Every field usable, no file name twice. `at`: the JSON path of
    /// this report.
    pub fn check(&self, at: &str) -> Result<(), LockError> {
        if self.packages.len() > MAX_PACKAGES {
            return Err(err(
                format!("{at}.packages"),
                format!("{} packages; at most {MAX_PACKAGES}", self.packages.len()),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.packages.iter().enumerate() {
            let at = format!("{at}.packages[{i}]");
            p.check(&at)?;
            if !names.insert(p.file_name()) {
                return Err(err(
                    format!("{at}.url"),
                    format!("{} is named twice", p.file_name()),
                ));
            }
        }
        for (i, r) in self.repositories.iter().enumerate() {
            check_url(&format!("{at}.repositories[{i}].url"), &r.url)?;
            if r.release_sha256.as_deref().is_some_and(|s| !is_sha256(s)) {
                return Err(err(
                    format!("{at}.repositories[{i}].release_sha256"),
                    "not 64 lower-case hex digits",
                ));
            }
            for (j, idx) in r.indexes.iter().enumerate() {
                let at = format!("{at}.repositories[{i}].indexes[{j}]");
                let path_ok = !idx.path.is_empty()
                    && idx.path.len() <= 200
                    && !idx.path.starts_with('/')
                    && !idx
                        .path
                        .split('/')
                        .any(|s| s.is_empty() || s == "." || s == "..")
                    && idx
                        .path
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-/".contains(&b));
                if !path_ok {
                    return Err(err(
                        format!("{at}.path"),
                        format!(
                            "{:?} is not an index path (main/binary-amd64/Packages)",
                            idx.path
                        ),
                    ));
                }
                if !is_sha256(&idx.sha256) {
                    return Err(err(format!("{at}.sha256"), "not 64 lower-case hex digits"));
                }
            }
            if let Some(d) = &r.date
                && (d.len() > 64 || !d.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            {
                return Err(err(
                    format!("{at}.repositories[{i}].date"),
                    "not a date: at most 64 printable characters",
                ));
            }
        }
        Ok(())
    }

    /// Every digest it names: packages, signed releases and indexes (what
    /// a locked build may add to the package cache).
    pub fn digests(&self) -> impl Iterator<Item = &str> {
        self.packages
            .iter()
            .map(|p| p.sha256.as_str())
            .chain(self.repositories.iter().flat_map(|r| {
                r.release_sha256
                    .as_deref()
                    .into_iter()
                    .chain(r.indexes.iter().map(|i| i.sha256.as_str()))
            }))
    }

    /// Sorted by name, architecture and version, so that the same set is
    /// the same bytes.
    pub fn sorted(mut self) -> Resolved {
        self.packages.sort_by(|a, b| {
            (&a.name, &a.architecture, &a.version, &a.sha256).cmp(&(
                &b.name,
                &b.architecture,
                &b.version,
                &b.sha256,
            ))
        });
        self
    }

    /// What names this package set in a stage's id: the sha256 of its
    /// packages (URL and digest each) in order.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"osbuild package set v1\n");
        for p in &self.packages {
            for field in [&p.name, &p.version, &p.architecture, &p.url, &p.sha256] {
                h.update((field.len() as u64).to_le_bytes());
                h.update(field.as_bytes());
            }
            h.update(p.size.to_le_bytes());
        }
        hex::encode(h.finalize())
    }
}

impl LockFile {
    /// Parses and checks a lock file's text.
    pub fn parse(text: &[u8]) -> Result<LockFile, LockError> {
        let lock: LockFile =
            serde_json::from_slice(text).map_err(|e| err("(the lock file)", e.to_string()))?;
        if lock.version != FORMAT {
            return Err(err(
                "version",
                format!(
                    "{} is not a lock format this osbuild reads ({FORMAT}): make the lock again with osbuild lock --update",
                    lock.version
                ),
            ));
        }
        for (tagged, pinned) in &lock.references {
            let digest_ok = pinned.rsplit_once('@').is_some_and(|(base, d)| {
                d.strip_prefix("sha256:").is_some_and(is_sha256)
                    && base.starts_with("oci://")
                    && tagged
                        .strip_prefix(base)
                        .is_some_and(|tag| tag.starts_with(':'))
            });
            if !digest_ok || !tagged.starts_with("oci://") {
                return Err(err(
                    format!("references[{tagged:?}]"),
                    "must pin an oci:// reference by tag to the same repository by digest (oci://REG/REPO@sha256:HEX)",
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, s) in lock.stages.iter().enumerate() {
            if !seen.insert(s.index) {
                return Err(err(
                    format!("stages[{i}].index"),
                    format!("stage {} is locked twice", s.index),
                ));
            }
            if !is_sha256(&s.options_sha256) {
                return Err(err(
                    format!("stages[{i}].options_sha256"),
                    "not 64 lower-case hex digits",
                ));
            }
            s.resolved.check(&format!("stages[{i}].resolved"))?;
        }
        Ok(lock)
    }

    /// The entries for the stage at `index`, if any.
    pub fn stage(&self, index: usize) -> Option<&StageLock> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// The file's bytes: pretty, one field a line, so that an update is a
    /// readable diff.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a lock serializes");
        text.push('\n');
        text
    }
}

/// One package that a new resolution installs differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub name: String,
    pub architecture: String,
    /// `None`: not installed before (or after).
    pub old: Option<String>,
    pub new: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (old, new) = (
            self.old.as_deref().unwrap_or("(none)"),
            self.new.as_deref().unwrap_or("(removed)"),
        );
        write!(f, "{} ({}): {old} -> {new}", self.name, self.architecture)
    }
}

/// What changed between two package sets, by name and architecture; a
/// package whose version stayed but whose file changed (a rebuild under
/// the same version) is listed with its digests.
pub fn diff(old: &[Package], new: &[Package]) -> Vec<Change> {
    let key = |p: &Package| (p.name.clone(), p.architecture.clone());
    let index = |set: &[Package]| -> BTreeMap<(String, String), (String, String)> {
        set.iter()
            .map(|p| (key(p), (p.version.clone(), p.sha256.clone())))
            .collect()
    };
    let (old, new) = (index(old), index(new));
    let keys: BTreeSet<&(String, String)> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let (a, b) = (old.get(k), new.get(k));
        if a == b {
            continue;
        }
        let show = |v: Option<&(String, String)>, other: Option<&(String, String)>| {
            v.map(|(ver, sha)| match other {
                Some((over, _)) if over == ver => format!("{ver} (sha256 {})", &sha[..12]),
                _ => ver.clone(),
            })
        };
        out.push(Change {
            name: k.0.clone(),
            architecture: k.1.clone(),
            old: show(a, b),
            new: show(b, a),
        });
    }
    out
}

#[cfg(test)]
mod tests;
