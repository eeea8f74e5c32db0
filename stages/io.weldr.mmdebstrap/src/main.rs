//! `io.weldr.mmdebstrap`: a Debian or Ubuntu base tree, made by mmdebstrap
//! straight into the (empty) tree.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use osbuild_lock::guest as packages;
use osbuild_stage::anyhow::Context as _;
use osbuild_stage::{OptionError, Tree, anyhow};
use serde::Deserialize;

mod deb822;
mod fetch;
mod index;
mod repo;
mod signed;

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

/// Where a keyring may come from: the system's keyring directories, which
/// only root writes (a keyring elsewhere could be anyone's).
const KEYRING_DIRS: &[&str] = &[
    "/usr/share/keyrings",
    "/etc/apt/trusted.gpg.d",
    "/etc/apt/keyrings",
];

/// Every option that reaches mmdebstrap's command line, parsed: a mirror
/// is one URL (mmdebstrap turns each into a sources line, so a space or a
/// newline would add a repository), a package a word.
fn check(o: &Options) -> Result<(), OptionError> {
    use osbuild_stage::checks;
    for (i, m) in o.mirrors.iter().enumerate() {
        checks::url(&format!("mirrors[{i}]"), m, &["http", "https", "file"])?;
    }
    for (i, p) in o.packages.iter().enumerate() {
        checks::word(&format!("packages[{i}]"), p)?;
    }
    for (i, c) in o.components.iter().enumerate() {
        checks::word(&format!("components[{i}]"), c)?;
    }
    checks::word("suite", &o.suite)?;
    if let Some(k) = &o.keyring {
        checks::file_in("keyring", k, KEYRING_DIRS)?;
    }
    Ok(())
}

/// Where the stage keeps apt's scratch state and its local repositories
/// (its private /tmp).
const SCRATCH_APT: &str = "/tmp/osbuild-apt";
const CACHE_REPO: &str = "/tmp/osbuild-cache-repo";
const LOCK_REPO: &str = "/tmp/osbuild-lock-repo";
const SOURCES: &str = "/tmp/osbuild-sources.list";
const CACHED_NAMES: &str = "/tmp/osbuild-cached-names";

fn run(tree: &Tree, o: Options) -> anyhow::Result<()> {
    check(&o)?;
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
        // The host's /etc is visible read-only inside the stage.
        let root = Path::new("/");
        let sources = osbuild_apt_sources::read(root)?;
        let host = osbuild_apt_sources::codename(root);
        vec![
            osbuild_apt_sources::mirror(&sources, &o.suite, host.as_deref())
                .map_err(|e| OptionError::new("mirrors", format!("not given, and {e}")))?,
        ]
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
    // The image's sources are the mirrors', whichever repository the
    // packages were copied from (mmdebstrap writes one entry a source).
    let components = if o.components.is_empty() {
        "main".to_string()
    } else {
        o.components.join(" ")
    };
    let sources: Vec<String> = mirrors
        .iter()
        .map(|m| format!("deb {m} {} {components}\n", o.suite))
        .collect();
    std::fs::write(SOURCES, sources.join("\n")).context("writing the image's sources.list")?;

    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", o.variant))
        .arg(format!("--keyring={keyring}"))
        // Essential packages stay in the archives until the customize
        // hook has handed the downloads to osbuild (apt cleans them after).
        .arg("--skip=essential/unlink")
        .arg(format!(
            "--customize-hook=cp {SOURCES} \"$1/etc/apt/sources.list\""
        ));
    if !o.components.is_empty() {
        cmd.arg(format!("--components={}", o.components.join(",")));
    }
    if !o.packages.is_empty() {
        cmd.arg(format!("--include={}", o.packages.join(",")));
    }
    let locked = packages::lock()?;
    let installed = match locked {
        Some(lock) => {
            let source = from_lock(&lock, &o.suite, &keyring, &mirrors)?;
            cmd.arg(&o.suite).arg(target).arg(source);
            osbuild_stage::host::run(&mut cmd, "mmdebstrap")?;
            check_installed(tree, &lock)?;
            lock
        }
        None => {
            let arch = osbuild_stage::host::output(
                Command::new("dpkg").arg("--print-architecture"),
                "dpkg",
            )?
            .trim()
            .to_string();
            let scratch = index::Scratch::new(
                Path::new(SCRATCH_APT),
                &mirrors,
                &o.suite,
                &o.components,
                &keyring,
                &arch,
            )?;
            scratch.update()?;
            let index = scratch.index()?;
            let cached = cache_repo(&index, &o.suite)?;
            // What apt downloads is handed to osbuild before mmdebstrap
            // cleans the archives; what came from the cache is not.
            cmd.arg(format!(
                "--customize-hook=for f in \"$1\"/var/cache/apt/archives/*.deb; do [ -f \"$f\" ] || continue; grep -qxF -- \"${{f##*/}}\" {CACHED_NAMES} || mv -- \"$f\" {}/; done",
                packages::new_dir().display()
            ));
            cmd.arg(&o.suite).arg(target);
            cmd.args(cached);
            cmd.args(&mirrors);
            osbuild_stage::host::run(&mut cmd, "mmdebstrap")?;
            resolved_from(tree, &index)?
        }
    };
    populate_dev(tree)?;
    Ok(packages::report(installed)?)
}

