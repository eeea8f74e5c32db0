//! A lock checked against what the archive signed, offline.
//!
//! A lock is input like a pipeline: anyone may hand one over. Taken on
//! its digests alone it would let a pipeline install any `.deb` from
//! anywhere, which the keyring (only from the system's keyring
//! directories) exists to prevent. So each repository of the lock names
//! the signed `InRelease` it was resolved from and the package indexes in
//! it; the stage checks the release's signature with the keyring (gpgv),
//! that the release names each index's digest, and that each locked
//! package is in those indexes with its digest. The files come from the
//! package cache (kept there by the build that made the lock) or, failing
//! that, from the mirror (the release as it is now, an index by its
//! digest under `by-hash/`). The index paragraphs are then what apt sees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use osbuild_lock::guest as packages;
use osbuild_lock::{Package, Repository, Resolved};
use osbuild_stage::anyhow::{self, Context as _};
use sha2::{Digest, Sha256};

use crate::deb822;

/// The checked index paragraph of each locked package, in the lock's order.
/// Only the stage's own mirrors count, and only releases of its suite.
pub fn check(
    lock: &Resolved,
    keyring: &str,
    suite: &str,
    mirrors: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut offered: HashMap<String, (String, &Repository)> = HashMap::new();
    for (i, repo) in lock.repositories.iter().enumerate() {
        if !mirrors
            .iter()
            .any(|m| format!("{}/", m.trim_end_matches('/')) == repo.url)
        {
            anyhow::bail!(
                "the lock's repository {} is none of the stage's mirrors ({}): a lock cannot add a repository; make it again with osbuild lock --update",
                repo.url,
                mirrors.join(", ")
            );
        }
        let release = release_text(repo, i, keyring, suite)?;
        let header = deb822::paragraphs(&release)
            .next()
            .unwrap_or(deb822::Paragraph { text: "" });
        if header.field("Suite") != Some(suite) && header.field("Codename") != Some(suite) {
            anyhow::bail!(
                "the lock's release of {} is for {} ({}), not {suite}: a lock cannot bring in another suite; make it again with osbuild lock --update",
                repo.url,
                header.field("Codename").unwrap_or("?"),
                header.field("Suite").unwrap_or("?")
            );
        }
        let listed = sha256_section(&release);
        for idx in &repo.indexes {
            if listed.get(idx.path.as_str()) != Some(&idx.sha256.as_str()) {
                anyhow::bail!(
                    "the lock's index {} of {} (sha256 {}) is not the one the signed release names: make the lock again with osbuild lock --update",
                    idx.path,
                    repo.url,
                    idx.sha256
                );
            }
            let text = index_text(repo, &idx.path, &idx.sha256, &listed, suite)?;
            for p in deb822::paragraphs(&text) {
                if let Some(sha) = p.field("SHA256") {
                    offered
                        .entry(sha.to_ascii_lowercase())
                        .or_insert_with(|| (p.text.to_string(), repo));
                }
            }
        }
    }
    lock.packages
        .iter()
        .map(|p| {
            let (stanza, repo) = offered.get(&p.sha256).ok_or_else(|| not_signed(p))?;
            let para = deb822::Paragraph { text: stanza };
            let same = para.field("Package") == Some(p.name.as_str())
                && para.field("Version") == Some(p.version.as_str())
                && para.field("Architecture") == Some(p.architecture.as_str())
                && para.field("Size").and_then(|s| s.parse::<u64>().ok()) == Some(p.size)
                && para
                    .field("Filename")
                    .is_some_and(|f| p.url == format!("{}{f}", repo.url));
            if same {
                Ok(stanza.clone())
            } else {
                Err(not_signed(p))
            }
        })
        .collect()
}

fn not_signed(p: &Package) -> anyhow::Error {
    anyhow::anyhow!(
        "the lock's {} (sha256 {}, {}) is not in the signed indexes it names: a lock cannot add packages the archive did not sign; make it again with osbuild lock --update",
        p.label(),
        p.sha256,
        p.url
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The release's signed text, its signature checked with the keyring.
fn release_text(repo: &Repository, i: usize, keyring: &str, suite: &str) -> anyhow::Result<String> {
    let Some(sha) = &repo.release_sha256 else {
        anyhow::bail!(
            "the lock names no signed release for {}: make it again with osbuild lock --update",
            repo.url
        );
    };
    let file = match packages::cached(sha) {
        Some(f) => f,
        None => {
            // The release as the mirror has it now: the same only if the
            // mirror has not moved on.
            let url = format!("{}dists/{suite}/InRelease", repo.url);
            let dest = packages::new_dir().join(format!("osbuild-lock-{i}_InRelease"));
            download(&url, &dest, sha).with_context(|| {
                format!(
                    "the signed release the lock was made from ({url}, sha256 {sha}) is neither in the package cache nor on the mirror any more: make the lock again with osbuild lock --update"
                )
            })?;
            dest
        }
    };
    let out = PathBuf::from(format!("/tmp/osbuild-release-{i}.txt"));
    // A home of its own: gpgv falls back to ~/.gnupg's keyring otherwise.
    let home = Path::new("/tmp/osbuild-gpgv-home");
    std::fs::create_dir_all(home)?;
    let mut gpgv = Command::new("gpgv");
    gpgv.env("GNUPGHOME", home).env("HOME", home);
    for k in keyrings(keyring)? {
        gpgv.arg("--keyring").arg(k);
    }
    gpgv.args(["--status-fd", "1", "--output"])
        .arg(&out)
        .arg(&file);
    let what = || {
        format!(
            "checking the signature of {}'s release (sha256 {sha}) with {keyring}",
            repo.url
        )
    };
    let status = osbuild_stage::host::output(&mut gpgv, "gpgv").with_context(what)?;
    good_signature(&status).with_context(what)?;
    std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))
}

