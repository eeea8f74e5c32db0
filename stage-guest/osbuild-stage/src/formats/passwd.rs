//! The account databases: `/etc/passwd`, `/etc/group`, `/etc/shadow` and
//! `/etc/gshadow`. Each is a list of colon-separated records; lines that
//! are not records (comments, blank lines, NIS `+` entries) are kept as they
//! are, so editing one account never disturbs the rest of the file.

use std::fmt;

/// One line of a colon-separated database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<R> {
    Record(R),
    Other(String),
}

/// A database file: its lines, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database<R> {
    pub lines: Vec<Line<R>>,
}

impl<R: Record> Default for Database<R> {
    fn default() -> Self {
        Database { lines: Vec::new() }
    }
}

/// A record type of one of the databases.
pub trait Record: Sized + Clone {
    /// How many colon-separated fields a record has.
    const FIELDS: usize;
    fn from_fields(fields: &[&str]) -> Option<Self>;
    fn to_fields(&self) -> Vec<String>;
    fn name(&self) -> &str;
}

/// A line that has a name but the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub text: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: malformed entry {:?}", self.line, self.text)
    }
}

impl std::error::Error for ParseError {}

impl<R: Record> Database<R> {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() || l.starts_with('#') || l.starts_with('+') || l.starts_with('-')
            {
                lines.push(Line::Other(l.to_string()));
                continue;
            }
            let fields: Vec<&str> = l.split(':').collect();
            match (fields.len() == R::FIELDS)
                .then(|| R::from_fields(&fields))
                .flatten()
            {
                Some(r) => lines.push(Line::Record(r)),
                None => {
                    return Err(ParseError {
                        line: i + 1,
                        text: l.to_string(),
                    });
                }
            }
        }
        Ok(Database { lines })
    }

    pub fn records(&self) -> impl Iterator<Item = &R> {
        self.lines.iter().filter_map(|l| match l {
            Line::Record(r) => Some(r),
            Line::Other(_) => None,
        })
    }

    pub fn get(&self, name: &str) -> Option<&R> {
        self.records().find(|r| r.name() == name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut R> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::Record(r) if r.name() == name => Some(r),
            _ => None,
        })
    }

    /// Appends a record (the caller checks the name is free).
    pub fn push(&mut self, record: R) {
        self.lines.push(Line::Record(record));
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            match l {
                Line::Record(r) => s.push_str(&r.to_fields().join(":")),
                Line::Other(o) => s.push_str(o),
            }
            s.push('\n');
        }
        s
    }
}

fn num(s: &str) -> Option<u32> {
    s.parse().ok()
}

