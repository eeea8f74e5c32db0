//! Account databases as shadow-utils edits them (what `io.weldr.groups`
//! and `io.weldr.users` share): the tables with their backups,
//! `login.defs` and `/etc/default/useradd` settings, and id allocation.
//!
//! shadow-utils' tools (`groupadd`, `useradd`, `usermod`) each rewrite the
//! databases they changed and keep the previous version as a backup
//! (`/etc/passwd-`, `/etc/group-`, ...). osbuild runs one tool per group or
//! user, so the backup left behind is the file as it was before the *last*
//! invocation that changed it. [`Table`] follows that: a stage calls
//! [`Table::begin`] before emulating one tool invocation and
//! [`Table::finish`] after it.

use std::collections::{HashMap, HashSet};
use std::io;

use crate::formats::passwd::{Database, Line, Record};
use crate::{Metadata, Tree};

/// One account database file, with the bookkeeping for its backup.
pub struct Table<R: Record> {
    pub path: &'static str,
    pub db: Database<R>,
    meta: Metadata,
    /// The file's contents as the last tool invocation left them.
    text: String,
    /// The contents the backup file gets, once the file was changed.
    backup: Option<String>,
    touched: bool,
}

impl<R: Record> Table<R> {
    /// Reads `path`, or `None` if the tree has no such file.
    pub fn load(tree: &Tree, path: &'static str) -> anyhow::Result<Option<Self>> {
        let meta = match tree.metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let text = tree.read_to_string(path)?;
        let db = Database::parse(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        Ok(Some(Table {
            path,
            db,
            meta,
            text,
            backup: None,
            touched: false,
        }))
    }

    /// Starts one tool invocation.
    pub fn begin(&mut self) {
        self.touched = false;
    }

    /// The database, to change it: the tool rewrites the file (and its
    /// backup) at the end of this invocation, even if the change turns out
    /// to change nothing, as shadow-utils' `commonio` does.
    pub fn edit(&mut self) -> &mut Database<R> {
        if !self.touched {
            self.touched = true;
            self.backup = Some(self.text.clone());
        }
        &mut self.db
    }

    /// Ends one tool invocation.
    pub fn finish(&mut self) {
        if self.touched {
            self.text = self.db.render();
            self.touched = false;
        }
    }

    /// Whether any invocation changed the file.
    pub fn changed(&self) -> bool {
        self.backup.is_some()
    }

    /// Writes the file and its backup (`path-`) if any invocation changed
    /// it. Both get the original file's owner and its mode `& 0664`, as
    /// shadow-utils gives them.
    pub fn save(&self, tree: &Tree) -> io::Result<()> {
        let Some(backup) = &self.backup else {
            return Ok(());
        };
        let mode = self.meta.mode & 0o664;
        let (uid, gid) = (self.meta.uid, self.meta.gid);
        tree.write(self.path, self.text.as_bytes())?;
        let now = tree.metadata(self.path)?;
        if (now.uid, now.gid) != (uid, gid) {
            tree.set_owner(self.path, uid, gid)?;
        }
        if now.mode != mode || (now.uid, now.gid) != (uid, gid) {
            tree.set_mode(self.path, mode)?;
        }
        tree.write_with(format!("{}-", self.path), backup.as_bytes(), mode, uid, gid)
    }
}

/// shadow-utils' tools lock the databases with `lckpwdf`, which leaves an
/// empty `/etc/.pwd.lock` (0600, root) behind; a tree that had none gets
/// one, as from the tools.
pub fn ensure_pwd_lock(tree: &Tree) -> io::Result<()> {
    if !tree.exists("/etc/.pwd.lock")? {
        tree.write_with("/etc/.pwd.lock", b"", 0o600, 0, 0)?;
    }
    Ok(())
}

/// Replaces the record with `record`'s name, or adds it at the end of the
/// file but before NIS (`+`/`-`) lines, as `commonio_update` does.
pub fn upsert<R: Record>(db: &mut Database<R>, record: R) {
    if let Some(r) = db.get_mut(record.name()) {
        *r = record;
        return;
    }
    let at = db
        .lines
        .iter()
        .position(|l| matches!(l, Line::Other(s) if s.starts_with('+') || s.starts_with('-')))
        .unwrap_or(db.lines.len());
    db.lines.insert(at, Line::Record(record));
}

/// Adds `name` to a member list unless it is on it (`add_list`).
pub fn add_member(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|m| m == name) {
        list.push(name.to_string());
    }
}

/// Why `name` cannot be a user or group name (the schema checks this too).
pub fn invalid_name(name: &str) -> Option<&'static str> {
    let ok_first = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if name.is_empty() || name.len() > 32 {
        return Some("must be 1 to 32 characters long");
    }
    if name == "." || name == ".." {
        return Some("must not be \".\" or \"..\"");
    }
    if !name.starts_with(ok_first) || !name.chars().all(|c| ok_first(c) || c == '-') {
        return Some("may only contain letters, digits, '_', '.' and '-', and not start with '-'");
    }
    None
}

