//! `tools/setup` and `tools/run-tests` end to end, as root, each in a
//! private mount namespace whose `/etc/apt` (and, where a case needs it,
//! dpkg's status file, its lock or apt's lists) is a copy the test owns:
//! the machine's own configuration, packages and locks are never touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// This machine image's apt configuration: one deb822 file, no sources.list.
const MACHINE_SOURCES: &str = "\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn require_root() {
    assert_eq!(
        uid(),
        0,
        "these tests run tools/setup, which installs packages: run them as root (tools/run-tests does)"
    );
}

fn uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A private `/etc/apt`: the machine's, with its sources replaced by `sources`
/// (file name, content) and no `sources.list` unless one is given.
struct Scene {
    dir: tempfile::TempDir,
    binds: Vec<(PathBuf, &'static str)>,
}

impl Scene {
    fn new(sources: &[(&str, &str)]) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let apt = dir.path().join("apt");
        run_ok(Command::new("cp").arg("-a").arg("/etc/apt").arg(&apt));
        let _ = fs::remove_file(apt.join("sources.list"));
        fs::remove_dir_all(apt.join("sources.list.d")).unwrap();
        fs::create_dir(apt.join("sources.list.d")).unwrap();
        for (name, text) in sources {
            let path = if *name == "sources.list" {
                apt.join(name)
            } else {
                apt.join("sources.list.d").join(name)
            };
            fs::write(path, text).unwrap();
        }
        Scene {
            binds: vec![(apt, "/etc/apt")],
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// dpkg's status as if `packages` were not installed.
    fn without_packages(mut self, packages: &[&str]) -> Scene {
        let status = fs::read_to_string("/var/lib/dpkg/status").unwrap();
        let kept: Vec<&str> = status
            .split("\n\n")
            .filter(|stanza| {
                !packages
                    .iter()
                    .any(|p| stanza.starts_with(&format!("Package: {p}\n")))
            })
            .collect();
        assert!(
            kept.len() < status.split("\n\n").count(),
            "none of {packages:?} is installed here: run tools/setup first"
        );
        let path = self.path("status");
        fs::write(&path, kept.join("\n\n")).unwrap();
        self.binds.push((path, "/var/lib/dpkg/status"));
        self
    }

    /// A dpkg frontend lock of the test's own, so holding it blocks nobody else.
    fn private_dpkg_lock(mut self) -> Scene {
        let path = self.path("lock-frontend");
        fs::write(&path, "").unwrap();
        self.binds.push((path, "/var/lib/dpkg/lock-frontend"));
        self
    }

    /// apt's package lists empty, so tools/setup has to run apt-get update.
    fn empty_lists(mut self) -> Scene {
        let path = self.path("lists");
        fs::create_dir_all(path.join("partial")).unwrap();
        self.binds.push((path, "/var/lib/apt/lists"));
        self
    }

    /// Runs `script` (bash, in the repository) inside the namespace.
    fn run(&self, script: &str, unshare: &[&str], env: &[(&str, &str)]) -> Output {
        let mut prelude = String::from("set -e\n");
        for (from, to) in &self.binds {
            prelude.push_str(&format!("mount --bind '{}' '{to}'\n", from.display()));
        }
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private"])
            .args(unshare)
            .arg("bash")
            .arg("-c")
            .arg(format!("{prelude}set +e\n{script}"))
            .current_dir(repo());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn installed_version(package: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs root: private mount namespaces and apt (tools/run-tests runs it)"]
fn this_machine_images_apt_configuration_installs_nothing_twice() {
    require_root();
    let scene = Scene::new(&[("debian.sources", MACHINE_SOURCES)]);
    // The first run installs what is missing (tools/run-tests ran it already).
    let (code, out) = text(&scene.run("tools/setup packages", &[], &[]));
    assert_eq!(code, 0, "{out}");
    // The second installs nothing and says so.
    let (code, out) = text(&scene.run("tools/setup packages", &[], &[]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("setup: all Debian packages are installed"),
        "{out}"
    );
    assert!(!out.contains("installing"), "{out}");
    assert!(!out.contains("apt-get update"), "{out}");
}

#[test]
#[ignore = "needs root: private mount namespaces and apt (tools/run-tests runs it)"]
fn qemu_comes_from_backports_added_from_the_machines_own_mirror() {
    require_root();
    let scene =
        Scene::new(&[("debian.sources", MACHINE_SOURCES)]).without_packages(&["qemu-system-x86"]);
    let env = [("OSBUILD_SETUP_SIMULATE", "1")];
    let (code, out) = text(&scene.run("tools/setup packages", &[], &env));
    assert_eq!(code, 0, "{out}");
    let added =
        fs::read_to_string(scene.path("apt/sources.list.d/osbuild-backports.sources")).unwrap();
    assert!(
        added.contains("\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n"),
        "{added}"
    );
    assert!(
        added.contains("\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        "{added}"
    );
    assert!(
        out.contains("installing qemu-system-x86 from bookworm-backports"),
        "{out}"
    );
    // apt resolves it to the version of the installed qemu-utils.
    let utils = installed_version("qemu-utils");
    assert!(
        utils.contains("bpo"),
        "qemu-utils here is {utils}, not from backports"
    );
    assert!(
        out.contains(&format!("Inst qemu-system-x86 ({utils} ")),
        "{out}"
    );
    // Run again: backports is configured now, nothing is added twice.
    let (code, out) = text(&scene.run("tools/setup packages", &[], &env));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("adding bookworm-backports"), "{out}");
    // One-line sources with options, and a mirror not under /debian.
    let scene = Scene::new(&[(
        "sources.list",
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian/ bookworm main\n",
    )])
    .without_packages(&["qemu-system-x86"]);
    let (code, out) = text(&scene.run("tools/setup packages", &[], &env));
    assert_eq!(code, 0, "{out}");
    let added =
        fs::read_to_string(scene.path("apt/sources.list.d/osbuild-backports.sources")).unwrap();
    assert!(
        added.contains("\nURIs: http://deb.debian.org/debian/\n"),
        "{added}"
    );
}

#[test]
#[ignore = "needs root: private mount namespaces and apt (tools/run-tests runs it)"]
fn no_mirror_names_the_command_and_the_fix() {
    require_root();
    let before = fs::read_dir("/etc/apt/sources.list.d").unwrap().count();
    let scene = Scene::new(&[(
        "nodesource.sources",
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n",
    )])
    .without_packages(&["qemu-system-x86"]);
    let (code, out) = text(&scene.run("tools/setup packages", &[], &[]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("osbuild-apt-sources: no Debian archive serving bookworm"),
        "{out}"
    );
    assert!(
        out.contains("deb.nodesource.com/node_20.x nodistro"),
        "{out}"
    );
    assert!(out.contains("URIs: http://deb.debian.org/debian"), "{out}");
    assert!(
        out.contains("setup: line ")
            && out.contains("apt_sources backports-source")
            && out.contains("failed (exit 1)"),
        "{out}"
    );
    assert!(
        !scene
            .path("apt/sources.list.d/osbuild-backports.sources")
            .exists()
    );
    assert_eq!(
        fs::read_dir("/etc/apt/sources.list.d").unwrap().count(),
        before
    );
}

/// Holds the dpkg frontend lock (an fcntl lock, as apt takes it) from a
/// python3 in the namespace while `script` runs.
const HOLD_LOCK: &str = "python3 -c '
import fcntl, sys, time
f = open(\"/var/lib/dpkg/lock-frontend\", \"r+\")
fcntl.lockf(f, fcntl.LOCK_EX)
print(\"locked\", flush=True)
time.sleep(120)' >lock.out &
holder=$!
while ! grep -q locked lock.out 2>/dev/null; do sleep 0.1; done
";

#[test]
#[ignore = "needs root: private mount namespaces and apt (tools/run-tests runs it)"]
fn a_held_dpkg_lock_is_waited_for_then_named() {
    require_root();
    let scene = Scene::new(&[("debian.sources", MACHINE_SOURCES)])
        .without_packages(&["time"])
        .private_dpkg_lock();
    let script = format!(
        "cd {}\n{HOLD_LOCK}\ncd {}\ntools/setup packages; s=$?; kill $holder; exit $s",
        scene.dir.path().display(),
        repo().display()
    );
    let (code, out) = text(&scene.run(&script, &[], &[("OSBUILD_APT_LOCK_TIMEOUT", "2")]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the dpkg lock is held by pid "), "{out}");
    assert!(out.contains("(python3); waiting up to 2s for it"), "{out}");
    assert!(
        out.contains("setup: apt-get install: the dpkg lock was still held by pid ")
            && out.contains("after 2s"),
        "{out}"
    );
    // The package was not installed behind the lock.
    assert!(
        !fs::read_to_string(scene.path("status"))
            .unwrap()
            .contains("Package: time\n")
    );
}

#[test]
#[ignore = "needs root: private mount namespaces and apt (tools/run-tests runs it)"]
fn no_network_says_the_mirror_cannot_be_reached() {
    require_root();
    let scene = Scene::new(&[("debian.sources", MACHINE_SOURCES)])
        .without_packages(&["time"])
        .empty_lists();
    let (code, out) = text(&scene.run("tools/setup packages", &["--net"], &[]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the last lines of apt-get's output")
            || out.contains("W: Failed to fetch")
            || out.contains("Err:"),
        "{out}"
    );
    assert!(out.contains("the Debian mirror cannot be reached"), "{out}");
}

#[test]
#[ignore = "needs root: private mount namespaces and apt (tools/run-tests runs it)"]
fn home_unset_and_cargo_off_path_are_said_and_handled() {
    require_root();
    let out = Command::new("env")
        .args([
            "-u",
            "HOME",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "tools/setup",
            "rust",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    let (code, out) = text(&out);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("setup: HOME was not set; using /root (the home directory of uid 0)"),
        "{out}"
    );
    assert!(
        out.contains("setup: cargo is not on PATH; using /root/.cargo/bin"),
        "{out}"
    );
}

#[test]
fn a_failing_command_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("demo");
    fs::write(
        &script,
        format!(
            "#!/usr/bin/env bash\n. {}/tools/lib.sh\necho before\nls /nonexistent-osbuild-demo | wc -l\necho after\n",
            repo().display()
        ),
    )
    .unwrap();
    let (code, out) = text(&Command::new("bash").arg(&script).output().unwrap());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("before"), "{out}");
    assert!(!out.contains("after"), "{out}");
    assert!(
        out.contains("demo: line 4: 'ls /nonexistent-osbuild-demo | wc -l' failed (exit 2)"),
        "{out}"
    );
}

#[test]
#[ignore = "needs root: private mount namespaces and apt (tools/run-tests runs it)"]
fn run_tests_stops_its_background_jobs_when_a_phase_fails() {
    require_root();
    // The package step blocks on a held dpkg lock (a private one) for up to
    // 77 s; clippy fails after a second. run-tests must end at once and take
    // the waiting apt-get with it.
    let scene = Scene::new(&[("debian.sources", MACHINE_SOURCES)])
        .without_packages(&["time"])
        .private_dpkg_lock();
    let fake = scene.path("bin");
    fs::create_dir(&fake).unwrap();
    fs::write(
        fake.join("cargo"),
        "#!/bin/sh\ncase $1 in clippy) sleep 3; echo 'error: fake clippy failure' >&2; exit 101;; *) exit 0;; esac\n",
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("+x").arg(fake.join("cargo")));
    let script = format!(
        "cd {}\n{HOLD_LOCK}\ncd {}\nPATH={}:$PATH tools/run-tests; s=$?\n\
         echo \"left: $(pgrep -fc 'DPkg::Lock::Timeout=7[7]' || true)\"\nkill $holder; exit $s",
        scene.dir.path().display(),
        repo().display(),
        fake.display()
    );
    let started = std::time::Instant::now();
    let (code, out) = text(&scene.run(&script, &[], &[("OSBUILD_APT_LOCK_TIMEOUT", "77")]));
    assert_eq!(code, 101, "{out}");
    assert!(out.contains("error: fake clippy failure"), "{out}");
    assert!(
        out.contains("run-tests: line ")
            && out.contains("cargo clippy")
            && out.contains("failed (exit 101)"),
        "{out}"
    );
    assert!(out.contains("run-tests: stopping background job "), "{out}");
    assert!(
        out.contains("left: 0"),
        "an apt-get outlived run-tests:\n{out}"
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "run-tests waited for the package step: {out}"
    );
}
