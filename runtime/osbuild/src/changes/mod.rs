//! What each stage changed in the tree: its change record.
//!
//! After every stage, the tree it left is compared with the tree it was
//! given ([`diff`]): with the overlay handoff only the stage's upper layer
//! is walked (what it touched, whatever the tree's size), with the copy
//! handoff the whole tree. The record lists each entry created, modified
//! (and which of content, mode, owner, xattrs, link target, device number,
//! kind and mtime) or removed, with the entry's state and a regular file's
//! sha256. The executor checks it against the stage's write set before
//! anything of the stage is kept, and the store keeps it with the stage's
//! object (`changes.json`), so `osbuild changes` reads it for cached
//! stages too.

pub mod diff;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The name of a record in a store object's directory.
pub const FILE_NAME: &str = "changes.json";

/// Everything one stage changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The stage's name.
    pub stage: String,
    /// Its position in the pipeline (from 0).
    pub index: usize,
    /// Sorted by path; a removed directory's entries follow it.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Created,
    Modified,
    Removed,
}

/// What differs in a modified entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Kind,
    Content,
    /// More names now lead to the same file (a hard link was made to it).
    Links,
    Target,
    Device,
    Mode,
    Owner,
    Xattrs,
    Mtime,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Kind => "kind",
            Field::Content => "content",
            Field::Links => "links",
            Field::Target => "target",
            Field::Device => "device",
            Field::Mode => "mode",
            Field::Owner => "owner",
            Field::Xattrs => "xattrs",
            Field::Mtime => "mtime",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Block,
    Char,
    Fifo,
    Socket,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Block => "block",
            Kind::Char => "char",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Absolute, inside the tree.
    pub path: String,
    pub op: Op,
    /// What differs (modified entries only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    /// The entry as the stage left it; for a removed one, as it was.
    #[serde(flatten)]
    pub entry: Entry,
}

/// An entry's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits, octal (`0644`).
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since 1970.
    pub mtime: i64,
    /// Regular files: bytes, and the content's sha256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlinks: the target, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Device nodes: `MAJOR:MINOR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Extended attributes, values in hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// How many entries of each kind of change a record has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: usize,
    pub modified: usize,
    pub removed: usize,
}

/// What a build reports of a stage's record: the counts, and where the
/// record is kept (`None`: built without the cache, nowhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub counts: Counts,
    pub record: Option<std::path::PathBuf>,
}

