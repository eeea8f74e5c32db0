//! Reads the rows of one table of an SQLite database file: enough of
//! SQLite's file format (https://www.sqlite.org/fileformat2.html) to list
//! the RPM database's `Packages` blobs, which is how rpm 4.16 and later
//! keep what is installed.
//!
//! The file comes from an untrusted tree, so every offset, length and page
//! number is checked against the bytes there are, every page is visited at
//! most once (a cycle of pages is an error, not a loop), and what is read
//! is capped. No SQL is run; nothing but the file's bytes is read.

use std::collections::HashSet;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a readable SQLite database: {0}")]
pub struct Error(String);

fn bad(what: impl Into<String>) -> Error {
    Error(what.into())
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

pub struct Database<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
    pages: usize,
}

impl<'a> Database<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Database<'a>, Error> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err(bad("no SQLite header"));
        }
        let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => n as usize,
            n => return Err(bad(format!("page size {n}"))),
        };
        let reserved = bytes[20] as usize;
        let usable = page_size
            .checked_sub(reserved)
            .filter(|u| *u >= 480)
            .ok_or_else(|| bad("reserved space leaves too little of a page"))?;
        if bytes[56..60] != [0, 0, 0, 1] && bytes[56..60] != [0, 0, 0, 0] {
            return Err(bad("text is not UTF-8"));
        }
        Ok(Database {
            bytes,
            page_size,
            usable,
            pages: bytes.len() / page_size,
        })
    }

    fn page(&self, n: u32) -> Result<&'a [u8], Error> {
        let n = n as usize;
        if n == 0 || n > self.pages {
            return Err(bad(format!("page {n} is not in the file")));
        }
        let start = (n - 1) * self.page_size;
        Ok(&self.bytes[start..start + self.usable])
    }

    /// The rows of the table called `name` (from the schema table).
    pub fn table(&self, name: &str) -> Result<Vec<Vec<Value>>, Error> {
        let schema = self.rows(1)?;
        let root = schema
            .iter()
            .find(|r| {
                matches!(r.first(), Some(Value::Text(t)) if t == b"table")
                    && matches!(r.get(1), Some(Value::Text(t)) if t == name.as_bytes())
            })
            .and_then(|r| match r.get(3) {
                Some(Value::Integer(p)) => u32::try_from(*p).ok(),
                _ => None,
            })
            .ok_or_else(|| bad(format!("no table {name:?}")))?;
        self.rows(root)
    }

    /// Every row of the table b-tree rooted at page `root`, in rowid order.
    fn rows(&self, root: u32) -> Result<Vec<Vec<Value>>, Error> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                return Err(bad(format!("page {n} is reached twice")));
            }
            let page = self.page(n)?;
            let header = if n == 1 { 100 } else { 0 };
            let kind = *page.get(header).ok_or_else(|| bad("a short page"))?;
            let cells = be16(page, header + 3)? as usize;
            let (hdr_len, interior) = match kind {
                0x0d => (8, false),
                0x05 => (12, true),
                k => return Err(bad(format!("page {n} is of kind {k:#x}, not a table page"))),
            };
            let pointers = header + hdr_len;
            let mut children = Vec::new();
            for i in 0..cells {
                let at = be16(page, pointers + 2 * i)? as usize;
                if interior {
                    children.push(be32(page, at)?);
                } else {
                    out.push(self.leaf_cell(page, at, &mut seen)?);
                }
            }
            if interior {
                children.push(be32(page, header + 8)?);
                // Visited in order: the stack pops the last pushed first.
                stack.extend(children.into_iter().rev());
            }
        }
        Ok(out)
    }

    /// A table leaf cell: its payload (with overflow pages) as a record.
    fn leaf_cell(
        &self,
        page: &[u8],
        at: usize,
        seen: &mut HashSet<u32>,
    ) -> Result<Vec<Value>, Error> {
        let (size, n1) = varint(page, at)?;
        let (_rowid, n2) = varint(page, at + n1)?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= self.bytes.len())
            .ok_or_else(|| bad("a record larger than the file"))?;
        let start = at + n1 + n2;
        let u = self.usable;
        let max_local = u - 35;
        let local = if size <= max_local {
            size
        } else {
            let min_local = (u - 12) * 32 / 255 - 23;
            let k = min_local + (size - min_local) % (u - 4);
            if k <= max_local { k } else { min_local }
        };
        let mut payload = Vec::with_capacity(size);
        payload.extend_from_slice(slice(page, start, local)?);
        if local < size {
            let mut next = be32(page, start + local)?;
            while payload.len() < size {
                if !seen.insert(next) {
                    return Err(bad(format!("overflow page {next} is reached twice")));
                }
                let p = self.page(next)?;
                let take = (size - payload.len()).min(u - 4);
                payload.extend_from_slice(slice(p, 4, take)?);
                next = be32(p, 0)?;
            }
        }
        record(&payload)
    }
}

