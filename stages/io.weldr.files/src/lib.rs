//! `io.weldr.files`: file operations inside the tree: `remove`, `mkdir`,
//! `write` (inline content), `symlink`, `chown` and `chmod`, done in that
//! order. Their options follow osbuild's `org.osbuild.mkdir`, `ln`, `chown`
//! and `chmod` stages.
//!
//! Every path is absolute and inside the tree: a `..` component is an
//! error, and so is a symlink target that would climb out of the tree.
//! Users and groups may be names (looked up in the tree's `/etc/passwd`
//! and `/etc/group`) or numbers.

mod mode;

use std::collections::BTreeMap;
use std::io;

use osbuild_stage::formats::passwd::{Database, Group, Passwd};
use osbuild_stage::serde_json::Value;
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

pub use mode::{Mode, parse_mode};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Paths to remove (recursively; missing ones are fine).
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub mkdir: Vec<Mkdir>,
    #[serde(default)]
    pub write: Vec<Write>,
    #[serde(default)]
    pub symlink: Vec<Symlink>,
    /// Path → new owner (osbuild's `org.osbuild.chown` `items`).
    #[serde(default)]
    pub chown: BTreeMap<String, Chown>,
    /// Path → new mode (osbuild's `org.osbuild.chmod` `items`).
    #[serde(default)]
    pub chmod: BTreeMap<String, Chmod>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Mkdir {
    pub path: String,
    /// A number (osbuild's form: JSON has no octal, so 493 is 0755) or an
    /// octal string ("0755"). Default 0755.
    #[serde(default)]
    pub mode: Option<Value>,
    #[serde(default)]
    pub parents: bool,
    #[serde(default)]
    pub exist_ok: bool,
    #[serde(default)]
    pub user: Option<Value>,
    #[serde(default)]
    pub group: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Write {
    pub path: String,
    #[serde(default)]
    pub content: String,
    /// As for mkdir; default 0644 for a new file, unchanged for an existing one.
    #[serde(default)]
    pub mode: Option<Value>,
    #[serde(default)]
    pub user: Option<Value>,
    #[serde(default)]
    pub group: Option<Value>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    /// What the link points to, stored as given (relative or absolute).
    pub target: String,
    pub link_name: String,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Chown {
    #[serde(default)]
    pub user: Option<Value>,
    #[serde(default)]
    pub group: Option<Value>,
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Chmod {
    /// Octal ("0755") or symbolic ("u+x,go-w") as chmod(1) takes it.
    pub mode: String,
    #[serde(default)]
    pub recursive: bool,
}

fn opt_err(option: impl Into<String>, message: impl Into<String>) -> anyhow::Error {
    OptionError::new(option, message).into()
}

/// A path inside the tree, made canonical (`//` and `.` dropped); `..`
/// anywhere is an error.
pub fn tree_path(option: &str, path: &str) -> anyhow::Result<String> {
    if !path.starts_with('/') {
        return Err(opt_err(option, format!("{path:?} is not an absolute path")));
    }
    if path.contains('\0') {
        return Err(opt_err(option, "contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(opt_err(
                    option,
                    format!("{path:?} contains '..': paths must stay inside the tree"),
                ));
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Checks that a symlink at `link` (canonical) pointing to `target` stays
/// inside the tree when followed lexically.
pub fn check_target(option: &str, link: &str, target: &str) -> anyhow::Result<()> {
    if target.is_empty() || target.contains('\0') {
        return Err(opt_err(option, "is empty or contains a NUL byte"));
    }
    let mut depth: i64 = if target.starts_with('/') {
        0
    } else {
        link.matches('/').count() as i64 - 1
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(opt_err(
                        option,
                        format!(
                            "{target:?} from {link} climbs out of the tree's root: keep links inside the tree"
                        ),
                    ));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Numeric mode from a mkdir/write option: a number or an octal string.
fn numeric_mode(option: &str, v: &Value) -> anyhow::Result<u32> {
    let mode = match v {
        Value::Number(n) => n.as_u64().filter(|m| *m <= 0o7777).map(|m| m as u32),
        Value::String(s) if (1..=5).contains(&s.len()) => {
            u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
        }
        _ => None,
    };
    mode.ok_or_else(|| {
        opt_err(
            option,
            format!("{v} is not a mode: an octal string like \"0755\" or a number up to 4095"),
        )
    })
}

/// Users and groups, looked up lazily in the tree's databases.
struct Accounts<'t> {
    tree: &'t Tree,
    passwd: Option<Database<Passwd>>,
    group: Option<Database<Group>>,
}

fn id_of(option: &str, v: &Value) -> anyhow::Result<Result<u32, String>> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .filter(|n| *n < u32::MAX as u64)
            .map(|n| Ok(n as u32))
            .ok_or_else(|| opt_err(option, format!("{n} is not a valid id"))),
        Value::String(s) if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() => s
            .parse::<u32>()
            .map(Ok)
            .map_err(|_| opt_err(option, format!("{s} is not a valid id"))),
        Value::String(s) => Ok(Err(s.clone())),
        other => Err(opt_err(
            option,
            format!("{other} is not a name or a number"),
        )),
    }
}

impl<'t> Accounts<'t> {
    fn new(tree: &'t Tree) -> Self {
        Accounts {
            tree,
            passwd: None,
            group: None,
        }
    }

    fn uid(&mut self, option: &str, v: &Value) -> anyhow::Result<u32> {
        let name = match id_of(option, v)? {
            Ok(id) => return Ok(id),
            Err(name) => name,
        };
        if self.passwd.is_none() {
            let text = self.tree.read_optional("/etc/passwd")?.unwrap_or_default();
            self.passwd =
                Some(Database::parse(&text).map_err(|e| anyhow::anyhow!("/etc/passwd: {e}"))?);
        }
        self.passwd
            .as_ref()
            .unwrap()
            .get(&name)
            .map(|p| p.uid)
            .ok_or_else(|| {
                opt_err(
                    option,
                    format!("no user {name:?} in the tree's /etc/passwd"),
                )
            })
    }

    fn gid(&mut self, option: &str, v: &Value) -> anyhow::Result<u32> {
        let name = match id_of(option, v)? {
            Ok(id) => return Ok(id),
            Err(name) => name,
        };
        if self.group.is_none() {
            let text = self.tree.read_optional("/etc/group")?.unwrap_or_default();
            self.group =
                Some(Database::parse(&text).map_err(|e| anyhow::anyhow!("/etc/group: {e}"))?);
        }
        self.group
            .as_ref()
            .unwrap()
            .get(&name)
            .map(|g| g.gid)
            .ok_or_else(|| {
                opt_err(
                    option,
                    format!("no group {name:?} in the tree's /etc/group"),
                )
            })
    }
}

fn lstat(tree: &Tree, path: &str) -> io::Result<Option<osbuild_stage::Metadata>> {
    match tree.symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    }
}

/// The parent directory of `path` must exist (and be a directory).
fn require_parent(tree: &Tree, option: &str, path: &str) -> anyhow::Result<()> {
    let dir = parent(path);
    match tree.metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(opt_err(option, format!("{dir} is not a directory"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(opt_err(
            option,
            format!("{dir} does not exist (create it with mkdir, or set parents)"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Every entry below `path` (not following symlinks), then `path` itself.
fn walk(
    tree: &Tree,
    path: &str,
    out: &mut Vec<(String, osbuild_stage::Metadata)>,
) -> io::Result<()> {
    let meta = tree.symlink_metadata(path)?;
    if meta.is_dir() {
        for name in tree.read_dir(path)? {
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            walk(tree, &child, out)?;
        }
    }
    out.push((path.to_string(), meta));
    Ok(())
}

fn do_remove(tree: &Tree, options: &Options) -> anyhow::Result<()> {
    for (i, path) in options.remove.iter().enumerate() {
        let option = format!("remove[{i}]");
        let path = tree_path(&option, path)?;
        if path == "/" {
            return Err(opt_err(option, "will not remove the whole tree"));
        }
        if lstat(tree, &path)?.is_some() {
            tree.remove_all(&path)?;
        }
    }
    Ok(())
}

fn do_mkdir(tree: &Tree, accounts: &mut Accounts, options: &Options) -> anyhow::Result<()> {
    for (i, m) in options.mkdir.iter().enumerate() {
        let at = |f: &str| format!("mkdir[{i}].{f}");
        let path = tree_path(&at("path"), &m.path)?;
        if path == "/" {
            if m.exist_ok {
                continue;
            }
            return Err(opt_err(at("path"), "/ already exists"));
        }
        let mode = match &m.mode {
            Some(v) => numeric_mode(&at("mode"), v)?,
            None => 0o755,
        };
        let uid = m
            .user
            .as_ref()
            .map(|u| accounts.uid(&at("user"), u))
            .transpose()?;
        let gid = m
            .group
            .as_ref()
            .map(|g| accounts.gid(&at("group"), g))
            .transpose()?;
        match tree.metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if m.exist_ok {
                    continue; // as osbuild: an existing directory is left as it is
                }
                return Err(opt_err(
                    at("path"),
                    format!("{path} already exists (set exist_ok to accept that)"),
                ));
            }
            Ok(_) => {
                return Err(opt_err(
                    at("path"),
                    format!("{path} exists and is not a directory"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if m.parents {
            tree.create_dir_all(parent(&path))?;
        } else {
            require_parent(tree, &at("path"), &path)?;
        }
        tree.create_dir(&path, mode)?;
        tree.set_owner(&path, uid.unwrap_or(0), gid.unwrap_or(0))?;
        tree.set_mode(&path, mode)?;
    }
    Ok(())
}

fn do_write(tree: &Tree, accounts: &mut Accounts, options: &Options) -> anyhow::Result<()> {
    for (i, w) in options.write.iter().enumerate() {
        let at = |f: &str| format!("write[{i}].{f}");
        let path = tree_path(&at("path"), &w.path)?;
        let mode = w
            .mode
            .as_ref()
            .map(|v| numeric_mode(&at("mode"), v))
            .transpose()?;
        let uid = w
            .user
            .as_ref()
            .map(|u| accounts.uid(&at("user"), u))
            .transpose()?;
        let gid = w
            .group
            .as_ref()
            .map(|g| accounts.gid(&at("group"), g))
            .transpose()?;
        require_parent(tree, &at("path"), &path)?;
        let existing = match tree.metadata(&path) {
            Ok(m) if m.is_file() => Some(m),
            Ok(_) => {
                return Err(opt_err(
                    at("path"),
                    format!("{path} exists and is not a regular file"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        tree.write(&path, w.content.as_bytes())?;
        let (old_uid, old_gid, old_mode) = existing
            .as_ref()
            .map(|m| (m.uid, m.gid, m.mode))
            .unwrap_or((0, 0, 0o644));
        let (new_uid, new_gid) = (uid.unwrap_or(old_uid), gid.unwrap_or(old_gid));
        if existing.is_none() || (new_uid, new_gid) != (old_uid, old_gid) {
            tree.set_owner(&path, new_uid, new_gid)?;
        }
        tree.set_mode(&path, mode.unwrap_or(old_mode))?;
    }
    Ok(())
}

fn do_symlink(tree: &Tree, options: &Options) -> anyhow::Result<()> {
    for (i, s) in options.symlink.iter().enumerate() {
        let link = tree_path(&format!("symlink[{i}].link_name"), &s.link_name)?;
        if link == "/" {
            return Err(opt_err(
                format!("symlink[{i}].link_name"),
                "is the tree's root",
            ));
        }
        check_target(&format!("symlink[{i}].target"), &link, &s.target)?;
        require_parent(tree, &format!("symlink[{i}].link_name"), &link)?;
        if let Some(meta) = lstat(tree, &link)? {
            if meta.is_symlink() && tree.read_link(&link)?.as_os_str() == s.target.as_str() {
                continue;
            }
            return Err(opt_err(
                format!("symlink[{i}].link_name"),
                format!("{link} already exists"),
            ));
        }
        tree.symlink(&s.target, &link)?;
    }
    Ok(())
}

fn missing(option: &str, path: &str) -> anyhow::Error {
    opt_err(option, format!("{path} does not exist in the tree"))
}

fn do_chown(tree: &Tree, accounts: &mut Accounts, options: &Options) -> anyhow::Result<()> {
    for (path, c) in &options.chown {
        let at = |f: &str| format!("chown.{path}.{f}");
        let canon = tree_path(&format!("chown.{path}"), path)?;
        if c.user.is_none() && c.group.is_none() {
            return Err(opt_err(format!("chown.{path}"), "needs user or group"));
        }
        let uid = c
            .user
            .as_ref()
            .map(|u| accounts.uid(&at("user"), u))
            .transpose()?;
        let gid = c
            .group
            .as_ref()
            .map(|g| accounts.gid(&at("group"), g))
            .transpose()?;
        if lstat(tree, &canon)?.is_none() {
            return Err(missing(&format!("chown.{path}"), &canon));
        }
        let entries = if c.recursive {
            // chown -R (-P): symlinks are changed themselves, never followed.
            let mut all = Vec::new();
            walk(tree, &canon, &mut all)?;
            all
        } else {
            // chown follows a symlink given to it.
            let target = tree.resolve(&canon)?.to_string_lossy().into_owned();
            let meta = tree.symlink_metadata(&target)?;
            vec![(target, meta)]
        };
        for (p, meta) in entries {
            let new = (uid.unwrap_or(meta.uid), gid.unwrap_or(meta.gid));
            if new != (meta.uid, meta.gid) {
                tree.set_owner(&p, new.0, new.1)?;
            }
        }
    }
    Ok(())
}

fn do_chmod(tree: &Tree, options: &Options) -> anyhow::Result<()> {
    for (path, c) in &options.chmod {
        let option = format!("chmod.{path}.mode");
        let canon = tree_path(&format!("chmod.{path}"), path)?;
        let mode = parse_mode(&c.mode).map_err(|e| opt_err(&option, e))?;
        let Some(_) = lstat(tree, &canon)? else {
            return Err(missing(&format!("chmod.{path}"), &canon));
        };
        // chmod follows a symlink named on its command line; inside a
        // recursive walk, symlinks are skipped.
        let top = tree.resolve(&canon)?.to_string_lossy().into_owned();
        let mut entries = Vec::new();
        if c.recursive {
            walk(tree, &top, &mut entries)?;
        } else {
            entries.push((top.clone(), tree.symlink_metadata(&top)?));
        }
        for (p, meta) in entries {
            if meta.is_symlink() {
                continue;
            }
            let new = mode.apply(meta.mode, meta.is_dir());
            if new != meta.mode {
                tree.set_mode(&p, new)?;
            }
        }
    }
    Ok(())
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let mut accounts = Accounts::new(tree);
    do_remove(tree, &options)?;
    do_mkdir(tree, &mut accounts, &options)?;
    do_write(tree, &mut accounts, &options)?;
    do_symlink(tree, &options)?;
    do_chown(tree, &mut accounts, &options)?;
    do_chmod(tree, &options)?;
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests;
