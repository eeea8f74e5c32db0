//! The RPM packages installed in a tree: the headers in the RPM database
//! (`/var/lib/rpm/rpmdb.sqlite`, rpm 4.16 and later), each parsed for the
//! tags an SBOM names. A header is untrusted input: its index and data are
//! checked against its length before anything is read.

use super::sqlite;

/// One installed package, as its header has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// `[EPOCH:]VERSION-RELEASE`.
    pub version: String,
    pub architecture: String,
    pub license: Option<String>,
    pub vendor: Option<String>,
    pub packager: Option<String>,
    pub url: Option<String>,
    pub summary: Option<String>,
    pub source_rpm: Option<String>,
}

const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const SUMMARY: u32 = 1004;
const VENDOR: u32 = 1011;
const LICENSE: u32 = 1014;
const PACKAGER: u32 = 1015;
const URL: u32 = 1020;
const ARCH: u32 = 1022;
const SOURCERPM: u32 = 1044;

const INT32: u32 = 4;
const STRING: u32 = 6;
const STRING_ARRAY: u32 = 8;
const I18NSTRING: u32 = 9;

/// The packages of an rpmdb.sqlite file, sorted by name and architecture;
/// `gpg-pubkey` entries (keys rpm imported, not software) left out.
pub fn parse_rpmdb(bytes: &[u8]) -> Result<Vec<Package>, String> {
    let db = sqlite::Database::new(bytes).map_err(|e| e.to_string())?;
    let rows = db.table("Packages").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(sqlite::Value::Blob(blob)) = row.get(1) else {
            return Err(format!("row {} of Packages holds no header", i + 1));
        };
        let p = header(blob).map_err(|e| format!("the header in row {}: {e}", i + 1))?;
        if p.name != "gpg-pubkey" && !p.name.is_empty() {
            out.push(p);
        }
    }
    out.sort_by(|a, b| {
        (&a.name, &a.architecture, &a.version).cmp(&(&b.name, &b.architecture, &b.version))
    });
    Ok(out)
}

/// A header blob (as the database keeps it: no lead, no magic).
fn header(blob: &[u8]) -> Result<Package, String> {
    let word = |at: usize| -> Result<u32, String> {
        blob.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| "shorter than its index says".to_string())
    };
    let il = word(0)? as usize;
    let dl = word(4)? as usize;
    let data_start = il
        .checked_mul(16)
        .and_then(|n| n.checked_add(8))
        .filter(|s| s.checked_add(dl).is_some_and(|end| end <= blob.len()))
        .ok_or("its index and data are longer than it")?;
    let data = &blob[data_start..data_start + dl];
    let find = |tag: u32| -> Result<Option<(u32, &[u8])>, String> {
        for i in 0..il {
            let at = 8 + i * 16;
            if word(at)? == tag {
                let kind = word(at + 4)?;
                let offset = word(at + 8)? as usize;
                let rest = data
                    .get(offset..)
                    .ok_or("an entry's offset is past the data")?;
                return Ok(Some((kind, rest)));
            }
        }
        Ok(None)
    };
    let string = |tag: u32| -> Result<Option<String>, String> {
        match find(tag)? {
            Some((STRING | STRING_ARRAY | I18NSTRING, rest)) => {
                let end = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or("a string without its end")?;
                Ok(Some(String::from_utf8_lossy(&rest[..end]).into_owned()))
            }
            Some((kind, _)) => Err(format!("tag {tag} is of type {kind}, not a string")),
            None => Ok(None),
        }
    };
    let name = string(NAME)?.ok_or("no name")?;
    let version = string(VERSION)?.ok_or("no version")?;
    let release = string(RELEASE)?.ok_or("no release")?;
    let arch = string(ARCH)?.unwrap_or_else(|| "noarch".into());
    let license = string(LICENSE)?;
    let vendor = string(VENDOR)?;
    let packager = string(PACKAGER)?;
    let url = string(URL)?;
    let summary = string(SUMMARY)?;
    let source_rpm = string(SOURCERPM)?;
    let epoch = match find(EPOCH)? {
        Some((INT32, rest)) => Some(
            rest.get(..4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or("a short epoch")?,
        ),
        Some(_) => return Err("the epoch is not an integer".into()),
        None => None,
    };
    Ok(Package {
        version: match epoch {
            Some(e) if e > 0 => format!("{e}:{version}-{release}"),
            _ => format!("{version}-{release}"),
        },
        name,
        architecture: arch,
        license,
        vendor,
        packager,
        url,
        summary,
        source_rpm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with these (tag, type, bytes) entries.
    fn make(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, kind, bytes) in entries {
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&kind.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(bytes);
        }
        let mut h = (entries.len() as u32).to_be_bytes().to_vec();
        h.extend_from_slice(&(data.len() as u32).to_be_bytes());
        h.extend_from_slice(&index);
        h.extend_from_slice(&data);
        h
    }

    #[test]
    fn a_header_gives_its_package() {
        let h = make(&[
            (NAME, STRING, b"hello\0"),
            (VERSION, STRING, b"1.0\0"),
            (RELEASE, STRING, b"2.fc40\0"),
            (EPOCH, INT32, &3u32.to_be_bytes()),
            (ARCH, STRING, b"x86_64\0"),
            (LICENSE, STRING, b"MIT\0"),
            (SUMMARY, I18NSTRING, b"says hello\0"),
        ]);
        let p = header(&h).unwrap();
        assert_eq!(p.name, "hello");
        assert_eq!(p.version, "3:1.0-2.fc40");
        assert_eq!(p.architecture, "x86_64");
        assert_eq!(p.license.as_deref(), Some("MIT"));
        assert_eq!(p.summary.as_deref(), Some("says hello"));
    }

    #[test]
    fn a_lying_header_is_an_error() {
        let mut h = make(&[(NAME, STRING, b"hello\0")]);
        // Data length larger than the blob.
        h[4..8].copy_from_slice(&1000u32.to_be_bytes());
        assert!(header(&h).is_err());
        // An index count that overflows.
        let mut h = make(&[(NAME, STRING, b"hello\0")]);
        h[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(header(&h).is_err());
        // An offset past the data; a string without its NUL.
        let mut h = make(&[
            (NAME, STRING, b"hello\0"),
            (VERSION, STRING, b"1\0"),
            (RELEASE, STRING, b"1\0"),
        ]);
        h[8 + 8..8 + 12].copy_from_slice(&5000u32.to_be_bytes());
        assert!(header(&h).is_err());
        let h = make(&[
            (NAME, STRING, b"hello"),
            (VERSION, STRING, b"1"),
            (RELEASE, STRING, b"1"),
        ]);
        assert!(header(&h).is_err());
        assert!(header(b"\0\0").is_err());
    }
}
