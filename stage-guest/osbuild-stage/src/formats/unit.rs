//! systemd unit files: parsing (for `[Install]` sections) and writing (for
//! units built from structured options).
//!
//! Follows systemd's own reading rules: `#` and `;` start comments, a
//! trailing backslash continues a line, keys and values are trimmed, and for
//! list settings an empty assignment (`WantedBy=`) resets the list.

use std::fmt;

/// A parsed unit file: its sections in order, each with its assignments in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub entries: Vec<(String, String)>,
}

/// A line that is neither a section header, an assignment nor a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl UnitFile {
    pub fn parse(text: &str) -> Result<UnitFile, ParseError> {
        let mut unit = UnitFile::default();
        let mut pending = String::new();
        let mut pending_start = 0;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if pending.is_empty() {
                pending_start = i + 1;
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
            } else if line.starts_with('#') || line.starts_with(';') {
                // Comments inside a continued line are skipped.
                continue;
            }
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(line);
            let full = std::mem::take(&mut pending);
            unit.add_line(full.trim(), pending_start)?;
        }
        if !pending.is_empty() {
            unit.add_line(pending.trim(), pending_start)?;
        }
        Ok(unit)
    }

    fn add_line(&mut self, line: &str, lineno: usize) -> Result<(), ParseError> {
        if let Some(name) = line.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or_else(|| ParseError {
                line: lineno,
                message: format!("invalid section header {line:?}"),
            })?;
            self.sections.push(Section {
                name: name.to_string(),
                entries: Vec::new(),
            });
            return Ok(());
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ParseError {
                line: lineno,
                message: format!("expected Key=Value, found {line:?}"),
            });
        };
        let Some(section) = self.sections.last_mut() else {
            return Err(ParseError {
                line: lineno,
                message: "assignment outside of any section".to_string(),
            });
        };
        section
            .entries
            .push((key.trim().to_string(), value.trim().to_string()));
        Ok(())
    }

    /// Every value assigned to `key` in all sections named `section`, in order.
    pub fn raw_values<'a>(
        &'a self,
        section: &'a str,
        key: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.sections
            .iter()
            .filter(move |s| s.name == section)
            .flat_map(|s| s.entries.iter())
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A list setting: whitespace-separated words from every assignment,
    /// an empty assignment clearing what came before.
    pub fn list(&self, section: &str, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for value in self.raw_values(section, key) {
            if value.is_empty() {
                out.clear();
            } else {
                out.extend(split_words(value));
            }
        }
        out
    }

    /// A single-valued setting: the last assignment wins.
    pub fn value<'a>(&'a self, section: &'a str, key: &'a str) -> Option<&'a str> {
        self.raw_values(section, key).last()
    }
}

/// Splits a list value into words, honouring double and single quotes.
pub fn split_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in value.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Renders sections as a unit file: `[Section]` then `Key=Value` lines,
/// sections separated by a blank line.
pub fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push('[');
        out.push_str(&s.name);
        out.push_str("]\n");
        for (k, v) in &s.entries {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

/// A unit name taken apart: `getty@tty1.service` is prefix `getty`,
/// instance `tty1`, suffix `service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitName {
    pub prefix: String,
    /// `Some("")` for a template (`getty@.service`), `None` for a plain unit.
    pub instance: Option<String>,
    pub suffix: String,
}

const SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

impl UnitName {
    pub fn parse(name: &str) -> Option<UnitName> {
        let (stem, suffix) = name.rsplit_once('.')?;
        if !SUFFIXES.contains(&suffix) || stem.is_empty() || name.contains('/') {
            return None;
        }
        let (prefix, instance) = match stem.split_once('@') {
            Some((p, i)) => (p, Some(i.to_string())),
            None => (stem, None),
        };
        // systemd's unit name alphabet (VALID_CHARS), and its length limit.
        let valid = |part: &str| {
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_.\\".contains(c))
        };
        if prefix.is_empty()
            || name.len() > 255
            || !valid(prefix)
            || !instance.as_deref().is_none_or(valid)
        {
            return None;
        }
        Some(UnitName {
            prefix: prefix.to_string(),
            instance,
            suffix: suffix.to_string(),
        })
    }