fn slice(b: &[u8], at: usize, len: usize) -> Result<&[u8], Error> {
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or_else(|| bad("a cell runs past its page"))
}

fn be16(b: &[u8], at: usize) -> Result<u16, Error> {
    let s = slice(b, at, 2)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Result<u32, Error> {
    let s = slice(b, at, 4)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// SQLite's variable-length integer: 1 to 9 bytes.
fn varint(b: &[u8], at: usize) -> Result<(u64, usize), Error> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b
            .get(at + i)
            .ok_or_else(|| bad("a varint runs past its page"))?;
        if i == 8 {
            return Ok(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    unreachable!("the loop returns by its ninth byte")
}

/// A record: a header of serial types, then the values.
fn record(p: &[u8]) -> Result<Vec<Value>, Error> {
    let (header_len, mut at) = varint(p, 0)?;
    let header_len = usize::try_from(header_len)
        .ok()
        .filter(|h| *h <= p.len())
        .ok_or_else(|| bad("a record header longer than its record"))?;
    let mut body = header_len;
    let mut values = Vec::new();
    while at < header_len {
        let (t, n) = varint(p, at)?;
        at += n;
        let int = |len: usize| -> Result<i64, Error> {
            let s = slice(p, body, len)?;
            let mut v: i64 = if s[0] & 0x80 != 0 { -1 } else { 0 };
            for b in s {
                v = (v << 8) | i64::from(*b);
            }
            Ok(v)
        };
        let (value, len) = match t {
            0 => (Value::Null, 0),
            1 => (Value::Integer(int(1)?), 1),
            2 => (Value::Integer(int(2)?), 2),
            3 => (Value::Integer(int(3)?), 3),
            4 => (Value::Integer(int(4)?), 4),
            5 => (Value::Integer(int(6)?), 6),
            6 => (Value::Integer(int(8)?), 8),
            7 => {
                let s = slice(p, body, 8)?;
                (
                    Value::Real(f64::from_be_bytes(s.try_into().expect("8 bytes"))),
                    8,
                )
            }
            8 => (Value::Integer(0), 0),
            9 => (Value::Integer(1), 0),
            10 | 11 => return Err(bad("a reserved serial type")),
            t => {
                let len = usize::try_from((t - 12) / 2).map_err(|_| bad("a huge value"))?;
                let s = slice(p, body, len)?.to_vec();
                (
                    if t % 2 == 0 {
                        Value::Blob(s)
                    } else {
                        Value::Text(s)
                    },
                    len,
                )
            }
        };
        body += len;
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made by the sqlite3 program.
    fn made_by_sqlite3(sql: &str) -> Option<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.sqlite");
        let status = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .status()
            .expect("running sqlite3 (tools/setup packages installs it)");
        assert!(status.success(), "sqlite3 failed on {sql}");
        Some(std::fs::read(&db).unwrap())
    }

    #[test]
    fn the_rows_sqlite3_wrote_are_read_back_with_overflow_pages() {
        // Large blobs spill into overflow pages; many rows make interior pages.
        let Some(bytes) = made_by_sqlite3(
            "PRAGMA page_size=1024; CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300) \
             INSERT INTO Packages(blob) SELECT CAST(zeroblob(i*37) || i AS BLOB) FROM n;",
        ) else {
            unreachable!("made_by_sqlite3 panics instead")
        };
        let db = Database::new(&bytes).unwrap();
        let rows = db.table("Packages").unwrap();
        assert_eq!(rows.len(), 300);
        for (i, row) in rows.iter().enumerate() {
            let n = i + 1;
            assert_eq!(row[0], Value::Null, "the rowid alias is NULL in the record");
            let Value::Blob(b) = &row[1] else {
                panic!("row {n}: {:?}", row[1])
            };
            assert_eq!(b.len(), n * 37 + n.to_string().len(), "row {n}");
            assert!(b.ends_with(n.to_string().as_bytes()), "row {n}");
        }
        assert!(db.table("Nope").unwrap_err().0.contains("no table"));
    }

    #[test]
    fn broken_files_are_errors_not_panics_or_loops() {
        assert!(Database::new(b"not a database").is_err());
        let Some(good) = made_by_sqlite3(
            "PRAGMA page_size=512; CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<50) \
             INSERT INTO Packages(blob) SELECT zeroblob(700) FROM n;",
        ) else {
            unreachable!("made_by_sqlite3 panics instead")
        };
        // Every single byte changed to every value at a few hundred places:
        // never a panic, never a hang.
        for at in (0..good.len()).step_by(7) {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                if let Ok(db) = Database::new(&b) {
                    let _ = db.table("Packages");
                }
            }
        }
        // A truncated file.
        let db = Database::new(&good[..good.len() / 2]).unwrap();
        assert!(db.table("Packages").is_err());
    }
}
