//! `osbuild stage test [DIR]`: the project's `tests.json` cases, each run
//! by osbuild itself (this binary, as a user runs it) on a small tree the
//! case describes, and the saved tree compared with what the case expects.
//!
//! A case:
//!
//! ```json
//! { "name": "writes the message",
//!   "options": { "text": "Hi" },
//!   "tree":   { "/etc": { "type": "directory" } },
//!   "expect": { "/etc/motd": { "content": "Hi\n", "mode": "0644", "uid": 0 },
//!               "/etc/issue.net": { "target": "/etc/motd" },
//!               "/etc/old": { "absent": true } } }
//! ```
//!
//! or, for a failure, `"error": "text the error contains"` instead of
//! `"expect"`. An entry is `"type"` (file, directory, symlink; a
//! `"content"` means file and a `"target"` symlink), `"mode"` (octal
//! text), `"uid"`, `"gid"`, `"xattrs"` (name to text); an expectation
//! checks only what it names.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde::Deserialize;

use super::{Language, Project};

/// The source epoch of every case's pipeline.
const EPOCH: i64 = 1_700_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    tree: BTreeMap<String, Spec>,
    #[serde(default)]
    expect: BTreeMap<String, Spec>,
    error: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(rename = "type")]
    kind: Option<String>,
    content: Option<String>,
    target: Option<String>,
    mode: Option<String>,
    uid: Option<u64>,
    gid: Option<u64>,
    #[serde(default)]
    xattrs: BTreeMap<String, String>,
    #[serde(default)]
    absent: bool,
}

impl Spec {
    fn kind(&self) -> &str {
        match (&self.kind, &self.content, &self.target) {
            (Some(k), _, _) => k,
            (None, _, Some(_)) => "symlink",
            _ => "file",
        }
    }

    fn mode(&self, path: &str) -> anyhow::Result<Option<u32>> {
        self.mode
            .as_deref()
            .map(|m| {
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .with_context(|| {
                        format!("{path}: mode {m:?} is not octal permission bits (\"0644\")")
                    })
            })
            .transpose()
    }
}