/// An `/etc/subuid` or `/etc/subgid` entry: `owner:start:count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubId {
    pub owner: String,
    pub start: u64,
    pub count: u64,
}

impl Record for SubId {
    const FIELDS: usize = 3;
    fn from_fields(f: &[&str]) -> Option<Self> {
        Some(SubId {
            owner: f[0].into(),
            start: f[1].parse().ok()?,
            count: f[2].parse().ok()?,
        })
    }
    fn to_fields(&self) -> Vec<String> {
        vec![
            self.owner.clone(),
            self.start.to_string(),
            self.count.to_string(),
        ]
    }
    fn name(&self) -> &str {
        &self.owner
    }
}

/// Sorts the ranges by start, count and owner, as `find_free_range` does
/// before it looks for a hole (and so leaves the file sorted).
pub fn sort_subids(db: &mut Database<SubId>) {
    let mut records: Vec<SubId> = db.records().cloned().collect();
    records.sort_by(|a, b| (a.start, a.count, &a.owner).cmp(&(b.start, b.count, &b.owner)));
    let others: Vec<Line<SubId>> = db
        .lines
        .drain(..)
        .filter(|l| matches!(l, Line::Other(_)))
        .collect();
    db.lines = records.into_iter().map(Line::Record).collect();
    db.lines.extend(others);
}

/// The lowest `count` ids in `[min, max]` that no range in `db` (sorted)
/// overlaps, as shadow-utils' `find_free_range`.
pub fn find_free_range(db: &Database<SubId>, min: u64, max: u64, count: u64) -> Option<u64> {
    if count == 0 || max < min {
        return None;
    }
    let mut low = min;
    for r in db.records() {
        let first = r.start;
        let next = r.start + r.count; // one past the range's last id
        let high = first.min(max + 1);
        if high > low && high - low >= count {
            return Some(low);
        }
        if low < next {
            low = next;
        }
        if low > max {
            return None;
        }
    }
    (max - low + 1 >= count).then_some(low)
}

/// A new id for an account, as shadow-utils' `find_new_uid`/`find_new_gid`
/// for a non-system account: `preferred` (with the lowest id it may be) if
/// it is free, else one above the highest id in use in `[min, max]`, else
/// the lowest free id in the range. `used` holds every id in the database.
pub fn find_new_id(used: &[u32], min: u32, max: u32, preferred: Option<(u32, u32)>) -> Option<u32> {
    // 65535 and 4294967295 are the error values of 16- and 32-bit ids.
    let usable = |id: u32| id != u16::MAX as u32 && id != u32::MAX;
    if let Some((p, lowest)) = preferred
        && p >= lowest
        && p <= max
        && usable(p)
        && !used.contains(&p)
    {
        return Some(p);
    }
    if max < min {
        return None;
    }
    let taken: HashSet<u32> = used.iter().copied().collect();
    let highest = used
        .iter()
        .filter(|&&id| id >= min && id <= max)
        .max()
        .map(|&m| m as u64 + 1)
        .unwrap_or(min as u64);
    let start = if highest > max as u64 {
        min
    } else {
        highest as u32
    };
    let free = |id: &u32| usable(*id) && !taken.contains(id);
    if let Some(id) = (start..=max).find(free) {
        return Some(id);
    }
    if start != min {
        return (min..=max).find(free);
    }
    None
}

/// `/etc/login.defs`, read as shadow-utils' `getdef` reads it.
pub struct Defs {
    values: HashMap<String, String>,
}

/// `strtol(s, NULL, 0)` for a whole string: decimal, `0` octal or `0x` hex.
pub fn parse_c_long(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let value = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -value } else { value })
}

impl Defs {
    pub fn parse(text: &str) -> Defs {
        let mut values = HashMap::new();
        for line in text.lines() {
            let line = line.trim_end();
            let name = line.trim_start_matches([' ', '\t']);
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            let Some(end) = name.find([' ', '\t']) else {
                continue;
            };
            let value = name[end..].trim_start_matches([' ', '\t', '"']);
            let value = value.split('"').next().unwrap_or("");
            values.insert(name[..end].to_string(), value.to_string());
        }
        Defs { values }
    }

    pub fn load(tree: &Tree) -> io::Result<Defs> {
        Ok(Defs::parse(
            &tree.read_optional("/etc/login.defs")?.unwrap_or_default(),
        ))
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A number (`getdef_num`/`getdef_ulong`), or `default` if unset or
    /// not a number.
    pub fn num(&self, key: &str, default: i64) -> i64 {
        self.str(key).and_then(parse_c_long).unwrap_or(default)
    }

    /// `getdef_bool`: set to `yes` (any case); unset is false.
    pub fn bool(&self, key: &str) -> bool {
        self.str(key).is_some_and(|v| v.eq_ignore_ascii_case("yes"))
    }
}

/// A day count (days since 1970-01-01) from a `YYYY-MM-DD` date or a plain
/// number of days, as shadow-utils' `strtoday` reads it; `None` if invalid.
pub fn strtoday(s: &str) -> Option<i64> {
    let body = s.strip_prefix('-').unwrap_or(s).trim_start_matches(' ');
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return s.replace(' ', "").parse().ok();
    }
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146097 + doe - 719468)
}

