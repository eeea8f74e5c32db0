//! The host tools a native stage runs, as provenance names them: where
//! each is on the build machine, the sha256 of that file, and the package
//! and version it came from (dpkg's, or rpm's on an RPM host).
//!
//! Nothing is run but the host's package database queries: a tool's own
//! `--version` would run whatever a `--libdir` stage's metadata names.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a native stage finds its tools: the PATH it runs with (the
/// host's `/usr`, bound into its container; `/sbin` and `/bin` are its
/// merged-`/usr` links or the host's own), in that order.
const DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The most osbuild hashes of one tool.
const MAX_TOOL_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTool {
    pub name: String,
    /// Where it is (`None`: not found on this machine).
    pub path: Option<PathBuf>,
    /// sha256 (hex) of the file that runs.
    pub sha256: Option<String>,
    /// The package it belongs to, and that package's version.
    pub package: Option<String>,
    pub version: Option<String>,
}

/// Whether `name` can name a tool: a file name, no path.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// Finds and describes the tool `name`.
pub fn resolve(name: &str) -> HostTool {
    let mut tool = HostTool {
        name: name.to_string(),
        path: None,
        sha256: None,
        package: None,
        version: None,
    };
    if !valid_name(name) {
        return tool;
    }
    let Some(path) = DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
    else {
        return tool;
    };
    tool.sha256 = digest(&path);
    if let Some((package, version)) = owner(&path) {
        tool.package = Some(package);
        tool.version = Some(version);
    }
    tool.path = Some(path);
    tool
}

/// sha256 of a regular file (through its symlinks: the file that runs).
fn digest(path: &Path) -> Option<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    crate::store::ids::reader_digest(&mut file.take(MAX_TOOL_BYTES)).ok()
}

/// The package that owns `path`, and its version: dpkg's database (under
/// merged /usr a file may be registered at /sbin or /bin), else rpm's.
fn owner(path: &Path) -> Option<(String, String)> {
    let mut candidates = vec![path.to_path_buf()];
    if let Ok(rest) = path.strip_prefix("/usr") {
        candidates.push(Path::new("/").join(rest));
    }
    if let Ok(real) = std::fs::canonicalize(path)
        && !candidates.contains(&real)
    {
        candidates.push(real);
    }
    for p in &candidates {
        if let Some(found) = dpkg_owner(p) {
            return Some(found);
        }
    }
    candidates.iter().find_map(|p| rpm_owner(p))
}

fn dpkg_owner(path: &Path) -> Option<(String, String)> {
    let out = run(Command::new("dpkg-query").arg("-S").arg(path))?;
    // `package[:arch][, other]: /path`, after any `diversion by …` lines.
    let package = out
        .lines()
        .find(|l| !l.starts_with("diversion by "))?
        .split(": ")
        .next()?
        .split(',')
        .next()?
        .trim()
        .to_string();
    let version = run(Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}"])
        .arg(&package))?;
    let version = version.trim().to_string();
    (!package.is_empty() && !version.is_empty()).then_some((package, version))
}

fn rpm_owner(path: &Path) -> Option<(String, String)> {
    let out = run(Command::new("rpm")
        .args([
            "-qf",
            "--qf",
            "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n",
        ])
        .arg(path))?;
    let (name, version) = out.lines().next()?.split_once('\t')?;
    let version = version.strip_prefix("0:").unwrap_or(version);
    Some((name.to_string(), version.to_string()))
}

fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_name_is_a_file_name() {
        assert!(valid_name("mkfs.ext4"));
        assert!(valid_name("grub-mkimage"));
        assert!(!valid_name("../../etc/shadow"));
        assert!(!valid_name("/usr/bin/env"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name(""));
    }

    #[test]
    fn a_tool_of_this_machine_is_found_hashed_and_versioned() {
        // sh is on every machine this builds on, and dpkg or rpm owns it.
        let t = resolve("sh");
        let path = t.path.clone().expect("sh is found");
        assert_eq!(t.sha256.as_deref().map(str::len), Some(64));
        assert!(path.starts_with("/usr"), "{path:?}");
        if Path::new("/var/lib/dpkg/status").exists() {
            assert!(t.package.is_some() && t.version.is_some(), "{t:?}");
        }
        assert_eq!(resolve("no-such-tool-anywhere").path, None);
        assert_eq!(resolve("../bin/sh").path, None);
    }
}
