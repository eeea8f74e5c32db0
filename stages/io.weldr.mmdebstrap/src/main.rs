//! `io.weldr.mmdebstrap`: a Debian or Ubuntu base tree, made by mmdebstrap
//! straight into the (empty) tree.

use std::path::Path;
use std::process::Command;

use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Options {
    suite: String,
    #[serde(default)]
    mirrors: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default = "default_variant")]
    variant: String,
    #[serde(default)]
    packages: Vec<String>,
    keyring: Option<String>,
}

fn default_variant() -> String {
    "minbase".into()
}

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The Debian mirror this machine's apt uses: the first `URIs:` (deb822)
/// or `deb URI` (one-line) entry that is not a security or backports-only
/// archive. The host's /etc is visible read-only inside the stage.
fn host_mirror(sources: &[(String, String)]) -> Option<String> {
    let mut found = Vec::new();
    for (name, text) in sources {
        let deb822 = name.ends_with(".sources");
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let uri = if deb822 {
                line.strip_prefix("URIs:")
                    .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
            } else {
                let mut parts = line.split_whitespace();
                (parts.next() == Some("deb"))
                    .then(|| parts.find(|p| !p.starts_with('[')))
                    .flatten()
                    .map(str::to_string)
            };
            if let Some(uri) = uri.filter(|u| !u.is_empty()) {
                found.push(uri);
            }
        }
    }
    found
        .into_iter()
        .find(|u| u.contains("debian") && !u.contains("security"))
}

fn read_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        out.push(("sources.list".to_string(), t));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut entries: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if let Ok(t) = std::fs::read_to_string(&p) {
                out.push((p.file_name().unwrap().to_string_lossy().into_owned(), t));
            }
        }
    }
    out
}

fn run(tree: &Tree, o: Options) -> anyhow::Result<()> {
    let target = tree.host_path();
    let existing: Vec<String> = tree
        .read_dir("/")?
        .into_iter()
        .filter(|n| n != "lost+found")
        .collect();
    if !existing.is_empty() {
        anyhow::bail!(
            "the tree is not empty (it has {}): mmdebstrap makes a tree from nothing, so it must be the first stage",
            existing
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mirrors = if o.mirrors.is_empty() {
        vec![host_mirror(&read_sources()).ok_or_else(|| {
            OptionError::new(
                "mirrors",
                "not given, and no Debian mirror found in /etc/apt/sources.list{,.d}",
            )
        })?]
    } else {
        o.mirrors.clone()
    };
    let keyring = match &o.keyring {
        Some(k) => k.clone(),
        None if Path::new(DEBIAN_KEYRING).exists() => DEBIAN_KEYRING.to_string(),
        None => {
            return Err(OptionError::new("keyring", format!("not given, and {DEBIAN_KEYRING} is missing (apt-get install debian-archive-keyring)")).into());
        }
    };
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", o.variant))
        .arg(format!("--keyring={keyring}"));
    if !o.components.is_empty() {
        cmd.arg(format!("--components={}", o.components.join(",")));
    }
    if !o.packages.is_empty() {
        cmd.arg(format!("--include={}", o.packages.join(",")));
    }
    cmd.arg(&o.suite).arg(target).args(&mirrors);
    println!("running: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("running mmdebstrap: {e} (apt-get install mmdebstrap)"))?;
    if !status.success() {
        anyhow::bail!("mmdebstrap failed ({status})");
    }
    Ok(())
}

osbuild_stage::native_stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_hosts_debian_mirror() {
        let sources = vec![
            ("debian.sources".into(), "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n".into()),
            ("other.sources".into(), "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n".into()),
        ];
        assert_eq!(
            host_mirror(&sources).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line = vec![(
            "sources.list".into(),
            "deb [arch=amd64] http://ftp.de.debian.org/debian bookworm main\n".into(),
        )];
        assert_eq!(
            host_mirror(&one_line).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
    }
}
