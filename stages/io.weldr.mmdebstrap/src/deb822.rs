//! Debian control paragraphs (`Packages` indexes, dpkg's `status`,
//! apt's index targets): just enough to look fields up and to rewrite
//! one. Pure: no I/O.

/// One paragraph, as the text it was.
#[derive(Debug, Clone, Copy)]
pub struct Paragraph<'a> {
    pub text: &'a str,
}

/// The paragraphs of `text`, separated by blank lines.
pub fn paragraphs(text: &str) -> impl Iterator<Item = Paragraph<'_>> {
    text.split("\n\n")
        .map(|p| p.trim_matches('\n'))
        .filter(|p| !p.trim().is_empty())
        .map(|text| Paragraph { text })
}

impl<'a> Paragraph<'a> {
    /// A single-line field's value (field names are case-insensitive).
    pub fn field(&self, name: &str) -> Option<&'a str> {
        self.text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (!line.starts_with([' ', '\t']) && key.eq_ignore_ascii_case(name)).then(|| value.trim())
        })
    }

    /// The paragraph with `name`'s line (and its continuation lines)
    /// replaced by `name: value`, or the field added at the end.
    pub fn with_field(&self, name: &str, value: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + 64);
        let mut skipping = false;
        let mut replaced = false;
        for line in self.text.lines() {
            if line.starts_with([' ', '\t']) {
                if !skipping {
                    out.push_str(line);
                    out.push('\n');
                }
                continue;
            }
            skipping = line
                .split_once(':')
                .is_some_and(|(k, _)| k.eq_ignore_ascii_case(name));
            if skipping {
                if !replaced {
                    out.push_str(&format!("{name}: {value}\n"));
                    replaced = true;
                }
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        if !replaced {
            out.push_str(&format!("{name}: {value}\n"));
        }
        out
    }
}

/// What dpkg's status file says is installed: (name, version,
/// architecture), in the file's order.
pub fn installed(status: &str) -> Vec<(String, String, String)> {
    paragraphs(status)
        .filter(|p| p.field("Status") == Some("install ok installed"))
        .filter_map(|p| {
            Some((
                p.field("Package")?.to_string(),
                p.field("Version")?.to_string(),
                p.field("Architecture")?.to_string(),
            ))
        })
        .collect()
}

/// The name apt gives a downloaded package in its archives directory:
/// `name_version_arch.deb`, with the version's `:` (an epoch) quoted.
pub fn archive_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u5\nArchitecture: amd64\nDescription: Debian base system\n miscellaneous files\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n";

    #[test]
    fn only_installed_packages_count() {
        assert_eq!(
            installed(STATUS),
            [
                ("base-files".into(), "12.4+deb12u5".into(), "amd64".into()),
                ("libc6".into(), "2.36-9+deb12u4".into(), "amd64".into())
            ]
        );
    }

    #[test]
    fn a_field_is_replaced_with_its_continuation_lines() {
        let p = paragraphs(STATUS).next().unwrap();
        assert_eq!(p.field("description"), Some("Debian base system"));
        assert_eq!(
            p.with_field("Description", "x"),
            "Package: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u5\nArchitecture: amd64\nDescription: x\n"
        );
        assert!(
            p.with_field("Filename", "pool/a.deb")
                .ends_with("miscellaneous files\nFilename: pool/a.deb\n")
        );
    }

    #[test]
    fn epochs_are_quoted_as_apt_quotes_them() {
        assert_eq!(
            archive_name("perl", "1:5.36", "amd64"),
            "perl_1%3a5.36_amd64.deb"
        );
    }
}