/// The local repository of the cached packages the mirrors' indexes name
/// (by sha256), listed before the mirrors so that apt copies from it; and
/// their archive names, which the customize hook leaves alone.
fn cache_repo(index: &index::Index, suite: &str) -> anyhow::Result<Option<String>> {
    let mut members = Vec::new();
    let mut names = String::new();
    for e in index.entries.values() {
        if let Some(file) = packages::cached(&e.package.sha256) {
            let p = &e.package;
            names.push_str(&deb822::archive_name(&p.name, &p.version, &p.architecture));
            names.push('\n');
            members.push(repo::Member {
                stanza: e.stanza.clone(),
                sha256: p.sha256.clone(),
                file,
            });
        }
    }
    std::fs::write(CACHED_NAMES, names)?;
    println!(
        "package cache: {} of the mirrors' packages are cached",
        members.len()
    );
    if members.is_empty() {
        return Ok(None);
    }
    members.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    repo::write(Path::new(CACHE_REPO), suite, &members).map(Some)
}

/// Every locked package checked against the archive's signed indexes,
/// then from the cache or, failing that, downloaded and checked by sha256;
/// then the local repository of exactly those, their paragraphs as the
/// signed indexes have them.
fn from_lock(
    lock: &osbuild_lock::Resolved,
    suite: &str,
    keyring: &str,
    mirrors: &[String],
) -> anyhow::Result<String> {
    let stanzas = signed::check(lock, keyring, suite, mirrors)?;
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for p in &lock.packages {
        match packages::cached(&p.sha256) {
            Some(file) => files.push((p, file)),
            None => missing.push(p),
        }
    }
    println!(
        "package cache: {} of {} locked packages cached, {} to download",
        files.len(),
        lock.packages.len(),
        missing.len()
    );
    files.extend(fetch::download_all(&missing)?);
    let by_sha: std::collections::HashMap<&str, &Path> = files
        .iter()
        .map(|(p, f)| (p.sha256.as_str(), f.as_path()))
        .collect();
    let members: Vec<repo::Member> = lock
        .packages
        .iter()
        .zip(stanzas)
        .map(|(p, stanza)| repo::Member {
            stanza,
            sha256: p.sha256.clone(),
            file: by_sha[p.sha256.as_str()].to_path_buf(),
        })
        .collect();
    repo::write(Path::new(LOCK_REPO), suite, &members)
}

