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
    osbuild_stage::host::run(&mut cmd, "mmdebstrap")?;
    populate_dev(tree)
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