fn opt_num(s: &str) -> Option<Option<i64>> {
    if s.is_empty() {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

fn opt_str(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// An `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub password: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

impl Record for Passwd {
    const FIELDS: usize = 7;
    fn from_fields(f: &[&str]) -> Option<Self> {
        Some(Passwd {
            name: f[0].into(),
            password: f[1].into(),
            uid: num(f[2])?,
            gid: num(f[3])?,
            gecos: f[4].into(),
            home: f[5].into(),
            shell: f[6].into(),
        })
    }
    fn to_fields(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.password.clone(),
            self.uid.to_string(),
            self.gid.to_string(),
            self.gecos.clone(),
            self.home.clone(),
            self.shell.clone(),
        ]
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// An `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub password: String,
    pub gid: u32,
    pub members: Vec<String>,
}

impl Record for Group {
    const FIELDS: usize = 4;
    fn from_fields(f: &[&str]) -> Option<Self> {
        Some(Group {
            name: f[0].into(),
            password: f[1].into(),
            gid: num(f[2])?,
            members: list(f[3]),
        })
    }
    fn to_fields(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.password.clone(),
            self.gid.to_string(),
            self.members.join(","),
        ]
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// An `/etc/shadow` entry. Day counts are days since 1970-01-01.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub name: String,
    pub password: String,
    pub last_change: Option<i64>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub warn: Option<i64>,
    pub inactive: Option<i64>,
    pub expire: Option<i64>,
    pub reserved: String,
}

impl Record for Shadow {
    const FIELDS: usize = 9;
    fn from_fields(f: &[&str]) -> Option<Self> {
        Some(Shadow {
            name: f[0].into(),
            password: f[1].into(),
            last_change: opt_num(f[2])?,
            min: opt_num(f[3])?,
            max: opt_num(f[4])?,
            warn: opt_num(f[5])?,
            inactive: opt_num(f[6])?,
            expire: opt_num(f[7])?,
            reserved: f[8].into(),
        })
    }
    fn to_fields(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.password.clone(),
            opt_str(self.last_change),
            opt_str(self.min),
            opt_str(self.max),
            opt_str(self.warn),
            opt_str(self.inactive),
            opt_str(self.expire),
            self.reserved.clone(),
        ]
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// An `/etc/gshadow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GShadow {
    pub name: String,
    pub password: String,
    pub admins: Vec<String>,
    pub members: Vec<String>,
}

impl Record for GShadow {
    const FIELDS: usize = 4;
    fn from_fields(f: &[&str]) -> Option<Self> {
        Some(GShadow {
            name: f[0].into(),
            password: f[1].into(),
            admins: list(f[2]),
            members: list(f[3]),
        })
    }
    fn to_fields(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.password.clone(),
            self.admins.join(","),
            self.members.join(","),
        ]
    }
    fn name(&self) -> &str {
        &self.name
    }
}

pub type PasswdFile = Database<Passwd>;
pub type GroupFile = Database<Group>;
pub type ShadowFile = Database<Shadow>;
pub type GShadowFile = Database<GShadow>;

/// `login.defs` settings that decide new ids (`UID_MIN`, `SYS_GID_MAX`, ...),
/// with shadow-utils' defaults for what the file does not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginDefs {
    pub uid_min: u32,
    pub uid_max: u32,
    pub sys_uid_min: u32,
    pub sys_uid_max: u32,
    pub gid_min: u32,
    pub gid_max: u32,
    pub sys_gid_min: u32,
    pub sys_gid_max: u32,
    /// Whether `useradd` creates a group named after the user by default.
    pub usergroups_enab: bool,
    /// The mode of new home directories (`HOME_MODE`, else `0777 & ~UMASK`).
    pub home_mode: u32,
    pub create_home: bool,
}

impl LoginDefs {
    pub fn parse(text: &str) -> LoginDefs {
        let mut values = std::collections::HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                values.insert(k.to_string(), v.to_string());
            }
        }
        let n = |k: &str, d: u32| -> u32 {
            values
                .get(k)
                .and_then(|v| {
                    if let Some(o) = v.strip_prefix('0').filter(|o| !o.is_empty()) {
                        u32::from_str_radix(o, 8).ok()
                    } else {
                        v.parse().ok()
                    }
                })
                .unwrap_or(d)
        };
        let uid_min = n("UID_MIN", 1000);
        let gid_min = n("GID_MIN", 1000);
        let umask = n("UMASK", 0o022);
        LoginDefs {
            uid_min,
            uid_max: n("UID_MAX", 60000),
            sys_uid_min: n("SYS_UID_MIN", 101),
            sys_uid_max: n("SYS_UID_MAX", uid_min.saturating_sub(1)),
            gid_min,
            gid_max: n("GID_MAX", 60000),
            sys_gid_min: n("SYS_GID_MIN", 101),
            sys_gid_max: n("SYS_GID_MAX", gid_min.saturating_sub(1)),
            // shadow-utils: only an explicit "yes" turns it on.
            usergroups_enab: values
                .get("USERGROUPS_ENAB")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            home_mode: n("HOME_MODE", 0o777 & !umask),
            create_home: values
                .get("CREATE_HOME")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_other_lines() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\n+nis\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
        let mut db = PasswdFile::parse(text).unwrap();
        assert_eq!(db.render(), text);
        assert_eq!(db.get("daemon").unwrap().uid, 1);
        db.get_mut("root").unwrap().shell = "/bin/sh".into();
        assert!(db.render().starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        assert!(PasswdFile::parse("bad:line\n").is_err());
    }

    #[test]
    fn groups_shadow_and_gshadow() {
        let g = GroupFile::parse("sudo:x:27:alice,bob\nempty:x:5:\n").unwrap();
        assert_eq!(g.get("sudo").unwrap().members, vec!["alice", "bob"]);
        assert_eq!(g.render(), "sudo:x:27:alice,bob\nempty:x:5:\n");
        let s = ShadowFile::parse("root:*:19000:0:99999:7:::\n").unwrap();
        assert_eq!(s.get("root").unwrap().max, Some(99999));
        assert_eq!(s.render(), "root:*:19000:0:99999:7:::\n");
        let gs = GShadowFile::parse("sudo:*::alice\n").unwrap();
        assert_eq!(gs.get("sudo").unwrap().members, vec!["alice"]);
    }

    #[test]
    fn login_defs() {
        let d = LoginDefs::parse(
            "UID_MIN 1000\n#SYS_UID_MAX 500\nUMASK 022\nHOME_MODE 0700\nUSERGROUPS_ENAB yes\n",
        );
        assert_eq!(
            (d.uid_min, d.sys_uid_max, d.home_mode, d.usergroups_enab),
            (1000, 999, 0o700, true)
        );
        assert_eq!(LoginDefs::parse("UMASK 027").home_mode, 0o750);
    }
}