/// An entry of the saved tree.
#[derive(Debug)]
struct Found {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    content: Vec<u8>,
    target: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Options osbuild passes on to each case's build (`--store`, `--libdir`).
pub struct TestArgs {
    pub store: Option<PathBuf>,
    pub libdirs: Vec<PathBuf>,
}

/// Builds the project, runs its own tests (`cargo test` for Rust), then
/// every case of `tests.json`. Fails if any case fails.
pub fn test(dir: &Path, passed: &TestArgs) -> anyhow::Result<()> {
    let project = Project::open(dir)?;
    super::build(dir)?;
    if project.language == Language::Rust {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .arg("test")
            .current_dir(dir)
            .status()
            .context("running cargo test")?;
        if !status.success() {
            anyhow::bail!("`cargo test` in {} exited with {status}", dir.display());
        }
    }
    let path = dir.join("tests.json");
    if std::fs::symlink_metadata(&path).is_err() {
        eprintln!(
            "osbuild: {} has no tests.json: no cases to run",
            dir.display()
        );
        return Ok(());
    }
    let text = super::read_project_file(&path, 16 << 20)?;
    let cases: Vec<Case> = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a list of cases", path.display()))?;
    let mut failed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        match run_case(&project, passed, case) {
            Ok(()) => eprintln!("ok   {}", case.name),
            Err(e) => {
                eprintln!("FAIL {}: {e:#}", case.name);
                failed.push(format!("tests.json[{i}] ({})", case.name));
            }
        }
    }
    eprintln!(
        "osbuild: {}: {} passed, {} failed",
        project.name,
        cases.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        anyhow::bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_case(project: &Project, passed: &TestArgs, case: &Case) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a scratch folder")?;
    let pipeline = tmp.path().join("pipeline.json");
    let json = serde_json::json!({
        "name": format!("{}: {}", project.name, case.name),
        "source_epoch": EPOCH,
        "pipeline": [{ "name": project.name, "options": case.options }],
    });
    std::fs::write(&pipeline, serde_json::to_vec_pretty(&json)?)?;
    let from = tmp.path().join("from.tar");
    write_tree(&from, &case.tree)?;
    let saved = tmp.path().join("saved.tar");
    // This very binary, even if its file was replaced since it started.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--quiet")
        .arg("--no-cache")
        .arg("--libdir")
        .arg(&project.dir);
    for l in &passed.libdirs {
        cmd.arg("--libdir").arg(l);
    }
    if let Some(s) = &passed.store {
        cmd.arg("--store").arg(s);
    }
    cmd.arg("--from")
        .arg(&from)
        .arg("--save")
        .arg(&saved)
        .arg(&pipeline);
    let out = cmd.output().context("running osbuild")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match &case.error {
        Some(needle) => {
            if out.status.code() != Some(1) {
                anyhow::bail!(
                    "expected the stage to fail (exit 1), got {}:\n{stderr}",
                    out.status
                );
            }
            if !stderr.contains(needle.as_str()) {
                anyhow::bail!("the error lacks {needle:?}:\n{stderr}");
            }
            Ok(())
        }
        None => {
            if !out.status.success() {
                anyhow::bail!("osbuild exited with {}:\n{stderr}", out.status);
            }
            compare(&read_tree(&saved, &case.expect)?, &case.expect)
        }
    }
}

fn normal(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_matches('/');
    format!("/{p}")
}

/// The case's starting tree as a tar, parents first, stamped at the epoch.
fn write_tree(dest: &Path, tree: &BTreeMap<String, Spec>) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut tar = tar::Builder::new(file);
    // The tree is the case's own: a path that climbs out of it is an error
    // in tests.json (osbuild would refuse the archive entry anyway).
    if let Some(p) = tree.keys().find(|p| {
        Path::new(p)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    }) {
        anyhow::bail!("tree {p}: a path in the case's tree has no '..'");
    }
    let mut dirs = std::collections::BTreeSet::new();
    for path in tree.keys() {
        let path = normal(path);
        let mut p = Path::new(&path).parent();
        while let Some(d) = p.filter(|d| *d != Path::new("/")) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    let given: std::collections::BTreeSet<String> = tree.keys().map(|p| normal(p)).collect();
    let mut entries: Vec<(String, Spec)> = dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .filter(|d| !given.contains(d))
        .map(|d| {
            let dir = Spec {
                kind: Some("directory".into()),
                ..Spec::default()
            };
            (d, dir)
        })
        .collect();
    entries.extend(tree.iter().map(|(p, s)| (normal(p), s.clone())));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, spec) in entries {
        let mut h = tar::Header::new_gnu();
        let kind = spec.kind();
        let default_mode = if kind == "directory" { 0o755 } else { 0o644 };
        h.set_mode(spec.mode(&path)?.unwrap_or(default_mode));
        h.set_uid(spec.uid.unwrap_or(0));
        h.set_gid(spec.gid.unwrap_or(0));
        h.set_mtime(EPOCH as u64);
        let content = spec.content.as_deref().unwrap_or("").as_bytes();
        let ty = match kind {
            "file" => tar::EntryType::Regular,
            "directory" => tar::EntryType::Directory,
            "symlink" => tar::EntryType::Symlink,
            other => anyhow::bail!(
                "tree {path}: type {other:?}: a starting tree has file, directory or symlink"
            ),
        };
        h.set_entry_type(ty);
        h.set_size(if ty == tar::EntryType::Regular {
            content.len() as u64
        } else {
            0
        });
        if !spec.xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = spec
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_bytes()))
                .collect();
            tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let name = format!(".{path}");
        if ty == tar::EntryType::Symlink {
            let target = spec.target.as_deref().unwrap_or_default();
            tar.append_link(&mut h, &name, target)?;
        } else {
            tar.append_data(&mut h, &name, content)?;
        }
    }
    tar.finish()?;
    Ok(())
}

/// The most of one file's content a case compares.
const MAX_CONTENT: u64 = 64 << 20;

/// The saved tree's entries; the content only of files whose content is
/// expected (a stage may leave big files behind).
fn read_tree(
    archive: &Path,
    expect: &BTreeMap<String, Spec>,
) -> anyhow::Result<BTreeMap<String, Found>> {
    let wanted: std::collections::BTreeSet<String> = expect
        .iter()
        .filter(|(_, s)| s.content.is_some())
        .map(|(p, _)| normal(p))
        .collect();
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(file);
    let mut out = BTreeMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = normal(&entry.path()?.to_string_lossy());
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Link => "file",
            tar::EntryType::Directory => "directory",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Char => "char-device",
            tar::EntryType::Block => "block-device",
            tar::EntryType::Fifo => "fifo",
            _ => "other",
        };
        let (mode, uid, gid) = (h.mode()?, h.uid()?, h.gid()?);
        let target = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
        let mut content = Vec::new();
        if wanted.contains(&path) {
            (&mut entry).take(MAX_CONTENT).read_to_end(&mut content)?;
        }
        out.insert(
            path,
            Found {
                kind,
                mode,
                uid,
                gid,
                content,
                target,
                xattrs,
            },
        );
    }
    Ok(out)
}

