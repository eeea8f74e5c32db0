//! `io.weldr.tmpfilesd`: a tmpfiles.d(5) file in `/usr/lib/tmpfiles.d`,
//! one line per directive (`type path mode user group age argument`, with
//! `-` for fields left out before a given one), as osbuild's
//! `org.osbuild.tmpfilesd` writes it. A path with spaces is quoted.

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub filename: String,
    pub config: Vec<Directive>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Directive {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    pub mode: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub age: Option<String>,
    pub argument: Option<String>,
}

pub const DIR: &str = "/usr/lib/tmpfiles.d";

/// A drop-in file name: `^[A-Za-z0-9_.-]{1,250}\.conf$` (osbuild's rule).
pub use osbuild_stage::formats::dropin::valid_name as filename_ok;

/// The line types of tmpfiles.d(5): a letter, `+` where the type takes it,
/// then the `!`, `-`, `=`, `~` and `^` modifiers.
pub fn type_ok(t: &str) -> bool {
    let mut chars = t.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !"fwpLcbaAdDevqQCxXrRzZtThH".contains(first) {
        return false;
    }
    let rest: String = chars.collect();
    let rest = if "fwpLcbaAC".contains(first) {
        rest.strip_prefix('+').unwrap_or(&rest).to_string()
    } else {
        rest
    };
    let mut seen = String::new();
    for c in rest.chars() {
        if !"!-=~^".contains(c) || seen.contains(c) {
            return false;
        }
        seen.push(c);
    }
    true
}

fn quote_path(path: &str) -> String {
    if !path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        return path.to_string();
    }
    let mut out = String::from("\"");
    for c in path.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn line(i: usize, d: &Directive) -> anyhow::Result<String> {
    let at = |f: &str| format!("config[{i}].{f}");
    if !type_ok(&d.kind) {
        return Err(OptionError::new(
            at("type"),
            format!("{:?} is not a tmpfiles.d line type", d.kind),
        )
        .into());
    }
    if !d.path.starts_with('/') {
        return Err(
            OptionError::new(at("path"), format!("{:?} is not an absolute path", d.path)).into(),
        );
    }
    let mut fields: Vec<(&str, &Option<String>)> = vec![
        ("mode", &d.mode),
        ("user", &d.user),
        ("group", &d.group),
        ("age", &d.age),
    ];
    for (name, value) in &fields {
        if let Some(v) = value
            && v.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return Err(OptionError::new(at(name), format!("{v:?} contains whitespace")).into());
        }
    }
    if let Some(mode) = &d.mode {
        let digits = mode.strip_prefix('~').unwrap_or(mode);
        let octal =
            (3..=4).contains(&digits.len()) && digits.chars().all(|c| ('0'..='7').contains(&c));
        if !mode.is_empty() && !octal {
            return Err(OptionError::new(
                at("mode"),
                format!("{mode:?} is not an octal mode like 0755 (or ~0755)"),
            )
            .into());
        }
    }
    for (name, v) in [("path", Some(&d.path)), ("argument", d.argument.as_ref())] {
        if let Some(v) = v
            && v.contains(['\n', '\r', '\0'])
        {
            return Err(OptionError::new(at(name), "contains a line break or NUL").into());
        }
    }
    fields.push(("argument", &d.argument));
    // Fields after the last given one are left out; empty ones before it are "-".
    let last = fields
        .iter()
        .rposition(|(_, v)| v.as_deref().is_some_and(|v| !v.is_empty()));
    let mut out = format!("{} {}", d.kind, quote_path(&d.path));
    if let Some(last) = last {
        for (_, v) in &fields[..=last] {
            out.push(' ');
            match v.as_deref() {
                Some(v) if !v.is_empty() => out.push_str(v),
                _ => out.push('-'),
            }
        }
    }
    out.push('\n');
    Ok(out)
}

pub fn render(config: &[Directive]) -> anyhow::Result<String> {
    osbuild_stage::formats::dropin::render(config, "config", "directive", line)
}

pub fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
    let text = render(&options.config)?;
    osbuild_stage::formats::dropin::write(tree, DIR, &options.filename, &text)
}

osbuild_stage::stage!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use osbuild_stage::serde_json;

    #[test]
    fn renders_like_osbuild() {
        let o: Options = serde_json::from_value(serde_json::json!({
            "filename": "osbuild.conf",
            "config": [
                {"type": "d", "path": "/var/lib/app", "mode": "0750", "user": "root", "group": "root"},
                {"type": "f+", "path": "/etc/app.conf", "mode": "0600", "argument": "key=value"},
                {"type": "L", "path": "/etc/app-link", "argument": "/etc/app.conf"},
                {"type": "r!", "path": "/var/cache/app/*"},
                {"type": "d", "path": "/srv/my data", "age": "10d"}
            ]
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        run(&Tree::open(dir.path()).unwrap(), o).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("usr/lib/tmpfiles.d/osbuild.conf")).unwrap(),
            "d /var/lib/app 0750 root root\n\
             f+ /etc/app.conf 0600 - - - key=value\n\
             L /etc/app-link - - - - /etc/app.conf\n\
             r! /var/cache/app/*\n\
             d \"/srv/my data\" - - - 10d\n"
        );
    }

    #[test]
    fn types() {
        for ok in ["d", "f+", "L+", "r!", "D!-", "z", "C+", "w+", "e-!", "d="] {
            assert!(type_ok(ok), "{ok}");
        }
        for bad in ["", "y", "d+", "dd", "d!!", "+"] {
            assert!(!type_ok(bad), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let d = |kind: &str, path: &str| Directive {
            kind: kind.into(),
            path: path.into(),
            ..Default::default()
        };
        let option = |c: &[Directive]| {
            render(c)
                .unwrap_err()
                .downcast_ref::<OptionError>()
                .unwrap()
                .option
                .clone()
        };
        assert_eq!(option(&[]), "config");
        assert_eq!(option(&[d("d", "/x"), d("y", "/x")]), "config[1].type");
        assert_eq!(option(&[d("d", "relative")]), "config[0].path");
        let mut bad_mode = d("d", "/x");
        bad_mode.mode = Some("755x".into());
        assert_eq!(option(&[bad_mode]), "config[0].mode");
        let mut bad_user = d("d", "/x");
        bad_user.user = Some("a b".into());
        assert_eq!(option(&[bad_user]), "config[0].user");
    }
}
