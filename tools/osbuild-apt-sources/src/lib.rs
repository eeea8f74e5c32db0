//! What a Debian machine's apt is configured with, read the way apt reads
//! it: `/etc/apt/sources.list` (one-line entries) and the `*.list` and
//! `*.sources` (deb822) files in `/etc/apt/sources.list.d`, nothing else.
//!
//! Two users, one implementation: `tools/setup` asks it for the Debian
//! mirror and whether backports is configured (through the
//! `osbuild-apt-sources` binary), and `io.weldr.mmdebstrap` asks it for
//! the mirror to use when a pipeline names none.
//!
//! The Debian archive is found by what it serves, not by its address: the
//! entry whose suites include the wanted suite (or the host's release), so
//! a mirror at `https://mirror.example/pub/deb` works and a third-party
//! repository (`nodistro`, `cloud-sdk-bookworm`) is never taken for it.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One enabled or disabled source entry (a deb822 stanza or a one-line
/// `deb` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file it came from, for messages.
    pub file: String,
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// The `Signed-By` value exactly as written after the colon (deb822,
    /// possibly an inline key on continuation lines) or the one-line
    /// `signed-by=` option.
    pub signed_by: Option<String>,
    pub enabled: bool,
}

impl Source {
    fn is_binary(&self) -> bool {
        self.enabled && self.types.iter().any(|t| t == "deb")
    }

    /// The first URI apt can fetch from over the network or from a local
    /// directory (mmdebstrap takes the same schemes).
    fn fetchable_uri(&self) -> Option<&str> {
        self.uris.iter().map(String::as_str).find(|u| {
            ["http://", "https://", "file:/"]
                .iter()
                .any(|s| u.starts_with(s))
        })
    }
}

/// Why no mirror could be chosen.
#[derive(Debug, PartialEq, Eq)]
pub struct NoMirror {
    pub suite: String,
    /// Every binary entry seen, as `file: URI suites`, for the message.
    pub seen: Vec<String>,
}