/// Today as a day count for `/etc/shadow`'s last-change field, from the
/// source epoch ([`crate::context`]).
/// Day 0 would mean "change the password at next login", so, like the
/// tools, it gives `None` (an empty field) instead.
pub fn today() -> Option<i64> {
    let days = crate::context().source_epoch().max(0) / 86400;
    (days != 0).then_some(days)
}

#[cfg(test)]
mod accounts_tests {
    use super::*;

    #[test]
    fn allocates_ids_like_shadow_utils() {
        // Nothing in range: the lowest.
        assert_eq!(find_new_id(&[0, 1, 65534], 1000, 60000, None), Some(1000));
        // One above the highest in range, not the first gap.
        assert_eq!(find_new_id(&[1000, 1005], 1000, 60000, None), Some(1006));
        // The preferred id if free and in range, else allocate.
        assert_eq!(
            find_new_id(&[1000], 1000, 60000, Some((1500, 1000))),
            Some(1500)
        );
        assert_eq!(
            find_new_id(&[1500], 1000, 60000, Some((1500, 1000))),
            Some(1501)
        );
        assert_eq!(
            find_new_id(&[1000], 1000, 60000, Some((500, 1000))),
            Some(1001)
        );
        // Top of the range used: the lowest gap.
        assert_eq!(
            find_new_id(&[1000, 1002, 60000], 1000, 60000, None),
            Some(1001)
        );
        assert_eq!(find_new_id(&[1000, 1001], 1000, 1001, None), None);
        // 65535 is never handed out.
        assert_eq!(find_new_id(&[65534], 65000, 70000, None), Some(65536));
    }

    #[test]
    fn finds_subordinate_ranges() {
        let mut db = Database::<SubId>::parse("b:165536:65536\na:100000:65536\n").unwrap();
        sort_subids(&mut db);
        assert_eq!(db.render(), "a:100000:65536\nb:165536:65536\n");
        assert_eq!(find_free_range(&db, 100000, 600100000, 65536), Some(231072));
        let gap = Database::<SubId>::parse("a:100000:10\nb:300000:10\n").unwrap();
        assert_eq!(
            find_free_range(&gap, 100000, 600100000, 65536),
            Some(100010)
        );
        let empty = Database::<SubId>::default();
        assert_eq!(
            find_free_range(&empty, 100000, 600100000, 65536),
            Some(100000)
        );
        assert_eq!(find_free_range(&empty, 100000, 100010, 65536), None);
    }

    #[test]
    fn reads_login_defs_and_dates() {
        let d = Defs::parse(
            "UMASK\t\t022\n# X 1\nHOME_MODE 0700\nUSERGROUPS_ENAB Yes\nMAIL_DIR \"/var/mail\"\nN 0x10\n",
        );
        assert_eq!(d.num("UMASK", 0), 0o22);
        assert_eq!(d.num("HOME_MODE", 0), 0o700);
        assert_eq!(d.num("N", 0), 16);
        assert_eq!(d.num("X", -1), -1);
        assert!(d.bool("USERGROUPS_ENAB"));
        assert!(!d.bool("CREATE_HOME"));
        assert_eq!(d.str("MAIL_DIR"), Some("/var/mail"));
        assert_eq!(strtoday("2030-01-02"), Some(21916));
        assert_eq!(strtoday("1970-01-01"), Some(0));
        assert_eq!(strtoday("20000"), Some(20000));
        assert_eq!(strtoday("-1"), Some(-1));
        assert_eq!(strtoday("soon"), None);
    }

    #[test]
    fn tables_keep_the_backup_of_the_last_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\n+nis\n").unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let mut t = Table::<crate::formats::passwd::Group>::load(&tree, "/etc/group")
            .unwrap()
            .unwrap();
        for (name, gid) in [("a", 1000), ("b", 1001)] {
            t.begin();
            upsert(
                t.edit(),
                crate::formats::passwd::Group {
                    name: name.into(),
                    password: "x".into(),
                    gid,
                    members: vec![],
                },
            );
            t.finish();
        }
        // An invocation that changes nothing leaves the backup alone.
        t.begin();
        t.finish();
        t.save(&tree).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("etc/group"), "root:x:0:\na:x:1000:\nb:x:1001:\n+nis\n");
        assert_eq!(read("etc/group-"), "root:x:0:\na:x:1000:\n+nis\n");
        assert!(
            Table::<SubId>::load(&tree, "/etc/subuid")
                .unwrap()
                .is_none()
        );
    }
}