/// The installed packages are exactly the locked ones.
fn check_installed(tree: &Tree, lock: &osbuild_lock::Resolved) -> anyhow::Result<()> {
    let status = tree.read_to_string("/var/lib/dpkg/status")?;
    let installed: BTreeSet<(String, String, String)> =
        deb822::installed(&status).into_iter().collect();
    let locked: BTreeSet<(String, String, String)> = lock
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.architecture.clone()))
        .collect();
    let extra: Vec<String> = installed
        .difference(&locked)
        .map(|(n, v, a)| format!("{n} {v} ({a})"))
        .collect();
    let left: Vec<String> = locked
        .difference(&installed)
        .map(|(n, v, a)| format!("{n} {v} ({a})"))
        .collect();
    if !extra.is_empty() || !left.is_empty() {
        anyhow::bail!(
            "the tree's packages are not the lock's: installed but not locked: [{}]; locked but not installed: [{}]; make the lock again with osbuild lock --update",
            extra.join(", "),
            left.join(", ")
        );
    }
    Ok(())
}

/// What was installed, each package as the index states it.
fn resolved_from(tree: &Tree, index: &index::Index) -> anyhow::Result<osbuild_lock::Resolved> {
    let status = tree.read_to_string("/var/lib/dpkg/status")?;
    let mut out = Vec::new();
    for key in deb822::installed(&status) {
        let entry = index.entries.get(&key).ok_or_else(|| {
            anyhow::anyhow!(
                "{} {} ({}) was installed but is not in the indexes fetched before: the mirror changed during the build; build again",
                key.0,
                key.1,
                key.2
            )
        })?;
        out.push(entry.package.clone());
    }
    Ok(osbuild_lock::Resolved {
        repositories: index.repositories.clone(),
        packages: out,
    })
}

/// mmdebstrap's own `/dev` entries (its `@devfiles`): name, mode, and a
/// character device's numbers, a symlink's target, or a directory.
enum Dev {
    Char(u32, u32),
    Link(&'static str),
    Dir,
}

const DEVFILES: [(&str, u32, Dev); 14] = [
    ("console", 0o666, Dev::Char(5, 1)),
    ("fd", 0o777, Dev::Link("/proc/self/fd")),
    ("full", 0o666, Dev::Char(1, 7)),
    ("null", 0o666, Dev::Char(1, 3)),
    ("ptmx", 0o666, Dev::Char(5, 2)),
    ("pts", 0o755, Dev::Dir),
    ("random", 0o666, Dev::Char(1, 8)),
    ("shm", 0o755, Dev::Dir),
    ("stderr", 0o777, Dev::Link("/proc/self/fd/2")),
    ("stdin", 0o777, Dev::Link("/proc/self/fd/0")),
    ("stdout", 0o777, Dev::Link("/proc/self/fd/1")),
    ("tty", 0o666, Dev::Char(5, 0)),
    ("urandom", 0o666, Dev::Char(1, 9)),
    ("zero", 0o666, Dev::Char(1, 5)),
];

/// The tree is mounted `nodev`, so mmdebstrap's check for working device
/// nodes fails and it bind-mounts the container's `/dev` entries for the
/// chroot instead, leaving `/dev` empty. Trees and images then differ from
/// what mmdebstrap makes elsewhere; this puts back exactly what it would
/// have left (all of it harmless: no node here reaches hardware).
fn populate_dev(tree: &Tree) -> anyhow::Result<()> {
    if !tree.exists("/dev")? {
        return Ok(());
    }
    for (name, mode, what) in DEVFILES {
        let path = format!("/dev/{name}");
        if tree.exists(&path)? {
            continue;
        }
        match what {
            Dev::Char(major, minor) => tree.make_node(
                &path,
                osbuild_stage::NodeKind::CharDevice,
                mode,
                major,
                minor,
            )?,
            Dev::Link(target) => tree.symlink(target, &path)?,
            Dev::Dir => tree.create_dir(&path, mode)?,
        }
        tree.set_owner(&path, 0, 0)?;
        if !matches!(what, Dev::Link(_)) {
            tree.set_mode(&path, mode)?;
        }
    }
    Ok(())
}

osbuild_stage::native_stage!(run);
