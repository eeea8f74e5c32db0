//! `io.weldr.timezone`: points `/etc/localtime` at a zone of the tree's
//! tz database, with the relative symlink `systemd-firstboot --timezone=`
//! makes (`../usr/share/zoneinfo/<zone>`). Where the tree keeps Debian's
//! `/etc/timezone`, that is updated too, so the two never disagree.

use std::io;

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub zone: String,
}

pub const LOCALTIME: &str = "/etc/localtime";
pub const TIMEZONE: &str = "/etc/timezone";
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Why `zone` is not a tz database name: components of letters, digits,
/// `_`, `-` and `+` separated by `/` (no `.` or `..`, no leading `/`).
pub fn invalid_reason(zone: &str) -> Option<String> {
    if zone.is_empty() {
        return Some("is empty".into());
    }
    if zone.starts_with('/') || zone.ends_with('/') || zone.contains("//") {
        return Some("is not a relative name like Europe/Berlin".into());
    }
    for part in zone.split('/') {
        if part == "." || part == ".." {
            return Some("contains a '.' or '..' component".into());
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_-+".contains(*c)))
        {
            return Some(format!("contains {c:?}"));
        }
    }
    None
}

/// Checks that the tree's tz database has `zone` (a TZif file).
fn check_zone(tree: &Tree, zone: &str) -> anyhow::Result<()> {
    let path = format!("{ZONEINFO}/{zone}");
    let unknown = |why: &str| -> anyhow::Error {
        OptionError::new("zone", format!("unknown time zone {zone:?}: {path} {why}")).into()
    };
    match tree.metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(unknown("is not a zone file")),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            if !tree.exists(ZONEINFO)? {
                return Err(unknown(
                    "does not exist: the tree has no tz database (install tzdata)",
                ));
            }
            return Err(unknown("does not exist in the tree"));
        }
        Err(e) => return Err(e.into()),
    }
    let data = tree.read(&path)?;
    if !data.starts_with(b"TZif") {
        return Err(unknown("is not a TZif zone file"));
    }
    Ok(())
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let zone = &options.zone;
    if let Some(reason) = invalid_reason(zone) {
        return Err(OptionError::new(
            "zone",
            format!("{zone:?} is not a time zone name: it {reason}"),
        )
        .into());
    }
    check_zone(tree, zone)?;

    tree.create_dir_all("/etc")?;
    match tree.symlink_metadata(LOCALTIME) {
        Ok(m) if m.is_dir() => anyhow::bail!("{LOCALTIME} is a directory"),
        Ok(_) => tree.remove_file(LOCALTIME)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    tree.symlink(format!("..{ZONEINFO}/{zone}"), LOCALTIME)?;

    match tree.symlink_metadata(TIMEZONE) {
        Ok(m) if m.is_file() => tree.write_str(TIMEZONE, format!("{zone}\n"))?,
        Ok(_) => eprintln!("{TIMEZONE} is not a regular file; left alone"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let zi = dir.path().join("usr/share/zoneinfo");
        std::fs::create_dir_all(zi.join("Europe")).unwrap();
        std::fs::create_dir_all(zi.join("Etc")).unwrap();
        std::fs::write(zi.join("Europe/Berlin"), b"TZif2...").unwrap();
        std::fs::write(zi.join("Etc/UTC"), b"TZif2...").unwrap();
        std::fs::write(zi.join("zone.tab"), b"# tz zone descriptions\n").unwrap();
        std::os::unix::fs::symlink("Etc/UTC", zi.join("UTC")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        (dir, tree)
    }

    fn set(tree: &Tree, zone: &str) -> anyhow::Result<()> {
        run(tree, Options { zone: zone.into() })
    }

    fn option_of(err: anyhow::Error) -> String {
        err.downcast_ref::<OptionError>().unwrap().option.clone()
    }

    #[test]
    fn makes_a_relative_link_and_updates_etc_timezone() {
        let (dir, tree) = tree();
        let etc = dir.path().join("etc");
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", etc.join("localtime")).unwrap();
        std::fs::write(etc.join("timezone"), "Etc/UTC\n").unwrap();
        set(&tree, "Europe/Berlin").unwrap();
        assert_eq!(
            std::fs::read_link(etc.join("localtime")).unwrap(),
            std::path::Path::new("../usr/share/zoneinfo/Europe/Berlin")
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("timezone")).unwrap(),
            "Europe/Berlin\n"
        );
        // A zone that is itself a link is fine; no /etc/timezone is created
        // where there was none.
        std::fs::remove_file(etc.join("timezone")).unwrap();
        set(&tree, "UTC").unwrap();
        assert!(!etc.join("timezone").exists());
        // A regular file at /etc/localtime (a copy, as some tools make) is replaced.
        std::fs::remove_file(etc.join("localtime")).unwrap();
        std::fs::write(etc.join("localtime"), b"TZif2...").unwrap();
        set(&tree, "Europe/Berlin").unwrap();
        assert!(
            std::fs::symlink_metadata(etc.join("localtime"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn unknown_zones_are_errors() {
        let (_dir, tree) = tree();
        for bad in [
            "Mars/Olympus_Mons",
            "Europe",
            "zone.tab",
            "../../etc/passwd",
            "/Etc/UTC",
            "",
        ] {
            assert_eq!(option_of(set(&tree, bad).unwrap_err()), "zone", "{bad}");
        }
        let err = set(&tree, "Mars/Olympus_Mons").unwrap_err().to_string();
        assert!(err.contains("does not exist in the tree"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = set(&Tree::open(empty.path()).unwrap(), "Etc/UTC")
            .unwrap_err()
            .to_string();
        assert!(err.contains("install tzdata"), "{err}");
    }

    #[test]
    fn names() {
        for ok in [
            "UTC",
            "Etc/GMT+5",
            "America/Argentina/Buenos_Aires",
            "right/UTC",
        ] {
            assert_eq!(invalid_reason(ok), None, "{ok}");
        }
        for bad in ["a//b", "a/", "a/../b", "a b", "Europe/Berlin\n"] {
            assert!(invalid_reason(bad).is_some(), "{bad}");
        }
    }
}
