//! Where in the tree a stage may write: its declared write set, checked
//! against what it changed, after it ran and before anything of it is
//! kept. (The policy's `writes` bound the declarations before anything
//! runs: [`crate::policy`].)

use crate::changes::{Op, Record};
use crate::stage::Writes;

/// The most violations a message lists by path.
const LISTED: usize = 20;

/// The changes in `record` that `writes` does not allow, as the message
/// that fails the stage; `Ok` if there are none.
///
/// A change is allowed when its path is in the write set, or it created a
/// directory on the way to the write set (`/etc/systemd` for
/// `/etc/systemd/system/**`), or it is a directory's mtime moved by an
/// entry created or removed in it.
pub fn check(writes: Writes<'_>, record: &Record) -> Result<(), String> {
    let set = match writes {
        Writes::Everything => return Ok(()),
        Writes::Nothing => None,
        Writes::Only(set) => Some(set),
    };
    let outside: Vec<String> = record
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
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    let mut listed = outside[..outside.len().min(LISTED)].join(", ");
    if outside.len() > LISTED {
        listed.push_str(&format!(", and {} more", outside.len() - LISTED));
    }
    let declared = match set {
        None => "it declares read-only access to the tree".to_string(),
        Some(set) => format!("it declares it writes only {}", set.describe()),
    };
    Err(format!(
        "changed the tree outside its write set: {listed}; {declared}. Nothing the stage did was kept; if it should write there, add the paths to its \"tree\": {{\"write\": [...]}} capability"
    ))
}

/// Whether the record holds a change in the set below `dir`: a directory
/// made on the way to the set is exempt only when it led somewhere.
fn leads_to_a_write(record: &Record, set: &crate::stage::PathSet, dir: &str) -> bool {
    record.changes.iter().any(|c| {
        c.path.len() > dir.len()
            && c.path.starts_with(dir)
            && (dir == "/" || c.path.as_bytes()[dir.len()] == b'/')
            && set.contains(&c.path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{Change, Entry, Field, Kind};
    use crate::stage::PathSet;
    use std::collections::BTreeMap;

    fn change(path: &str, op: Op, kind: Kind, fields: &[Field]) -> Change {
        Change {
            path: path.into(),
            op,
            fields: fields.to_vec(),
            entry: Entry {
                kind,
                mode: "0644".into(),
                uid: 0,
                gid: 0,
                mtime: 0,
                size: None,
                sha256: None,
                target: None,
                device: None,
                xattrs: BTreeMap::new(),
            },
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