fn compare(tree: &BTreeMap<String, Found>, expect: &BTreeMap<String, Spec>) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for (path, spec) in expect {
        let path = normal(path);
        let Some(f) = tree.get(&path) else {
            if !spec.absent {
                wrong.push(format!("{path}: missing"));
            }
            continue;
        };
        if spec.absent {
            wrong.push(format!("{path}: is there (a {}), expected absent", f.kind));
            continue;
        }
        let kind = spec.kind();
        if f.kind != kind {
            wrong.push(format!("{path}: is a {}, expected a {kind}", f.kind));
            continue;
        }
        if let Some(c) = &spec.content
            && f.content != c.as_bytes()
        {
            wrong.push(format!(
                "{path}: content is {:?}, expected {c:?}",
                String::from_utf8_lossy(&f.content)
            ));
        }
        if let Some(t) = &spec.target
            && f.target.as_deref() != Some(t.as_str())
        {
            wrong.push(format!("{path}: links to {:?}, expected {t:?}", f.target));
        }
        if let Some(m) = spec.mode(&path)?
            && f.mode & 0o7777 != m
        {
            wrong.push(format!(
                "{path}: mode is {:04o}, expected {m:04o}",
                f.mode & 0o7777
            ));
        }
        if let Some(u) = spec.uid
            && f.uid != u
        {
            wrong.push(format!("{path}: uid is {}, expected {u}", f.uid));
        }
        if let Some(g) = spec.gid
            && f.gid != g
        {
            wrong.push(format!("{path}: gid is {}, expected {g}", f.gid));
        }
        for (name, value) in &spec.xattrs {
            match f.xattrs.get(name) {
                Some(v) if v == value.as_bytes() => {}
                Some(v) => wrong.push(format!(
                    "{path}: xattr {name} is {:?}, expected {value:?}",
                    String::from_utf8_lossy(v)
                )),
                None => wrong.push(format!("{path}: has no xattr {name}")),
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", wrong.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> BTreeMap<String, Spec> {
        serde_json::from_value(json).unwrap()
    }

    /// The comparison is what every stage project's tests rest on: it must
    /// fail on each kind of difference.
    #[test]
    fn a_tree_written_and_read_back_compares_and_each_difference_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("t.tar");
        let tree = spec(serde_json::json!({
            "/etc/motd": {"content": "hi\n", "mode": "0640", "uid": 7, "gid": 8, "xattrs": {"user.a": "b"}},
            "/etc/issue.net": {"target": "/etc/motd"},
        }));
        write_tree(&tar, &tree).unwrap();
        let found = read_tree(&tar, &tree).unwrap();
        assert_eq!(found["/etc"].kind, "directory");
        compare(&found, &tree).unwrap();
        let bad = spec(serde_json::json!({
            "/etc/motd": {"content": "ho\n", "mode": "0644", "uid": 1, "gid": 2, "xattrs": {"user.a": "c", "user.z": "z"}},
            "/etc/issue.net": {"target": "/x"},
            "/etc": {"type": "file"},
            "/gone": {"absent": true},
            "/missing": {},
        }));
        let e = compare(&found, &bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc: is a directory, expected a file; \
             /etc/issue.net: links to Some(\"/etc/motd\"), expected \"/x\"; \
             /etc/motd: content is \"hi\\n\", expected \"ho\\n\"; \
             /etc/motd: mode is 0640, expected 0644; /etc/motd: uid is 7, expected 1; \
             /etc/motd: gid is 8, expected 2; /etc/motd: xattr user.a is \"b\", expected \"c\"; \
             /etc/motd: has no xattr user.z; /missing: missing"
        );
        let climbing = spec(serde_json::json!({"/../../etc/shadow": {"content": "x"}}));
        let e = write_tree(&dir.path().join("c.tar"), &climbing).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tree /../../etc/shadow: a path in the case's tree has no '..'"
        );
        let present = spec(serde_json::json!({"/etc/motd": {"absent": true}}));
        assert_eq!(
            compare(&found, &present).unwrap_err().to_string(),
            "/etc/motd: is there (a file), expected absent"
        );
    }
}
