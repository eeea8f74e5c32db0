//! `io.weldr.dnf`: installs RPM packages into the tree with
//! `dnf --installroot`, from the repositories given in the options only
//! (never the build machine's), keeping the rpm database inside the tree.

use std::process::Command;

use osbuild_lock::guest as packages;
use osbuild_stage::anyhow::Context as _;
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::{Deserialize, Serialize};

mod helper;
mod locked;

#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Repo {
    id: Option<String>,
    baseurl: String,
    #[serde(default = "yes")]
    gpgcheck: bool,
    gpgkey: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Options {
    packages: Vec<String>,
    repos: Vec<Repo>,
    releasever: String,
    #[serde(default)]
    install_weak_deps: bool,
    #[serde(default)]
    exclude: Vec<String>,
    /// Where the rpm database lives in the tree.
    #[serde(default = "default_dbpath")]
    dbpath: String,
}

fn yes() -> bool {
    true
}

/// A repository's id: its own, or `repoN` by its place.
fn repo_id(r: &Repo, i: usize) -> String {
    r.id.clone().unwrap_or_else(|| format!("repo{i}"))
}

fn default_dbpath() -> String {
    "/var/lib/rpm".into()
}

/// dnf's cache: in the stage's private /tmp (dnf also keeps a little of it
/// under the installroot, removed afterwards with dnf's logs).
const CACHE: &str = "/tmp/osbuild-dnf";

/// The dnf command line, without the packages' side effects: it uses only
/// the repositories given (reposdir=/dev/null): the options' or, with a
/// lock, the same ids over local repositories of the locked packages.
fn command(o: &Options, repos: &[Repo], tree: &str, home: &str) -> Command {
    let mut cmd = Command::new("dnf");
    cmd.env("HOME", home)
        .arg("-y")
        .arg(format!("--installroot={tree}"))
        .arg(format!("--releasever={}", o.releasever))
        .arg("--setopt=reposdir=/dev/null")
        .arg(format!("--setopt=cachedir={CACHE}"))
        .arg("--setopt=history_record=False")
        // Downloads stay in the cache directory, for osbuild to keep.
        .arg("--setopt=keepcache=True")
        .arg(format!(
            "--setopt=install_weak_deps={}",
            o.install_weak_deps
        ));
    for (i, r) in repos.iter().enumerate() {
        let id = repo_id(r, i);
        cmd.arg(format!("--repofrompath={id},{}", r.baseurl));
        cmd.arg(format!("--setopt={id}.gpgcheck={}", r.gpgcheck));
        if let Some(key) = &r.gpgkey {
            cmd.arg(format!("--setopt={id}.gpgkey={key}"));
        }
    }
    for e in &o.exclude {
        cmd.arg(format!("--exclude={e}"));
    }
    cmd.arg("install").args(&o.packages);
    cmd
}

/// Every option that reaches dnf's command line or rpm's macros, parsed:
/// `--repofrompath=ID,URL` splits at commas, a package that starts with
/// `-` would be an option, a newline in the dbpath a macro of its own.
fn check(o: &Options) -> Result<(), OptionError> {
    use osbuild_stage::checks;
    for (i, r) in o.repos.iter().enumerate() {
        checks::url(
            &format!("repos[{i}].baseurl"),
            &r.baseurl,
            &["http", "https", "ftp", "file"],
        )?;
        if let Some(k) = &r.gpgkey {
            checks::url(&format!("repos[{i}].gpgkey"), k, &["http", "https", "file"])?;
        }
    }
    for (i, p) in o.packages.iter().enumerate() {
        checks::word(&format!("packages[{i}]"), p)?;
    }
    for (i, e) in o.exclude.iter().enumerate() {
        checks::word(&format!("exclude[{i}]"), e)?;
    }
    checks::word("releasever", &o.releasever)?;
    // It becomes `%_dbpath PATH` in rpm's macros: `%(...)` or `%{lua:...}`
    // there would run as the stage's root.
    checks::plain_path("dbpath", &o.dbpath)?;
    Ok(())
}

fn run(tree: &Tree, o: Options) -> anyhow::Result<()> {
    check(&o)?;
    if o.packages.is_empty() {
        return Err(OptionError::new("packages", "nothing to install").into());
    }
    if !o.dbpath.starts_with('/') || o.dbpath.contains("..") {
        return Err(OptionError::new("dbpath", "must be an absolute path inside the tree").into());
    }
    // Debian's rpm keeps its database under $HOME unless told: tell it, in a
    // macros file in a private HOME.
    let home = std::env::temp_dir().join("osbuild-dnf-home");
    std::fs::create_dir_all(&home)?;
    std::fs::write(home.join(".rpmmacros"), format!("%_dbpath {}\n", o.dbpath))?;
    let root = tree.host_path().to_string_lossy().into_owned();
    let lock = packages::lock()?;
    let repos: Vec<Repo> = match &lock {
        Some(lock) => locked::repositories(&o, lock)?,
        None => {
            let linked = helper::prefill(&o)?;
            println!("package cache: {linked} of the repositories' packages are cached");
            o.repos.clone()
        }
    };
    let mut cmd = command(&o, &repos, &root, &home.to_string_lossy());
    let ran = osbuild_stage::host::run(&mut cmd, "dnf");
    if lock.is_none() {
        keep_downloads()?;
    }
    // dnf's cache and logs are build leftovers, not part of the image.
    for leftover in [
        CACHE,
        "/var/log/dnf.log",
        "/var/log/dnf.librepo.log",
        "/var/log/dnf.rpm.log",
        "/var/log/hawkey.log",
    ] {
        if tree.exists(leftover)? {
            tree.remove_all(leftover)?;
        }
    }
    ran?;
    let installed = installed(&root, &o.dbpath)?;
    let resolved = match lock {
        Some(lock) => {
            locked::check_installed(&installed, &lock)?;
            lock
        }
        None => helper::report(&o, &installed)?,
    };
    Ok(packages::report(resolved)?)
}

