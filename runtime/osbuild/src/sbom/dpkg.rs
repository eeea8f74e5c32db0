//! The Debian packages installed in a tree: dpkg's status file, and each
//! package's machine-readable copyright file for its licenses.

use std::collections::BTreeMap;

/// One installed package, as dpkg's status file has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `Name <address>`.
    pub maintainer: Option<String>,
    /// The source package, when it differs from the binary's name or
    /// version (`Source: name (version)`).
    pub source: Option<String>,
    pub homepage: Option<String>,
    /// The first line of its description.
    pub summary: Option<String>,
}

/// dpkg's states in which a package's files are in the tree (`dpkg-query
/// -W` lists the same, and also `config-files`, which leaves only
/// configuration behind).
const PRESENT: &[&str] = &[
    "installed",
    "unpacked",
    "half-configured",
    "half-installed",
    "triggers-awaited",
    "triggers-pending",
];

/// The packages of a status file, sorted by name and architecture.
pub fn parse_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in stanzas(text) {
        let status = stanza.get("Status").map(String::as_str).unwrap_or_default();
        let state = status.split_whitespace().nth(2).unwrap_or_default();
        if !PRESENT.contains(&state) {
            continue;
        }
        let (Some(name), Some(version)) = (stanza.get("Package"), stanza.get("Version")) else {
            continue;
        };
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let source = stanza.get("Source").map(|s| {
            // `Source: name` or `Source: name (version)`.
            match s.split_once(' ') {
                Some((n, v)) => format!("{n} {}", v.trim()),
                None => format!("{s} ({version})"),
            }
        });
        out.push(Package {
            name: name.clone(),
            version: version.clone(),
            architecture: stanza
                .get("Architecture")
                .cloned()
                .unwrap_or_else(|| "all".to_string()),
            maintainer: stanza.get("Maintainer").cloned(),
            source,
            homepage: stanza.get("Homepage").cloned(),
            summary: stanza
                .get("Description")
                .and_then(|d| d.lines().next())
                .map(str::to_string),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    out.dedup_by(|a, b| a.name == b.name && a.architecture == b.architecture);
    out
}

/// Deb822 stanzas: fields with their continuation lines joined by `\n`.
pub fn stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_string();
            cur.insert(k.clone(), v.trim().to_string());
            last = Some(k);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The most distinct license expressions and unlisted names one copyright
/// file may give; a file with more names no license a reader could use.
pub const MAX_LICENSES_PER_FILE: usize = 64;

/// The licenses a DEP-5 copyright file names: one SPDX expression over
/// every `License:` field, and for each name SPDX does not list, the
/// text the file gives it (if it does). `None` for a file in another
/// format: it names no license in a way a program can read.
pub fn copyright_licenses(text: &str) -> Option<(String, BTreeMap<String, Option<String>>)> {
    let first = text.lines().next().unwrap_or_default();
    if !first.starts_with("Format:") || !first.contains("copyright-format") {
        return None;
    }
    let mut exprs: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut others: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for stanza in stanzas(text) {
        let Some(field) = stanza.get("License") else {
            continue;
        };
        let (head, body) = match field.split_once('\n') {
            Some((h, b)) => (h.trim(), Some(b)),
            None => (field.trim(), None),
        };
        if let Some(body) = body
            && !stanza.contains_key("Files")
        {
            // A stand-alone license stanza: the text of the name.
            texts.insert(head.to_string(), body.to_string());
        }
        if (stanza.contains_key("Files") || stanza.contains_key("Format"))
            && let Some((e, names)) =
                super::licenses::expression(head, super::licenses::Source::Debian)
        {
            if seen.insert(e.clone()) {
                exprs.push(e);
            }
            for n in names {
                others.insert(n, None);
            }
            if exprs.len() > MAX_LICENSES_PER_FILE || others.len() > MAX_LICENSES_PER_FILE {
                return None;
            }
        }
    }
    if exprs.is_empty() {
        return None;
    }
    for (name, text) in others.iter_mut() {
        *text = texts.get(name).cloned();
    }
    let expr = if exprs.len() == 1 {
        exprs.pop().expect("one")
    } else {
        exprs
            .iter()
            .map(|e| {
                if e.contains(' ') {
                    format!("({e})")
                } else {
                    e.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    Some((expr, others))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_gives_the_installed_packages() {
        let status = "Package: b\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2.0-1+b1\nMaintainer: A Person <a@example.org>\nSource: bsrc (2.0-1)\nDescription: short\n long\n .\n more\n\nPackage: a\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n\nPackage: c\nStatus: install ok half-installed\nVersion: 3\nArchitecture: all\n";
        let p = parse_status(status);
        assert_eq!(
            p.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(p[0].version, "1:2.0-1+b1");
        assert_eq!(p[0].source.as_deref(), Some("bsrc (2.0-1)"));
        assert_eq!(p[0].summary.as_deref(), Some("short"));
        assert_eq!(p[0].maintainer.as_deref(), Some("A Person <a@example.org>"));
    }

    #[test]
    fn a_dep5_file_gives_an_expression_and_the_texts_of_other_names() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: someone\nLicense: GPL-2+\n\nFiles: lib/*\nCopyright: else\nLicense: Odd\n\nLicense: Odd\n Do what you like.\n .\n Really.\n";
        let (e, others) = copyright_licenses(text).unwrap();
        assert_eq!(e, "GPL-2.0-or-later AND LicenseRef-Debian-Odd");
        assert_eq!(
            others.get("Odd").cloned().flatten().as_deref(),
            Some("Do what you like.\n.\nReally.")
        );
        assert_eq!(copyright_licenses("This is free software.\n"), None);
    }

    #[test]
    fn a_file_naming_more_licenses_than_anyone_reads_names_none() {
        let mut text =
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                .to_string();
        for i in 0..=MAX_LICENSES_PER_FILE {
            text.push_str(&format!("\nFiles: f{i}\nCopyright: x\nLicense: L{i}\n"));
        }
        assert_eq!(copyright_licenses(&text), None);
        let fewer: String = text
            .lines()
            .take(4 * 10 + 1)
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(copyright_licenses(&fewer).is_some());
    }

    #[test]
    fn stanzas_without_a_name_or_version_are_no_packages() {
        let status = "Package:\nStatus: install ok installed\nVersion: 1\n\nPackage: a\nStatus: install ok installed\nVersion:\n";
        assert_eq!(parse_status(status), Vec::new());
    }
}
