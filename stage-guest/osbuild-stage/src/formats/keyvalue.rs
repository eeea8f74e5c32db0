//! `KEY=value` files (`/etc/locale.conf`, `/etc/vconsole.conf`,
//! `/etc/default/locale`, `/etc/os-release`): read values, and set keys while
//! keeping every other line, comment and order as it was.

/// A `KEY=value` file, line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValueFile {
    lines: Vec<String>,
}

/// Removes one level of shell-style quoting: `"a b"` or `'a b'` → `a b`.
pub fn unquote(value: &str) -> String {
    let v = value.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        let inner = &v[1..v.len() - 1];
        if v.starts_with('"') {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            return out;
        }
        return inner.to_string();
    }
    v.to_string()
}

fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let t = t.strip_prefix("export ").unwrap_or(t);
    let (k, _) = t.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(k)
}

impl KeyValueFile {
    pub fn parse(text: &str) -> KeyValueFile {
        KeyValueFile {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    /// The value of the last assignment to `key`, unquoted.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .rev()
            .find(|l| key_of(l) == Some(key))
            .map(|l| unquote(l.split_once('=').unwrap().1))
    }

    /// Sets `key` to `value` (written as given: quote it yourself if it
    /// needs quoting): replaces the first assignment and drops later ones,
    /// or appends.
    pub fn set(&mut self, key: &str, value: &str) {
        let line = format!("{key}={value}");
        let mut found = false;
        self.lines.retain_mut(|l| {
            if key_of(l) != Some(key) {
                return true;
            }
            if found {
                return false;
            }
            found = true;
            *l = line.clone();
            true
        });
        if !found {
            self.lines.push(line);
        }
    }

    /// Removes every assignment to `key`.
    pub fn remove(&mut self, key: &str) {
        self.lines.retain(|l| key_of(l) != Some(key));
    }

    /// The keys assigned, in order of first appearance.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for l in &self.lines {
            if let Some(k) = key_of(l)
                && !keys.iter().any(|x| x == k)
            {
                keys.push(k.to_string());
            }
        }
        keys
    }

    /// The file's text, each line ending in a newline.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keys_keeping_everything_else() {
        let mut f = KeyValueFile::parse("# comment\nLANG=C\nKEYMAP=us\nLANG=\"de_DE.UTF-8\"\n");
        assert_eq!(f.get("LANG").as_deref(), Some("de_DE.UTF-8"));
        f.set("LANG", "en_US.UTF-8");
        f.set("FONT", "eurlatgr");
        assert_eq!(
            f.render(),
            "# comment\nLANG=en_US.UTF-8\nKEYMAP=us\nFONT=eurlatgr\n"
        );
        f.remove("KEYMAP");
        assert_eq!(f.keys(), vec!["LANG", "FONT"]);
        assert_eq!(unquote("'a b'"), "a b");
        assert_eq!(unquote("\"a \\\"b\\\"\""), "a \"b\"");
    }
}
