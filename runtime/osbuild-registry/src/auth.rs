//! Registry credentials, from the files `docker login` and `podman login`
//! write: `{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}`.
//!
//! Looked for, first match wins: the file given with `--registry-auth`,
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json`. Credential helpers (`credsStore`) are not run:
//! a build does not start programs the pipeline did not name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64ct::Encoding as _;
use serde::Deserialize;

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials by registry host, as read from the files.
#[derive(Clone, Default)]
pub struct Credentials {
    /// (registry, user, password, file it came from), in search order.
    entries: Vec<(String, String, String, PathBuf)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the passwords.
        let hosts: Vec<&str> = self.entries.iter().map(|e| e.0.as_str()).collect();
        write!(f, "Credentials({hosts:?})")
    }
}

/// The most read of a credentials file (they are a few KiB).
const MAX_FILE: u64 = 1 << 20;

/// A regular file's bytes, at most [`MAX_FILE`] (a FIFO is refused, not
/// waited on).
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() || m.len() > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "not a regular file of at most {MAX_FILE} bytes"
        )));
    }
    let mut out = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut out)?;
    Ok(out)
}

/// `https://HOST/v1/` or `HOST/...`: the host part docker keeps keys in.
fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// The files looked in, in order (those that exist are read).
pub fn default_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
    );
    files.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")));
    files.extend(home.as_ref().map(|h| h.join(".docker/config.json")));
    files
}

impl Credentials {
    /// Reads `explicit` (which must exist) and then the default files
    /// (those that exist).
    pub fn load(explicit: Option<&Path>) -> Result<Credentials, String> {
        let mut creds = Credentials::default();
        if let Some(path) = explicit {
            creds.read(path)?;
        }
        for path in default_files() {
            if path.exists() {
                creds.read(&path)?;
            }
        }
        Ok(creds)
    }

    fn read(&mut self, path: &Path) -> Result<(), String> {
        let text = read_small(path).map_err(|e| format!("{}: reading it: {e}", path.display()))?;
        // Where, never what: serde quotes the values it did not expect,
        // and these are secrets.
        let file: AuthFile = serde_json::from_slice(&text).map_err(|e| {
            format!(
                "{}: not a registry credentials file ({{\"auths\": {{...}}}}): a JSON error at line {}, column {}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        for (key, entry) in file.auths {
            let (user, password) = match (&entry.auth, &entry.username, &entry.password) {
                (Some(auth), _, _) => {
                    let decoded = base64ct::Base64::decode_vec(auth.trim()).map_err(|_| {
                        format!("{}: auths[{key:?}].auth is not base64", path.display())
                    })?;
                    let text = String::from_utf8(decoded).map_err(|_| {
                        format!("{}: auths[{key:?}].auth is not UTF-8", path.display())
                    })?;
                    let (u, p) = text.split_once(':').ok_or_else(|| {
                        format!(
                            "{}: auths[{key:?}].auth is not base64 of user:password",
                            path.display()
                        )
                    })?;
                    (u.to_string(), p.to_string())
                }
                (None, Some(u), Some(p)) => (u.clone(), p.clone()),
                // An entry kept by a credential helper: nothing here.
                _ => continue,
            };
            self.entries.push((
                host_of(&key).to_string(),
                user,
                password,
                path.to_path_buf(),
            ));
        }
        Ok(())
    }

    /// The user and password for `registry` (`HOST[:PORT]`), if any file has them.
    pub fn for_registry(&self, registry: &str) -> Option<(String, String)> {
        self.entries
            .iter()
            .find(|e| e.0 == registry)
            .map(|e| (e.1.clone(), e.2.clone()))
    }

    /// Which file the credentials for `registry` came from.
    pub fn source(&self, registry: &str) -> Option<&Path> {
        self.entries
            .iter()
            .find(|e| e.0 == registry)
            .map(|e| e.3.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_podman_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let auth = base64ct::Base64::encode_string(b"alice:s3cr:et");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://reg.example.com:5000/v1/": {{"auth": "{auth}"}},
                   "other.example.com": {{"username": "bob", "password": "pw"}},
                   "helper.example.com": {{}}}}, "credsStore": "pass"}}"#
            ),
        )
        .unwrap();
        let mut c = Credentials::default();
        c.read(&path).unwrap();
        assert_eq!(
            c.for_registry("reg.example.com:5000"),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(
            c.for_registry("other.example.com"),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(c.for_registry("helper.example.com"), None);
        assert_eq!(c.for_registry("reg.example.com"), None);
        assert_eq!(c.source("other.example.com"), Some(path.as_path()));
        assert!(!format!("{c:?}").contains("s3cr"));
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(&path, r#"{"auths": {"h": {"auth": "%%%"}}}"#).unwrap();
        let e = Credentials::default().read(&path).unwrap_err();
        assert!(e.contains("auths[\"h\"].auth is not base64"), "{e}");
        // A secret where serde expected something else stays out of the message.
        std::fs::write(&path, r#"{"auths": {"h": "c2VjcmV0OnB3"}}"#).unwrap();
        let e = Credentials::default().read(&path).unwrap_err();
        assert!(e.contains("line 1, column"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        let e = Credentials::load(Some(&dir.path().join("missing.json"))).unwrap_err();
        assert!(e.contains("missing.json: reading it"), "{e}");
    }
}
