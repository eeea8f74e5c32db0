//! Host paths a stage's options name (`repos[].baseurl: file:///srv/repo`):
//! bound into a native stage only where the operator allows it.
//!
//! The operator names directories (`--allow-host-path DIR`, the policy's
//! `"host-paths"`); a path is bound only if, resolved, it lies in one of
//! them. Even then some paths are never bound: `/`, the kernel's and the
//! runtime's file systems (`/dev`, `/proc`, `/sys`, `/run`), the store, and
//! anything but a directory or a regular file. A read-only bind alone would
//! not stop a stage from writing a device node or connecting to a socket
//! beneath it, so osbuild binds what it allows `nodev,nosuid,noexec` too.

use std::path::{Component, Path, PathBuf};

/// Where no host path may lead, even inside an allowed directory.
const NEVER: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// The operator's allowances, resolved.
#[derive(Debug, Clone, Default)]
pub struct HostPathRules {
    /// Canonical directories host paths may lie in.
    allowed: Vec<PathBuf>,
    /// The store, canonical: other builds' trees and osbuild's own code.
    store: Option<PathBuf>,
}

/// Why a host path is not bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{0}: holds a control character, ':' or ',' (systemd-nspawn would split it); rename it"
    )]
    Characters(String),
    #[error("{0}: {1}")]
    FileUrl(String, String),
    #[error("{0}: no such file or directory on this machine")]
    Missing(String),
    #[error("{path}: resolves to {resolved}, which osbuild never binds into a stage")]
    Never { path: String, resolved: String },
    #[error("{path}: is a {kind}; only directories and regular files are bound")]
    Kind { path: String, kind: &'static str },
    #[error(
        "{path}: is not in a directory the operator allows; allow it with --allow-host-path DIR or the policy's \"host-paths\": [\"DIR\"]{allowed}"
    )]
    NotAllowed { path: String, allowed: String },
}

/// A control character, or a character nspawn's `--bind` syntax splits on.
fn unsafe_char(c: char) -> bool {
    c.is_control() || c == ':' || c == ','
}

impl HostPathRules {
    /// `allowed` as the operator gave them; each must exist.
    pub fn new(allowed: &[PathBuf], store: Option<&Path>) -> Result<HostPathRules, String> {
        let mut dirs = Vec::new();
        for dir in allowed {
            let real = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if !real.is_dir() {
                return Err(format!("{}: not a directory", dir.display()));
            }
            dirs.push(real);
        }
        Ok(HostPathRules {
            allowed: dirs,
            store: store.and_then(|s| std::fs::canonicalize(s).ok()),
        })
    }

    /// The operator's allowances for a build: the command line's
    /// (`--allow-host-path`) and the policy's `host-paths`.
    pub fn for_build(
        command_line: &[PathBuf],
        policy: Option<&crate::policy::Policy>,
        store: &Path,
    ) -> Result<HostPathRules, crate::error::BuildError> {
        let mut allowed = command_line.to_vec();
        if let Some(p) = policy {
            allowed.extend(p.host_paths.iter().cloned());
        }
        HostPathRules::new(&allowed, Some(store))
            .map_err(|e| crate::error::BuildError::input("--allow-host-path", e))
    }