    pub fn is_template(&self) -> bool {
        self.instance.as_deref() == Some("")
    }

    pub fn is_instance(&self) -> bool {
        matches!(self.instance.as_deref(), Some(i) if !i.is_empty())
    }

    /// `foo@.service` for `foo@bar.service`; the name itself otherwise.
    pub fn template(&self) -> String {
        match self.instance {
            Some(_) => format!("{}@.{}", self.prefix, self.suffix),
            None => self.to_string(),
        }
    }

    /// This template instantiated with `instance`.
    pub fn with_instance(&self, instance: &str) -> String {
        format!("{}@{}.{}", self.prefix, instance, self.suffix)
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.instance {
            Some(i) => write!(f, "{}@{}.{}", self.prefix, i, self.suffix),
            None => write!(f, "{}.{}", self.prefix, self.suffix),
        }
    }
}

/// Expands the specifiers systemctl expands in `[Install]` values for
/// `unit`: `%n` (full name), `%N` (without suffix), `%p` (prefix), `%i`
/// (instance), `%j` (last dash-separated part of the prefix), `%%`.
/// Unknown specifiers are kept as written.
pub fn expand_install_specifiers(value: &str, unit: &UnitName) -> String {
    let name = unit.to_string();
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(&name),
            Some('N') => out.push_str(name.rsplit_once('.').map_or(&name[..], |(s, _)| s)),
            Some('p') => out.push_str(&unit.prefix),
            Some('i') => out.push_str(unit.instance.as_deref().unwrap_or("")),
            Some('j') => out.push_str(unit.prefix.rsplit('-').next().unwrap_or("")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_install_sections_like_systemd() {
        let unit = UnitFile::parse(
            "# comment\n[Unit]\nDescription=x\n\n[Install]\nWantedBy=multi-user.target \\\n  graphical.target\n; c\nAlias=foo.service\nWantedBy=\nWantedBy=default.target \"a b.target\"\nAlso=bar.socket\n",
        )
        .unwrap();
        assert_eq!(
            unit.list("Install", "WantedBy"),
            vec!["default.target", "a b.target"]
        );
        assert_eq!(unit.list("Install", "Alias"), vec!["foo.service"]);
        assert_eq!(unit.value("Unit", "Description"), Some("x"));
        assert!(unit.list("Install", "RequiredBy").is_empty());
    }

    #[test]
    fn continuation_skips_comment_lines() {
        let unit =
            UnitFile::parse("[Install]\nWantedBy=a.target \\\n# in between\n b.target\n").unwrap();
        assert_eq!(
            unit.list("Install", "WantedBy"),
            vec!["a.target", "b.target"]
        );
    }

    #[test]
    fn rejects_garbage_with_line_number() {
        let err = UnitFile::parse("[Unit]\nnot an assignment\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(UnitFile::parse("Key=outside\n").is_err());
    }

    #[test]
    fn unit_names_and_specifiers() {
        let n = UnitName::parse("getty@tty1.service").unwrap();
        assert!(n.is_instance());
        assert_eq!(n.template(), "getty@.service");
        assert_eq!(
            expand_install_specifiers("%p-%i %n %N %j %%", &n),
            "getty-tty1 getty@tty1.service getty@tty1 getty %"
        );
        assert!(UnitName::parse("getty@.service").unwrap().is_template());
        assert!(UnitName::parse("nosuffix").is_none());
        assert!(UnitName::parse("../x.service").is_none());
        assert!(UnitName::parse("bad name.service").is_none());
        assert!(UnitName::parse("a$b.service").is_none());
        assert!(UnitName::parse("systemd-fsck@dev-disk-by\\x2dlabel-root.service").is_some());
    }

    #[test]
    fn renders_sections() {
        let s = vec![
            Section {
                name: "Unit".into(),
                entries: vec![("Description".into(), "d".into())],
            },
            Section {
                name: "Service".into(),
                entries: vec![
                    ("ExecStart".into(), "/a".into()),
                    ("ExecStart".into(), "/b".into()),
                ],
            },
        ];
        assert_eq!(
            render(&s),
            "[Unit]\nDescription=d\n\n[Service]\nExecStart=/a\nExecStart=/b\n"
        );
    }
}
