//! `io.weldr.locale`: sets the system locale (`LANG=`), in the file the
//! tree's distribution reads: `/etc/default/locale` on Debian and its
//! derivatives, `/etc/locale.conf` elsewhere. Like osbuild's
//! `org.osbuild.locale` (which removes the file and runs
//! `systemd-firstboot --locale=`), the file is replaced by `LANG=<language>`.

use osbuild_stage::formats::keyvalue::KeyValueFile;
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub language: String,
}

pub const LOCALE_CONF: &str = "/etc/locale.conf";
pub const DEFAULT_LOCALE: &str = "/etc/default/locale";

/// `/etc/os-release`, or `/usr/lib/os-release` as os-release(5) says.
fn os_release(tree: &Tree) -> anyhow::Result<Option<KeyValueFile>> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        match tree.read_optional(path) {
            Ok(Some(text)) => return Ok(Some(KeyValueFile::parse(&text))),
            Ok(None) => {}
            // A dangling /etc/os-release symlink: try the next one.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Whether the tree is Debian or a derivative (Ubuntu, ...), whose
/// systemd and `update-locale` use `/etc/default/locale`.
pub fn is_debian_like(tree: &Tree) -> anyhow::Result<bool> {
    if let Some(os) = os_release(tree)? {
        let id = os.get("ID").unwrap_or_default();
        let like = os.get("ID_LIKE").unwrap_or_default();
        return Ok(id == "debian" || like.split_whitespace().any(|w| w == "debian"));
    }
    // No os-release: go by the files present.
    Ok(tree.exists(DEFAULT_LOCALE)? && !tree.exists(LOCALE_CONF)?)
}

/// The file the tree's distribution reads the system locale from.
pub fn locale_file(tree: &Tree) -> anyhow::Result<&'static str> {
    Ok(if is_debian_like(tree)? {
        DEFAULT_LOCALE
    } else {
        LOCALE_CONF
    })
}

/// glibc's normalised codeset: `UTF-8` → `utf8`.
fn normalise(locale: &str) -> String {
    let (base, modifier) = match locale.split_once('@') {
        Some((b, m)) => (b, Some(m)),
        None => (locale, None),
    };
    let mut out = match base.split_once('.') {
        Some((lang, codeset)) => {
            let cs: String = codeset
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect();
            format!("{lang}.{cs}")
        }
        None => base.to_string(),
    };
    if let Some(m) = modifier {
        out.push('@');
        out.push_str(m);
    }
    out
}

/// Why `language` is not a valid locale name, as systemd's
/// `locale_is_valid` has it (and a little stricter: the shape
/// `lang[_TERRITORY][.codeset][@modifier]`).
pub fn invalid_reason(language: &str) -> Option<String> {
    if language.is_empty() {
        return Some("is empty".into());
    }
    if language.len() > 128 {
        return Some("is longer than 128 characters".into());
    }
    if language == "." || language == ".." || language.contains('/') {
        return Some("is not a locale name".into());
    }
    if let Some(c) = language
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.@-+".contains(*c)))
    {
        return Some(format!("contains {c:?}"));
    }
    None
}