/// What rpm's database in the tree says is installed: (name, epoch,
/// version, release, arch), gpg keys left out.
fn installed(root: &str, dbpath: &str) -> anyhow::Result<Vec<[String; 5]>> {
    let out = osbuild_stage::host::output(
        Command::new("rpm")
            .arg(format!("--root={root}"))
            .arg(format!("--dbpath={dbpath}"))
            .args([
                "-qa",
                "--qf",
                "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n",
            ]),
        "rpm",
    )?;
    let mut v: Vec<[String; 5]> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<String> = l.split('\t').map(str::to_string).collect();
            if f.first().is_some_and(|n| n == "gpg-pubkey") {
                return None;
            }
            f.try_into().ok()
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Moves what dnf downloaded (and kept: keepcache) to osbuild; the links
/// to cached files it found in place are not downloads.
fn keep_downloads() -> anyhow::Result<()> {
    let Ok(repos) = std::fs::read_dir(CACHE) else {
        return Ok(());
    };
    for repo in repos.flatten() {
        let Ok(files) = std::fs::read_dir(repo.path().join("packages")) else {
            continue;
        };
        for f in files.flatten() {
            let is_file = f.file_type().is_ok_and(|t| t.is_file());
            let name = f.file_name();
            if is_file && name.to_string_lossy().ends_with(".rpm") {
                let dest = packages::new_dir().join(&name);
                if std::fs::rename(f.path(), &dest).is_err() {
                    std::fs::copy(f.path(), &dest)
                        .with_context(|| format!("handing {} to osbuild", dest.display()))?;
                }
            }
        }
    }
    Ok(())
}

osbuild_stage::native_stage!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_only_the_given_repositories() {
        let o: Options = serde_json::from_value(serde_json::json!({
            "packages": ["@core", "httpd"],
            "repos": [{"id": "local", "baseurl": "file:///srv/repo", "gpgcheck": false}, {"baseurl": "https://x/y", "gpgkey": "file:///k"}],
            "releasever": "40",
            "exclude": ["kernel"]
        }))
        .unwrap();
        let cmd = command(&o, &o.repos, "/run/osbuild/tree", "/tmp/h");
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--installroot=/run/osbuild/tree",
            "--setopt=reposdir=/dev/null",
            "--repofrompath=local,file:///srv/repo",
            "--setopt=local.gpgcheck=false",
            "--repofrompath=repo1,https://x/y",
            "--setopt=repo1.gpgcheck=true",
            "--setopt=repo1.gpgkey=file:///k",
            "--setopt=install_weak_deps=false",
            "--exclude=kernel",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
        assert_eq!(&args[args.len() - 3..], ["install", "@core", "httpd"]);
        check(&o).unwrap();
    }

    #[test]
    fn signatures_are_checked_unless_turned_off() {
        let o: Options = serde_json::from_value(serde_json::json!({
            "packages": ["httpd"], "repos": [{"baseurl": "https://x/y"}], "releasever": "40"
        }))
        .unwrap();
        let args: Vec<String> = command(&o, &o.repos, "/t", "/h")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.iter().any(|a| a == "--setopt=repo0.gpgcheck=true"),
            "{args:?}"
        );
    }

    #[test]
    fn options_that_would_reach_dnf_as_something_else_are_refused() {
        for (options, at) in [
            (
                serde_json::json!({"packages": ["--setopt=reposdir=/etc/yum.repos.d"], "repos": [{"baseurl": "https://x/y"}], "releasever": "40"}),
                "packages[0]",
            ),
            (
                serde_json::json!({"packages": ["a"], "repos": [{"baseurl": "https://x/y,file:///etc"}], "releasever": "40"}),
                "repos[0].baseurl",
            ),
            (
                serde_json::json!({"packages": ["a"], "repos": [{"baseurl": "https://x/y", "gpgkey": "file:///k https://evil/k"}], "releasever": "40"}),
                "repos[0].gpgkey",
            ),
            (
                serde_json::json!({"packages": ["a"], "repos": [{"baseurl": "https://x/y"}], "releasever": "40", "dbpath": "/var/lib/rpm\n%__os_install_post /bin/sh"}),
                "dbpath",
            ),
            (
                serde_json::json!({"packages": ["a"], "repos": [{"baseurl": "https://x/y"}], "releasever": "40", "dbpath": "/var/lib/rpm%(id>&2)%{lua:os.execute('id')}"}),
                "dbpath",
            ),
        ] {
            let o: Options = serde_json::from_value(options).unwrap();
            assert_eq!(check(&o).unwrap_err().option, at);
        }
    }
}