    /// The host path an option value names, resolved, if it names one:
    /// `None` for a remote URL. `Err` when it may not be bound.
    pub fn check(&self, value: &str) -> Result<Option<PathBuf>, Refusal> {
        let decoded;
        let local = if value
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("file:"))
        {
            // Parsed as the tool will (percent-decoded): `file:///srv/%2e%2e/etc`
            // or `file://host/x` must not pass for something else.
            decoded = file_url_path(value)?;
            decoded.as_str()
        } else if value.contains("://") {
            return Ok(None); // a remote URL
        } else {
            value
        };
        if !local.starts_with('/') {
            return Ok(None); // a path the tool resolves itself
        }
        if local.chars().any(unsafe_char) {
            return Err(Refusal::Characters(local.escape_debug().to_string()));
        }
        let real = std::fs::canonicalize(local).map_err(|_| Refusal::Missing(local.to_string()))?;
        let shown = real.display().to_string();
        if shown.chars().any(unsafe_char) {
            return Err(Refusal::Characters(shown.escape_debug().to_string()));
        }
        let never = real.components().all(|c| c == Component::RootDir)
            || NEVER.iter().any(|d| real.starts_with(d))
            || self
                .store
                .as_ref()
                .is_some_and(|s| real.starts_with(s) || s.starts_with(&real));
        if never {
            return Err(Refusal::Never {
                path: local.to_string(),
                resolved: shown,
            });
        }
        let meta = std::fs::metadata(&real).map_err(|_| Refusal::Missing(local.to_string()))?;
        if let Some(kind) = special_kind(&meta) {
            return Err(Refusal::Kind {
                path: local.to_string(),
                kind,
            });
        }
        if !self.allowed.iter().any(|d| real.starts_with(d)) {
            let allowed = if self.allowed.is_empty() {
                " (none is allowed now)".to_string()
            } else {
                let dirs: Vec<String> = self
                    .allowed
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                format!(" (allowed now: {})", dirs.join(", "))
            };
            return Err(Refusal::NotAllowed {
                path: local.to_string(),
                allowed,
            });
        }
        Ok(Some(real))
    }
}

/// What the host paths hold, in a digest that changes when any entry
/// beneath them is added, removed, replaced or modified (names, types,
/// sizes, modes, mtimes, ctimes, inode numbers, symlink targets; not the
/// bytes, which for a repository of packages would be gigabytes to read on
/// every build).
/// Part of the id of a stage that reads them: a changed repository is a new
/// build, not a cached one.
pub fn fingerprint(paths: &[PathBuf]) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    fn entry(h: &mut Sha256, path: &Path, rel: &Path) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(path)?;
        h.update(rel.as_os_str().as_bytes());
        h.update([0]);
        for n in [
            m.mode() as u64,
            m.size(),
            m.ino(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            // No one can set a ctime: a rewrite that puts the old mtime
            // back still changes it.
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ] {
            h.update(n.to_le_bytes());
        }
        if m.file_type().is_symlink() {
            h.update(std::fs::read_link(path)?.as_os_str().as_bytes());
        } else if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            names.sort();
            for name in names {
                entry(h, &path.join(&name), &rel.join(&name))?;
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.as_os_str().as_bytes());
        h.update([0]);
        entry(&mut h, p, Path::new(""))?;
    }
    Ok(hex::encode(h.finalize()))
}

