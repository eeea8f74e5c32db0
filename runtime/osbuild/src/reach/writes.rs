//! Where in the tree a stage may write: its declared write set, checked
//! against what it changed, after it ran and before anything of it is
//! kept. (The policy's `writes` bound the declarations before anything
//! runs: [`crate::policy`].)

use std::path::Path;

use serde_json::{Map, Value};

use crate::changes::{Op, Record};
use crate::stage::{PathSet, Pattern, Stage, Writes};

/// The most violations a message lists by path.
const LISTED: usize = 20;

/// Where a stage may write in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Nothing,
    Everything,
    Only(PathSet),
}

impl Allowed {
    pub fn as_writes(&self) -> Writes<'_> {
        match self {
            Allowed::Nothing => Writes::Nothing,
            Allowed::Everything => Writes::Everything,
            Allowed::Only(set) => Writes::Only(set),
        }
    }
}

/// The write set of `stage` run with `options` on the tree `tree`: its
/// declared patterns and the paths its `write-options` name, each also as
/// it resolves in the tree (a stage writing `/lib/x` where `/lib` links
/// to `usr/lib` changes `/usr/lib/x`, and its record says so).
pub fn allowed(
    stage: &Stage,
    options: &Map<String, Value>,
    tree: Option<&osbuild_tree_fs::Root>,
) -> Allowed {
    let tree_access = &stage.meta.capabilities.tree;
    let mut set = match tree_access.writes() {
        Writes::Nothing => return Allowed::Nothing,
        Writes::Everything => return Allowed::Everything,
        Writes::Only(set) => set.clone(),
    };
    for o in tree_access.write_paths(options) {
        set.push(o.pattern());
        if let Some(root) = tree {
            // As the stage reaches it: the parents' symlinks followed, the
            // final one kept (what removing or renaming it changes), with
            // what is below it; and the final one followed too (what a
            // write or chown through it changes), that path alone: a link
            // to `/` must not make the whole tree writable.
            for (follow, below) in [(false, o.below), (true, false)] {
                if let Some(real) = resolve_leniently(root, Path::new(&o.path), follow) {
                    let real = real.to_string_lossy();
                    if real != o.path {
                        set.push(Pattern::literal(&real, below));
                    }
                }
            }
        }
    }
    if set.is_empty() {
        Allowed::Nothing
    } else {
        Allowed::Only(set)
    }
}

/// `path` resolved in the tree as far as it exists, the rest appended.
fn resolve_leniently(
    root: &osbuild_tree_fs::Root,
    path: &Path,
    follow: bool,
) -> Option<std::path::PathBuf> {
    // From the path itself up to the first ancestor that resolves; a loop,
    // not a recursion: an option's path may be long.
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    let mut at = path;
    let mut follow_here = follow;
    loop {
        if let Ok(p) = root.resolve(at, follow_here) {
            let mut p = p;
            for name in rest.iter().rev() {
                p.push(name);
            }
            return Some(p);
        }
        rest.push(at.file_name()?);
        at = at.parent()?;
        follow_here = true;
    }
}

/// The changes in `record` that `writes` does not allow, as the message
/// that fails the stage; `Ok` if there are none.
///
/// A change is allowed when its path is in the write set, or it created a
/// directory on the way to the write set (`/etc/systemd` for
/// `/etc/systemd/system/**`) that led to a write in it, or it is a
/// directory's mtime moved by an entry created, removed or replaced in it.
pub fn check(writes: Writes<'_>, record: &Record) -> Result<(), String> {
    let set = match writes {
        Writes::Everything => return Ok(()),
        Writes::Nothing => None,
        Writes::Only(set) => Some(set),
    };
    let outside = outside(set, record);
    if outside.is_empty() {
        return Ok(());
    }
    let declared = match set {
        None => "it declares read-only access to the tree".to_string(),
        Some(set) => format!("it declares it writes only {}", set.describe()),
    };
    Err(format!(
        "changed the tree outside its write set: {}; {declared}. Nothing the stage did was kept; if it should write there, add the paths to its \"tree\": {{\"write\": [...]}} capability",
        list(&outside)
    ))
}

/// The changes in `record` outside `policy` (the policy's `writes` for the
/// stage), as the message that fails the stage. Planning checked what the
/// stage declares; this checks where its changes landed (an option's path
/// through a symlink in the tree lands elsewhere).
pub fn check_policy(policy: &PathSet, record: &Record) -> Result<(), String> {
    let outside = outside(Some(policy), record);
    if outside.is_empty() {
        return Ok(());
    }
    Err(format!(
        "changed the tree where the policy does not let it write: {}; the policy's writes for it are {}. Nothing the stage did was kept",
        list(&outside),
        policy.describe()
    ))
}

/// The changes outside `set` (`None`: every change), each as
/// `path (what)`.
fn outside(set: Option<&PathSet>, record: &Record) -> Vec<String> {
    record
        .changes
        .iter()
        .filter(|c| match set {
            None => true,
            Some(set) => {
                !(set.contains(&c.path)
                    || (c.op == Op::Created
                        && c.entry.kind == crate::changes::Kind::Dir
                        && set.leads_to(&c.path)
                        && leads_to_a_write(record, set, &c.path))
                    || record.is_implied(c))
            }
        })
        .map(|c| {
            let what = match c.op {
                Op::Created => format!("created {}", c.entry.kind.as_str()),
                Op::Removed => "removed".to_string(),
                Op::Modified => {
                    let f: Vec<&str> = c.fields.iter().map(|f| f.as_str()).collect();
                    format!("modified: {}", f.join(", "))
                }
            };
            format!("{} ({what})", crate::changes::printable(&c.path))
        })
        .collect()
}