/// gpgv's status lines say a good signature by a key that is neither
/// expired nor revoked, as apt requires (gpgv alone exits 0 for those).
fn good_signature(status: &str) -> anyhow::Result<()> {
    let words: Vec<&str> = status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for bad in [
        "EXPKEYSIG",
        "REVKEYSIG",
        "EXPSIG",
        "BADSIG",
        "ERRSIG",
        "NO_PUBKEY",
        "KEYEXPIRED",
        "KEYREVOKED",
    ] {
        if words.contains(&bad) {
            anyhow::bail!("gpgv says {bad}: not a good signature by a valid key of the keyring");
        }
    }
    if !words.contains(&"VALIDSIG") {
        anyhow::bail!("gpgv found no good signature");
    }
    Ok(())
}

/// The keyring files: the file, or each `.gpg` file of the directory.
fn keyrings(keyring: &str) -> anyhow::Result<Vec<PathBuf>> {
    let path = Path::new(keyring);
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gpg"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!(
            "the keyring directory {keyring} has no .gpg keyring to check a locked release with (armored .asc keys are not read here): name a .gpg keyring file"
        );
    }
    Ok(files)
}

/// The release's `SHA256:` lines: path → digest.
fn sha256_section(release: &str) -> HashMap<&str, &str> {
    let mut out = HashMap::new();
    let mut inside = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            inside = line.trim_end() == "SHA256:";
            continue;
        }
        if inside {
            let mut f = line.split_whitespace();
            if let (Some(sha), Some(_size), Some(path)) = (f.next(), f.next(), f.next()) {
                out.insert(path, sha);
            }
        }
    }
    out
}

/// An index's text, checked against its digest: from the cache, or from
/// the mirror by the digest of its `.xz` the release names (`by-hash`).
fn index_text(
    repo: &Repository,
    path: &str,
    sha: &str,
    listed: &HashMap<&str, &str>,
    suite: &str,
) -> anyhow::Result<String> {
    if let Some(file) = packages::cached(sha) {
        let bytes = std::fs::read(&file)?;
        // osbuild named it by its digest; checked again all the same (a
        // crash can leave a file short).
        if sha256_hex(&bytes) == sha {
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let xz = format!("{path}.xz");
    let xz_sha = listed.get(xz.as_str()).ok_or_else(|| {
        anyhow::anyhow!("the index {path} of {} is not in the package cache, and its release names no {xz} to fetch it by", repo.url)
    })?;
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let url = format!("{}dists/{suite}/{dir}/by-hash/SHA256/{xz_sha}", repo.url);
    let compressed = PathBuf::from(format!("/tmp/osbuild-index-{sha}.xz"));
    download(&url, &compressed, xz_sha).with_context(|| {
        format!(
            "the index {path} the lock was made from is neither in the package cache nor on the mirror ({url}): make the lock again with osbuild lock --update"
        )
    })?;
    let text = osbuild_stage::host::output(
        Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&compressed),
        "apt",
    )?;
    if sha256_hex(text.as_bytes()) != sha {
        anyhow::bail!("the index {path} fetched from {url} is not the lock's (sha256 {sha})");
    }
    crate::index::keep(&format!("osbuild-index-{sha}_Packages"), text.as_bytes())?;
    Ok(text)
}

fn download(url: &str, dest: &Path, sha: &str) -> anyhow::Result<()> {
    let out = Command::new("/usr/lib/apt/apt-helper")
        .args(["-q", "-o", "APT::Sandbox::User=root", "download-file", url])
        .arg(dest)
        .arg(format!("SHA256:{sha}"))
        .output()
        .context("running apt-helper (apt)")?;
    if out.status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_file(dest);
    let _ = std::fs::remove_file(format!("{}.FAILED", dest.display()));
    anyhow::bail!(
        "{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("E:"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sha256_section_is_read_and_nothing_else() {
        let release = "Origin: Debian\nMD5Sum:\n 0123 10 main/binary-amd64/Packages\nSHA256:\n aaaa 10 main/binary-amd64/Packages\n bbbb 5 main/binary-amd64/Packages.xz\nAcquire-By-Hash: yes\n";
        let s = sha256_section(release);
        assert_eq!(s.len(), 2);
        assert_eq!(s["main/binary-amd64/Packages"], "aaaa");
        assert_eq!(s["main/binary-amd64/Packages.xz"], "bbbb");
    }
}

#[cfg(test)]
mod signature_tests {
    use super::good_signature;

    #[test]
    fn only_a_valid_signature_by_a_valid_key_is_good() {
        let valid = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 6ED0E7B82643E131 Debian\n[GNUPG:] VALIDSIG ABCD 2023-01-01\n";
        good_signature(valid).unwrap();
        for bad in [
            "EXPKEYSIG 1 x",
            "REVKEYSIG 1 x",
            "EXPSIG 1 x",
            "BADSIG 1 x",
            "ERRSIG 1",
            "NO_PUBKEY 1",
        ] {
            let status = format!("{valid}[GNUPG:] {bad}\n");
            assert!(good_signature(&status).is_err(), "{bad}");
        }
        assert!(good_signature("[GNUPG:] GOODSIG 1 x\n").is_err());
        assert!(good_signature("").is_err());
    }
}
