//! `io.weldr.keymap`: the console keymap in `/etc/vconsole.conf` (as
//! `systemd-firstboot --keymap=` writes it; osbuild's `org.osbuild.keymap`
//! removes the file first, so it is replaced), an optional console `font`,
//! and optionally the X11 keyboard layouts.

use std::io;

use osbuild_stage::formats::keyvalue::KeyValueFile;
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub keymap: String,
    #[serde(default)]
    pub font: Option<String>,
    #[serde(rename = "x11-keymap", default)]
    pub x11_keymap: Option<X11Keymap>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct X11Keymap {
    pub layouts: Vec<String>,
}

pub const VCONSOLE: &str = "/etc/vconsole.conf";
pub const XORG_KEYBOARD: &str = "/etc/X11/xorg.conf.d/00-keyboard.conf";
/// Debian's keyboard-configuration: read by console-setup and by X (udev).
pub const DEFAULT_KEYBOARD: &str = "/etc/default/keyboard";

/// Where distributions keep console keymaps (`<name>.map[.gz]` somewhere below).
const KEYMAP_DIRS: &[&str] = &[
    "/usr/share/keymaps",
    "/usr/share/kbd/keymaps",
    "/usr/lib/kbd/keymaps",
    "/lib/kbd/keymaps",
];

/// A name usable as a vconsole keymap or font: what systemd's
/// `keymap_is_valid` allows (a file name of safe characters).
fn invalid_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > 128 {
        return Some("is longer than 128 characters".into());
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Some("starts with '.' or '-'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.+-".contains(*c)))
    {
        return Some(format!("contains {c:?}"));
    }
    None
}

fn collect_keymaps(tree: &Tree, dir: &str, depth: usize, out: &mut Vec<String>) -> io::Result<()> {
    if depth > 8 {
        return Ok(());
    }
    for name in tree.read_dir(dir)? {
        let path = format!("{dir}/{name}");
        let meta = tree.symlink_metadata(&path)?;
        if meta.is_dir() {
            collect_keymaps(tree, &path, depth + 1, out)?;
        } else if let Some(i) = name.find(".map") {
            let rest = &name[i + 4..];
            if rest.is_empty() || [".gz", ".bz2", ".xz", ".zst"].contains(&rest) {
                out.push(name[..i].to_string());
            }
        }
    }
    Ok(())
}

