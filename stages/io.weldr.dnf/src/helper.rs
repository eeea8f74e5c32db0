//! The stage's Python helper (`helper.py`, dnf's own API): what dnf's
//! command line does not print.

use std::process::Command;

use osbuild_lock::guest as packages;
use osbuild_lock::{Package, Repository, Resolved};
use osbuild_stage::anyhow::{self, Context as _};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{CACHE, Options, Repo, repo_id};

const SCRIPT: &str = include_str!("helper.py");

/// Where the script is written (the stage's private /tmp), so the build
/// log shows a short command line.
const SCRIPT_PATH: &str = "/tmp/osbuild-dnf-helper.py";

fn call(request: Value) -> anyhow::Result<Value> {
    let mode = request["mode"].as_str().unwrap_or("").to_string();
    if !std::path::Path::new(SCRIPT_PATH).exists() {
        std::fs::write(SCRIPT_PATH, SCRIPT).context("writing dnf's helper script")?;
    }
    let out = osbuild_stage::host::output_with_input(
        Command::new("python3").arg(SCRIPT_PATH).arg(&mode),
        &serde_json::to_vec(&request)?,
        "python3-dnf",
    )
    .with_context(|| format!("asking dnf ({mode})"))?;
    serde_json::from_str(&out).with_context(|| format!("reading dnf's answer ({mode})"))
}

fn repos_json(repos: &[Repo]) -> Value {
    Value::Array(
        repos
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({"id": repo_id(r, i), "baseurl": r.baseurl, "gpgcheck": r.gpgcheck, "gpgkey": r.gpgkey})
            })
            .collect(),
    )
}

fn base_request(o: &Options, mode: &str) -> Value {
    json!({
        "mode": mode,
        "cachedir": CACHE,
        "releasever": o.releasever,
        "repos": repos_json(&o.repos),
        "cache": osbuild_lock::paths::CACHE,
    })
}

/// Links the cached packages the repositories' metadata names (by
/// sha256) where dnf looks for its downloads; how many.
pub fn prefill(o: &Options) -> anyhow::Result<u64> {
    let answer = call(base_request(o, "prefill"))?;
    Ok(answer["linked"].as_u64().unwrap_or(0))
}

#[derive(Deserialize)]
struct Report {
    packages: Vec<Package>,
    missing: Vec<String>,
    repositories: Vec<Repository>,
}

/// Each installed package as its repository states it.
pub fn report(o: &Options, installed: &[[String; 5]]) -> anyhow::Result<Resolved> {
    let mut request = base_request(o, "report");
    request["installed"] = serde_json::to_value(installed)?;
    let report: Report = serde_json::from_value(call(request)?)?;
    if !report.missing.is_empty() {
        anyhow::bail!(
            "installed, but in none of the repositories' metadata with a sha256 (the repository changed during the build, or its checksums are not sha256): {}",
            report.missing.join(", ")
        );
    }
    Ok(Resolved {
        repositories: report.repositories,
        packages: report.packages,
    })
}

/// Downloads (or copies, from a `file://` URL) one locked package into
/// the stage's downloads, checked by sha256.
pub fn fetch(p: &Package) -> anyhow::Result<std::path::PathBuf> {
    let dest = packages::new_dir().join(p.file_name());
    let answer = call(json!({
        "mode": "fetch",
        "url": p.url,
        "dest": dest,
        "sha256": p.sha256,
    }))?;
    if let Some(why) = answer["error"].as_str() {
        anyhow::bail!(
            "cannot get the locked package {} from {} ({why}), and the package cache does not have it: make the lock again with osbuild lock --update, or build where the repository is reachable",
            p.label(),
            p.url
        );
    }
    Ok(dest)
}
