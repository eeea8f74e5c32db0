//! Debian's license names (the `License:` fields of machine-readable
//! copyright files) as SPDX license expressions.
//!
//! Names with an SPDX identifier get it (`GPL-2+` is `GPL-2.0-or-later`);
//! any other becomes a `LicenseRef-` the document declares with the text
//! the copyright file gives it. A field's `or` and `and` become SPDX's
//! `OR` and `AND`; a comma groups, as DEP-5 has it.

/// Debian's name (lowercase) → SPDX identifier.
const KNOWN: &[(&str, &str)] = &[
    ("0bsd", "0BSD"),
    ("afl-2.1", "AFL-2.1"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2.0", "Artistic-2.0"),
    ("beerware", "Beerware"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("bsl-1.0", "BSL-1.0"),
    ("cc0", "CC0-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("curl", "curl"),
    ("expat", "MIT"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("gplv2", "GPL-2.0-only"),
    ("gplv2+", "GPL-2.0-or-later"),
    ("gplv3", "GPL-3.0-only"),
    ("gplv3+", "GPL-3.0-or-later"),
    ("isc", "ISC"),
    ("latex2e", "Latex2e"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.0+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("lgplv2.1+", "LGPL-2.1-or-later"),
    ("lgplv3+", "LGPL-3.0-or-later"),
    ("mit", "MIT"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("openssl", "OpenSSL"),
    ("psf-2", "PSF-2.0"),
    ("unlicense", "Unlicense"),
    ("wtfpl", "WTFPL"),
    ("x11", "X11"),
    ("zlib", "Zlib"),
];

/// One license the expression names: an SPDX identifier, or a name of
/// Debian's that needs a `LicenseRef-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Term {
    Spdx(&'static str),
    Other(String),
}

impl Term {
    fn of(name: &str) -> Term {
        let lower = name.to_ascii_lowercase();
        match KNOWN.binary_search_by(|(k, _)| k.cmp(&lower.as_str())) {
            Ok(i) => Term::Spdx(KNOWN[i].1),
            // An SPDX identifier already (an RPM's License often is one).
            Err(_) => match KNOWN.iter().find(|(_, id)| id.eq_ignore_ascii_case(name)) {
                Some((_, id)) => Term::Spdx(id),
                None => Term::Other(name.to_string()),
            },
        }
    }

    /// The `LicenseRef-` of a name SPDX does not list, as `source`
    /// (`Debian`, `RPM`) names it.
    pub fn reference(source: Source, name: &str) -> String {
        let id: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("LicenseRef-{}-{id}", source.as_str())
    }

    fn render(&self, source: Source) -> String {
        match self {
            Term::Spdx(id) => id.to_string(),
            Term::Other(name) => Term::reference(source, name),
        }
    }
}

/// Whose license names these are: they become `LicenseRef-Debian-…` or
/// `LicenseRef-RPM-…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Debian,
    Rpm,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Debian => "Debian",
            Source::Rpm => "RPM",
        }
    }
}

/// A license field (a DEP-5 `License:` line, an RPM's `License`) as an
/// SPDX expression, and the names in it SPDX does not list. `None` when
/// it names nothing. A field with parentheses is taken whole, as one name:
/// its grouping is not guessed at.
pub fn expression(field: &str, source: Source) -> Option<(String, Vec<String>)> {
    if field.contains(['(', ')']) {
        let name = field.split_whitespace().collect::<Vec<_>>().join(" ");
        return (!name.is_empty()).then(|| (Term::reference(source, &name), vec![name]));
    }
    let mut others = Vec::new();
    let mut groups = Vec::new();
    for group in field.split(',') {
        let words: Vec<&str> = group.split_whitespace().collect();
        let mut parts: Vec<String> = Vec::new();
        let mut term: Vec<&str> = Vec::new();
        let mut ops = 0;
        let flush = |term: &mut Vec<&str>, parts: &mut Vec<String>, others: &mut Vec<String>| {
            if term.is_empty() {
                return;
            }
            // "GPL-2+ with Autoconf exception" is one license to us.
            let t = Term::of(&term.join(" "));
            if let Term::Other(name) = &t {
                others.push(name.clone());
            }
            parts.push(t.render(source));
            term.clear();
        };
        let mut i = 0;
        while i < words.len() {
            let w = words[i];
            let lower = w.to_ascii_lowercase();
            if (lower == "or" || lower == "and") && !term.is_empty() {
                flush(&mut term, &mut parts, &mut others);
                parts.push(lower.to_ascii_uppercase());
                ops += 1;
            } else if lower == "and" || lower == "or" {
                // A leading "and" after a comma: the comma already joins.
            } else {
                term.push(w);
            }
            i += 1;
        }
        flush(&mut term, &mut parts, &mut others);
        while parts.last().is_some_and(|p| p == "AND" || p == "OR") {
            parts.pop();
        }
        if parts.is_empty() {
            continue;
        }
        let joined = parts.join(" ");
        groups.push(if ops > 0 {
            format!("({joined})")
        } else {
            joined
        });
    }
    if groups.is_empty() {
        return None;
    }
    let expr = if groups.len() == 1 {
        groups
            .pop()
            .expect("one group")
            .trim_matches(['(', ')'])
            .to_string()
    } else {
        groups.join(" AND ")
    };
    Some((expr, others))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_its_binary_search() {
        assert!(KNOWN.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn debian_names_become_spdx_expressions() {
        let e = |s: &str| expression(s, Source::Debian);
        assert_eq!(e("GPL-2+"), Some(("GPL-2.0-or-later".into(), vec![])));
        assert_eq!(
            e("GPL-1+ or Artistic"),
            Some(("GPL-1.0-or-later OR Artistic-1.0-Perl".into(), vec![]))
        );
        assert_eq!(
            e("GPL-2+ or AFL-2.1, and Expat and Tcl-BSDish"),
            Some((
                "(GPL-2.0-or-later OR AFL-2.1) AND (MIT AND LicenseRef-Debian-Tcl-BSDish)".into(),
                vec!["Tcl-BSDish".to_string()]
            ))
        );
        assert_eq!(
            e("GPL-2+ with Autoconf exception"),
            Some((
                "LicenseRef-Debian-GPL-2--with-Autoconf-exception".into(),
                vec!["GPL-2+ with Autoconf exception".to_string()]
            ))
        );
        assert_eq!(e("  BSD-3-Clause "), Some(("BSD-3-Clause".into(), vec![])));
        assert_eq!(e("  "), None);
        assert_eq!(
            expression("MIT AND Apache-2.0", Source::Rpm),
            Some(("MIT AND Apache-2.0".into(), vec![]))
        );
        assert_eq!(
            expression("(MIT OR Apache-2.0) AND BSD", Source::Rpm),
            Some((
                "LicenseRef-RPM--MIT-OR-Apache-2.0--AND-BSD".into(),
                vec!["(MIT OR Apache-2.0) AND BSD".to_string()]
            ))
        );
    }
}