/// The path a `file:` URL names, decoded; only `file:///PATH`, without a
/// host, a query or a fragment.
fn file_url_path(value: &str) -> Result<String, Refusal> {
    let bad = |why: &str| Refusal::FileUrl(value.escape_debug().to_string(), why.to_string());
    let url = url::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if url.host_str().is_some_and(|h| !h.is_empty()) {
        return Err(bad("names a host; write file:///PATH"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or a fragment"));
    }
    let path = url
        .to_file_path()
        .map_err(|()| bad("names no local path"))?;
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| bad("is not UTF-8 once decoded"))
}

/// What a file that is neither a directory nor a regular file is.
pub fn special_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() || t.is_file() {
        None
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allowed: &[&Path], store: Option<&Path>) -> HostPathRules {
        let allowed: Vec<PathBuf> = allowed.iter().map(|p| p.to_path_buf()).collect();
        HostPathRules::new(&allowed, store).unwrap()
    }

    #[test]
    fn remote_urls_and_relative_values_name_no_host_path() {
        let r = rules(&[], None);
        assert_eq!(r.check("https://example.org/repo"), Ok(None));
        assert_eq!(r.check("ftp://example.org/repo"), Ok(None));
        assert_eq!(r.check("key.asc"), Ok(None));
    }

    #[test]
    fn nothing_is_bound_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let url = format!("file://{}", repo.display());
        let e = rules(&[], None).check(&url).unwrap_err();
        assert!(matches!(e, Refusal::NotAllowed { .. }), "{e}");
        assert!(e.to_string().contains("--allow-host-path DIR"), "{e}");
        let real = std::fs::canonicalize(&repo).unwrap();
        assert_eq!(rules(&[dir.path()], None).check(&url), Ok(Some(real)));
    }

    #[test]
    fn a_symlink_out_of_the_allowed_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        let e = rules(&[&allowed], None)
            .check(&format!("{}/link", allowed.display()))
            .unwrap_err();
        assert!(matches!(e, Refusal::NotAllowed { .. }), "{e}");
    }

    #[test]
    fn root_dev_proc_sys_run_and_the_store_are_never_bound() {
        let store = tempfile::tempdir().unwrap();
        let r = rules(&[Path::new("/")], Some(store.path()));
        for p in [
            "/",
            "/dev",
            "/dev/null",
            "/proc/self",
            "/sys",
            "/run",
            "file:///dev/",
        ] {
            let e = r.check(p).unwrap_err();
            assert!(matches!(e, Refusal::Never { .. }), "{p}: {e}");
        }
        let e = r.check(&store.path().display().to_string()).unwrap_err();
        assert!(matches!(e, Refusal::Never { .. }), "{e}");
        // A directory that holds the store would hold it too.
        let parent = store.path().parent().unwrap().display().to_string();
        assert!(matches!(r.check(&parent), Err(Refusal::Never { .. })));
    }

    #[test]
    fn separators_and_control_characters_are_refused() {
        let r = rules(&[Path::new("/")], None);
        for p in ["/srv/a:b", "/srv/a,b", "/srv/a\nb", "file:///srv/x\u{7f}"] {
            assert!(matches!(r.check(p), Err(Refusal::Characters(_))), "{p:?}");
        }
    }

    #[test]
    fn fifos_and_sockets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let r = rules(&[dir.path()], None);
        for (p, kind) in [(fifo, "FIFO"), (sock, "socket")] {
            let e = r.check(&p.display().to_string()).unwrap_err();
            assert_eq!(
                e,
                Refusal::Kind {
                    path: p.display().to_string(),
                    kind
                }
            );
        }
    }

    #[test]
    fn file_urls_are_decoded_and_need_no_host() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let r = rules(&[Path::new("/")], Some(&store));
        // Percent-encoding does not hide /dev, nor the store.
        assert!(matches!(
            r.check("file:///%64ev"),
            Err(Refusal::Never { .. })
        ));
        let encoded = format!("file://{}", store.display()).replace("store", "%73tore");
        assert!(
            matches!(r.check(&encoded), Err(Refusal::Never { .. })),
            "{encoded}"
        );
        for v in ["file://evil.example/srv", "file:///srv?x", "FILE:///dev"] {
            assert!(r.check(v).is_err(), "{v}");
        }
        // localhost is no host at all (as the tools read it too).
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let real = std::fs::canonicalize(&repo).unwrap();
        let at_localhost = format!("file://localhost{}", repo.display());
        assert_eq!(r.check(&at_localhost), Ok(Some(real)));
        // `..` is resolved, by the URL parser and by realpath.
        assert!(matches!(
            r.check("file:///srv/../dev"),
            Err(Refusal::Never { .. })
        ));
    }

    #[test]
    fn the_fingerprint_follows_what_the_paths_hold() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("a.rpm"), b"1").unwrap();
        let paths = [repo.clone()];
        let first = fingerprint(&paths).unwrap();
        assert_eq!(fingerprint(&paths).unwrap(), first);
        std::fs::write(repo.join("b.rpm"), b"2").unwrap();
        let second = fingerprint(&paths).unwrap();
        assert_ne!(second, first);
        std::fs::write(repo.join("b.rpm"), b"22").unwrap();
        assert_ne!(fingerprint(&paths).unwrap(), second);
    }

    #[test]
    fn a_missing_path_says_so() {
        let r = rules(&[], None);
        assert_eq!(
            r.check("file:///nonexistent/osbuild-repo"),
            Err(Refusal::Missing("/nonexistent/osbuild-repo".into()))
        );
    }
}