/// Whether the tree can provide `language`: checked only when the tree
/// lists its locales (`/usr/share/i18n/SUPPORTED`, from glibc's locale
/// sources) or has it compiled (`/usr/lib/locale/<name>`); otherwise only
/// the name's syntax is checked.
pub fn unsupported_reason(tree: &Tree, language: &str) -> anyhow::Result<Option<String>> {
    let wanted = normalise(language);
    if ["C", "POSIX", "C.utf8"].contains(&wanted.as_str()) {
        return Ok(None);
    }
    if tree.exists(format!("/usr/lib/locale/{wanted}"))? {
        return Ok(None);
    }
    let Some(supported) = tree.read_optional("/usr/share/i18n/SUPPORTED")? else {
        return Ok(None);
    };
    let known = supported
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|l| !l.starts_with('#'))
        .any(|name| normalise(name) == wanted);
    Ok((!known).then(|| {
        format!(
            "{language:?} is not a locale this tree supports (it is neither in /usr/share/i18n/SUPPORTED nor compiled in /usr/lib/locale)"
        )
    }))
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let language = &options.language;
    if let Some(reason) = invalid_reason(language) {
        return Err(OptionError::new(
            "language",
            format!("{language:?} is not a valid locale name: it {reason}"),
        )
        .into());
    }
    if let Some(reason) = unsupported_reason(tree, language)? {
        return Err(OptionError::new("language", reason).into());
    }
    let path = locale_file(tree)?;
    if let Ok(m) = tree.metadata(path)
        && !m.is_file()
    {
        anyhow::bail!("{path} exists and is not a regular file");
    }
    tree.create_dir_all(path.rsplit_once('/').unwrap().0)?;
    tree.write_str(path, format!("LANG={language}\n"))?;
    Ok(())
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn make(files: &[(&str, &str)]) -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let tree = Tree::open(dir.path()).unwrap();
        (dir, tree)
    }

    fn read(dir: &tempfile::TempDir, path: &str) -> Option<String> {
        std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).ok()
    }

    fn set(tree: &Tree, language: &str) -> anyhow::Result<()> {
        run(
            tree,
            Options {
                language: language.into(),
            },
        )
    }

    #[test]
    fn debian_uses_etc_default_locale_and_replaces_it() {
        let (dir, tree) = make(&[
            ("/usr/lib/os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
            (
                "/etc/default/locale",
                "# generated\nLANG=C\nLC_TIME=en_GB.UTF-8\n",
            ),
        ]);
        std::os::unix::fs::symlink("../usr/lib/os-release", dir.path().join("etc/os-release"))
            .unwrap();
        set(&tree, "de_DE.UTF-8").unwrap();
        assert_eq!(read(&dir, DEFAULT_LOCALE).unwrap(), "LANG=de_DE.UTF-8\n");
        assert_eq!(read(&dir, LOCALE_CONF), None);
    }

    #[test]
    fn ubuntu_is_debian_like_fedora_is_not() {
        let (dir, tree) = make(&[("/etc/os-release", "ID=ubuntu\nID_LIKE=debian\n")]);
        set(&tree, "en_US.UTF-8").unwrap();
        assert_eq!(read(&dir, DEFAULT_LOCALE).unwrap(), "LANG=en_US.UTF-8\n");

        let (dir, tree) = make(&[("/etc/os-release", "ID=fedora\nID_LIKE=\"\"\n")]);
        set(&tree, "en_US.UTF-8").unwrap();
        assert_eq!(read(&dir, LOCALE_CONF).unwrap(), "LANG=en_US.UTF-8\n");
        assert_eq!(read(&dir, DEFAULT_LOCALE), None);
    }

    #[test]
    fn without_os_release_existing_files_decide() {
        let (dir, tree) = make(&[("/etc/default/locale", "LANG=C\n")]);
        set(&tree, "C.UTF-8").unwrap();
        assert_eq!(read(&dir, DEFAULT_LOCALE).unwrap(), "LANG=C.UTF-8\n");
        let (dir, tree) = make(&[]);
        set(&tree, "C.UTF-8").unwrap();
        assert_eq!(read(&dir, LOCALE_CONF).unwrap(), "LANG=C.UTF-8\n");
    }

    #[test]
    fn checks_the_trees_supported_list() {
        let (dir, tree) = make(&[
            ("/etc/os-release", "ID=debian\n"),
            (
                "/usr/share/i18n/SUPPORTED",
                "de_DE.UTF-8 UTF-8\nde_DE ISO-8859-1\nsr_RS@latin UTF-8\n",
            ),
        ]);
        set(&tree, "de_DE.UTF-8").unwrap();
        set(&tree, "de_DE.utf8").unwrap();
        set(&tree, "de_DE").unwrap();
        set(&tree, "C.UTF-8").unwrap();
        set(&tree, "POSIX").unwrap();
        let err = set(&tree, "xx_YY.UTF-8").unwrap_err();
        let err = err.downcast_ref::<OptionError>().unwrap();
        assert_eq!(err.option, "language");
        assert!(err.message.contains("SUPPORTED"), "{}", err.message);
        // Compiled locales count even when not listed.
        std::fs::create_dir_all(dir.path().join("usr/lib/locale/xx_YY.utf8")).unwrap();
        set(&tree, "xx_YY.UTF-8").unwrap();
    }

    #[test]
    fn rejects_bad_names() {
        let (_dir, tree) = make(&[]);
        for bad in ["", "de DE", "../x", "a/b", "..", "de_DE.UTF-8\nFOO=1"] {
            let err = set(&tree, bad).unwrap_err();
            assert_eq!(
                err.downcast_ref::<OptionError>().unwrap().option,
                "language"
            );
        }
        assert_eq!(normalise("sr_RS.UTF-8@latin"), "sr_RS.utf8@latin");
    }
}