/// The keymaps the tree has, or `None` if it has no keymap directory (then
/// any name is taken, as systemd-firstboot does).
pub fn installed_keymaps(tree: &Tree) -> io::Result<Option<Vec<String>>> {
    let mut found = None;
    for dir in KEYMAP_DIRS {
        match tree.metadata(dir) {
            Ok(m) if m.is_dir() => {
                let list = found.get_or_insert_with(Vec::new);
                collect_keymaps(tree, dir, 0, list)?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

fn xorg_conf(layouts: &[String]) -> String {
    // The text osbuild's org.osbuild.keymap writes (and localectl would).
    format!(
        "# Created by osbuild. Do not edit manually, use localectl(1).\n\
         Section \"InputClass\"\n        Identifier \"system-keyboard\"\n        \
         MatchIsKeyboard \"on\"\n        Option \"XkbLayout\" \"{}\"\nEndSection\n",
        layouts.join(",")
    )
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let keymap = &options.keymap;
    if let Some(reason) = invalid_name(keymap) {
        return Err(OptionError::new(
            "keymap",
            format!("{keymap:?} is not a keymap name: it {reason}"),
        )
        .into());
    }
    if let Some(maps) = installed_keymaps(tree)?
        && !maps.iter().any(|m| m == keymap)
    {
        return Err(OptionError::new(
            "keymap",
            format!(
                "unknown keymap {keymap:?}: no {keymap}.map in the tree's keymap directories ({})",
                KEYMAP_DIRS.join(", ")
            ),
        )
        .into());
    }
    if let Some(font) = &options.font
        && let Some(reason) = invalid_name(font)
    {
        return Err(OptionError::new(
            "font",
            format!("{font:?} is not a console font name: it {reason}"),
        )
        .into());
    }
    let mut text = format!("KEYMAP={keymap}\n");
    if let Some(font) = &options.font {
        text.push_str(&format!("FONT={font}\n"));
    }
    if let Ok(m) = tree.metadata(VCONSOLE)
        && !m.is_file()
    {
        anyhow::bail!("{VCONSOLE} exists and is not a regular file");
    }
    tree.create_dir_all("/etc")?;
    tree.write_str(VCONSOLE, text)?;

    if let Some(x11) = &options.x11_keymap {
        for (i, layout) in x11.layouts.iter().enumerate() {
            if layout.len() < 2
                || !layout
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-()".contains(c))
            {
                return Err(OptionError::new(
                    format!("x11-keymap.layouts[{i}]"),
                    format!("{layout:?} is not an XKB layout name"),
                )
                .into());
            }
        }
        if x11.layouts.is_empty() {
            return Err(OptionError::new("x11-keymap.layouts", "is empty").into());
        }
        tree.create_dir_all("/etc/X11/xorg.conf.d")?;
        tree.write_str(XORG_KEYBOARD, xorg_conf(&x11.layouts))?;
        if let Some(text) = tree.read_optional(DEFAULT_KEYBOARD)? {
            let mut kb = KeyValueFile::parse(&text);
            kb.set("XKBLAYOUT", &format!("\"{}\"", x11.layouts.join(",")));
            tree.write_str(DEFAULT_KEYBOARD, kb.render())?;
        }
    }
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        (dir, tree)
    }

    fn read(dir: &tempfile::TempDir, path: &str) -> String {
        std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).unwrap()
    }

    #[test]
    fn writes_vconsole_conf_replacing_it() {
        let (dir, tree) = tree();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/vconsole.conf"), "KEYMAP=us\nFONT=x\n").unwrap();
        run(
            &tree,
            Options {
                keymap: "de-latin1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(&dir, VCONSOLE), "KEYMAP=de-latin1\n");
        run(
            &tree,
            Options {
                keymap: "us".into(),
                font: Some("eurlatgr".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(&dir, VCONSOLE), "KEYMAP=us\nFONT=eurlatgr\n");
    }

    #[test]
    fn x11_layouts() {
        let (dir, tree) = tree();
        std::fs::create_dir_all(dir.path().join("etc/default")).unwrap();
        std::fs::write(
            dir.path().join("etc/default/keyboard"),
            "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"us\"\nBACKSPACE=\"guess\"\n",
        )
        .unwrap();
        run(
            &tree,
            Options {
                keymap: "de".into(),
                x11_keymap: Some(X11Keymap {
                    layouts: vec!["de".into(), "us".into()],
                }),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(read(&dir, XORG_KEYBOARD).contains("Option \"XkbLayout\" \"de,us\"\n"));
        assert_eq!(
            read(&dir, DEFAULT_KEYBOARD),
            "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"de,us\"\nBACKSPACE=\"guess\"\n"
        );
    }

    #[test]
    fn checks_keymaps_when_the_tree_has_them() {
        let (dir, tree) = tree();
        let maps = dir.path().join("usr/share/keymaps/i386/qwertz");
        std::fs::create_dir_all(&maps).unwrap();
        std::fs::write(maps.join("de-latin1.map.gz"), b"").unwrap();
        let set = |k: &str| {
            run(
                &tree,
                Options {
                    keymap: k.into(),
                    ..Default::default()
                },
            )
        };
        set("de-latin1").unwrap();
        let err = set("klingon").unwrap_err();
        let err = err.downcast_ref::<OptionError>().unwrap();
        assert_eq!(err.option, "keymap");
        assert!(err.message.contains("unknown keymap"), "{}", err.message);
        for bad in ["", "../x", "a b", "x\nFONT=y"] {
            let err = set(bad).unwrap_err();
            assert_eq!(err.downcast_ref::<OptionError>().unwrap().option, "keymap");
        }
    }
}
