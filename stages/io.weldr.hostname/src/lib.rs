//! `io.weldr.hostname`: writes `/etc/hostname`.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub hostname: String,
}

/// Why `name` is not a valid static hostname, if it is not: at most 64
/// characters of dot-separated labels (1-63 letters, digits and hyphens,
/// not starting or ending with a hyphen), as RFC 1123 and systemd ask.
pub fn invalid_reason(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > 64 {
        return Some(format!(
            "is {} characters long, the limit is 64",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("has an empty label (leading, trailing or double dot)".into());
        }
        if label.len() > 63 {
            return Some(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Some(format!(
                "contains {c:?}: only letters, digits, '-' and '.' are allowed"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("label {label:?} starts or ends with '-'"));
        }
    }
    None
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    if let Some(reason) = invalid_reason(&options.hostname) {
        return Err(OptionError::new(
            "hostname",
            format!(
                "{:?} is not a valid hostname: it {reason}",
                options.hostname
            ),
        )
        .into());
    }
    tree.create_dir_all("/etc")?;
    tree.write_str("/etc/hostname", format!("{}\n", options.hostname))?;
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_hostnames() {
        assert_eq!(invalid_reason("web-01.example.com"), None);
        assert_eq!(invalid_reason("a"), None);
        for bad in ["", "-a", "a-", "a..b", ".a", "a.", "a_b", "a b", "ä"] {
            assert!(invalid_reason(bad).is_some(), "{bad:?} accepted");
        }
        assert!(invalid_reason(&"a".repeat(65)).is_some());
        assert!(invalid_reason(&format!("{}.b", "a".repeat(64))).is_some());
    }

    #[test]
    fn writes_etc_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        run(
            &tree,
            Options {
                hostname: "box".into(),
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap(),
            "box\n"
        );
        let err = run(
            &tree,
            Options {
                hostname: "bad_name".into(),
            },
        )
        .unwrap_err();
        assert_eq!(
            err.downcast_ref::<OptionError>().unwrap().option,
            "hostname"
        );
    }
}