impl fmt::Display for NoMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no Debian archive serving {} in /etc/apt/sources.list or /etc/apt/sources.list.d/*.{{list,sources}}",
            self.suite
        )?;
        if self.seen.is_empty() {
            write!(f, " (there are no enabled deb entries at all)")?;
        } else {
            write!(f, " (seen: {})", self.seen.join("; "))?;
        }
        write!(
            f,
            "; add one, e.g. /etc/apt/sources.list.d/debian.sources with \
             'Types: deb', 'URIs: http://deb.debian.org/debian', 'Suites: {}', 'Components: main'",
            self.suite
        )
    }
}

impl std::error::Error for NoMirror {}

/// Parses a deb822 `.sources` file.
pub fn parse_deb822(file: &str, text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    // Fields of the current stanza: (lowercased name, raw value after ':').
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut flush = |fields: &mut Vec<(String, String)>| {
        if fields.is_empty() {
            return;
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let enabled = get("enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
        let source = Source {
            file: file.to_string(),
            types: words("types"),
            uris: words("uris"),
            suites: words("suites"),
            components: words("components"),
            signed_by: get("signed-by").map(str::to_string),
            enabled,
        };
        if !source.types.is_empty() && !source.uris.is_empty() {
            out.push(source);
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut fields);
        } else if line.starts_with([' ', '\t']) {
            // A continuation of the previous field (inline keys, long lists).
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.to_string()));
        }
    }
    flush(&mut fields);
    out
}

/// Parses one-line entries (`sources.list`, `*.list`):
/// `deb [opt=value ...] URI SUITE [COMPONENT ...]`.
pub fn parse_one_line(file: &str, text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut rest = line.trim();
        let Some(kind) = rest.split_whitespace().next() else {
            continue;
        };
        if kind != "deb" && kind != "deb-src" {
            continue;
        }
        rest = rest[kind.len()..].trim_start();
        let mut signed_by = None;
        if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                continue; // apt rejects it too
            };
            for option in after[..end].split_whitespace() {
                if let Some((key, value)) = option.split_once('=')
                    && key.eq_ignore_ascii_case("signed-by")
                {
                    signed_by = Some(value.to_string());
                }
            }
            rest = after[end + 1..].trim_start();
        }
        let mut words = rest.split_whitespace().map(str::to_string);
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            file: file.to_string(),
            types: vec![kind.to_string()],
            uris: vec![uri],
            suites: vec![suite],
            components: words.collect(),
            signed_by,
            enabled: true,
        });
    }
    out
}

/// Reads every source apt would read under `root` (`/` on the host).
/// Files apt ignores (`*.disabled`, `*.save`, ...) are ignored here too.
pub fn read(root: &Path) -> io::Result<Vec<Source>> {
    let etc = root.join("etc/apt");
    let mut out = Vec::new();
    let list = etc.join("sources.list");
    match fs::read_to_string(&list) {
        Ok(text) => out.extend(parse_one_line(&list.display().to_string(), &text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", list.display()))),
    }
    let dir = etc.join("sources.list.d");
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    files.sort();
    for path in files {
        let name = path.display().to_string();
        let deb822 = name.ends_with(".sources");
        if !deb822 && !name.ends_with(".list") {
            continue;
        }
        let text = fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
        out.extend(if deb822 {
            parse_deb822(&name, &text)
        } else {
            parse_one_line(&name, &text)
        });
    }
    Ok(out)
}

/// The release codename in `root`'s os-release (`bookworm`).
pub fn codename(root: &Path) -> Option<String> {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            let text = fs::read_to_string(root.join(p)).ok()?;
            text.lines().find_map(|l| {
                l.strip_prefix("VERSION_CODENAME=")
                    .map(|v| v.trim_matches(['"', '\'']).to_string())
                    .filter(|v| !v.is_empty())
            })
        })
}

/// The suite without an archive suffix: `bookworm-updates` -> `bookworm`.
fn release_of(suite: &str) -> &str {
    for suffix in ["-updates", "-backports", "-proposed-updates", "-security"] {
        if let Some(base) = suite.strip_suffix(suffix) {
            return base;
        }
    }
    suite
}

fn is_security(source: &Source) -> bool {
    source.suites.iter().any(|s| s.ends_with("-security"))
        || source
            .uris
            .iter()
            .any(|u| u.trim_end_matches('/').ends_with("-security"))
}

/// The entry that serves the Debian archive for `suite`: one that lists
/// `suite` itself, else one that lists the host's release `host` (the same
/// archive serves other releases too: trixie from a bookworm machine), else
/// one with an update or backports suite of either. Security archives
/// never qualify: they hold only updates.
pub fn archive<'a>(
    sources: &'a [Source],
    suite: &str,
    host: Option<&str>,
) -> Result<&'a Source, NoMirror> {
    let usable: Vec<&Source> = sources
        .iter()
        .filter(|s| s.is_binary() && !is_security(s) && s.fetchable_uri().is_some())
        .collect();
    let wanted: Vec<&str> = std::iter::once(suite).chain(host).collect();
    let exact = wanted
        .iter()
        .find_map(|w| usable.iter().find(|s| s.suites.iter().any(|x| x == w)));
    let related = || {
        wanted.iter().find_map(|w| {
            usable
                .iter()
                .find(|s| s.suites.iter().any(|x| release_of(x) == *w))
        })
    };
    exact.or_else(related).copied().ok_or_else(|| NoMirror {
        suite: suite.to_string(),
        seen: sources
            .iter()
            .filter(|s| s.is_binary())
            .map(|s| format!("{}: {} {}", s.file, s.uris.join(" "), s.suites.join(" ")))
            .collect(),
    })
}

/// The mirror URI for `suite` (see [`archive`]).
pub fn mirror(sources: &[Source], suite: &str, host: Option<&str>) -> Result<String, NoMirror> {
    let source = archive(sources, suite, host)?;
    Ok(source
        .fetchable_uri()
        .expect("archive() only returns entries with a fetchable URI")
        .to_string())
}

/// Whether an enabled binary entry lists `suite`.
pub fn has_suite(sources: &[Source], suite: &str) -> bool {
    sources
        .iter()
        .any(|s| s.is_binary() && s.suites.iter().any(|x| x == suite))
}

/// A deb822 source file adding `CODENAME-backports` from the same mirror,
/// with the same key, as the Debian archive; `None` if backports is
/// configured already.
pub fn backports_source(sources: &[Source], codename: &str) -> Result<Option<String>, NoMirror> {
    let suite = format!("{codename}-backports");
    if has_suite(sources, &suite) {
        return Ok(None);
    }
    let main = archive(sources, codename, None)?;
    let uri = main.fetchable_uri().expect("checked by archive()");
    let mut text = format!(
        "# Added by osbuild's tools/setup: qemu-system-x86 must come from the\n\
         # suite qemu-utils came from ({suite}).\n\
         Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: main\n"
    );
    if let Some(key) = &main.signed_by {
        if main.file.ends_with(".sources") {
            text.push_str(&format!("Signed-By:{key}\n"));
        } else {
            // One-line `signed-by=` may list several files, comma-separated.
            text.push_str(&format!("Signed-By: {}\n", key.replace(',', " ")));
        }
    }
    Ok(Some(text))
}

/// The suite to install `qemu-system-x86` from so that it matches the
/// installed `qemu-utils` (Debian insists on equal versions): backports
/// when qemu-utils is a backport (`~bpo12+1`), otherwise the default.
pub fn qemu_suite(qemu_utils_version: &str, codename: &str) -> Option<String> {
    (qemu_utils_version.contains("~bpo") || qemu_utils_version.contains("+bpo"))
        .then(|| format!("{codename}-backports"))
}

#[cfg(test)]
mod tests;
