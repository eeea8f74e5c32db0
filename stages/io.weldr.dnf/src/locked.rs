//! Installing exactly a lock's packages: each from the package cache or
//! fetched and checked by sha256, then offered to dnf as local
//! repositories (one per repository of the options, with its id, its
//! gpgcheck and its key), and nothing else.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use osbuild_lock::guest as packages;
use osbuild_lock::{Package, Resolved};
use osbuild_stage::anyhow::{self, Context as _};

use crate::{Options, Repo, helper};

/// The options' repositories, each now a local repository of the locked
/// packages that came from it.
pub fn repositories(o: &Options, lock: &Resolved) -> anyhow::Result<Vec<Repo>> {
    let base = |r: &Repo| format!("{}/", r.baseurl.trim_end_matches('/'));
    let mut groups: Vec<Vec<&Package>> = vec![Vec::new(); o.repos.len()];
    for p in &lock.packages {
        let from = o
            .repos
            .iter()
            .enumerate()
            .filter(|(_, r)| p.url.starts_with(&base(r)))
            .max_by_key(|(_, r)| r.baseurl.len())
            .map(|(i, _)| i)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the lock takes {} from {}, which is in none of the stage's repositories: make the lock again with osbuild lock --update",
                    p.label(),
                    p.url
                )
            })?;
        groups[from].push(p);
    }
    let (mut cached, mut fetched) = (0, 0);
    let mut out = Vec::new();
    for (i, (repo, group)) in o.repos.iter().zip(groups).enumerate() {
        let dir = Path::new("/tmp").join(format!("osbuild-lock-repo{i}"));
        std::fs::create_dir_all(&dir)?;
        for p in group {
            let file = match packages::cached(&p.sha256) {
                Some(f) => {
                    cached += 1;
                    f
                }
                None => {
                    fetched += 1;
                    helper::fetch(p)?
                }
            };
            std::os::unix::fs::symlink(&file, dir.join(p.file_name()))
                .with_context(|| format!("linking {}", p.file_name()))?;
        }
        osbuild_stage::host::run(
            Command::new("createrepo_c").arg("--quiet").arg(&dir),
            "createrepo-c",
        )?;
        out.push(Repo {
            id: repo.id.clone().or_else(|| Some(format!("repo{i}"))),
            baseurl: format!("file://{}", dir.display()),
            gpgcheck: repo.gpgcheck,
            gpgkey: repo.gpgkey.clone(),
        });
    }
    println!(
        "package cache: {cached} of {} locked packages cached, {fetched} fetched",
        lock.packages.len()
    );
    Ok(out)
}

/// The installed packages are exactly the locked ones.
pub fn check_installed(installed: &[[String; 5]], lock: &Resolved) -> anyhow::Result<()> {
    let evr = |e: &str, v: &str, r: &str| {
        if e == "0" {
            format!("{v}-{r}")
        } else {
            format!("{e}:{v}-{r}")
        }
    };
    let have: BTreeSet<(String, String, String)> = installed
        .iter()
        .map(|[n, e, v, r, a]| (n.clone(), evr(e, v, r), a.clone()))
        .collect();
    let want: BTreeSet<(String, String, String)> = lock
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.architecture.clone()))
        .collect();
    let show = |s: Vec<&(String, String, String)>| {
        s.iter()
            .map(|(n, v, a)| format!("{n} {v} ({a})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let extra: Vec<_> = have.difference(&want).collect();
    let left: Vec<_> = want.difference(&have).collect();
    if !extra.is_empty() || !left.is_empty() {
        anyhow::bail!(
            "the tree's packages are not the lock's: installed but not locked: [{}]; locked but not installed: [{}]; make the lock again with osbuild lock --update",
            show(extra),
            show(left)
        );
    }
    Ok(())
}
