//! Drop-in configuration files: `/etc/sysctl.d/NAME.conf`,
//! `/etc/modprobe.d/NAME.conf`, `/etc/tmpfiles.d/NAME.conf`, ...

use crate::{OptionError, Tree};

/// Whether `name` can name a drop-in: letters, digits, `_`, `.` and `-`,
/// ending in `.conf`, and nothing that could be a path.
pub fn valid_name(name: &str) -> bool {
    name.strip_suffix(".conf").is_some_and(|stem| {
        (1..=250).contains(&stem.len())
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    })
}

/// Renders one line (or block) per item; an empty list is an error about
/// `option`, which must hold at least one `what`.
pub fn render<T>(
    items: &[T],
    option: &str,
    what: &str,
    line: impl Fn(usize, &T) -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    if items.is_empty() {
        return Err(OptionError::new(option, format!("needs at least one {what}")).into());
    }
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        out.push_str(&line(i, item)?);
    }
    Ok(out)
}

/// Writes `dir/filename` (the option `filename`), creating `dir`.
pub fn write(tree: &Tree, dir: &str, filename: &str, text: &str) -> anyhow::Result<()> {
    if !valid_name(filename) {
        return Err(OptionError::new(
            "filename",
            format!("{filename:?} is not a drop-in name (letters, digits, '_', '.', '-', ending in .conf)"),
        )
        .into());
    }
    tree.create_dir_all(dir)?;
    tree.write_str(format!("{dir}/{filename}"), text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("99-x.conf"));
        for bad in [
            "x",
            ".conf",
            "../x.conf",
            "a/b.conf",
            "a b.conf",
            "x.conf.bak",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
