//! Downloading locked packages apt's way (`apt-helper download-file`,
//! which checks the sha256 as it writes), a few at a time.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use osbuild_lock::Package;
use osbuild_lock::guest as packages;
use osbuild_stage::anyhow;

/// Downloads at once: enough to hide a mirror's latency, few enough not
/// to be throttled.
const WORKERS: usize = 4;

/// Runs `f` over `items` on a few threads; the results in `items`' order,
/// or the first error.
pub fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<anyhow::Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    let failed = r.is_err();
                    results.lock().unwrap()[i] = Some(r);
                    if failed {
                        // The rest is not needed: stop taking work.
                        *next.lock().unwrap() = items.len();
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for r in results.into_inner().unwrap() {
        match r {
            Some(r) => out.push(r?),
            None => anyhow::bail!("a download was not attempted after another failed"),
        }
    }
    Ok(out)
}

/// Downloads each package into the stage's downloads directory, checked
/// against the lock's sha256 by apt as it arrives. A package that cannot
/// be had fails the stage naming it.
pub fn download_all<'a>(missing: &[&'a Package]) -> anyhow::Result<Vec<(&'a Package, PathBuf)>> {
    let files = in_parallel(missing, |p| download(p))?;
    Ok(missing.iter().copied().zip(files).collect())
}

fn download(p: &Package) -> anyhow::Result<PathBuf> {
    let dest = packages::new_dir().join(p.file_name());
    let out = Command::new("/usr/lib/apt/apt-helper")
        // Written by root into osbuild's directory, not by apt's sandbox
        // user (who may not write there).
        .args(["-q", "-o", "APT::Sandbox::User=root", "download-file"])
        .arg(&p.url)
        .arg(&dest)
        .arg(format!("SHA256:{}", p.sha256))
        .output()
        .map_err(|e| anyhow::anyhow!("running apt-helper (apt): {e}"))?;
    if out.status.success() {
        return Ok(dest);
    }
    // apt keeps a mismatched download as NAME.FAILED: never leave it.
    let _ = std::fs::remove_file(dest.with_file_name(format!("{}.FAILED", p.file_name())));
    let _ = std::fs::remove_file(&dest);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let why = if text.contains("Hash Sum mismatch") {
        format!(
            "its sha256 is not the lock's {}: the mirror serves other bytes under this name",
            p.sha256
        )
    } else {
        text.lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("Err"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ")
    };
    anyhow::bail!(
        "cannot get the locked package {} from {} ({why}), and the package cache does not have it: make the lock again with osbuild lock --update, or build where the mirror is reachable",
        p.label(),
        p.url
    )
}