fn list(outside: &[String]) -> String {
    let mut listed = outside[..outside.len().min(LISTED)].join(", ");
    if outside.len() > LISTED {
        listed.push_str(&format!(", and {} more", outside.len() - LISTED));
    }
    listed
}

/// Whether the record holds a change in the set below `dir`: a directory
/// made on the way to the set is exempt only when it led somewhere.
fn leads_to_a_write(record: &Record, set: &crate::stage::PathSet, dir: &str) -> bool {
    record.has_below(dir, |c| set.contains(&c.path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::sample as change;
    use crate::changes::{Field, Kind};
    use crate::stage::PathSet;

    /// The paths a stage's options name count as they resolve in the tree.
    #[test]
    fn option_paths_join_the_set_as_given_and_as_they_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).unwrap();
        let meta = serde_json::json!({
            "name": "x.files", "kind": "wasm", "summary": "s",
            "capabilities": {"tree": {"write": ["/etc/motd"], "write-options": ["write[].path", "remove[]/**", "chown.*/**"]}}
        });
        let stage = Stage {
            meta: serde_json::from_value(meta).unwrap(),
            code: crate::stage::Code::Wasm(std::borrow::Cow::Borrowed(b"")),
            origin: crate::stage::Origin::Builtin,
            digest: String::new(),
            shadows_builtin: false,
            native_metadata: None,
            detached_signature: None,
        };
        let options = serde_json::json!({
            "write": [{"path": "/bin/new"}, {"path": "relative"}],
            "remove": ["/srv/a*"],
            "chown": {"/home/x": {}}
        });
        let options = options.as_object().unwrap();
        let named: Vec<(String, String)> = stage
            .meta
            .capabilities
            .tree
            .write_paths(options)
            .into_iter()
            .map(|o| (o.at.clone(), o.pattern().to_string()))
            .collect();
        assert_eq!(
            named,
            [
                ("options.write[0].path".to_string(), "/bin/new".to_string()),
                ("options.remove[0]".to_string(), "/srv/a*/**".to_string()),
                (
                    "options.chown[\"/home/x\"]".to_string(),
                    "/home/x/**".to_string()
                ),
            ]
        );
        let root = osbuild_tree_fs::Root::open(dir.path()).unwrap();
        let Allowed::Only(set) = allowed(&stage, options, Some(&root)) else {
            panic!("a scoped stage");
        };
        for yes in [
            "/etc/motd",
            "/bin/new",
            "/usr/bin/new",
            "/srv/a*",
            "/srv/a*/b",
            "/home/x/.ssh",
        ] {
            assert!(set.contains(yes), "{yes}");
        }
        // A name with a * is that name, not a wildcard.
        for no in ["/srv/ab", "/usr/bin/other", "/home/y", "/relative"] {
            assert!(!set.contains(no), "{no}");
        }
    }

    #[test]
    fn writes_outside_the_set_are_named_with_the_set() {
        let set = PathSet::parse(&["/etc/motd", "/etc/systemd/system/**"]).unwrap();
        let ok = Record {
            stage: "s".into(),
            index: 0,
            changes: vec![
                change("/etc", Op::Modified, Kind::Dir, &[Field::Mtime]),
                change("/etc/motd", Op::Created, Kind::File, &[]),
                change("/etc/systemd", Op::Created, Kind::Dir, &[]),
                change("/etc/systemd/system", Op::Created, Kind::Dir, &[]),
                change(
                    "/etc/systemd/system/a.service",
                    Op::Created,
                    Kind::File,
                    &[],
                ),
            ],
        };
        assert_eq!(check(Writes::Only(&set), &ok), Ok(()));
        let bad = Record {
            changes: vec![
                change("/etc", Op::Modified, Kind::Dir, &[Field::Mode]),
                change("/etc/motd", Op::Created, Kind::File, &[]),
                change("/etc/passwd", Op::Modified, Kind::File, &[Field::Content]),
                change("/usr", Op::Created, Kind::Dir, &[]),
            ],
            ..ok.clone()
        };
        let e = check(Writes::Only(&set), &bad).unwrap_err();
        assert!(
            e.starts_with(
                "changed the tree outside its write set: /etc (modified: mode), /etc/passwd (modified: content), /usr (created dir); it declares it writes only [\"/etc/motd\", \"/etc/systemd/system/**\"]."
            ),
            "{e}"
        );
        // A directory on the way that leads to no write is a write of its own.
        let stray = Record {
            changes: vec![change("/etc/systemd", Op::Created, Kind::Dir, &[])],
            ..ok.clone()
        };
        let e = check(Writes::Only(&set), &stray).unwrap_err();
        assert!(e.contains("/etc/systemd (created dir)"), "{e}");
        let e = check(Writes::Nothing, &ok).unwrap_err();
        assert!(
            e.contains("it declares read-only access to the tree"),
            "{e}"
        );
        assert_eq!(check(Writes::Everything, &bad), Ok(()));
    }
}