impl Record {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for ch in &self.changes {
            match ch.op {
                Op::Created => c.created += 1,
                Op::Modified => c.modified += 1,
                Op::Removed => c.removed += 1,
            }
        }
        c
    }

    /// Whether the change is a directory whose mtime alone changed along
    /// with an entry right in it: created, removed, or replaced (removed
    /// and made again, which a record shows as modified). That is the
    /// kernel's doing, not a write to the directory.
    pub fn is_implied(&self, change: &Change) -> bool {
        change.op == Op::Modified
            && change.entry.kind == Kind::Dir
            && change.fields == [Field::Mtime]
            && self.has_below(&change.path, |c| {
                parent(&c.path) == Some(change.path.as_str())
            })
    }

    /// Whether a change strictly below the directory `dir` satisfies
    /// `test`. The changes are sorted by path, so those below `dir` are
    /// one run (`dir/` sorts before any other name that starts with
    /// `dir`'s characters and a byte above `/`): found by binary search,
    /// not a scan of the record per directory.
    pub fn has_below(&self, dir: &str, test: impl Fn(&Change) -> bool) -> bool {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let start = self
            .changes
            .partition_point(|c| c.path.as_str() < prefix.as_str());
        self.changes[start..]
            .iter()
            .take_while(|c| c.path.starts_with(&prefix))
            .any(|c| c.path != "/" && test(c))
    }

    /// The narrowest write set that allows this record: each changed
    /// path, a created or removed directory as `DIR/**` with what is below
    /// it, directories' implied mtimes left out.
    pub fn suggested_write_set(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut covered: Vec<&str> = Vec::new();
        for c in &self.changes {
            if self.is_implied(c)
                || covered
                    .iter()
                    .any(|d| c.path.starts_with(d) && c.path.as_bytes().get(d.len()) == Some(&b'/'))
            {
                continue;
            }
            if c.entry.kind == Kind::Dir && c.op != Op::Modified {
                covered.push(&c.path);
                out.push(if c.path == "/" {
                    "/**".to_string()
                } else {
                    format!("{}/**", c.path)
                });
            } else {
                out.push(c.path.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The record as a tree diff, one line a change:
    /// `+ /etc/hostname  file 0644 0:0 sha256:...`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            out.push_str(&c.render());
            out.push('\n');
        }
        out
    }
}

/// A path as a line of text can hold it: control characters (a newline
/// or an escape sequence in a file name, which the tree's content chose)
/// escaped, so a name cannot forge or hide lines.
pub fn printable(path: &str) -> std::borrow::Cow<'_, str> {
    // Control characters, and the invisible ones that reorder or hide
    // text on a terminal (bidirectional overrides, zero widths).
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if path.chars().any(hidden) {
        path.chars()
            .map(|c| {
                if hidden(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        path.into()
    }
}

/// The parent of an absolute path (`None` for `/`).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

impl Change {
    pub fn render(&self) -> String {
        let sign = match self.op {
            Op::Created => '+',
            Op::Modified => '~',
            Op::Removed => '-',
        };
        let e = &self.entry;
        let slash = if e.kind == Kind::Dir && self.path != "/" {
            "/"
        } else {
            ""
        };
        let mut line = format!(
            "{sign} {}{slash}  {}",
            printable(&self.path),
            e.kind.as_str()
        );
        if self.op != Op::Removed {
            line.push_str(&format!(" {} {}:{}", e.mode, e.uid, e.gid));
            if let Some(sha) = &e.sha256 {
                line.push_str(&format!(" sha256:{sha}"));
            }
            if let Some(t) = &e.target {
                line.push_str(&format!(" -> {}", printable(t)));
            }
            if let Some(d) = &e.device {
                line.push_str(&format!(" {d}"));
            }
            if !e.xattrs.is_empty() {
                let names: Vec<String> =
                    e.xattrs.keys().map(|n| printable(n).into_owned()).collect();
                line.push_str(&format!(" xattrs:{}", names.join(",")));
            }
        }
        if !self.fields.is_empty() {
            let f: Vec<&str> = self.fields.iter().map(|f| f.as_str()).collect();
            line.push_str(&format!(" ({})", f.join(", ")));
        }
        line
    }
}

/// A change to an entry owned by root, mode 0644, mtime 0: for tests.
#[cfg(test)]
pub(crate) fn sample(path: &str, op: Op, kind: Kind, fields: &[Field]) -> Change {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind) -> Entry {
        sample("/", Op::Created, kind, &[]).entry
    }

    #[test]
    fn a_directory_whose_mtime_moved_with_a_new_entry_is_implied() {
        let mut dir = entry(Kind::Dir);
        dir.mode = "0755".into();
        let etc = Change {
            path: "/etc".into(),
            op: Op::Modified,
            fields: vec![Field::Mtime],
            entry: dir.clone(),
        };
        let mut file = entry(Kind::File);
        file.sha256 = Some("ab".into());
        let hostname = Change {
            path: "/etc/hostname".into(),
            op: Op::Created,
            fields: vec![],
            entry: file,
        };
        let r = Record {
            stage: "s".into(),
            index: 0,
            changes: vec![etc.clone(), hostname.clone()],
        };
        assert!(r.is_implied(&etc));
        assert!(!r.is_implied(&hostname));
        // Without the new entry, the mtime is the stage's own doing.
        let alone = Record {
            changes: vec![etc.clone()],
            ..r.clone()
        };
        assert!(!alone.is_implied(&etc));
        assert_eq!(
            r.render(),
            "~ /etc/  dir 0755 0:0 (mtime)\n+ /etc/hostname  file 0644 0:0 sha256:ab\n"
        );
        assert_eq!(
            r.counts(),
            Counts {
                created: 1,
                modified: 1,
                removed: 0
            }
        );
    }

    #[test]
    fn the_suggestion_folds_new_directories() {
        let mk = sample;
        let r = Record {
            stage: "s".into(),
            index: 0,
            changes: vec![
                mk("/etc", Op::Modified, Kind::Dir, &[Field::Mtime]),
                mk("/etc/hostname", Op::Created, Kind::File, &[]),
                mk("/srv", Op::Modified, Kind::Dir, &[Field::Mtime]),
                mk("/srv/www", Op::Created, Kind::Dir, &[]),
                mk("/srv/www/index.html", Op::Created, Kind::File, &[]),
                mk("/usr", Op::Modified, Kind::Dir, &[Field::Mode]),
            ],
        };
        assert_eq!(
            r.suggested_write_set(),
            ["/etc/hostname", "/srv/www/**", "/usr"]
        );
    }

    #[test]
    fn parents() {
        assert_eq!(parent("/etc/hostname"), Some("/etc"));
        assert_eq!(parent("/etc"), Some("/"));
        assert_eq!(parent("/"), None);
    }
}
