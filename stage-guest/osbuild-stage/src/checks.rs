//! Checks for options that a native stage passes on to a host tool or
//! writes into a configuration file: parsed, not pattern-matched, so that
//! a value cannot carry a second argument, a second line or a second
//! repository (osbuild already refuses control characters in every native
//! stage's options before it runs).

use crate::OptionError;

/// `value` parsed as a URL with one of `schemes`, with nothing a tool
/// could split it at (whitespace, `,`) and no credentials.
pub fn url(option: &str, value: &str, schemes: &[&str]) -> Result<url::Url, OptionError> {
    let refuse = |why: &str| OptionError::new(option, format!("{value:?} {why}"));
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
    {
        return Err(refuse(&format!(
            "holds {c:?}; a URL here must be one word (percent-encode it)"
        )));
    }
    let parsed = url::Url::parse(value).map_err(|e| refuse(&format!("is not a URL: {e}")))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(refuse(&format!(
            "has the scheme {}; allowed: {}",
            parsed.scheme(),
            schemes.join(", ")
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse(
            "holds credentials; they would be logged and stored in the tree",
        ));
    }
    if parsed.scheme() != "file" && parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse("names no host"));
    }
    Ok(parsed)
}

/// A name passed to a tool as an argument of its own (a package): it
/// must not look like an option.
pub fn word(option: &str, value: &str) -> Result<(), OptionError> {
    if value.is_empty() || value.starts_with('-') {
        return Err(OptionError::new(
            option,
            format!(
                "{value:?} is empty or starts with '-', so the tool would read it as an option"
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(OptionError::new(option, format!("{value:?} holds {c:?}")));
    }
    Ok(())
}

/// An absolute path written into a tool's configuration (rpm's
/// `%_dbpath`), where `%`, `$`, quotes or spaces would be read as macros,
/// variables or more words: only letters, digits and `/ . _ + -`, and no
/// `..` component.
pub fn plain_path(option: &str, value: &str) -> Result<(), OptionError> {
    let refuse = |why: &str| Err(OptionError::new(option, format!("{value:?} {why}")));
    if !value.starts_with('/') {
        return refuse("is not an absolute path");
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._+-".contains(*c)))
    {
        return refuse(&format!(
            "holds {c:?}; a path here may hold only letters, digits and / . _ + -"
        ));
    }
    if value.split('/').any(|part| part == "..") {
        return refuse("has a '..' component");
    }
    Ok(())
}

/// A file the stage reads on the build machine (a keyring), which must
/// resolve, symlinks and all, into one of `dirs`.
pub fn file_in(
    option: &str,
    value: &str,
    dirs: &[&str],
) -> Result<std::path::PathBuf, OptionError> {
    let refuse = |why: String| OptionError::new(option, format!("{value:?} {why}"));
    let real = std::fs::canonicalize(value).map_err(|e| refuse(format!("cannot be read: {e}")))?;
    if !real.is_file() && !real.is_dir() {
        return Err(refuse("is neither a file nor a directory".into()));
    }
    if !dirs.iter().any(|d| real.starts_with(d)) {
        return Err(refuse(format!(
            "resolves to {}, outside {}; put it there",
            real.display(),
            dirs.join(", ")
        )));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &[&str] = &["http", "https", "file"];

    #[test]
    fn a_plain_mirror_is_a_url() {
        let u = url("mirrors[0]", "http://deb.debian.org/debian", WEB).unwrap();
        assert_eq!(u.host_str(), Some("deb.debian.org"));
        url("m", "file:///srv/mirror", WEB).unwrap();
    }

    #[test]
    fn a_second_line_or_word_is_refused() {
        for v in [
            "http://deb.debian.org/debian\ndeb [trusted=yes] http://evil/ bookworm main",
            "http://deb.debian.org/debian [trusted=yes]",
            "http://a/,http://b/",
            "http://a/\tb",
        ] {
            let e = url("mirrors[0]", v, WEB).unwrap_err();
            assert_eq!(e.option, "mirrors[0]");
            assert!(e.message.contains("one word"), "{v:?}: {e}");
        }
    }

    #[test]
    fn other_schemes_credentials_and_hostless_urls_are_refused() {
        assert!(url("m", "deb [trusted=yes] http://evil/", WEB).is_err());
        let e = url("m", "ftp://example.org/x", WEB).unwrap_err();
        assert!(e.message.contains("scheme ftp"), "{e}");
        let e = url("m", "http://user:secret@example.org/", WEB).unwrap_err();
        assert!(e.message.contains("credentials"), "{e}");
        assert!(url("m", "http://", WEB).is_err());
        assert!(url("m", "file:relative", WEB).is_ok_and(|u| u.path() == "/relative"));
    }

    #[test]
    fn words_that_look_like_options_are_refused() {
        word("packages[0]", "httpd").unwrap();
        let e = word("packages[1]", "--setopt=reposdir=/etc").unwrap_err();
        assert!(e.message.contains("starts with '-'"), "{e}");
        assert!(word("packages[2]", "a b").is_err());
        assert!(word("packages[3]", "").is_err());
    }

    #[test]
    fn a_file_must_resolve_into_the_directories_given() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("k.gpg");
        std::fs::write(&inside, b"k").unwrap();
        let d = dir.path().to_str().unwrap();
        file_in("keyring", inside.to_str().unwrap(), &[d]).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let e = file_in("keyring", link.to_str().unwrap(), &[d]).unwrap_err();
        assert!(e.message.contains("resolves to /etc/passwd"), "{e}");
    }
}
