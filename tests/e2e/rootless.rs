//! Rootless builds: osbuild run by an ordinary user (one the test creates,
//! with the subordinate ids Debian's `useradd` gives) builds wasm
//! pipelines with `--from` and `--save`, in a store of its own, with the
//! bytes a root build gives; native stages are refused before anything runs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::common::*;
use serde_json::json;

const USER: &str = "osbuild-rootless";
/// A system user: `useradd` gives it no subordinate ids.
const NO_SUBIDS_USER: &str = "osbuild-nosubids";

struct User {
    uid: u32,
    home: PathBuf,
    /// The start of its subordinate gids.
    subgid: u32,
}

fn id(name: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// The test's users, created once for all tests here (and left for the
/// next run: creating them again would only renumber their ids).
fn user() -> &'static User {
    static USER_ONCE: OnceLock<User> = OnceLock::new();
    USER_ONCE.get_or_init(|| {
        if id(USER).is_none() {
            sh(&format!(
                "useradd --create-home --shell /usr/sbin/nologin {USER}"
            ));
        }
        let has_range = |file: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(&format!("{USER}:")))
        };
        if !has_range("/etc/subuid") || !has_range("/etc/subgid") {
            sh(&format!(
                "usermod --add-subuids 1200000-1265535 --add-subgids 1200000-1265535 {USER}"
            ));
        }
        if id(NO_SUBIDS_USER).is_none() {
            sh(&format!(
                "useradd --system --create-home --shell /usr/sbin/nologin {NO_SUBIDS_USER}"
            ));
        }
        let subgid = std::fs::read_to_string("/etc/subgid")
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{USER}:"))?
                    .split(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap();
        let home = PathBuf::from(sh(&format!("getent passwd {USER} | cut -d: -f6")).trim());
        User {
            uid: id(USER).unwrap(),
            home,
            subgid,
        }
    })
}

/// A directory the test's user can read (and write `out/` in), holding a
/// copy of osbuild: the build's own may sit under a directory only root
/// can enter.
fn workdir() -> (tempfile::TempDir, PathBuf) {
    let u = user();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("osbuild");
    std::fs::copy(OSBUILD, &bin).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::os::unix::fs::chown(dir.path().join("out"), Some(u.uid), None).unwrap();
    (dir, bin)
}

/// Runs `bin` as `user`, with a clean environment and its home.
fn as_user(user: &str, bin: &Path, args: &[&str]) -> Run {
    let home = sh(&format!("getent passwd {user} | cut -d: -f6"));
    let out = Command::new("runuser")
        .args(["-u", user, "--", "env", "-i"])
        .arg(format!("HOME={}", home.trim()))
        .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
        .arg(bin)
        .args(args)
        .current_dir("/")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The user's store (its default one), emptied: a previous run's objects
/// would make this run's build a cache hit. The tests that use it take
/// turns (the guard): emptying it under another test's build removed
/// files that build was saving.
fn fresh_user_store(u: &User) -> (MutexGuard<'static, ()>, PathBuf) {
    static TURN: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the store is emptied anyway.
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let store = u.home.join(".cache/osbuild");
    if store.exists() {
        std::fs::remove_dir_all(&store).unwrap();
    }
    (turn, store)
}

/// `archive` where the test's user can read it (a hard link if it can be).
fn readable_copy(archive: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(archive.file_name().unwrap());
    if std::fs::hard_link(archive, &to).is_err() {
        std::fs::copy(archive, &to).unwrap();
    }
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    to
}

#[test]
#[ignore = "needs root: it creates a user and runs osbuild as it (tools/run-tests runs it)"]
fn a_debian_tree_configured_rootless_gives_the_bytes_of_a_root_build() {
    let u = user();
    let (dir, bin) = workdir();
    let d = dir.path();
    let archive = readable_copy(&debian_base(), d);
    let pipeline = repo_root().join("examples/debian-config.json");
    let pipeline = readable_copy(&pipeline, d);
    let (a, p) = (archive.to_str().unwrap(), pipeline.to_str().unwrap());

    let root_save = d.join("root.tar");
    osbuild(&[
        "--store",
        d.join("root-store").to_str().unwrap(),
        "--from",
        a,
        "--save",
        root_save.to_str().unwrap(),
        p,
    ])
    .ok();
    let (_turn, store) = fresh_user_store(u);
    let user_save = d.join("out/user.tar");
    as_user(
        USER,
        &bin,
        &["--from", a, "--save", user_save.to_str().unwrap(), p],
    )
    .ok();
    assert_eq!(sha256(&user_save), sha256(&root_save));
    assert_eq!(std::fs::metadata(&user_save).unwrap().uid(), u.uid);

    // The store was the user's own, 0700; the tree's owners are on disk as
    // the user's ids (root as the user, shadow's group 42 as a subordinate
    // gid) and its device nodes are stand-ins, not nodes.
    let m = std::fs::metadata(&store).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (u.uid, 0o700));
    let base = sh(&format!(
        "ls -d {}/objects/*/tree/etc/shadow | head -1",
        store.display()
    ));
    let shadow = Path::new(base.trim());
    let m = std::fs::symlink_metadata(shadow).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (u.uid, u.subgid + 41),
        "{}",
        shadow.display()
    );
    let null = shadow.parent().unwrap().parent().unwrap().join("dev/null");
    let m = std::fs::symlink_metadata(&null).unwrap();
    assert!(
        m.file_type().is_file() && m.len() == 0,
        "{}: {m:?}",
        null.display()
    );
    let mut mark = [0u8; 16];
    let n = rustix::fs::lgetxattr(&null, "user.osbuild.device", &mut mark[..]).unwrap();
    assert_eq!(&mark[..n], b"c 1:3");

    // Again, from the user's store, and with the copy handoff: the same bytes.
    let cached = d.join("out/cached.tar");
    as_user(
        USER,
        &bin,
        &["--from", a, "--save", cached.to_str().unwrap(), p],
    )
    .ok();
    assert_eq!(sha256(&cached), sha256(&root_save));
    // With the copy handoff (each stage copies the whole tree, so only
    // the first stages): the bytes the overlay handoff gives, which come
    // from the user's store.
    let mut first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&pipeline).unwrap()).unwrap();
    first["pipeline"].as_array_mut().unwrap().truncate(3);
    let first = write_pipeline(d, "first.json", first);
    std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o644)).unwrap();
    let first = first.to_str().unwrap();
    let overlaid = d.join("out/overlaid.tar");
    as_user(
        USER,
        &bin,
        &["--from", a, "--save", overlaid.to_str().unwrap(), first],
    )
    .ok();
    let copied = d.join("out/copied.tar");
    as_user(
        USER,
        &bin,
        &[
            "--no-cache",
            "--handoff",
            "copy",
            "--from",
            a,
            "--save",
            copied.to_str().unwrap(),
            first,
        ],
    )
    .ok();
    assert_eq!(sha256(&copied), sha256(&overlaid));
    assert_ne!(
        sha256(&copied),
        sha256(&root_save),
        "the first stages are not all of them"
    );
}

#[test]
#[ignore = "needs root: it creates a user and runs osbuild as it (tools/run-tests runs it)"]
fn odd_entries_survive_a_rootless_build_as_they_survive_a_root_one() {
    let u = user();
    let (dir, bin) = workdir();
    let d = dir.path();
    std::fs::create_dir(d.join("src")).unwrap();
    let archive = small_os_archive(d);
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A stage that makes device nodes, removes a directory (an opaque one
    // in the layer) and changes owners.
    let pipeline = write_pipeline(
        d,
        "p.json",
        json!({"pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "rootless"}},
            {"name": "io.weldr.files", "options": {
                "remove": ["/usr/share/doc"],
                "mkdir": [{"path": "/usr/share/doc", "mode": "0700"}],
                "write": [{"path": "/usr/share/doc/new", "content": "x"}],
                "chown": {"/usr/share/doc": {"user": 1000, "group": 42, "recursive": true}}
            }},
            {"name": "io.weldr.systemd", "options": {"enabled_services": ["ssh.service"]}}
        ]}),
    );
    std::fs::set_permissions(&pipeline, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (a, p) = (archive.to_str().unwrap(), pipeline.to_str().unwrap());
    let root_save = d.join("root.tar");
    osbuild(&["--from", a, "--save", root_save.to_str().unwrap(), p]).ok();
    let _turn = fresh_user_store(u);
    let user_save = d.join("out/user.tar");
    as_user(
        USER,
        &bin,
        &["--from", a, "--save", user_save.to_str().unwrap(), p],
    )
    .ok();
    let listing = sh(&format!("tar -tvf {} --numeric-owner", user_save.display()));
    assert_eq!(
        sha256(&user_save),
        sha256(&root_save),
        "{listing}\n{}",
        sh(&format!("tar -tvf {} --numeric-owner", root_save.display()))
    );
    // What the archive holds is what it should: checked on the bytes the
    // two builds share (mode, owner, path).
    let entries: Vec<(String, String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = if f[0].starts_with('l') {
                f[f.len() - 3]
            } else {
                f[f.len() - 1]
            };
            (f[0].to_string(), f[1].to_string(), path.to_string())
        })
        .collect();
    for (mode, owner, path) in [
        ("crw-rw-rw-", "0/0", "./dev/null"),
        ("prw-------", "0/0", "./run/initctl"),
        ("-rwsr-xr-x", "0/0", "./usr/bin/su"),
        ("-rw-r-----", "0/42", "./etc/shadow"),
        ("drwx------", "1000/42", "./usr/share/doc/"),
    ] {
        let want = (mode.to_string(), owner.to_string(), path.to_string());
        assert!(entries.contains(&want), "{want:?} not in\n{listing}");
    }
    let caps = sh(&format!(
        "mkdir {d}/x && tar --xattrs --xattrs-include='*' -xpf {} -C {d}/x ./usr/bin/ping && getcap {d}/x/usr/bin/ping",
        user_save.display(),
        d = d.display()
    ));
    assert!(caps.contains("cap_net_raw=ep"), "{caps}");
}

#[test]
#[ignore = "needs root: it creates a user and runs osbuild as it (tools/run-tests runs it)"]
fn a_native_stage_is_refused_rootless_before_anything_runs() {
    let u = user();
    let (dir, bin) = workdir();
    let d = dir.path();
    let pipeline = write_pipeline(
        d,
        "p.json",
        json!({"pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "x"}},
            {"name": "io.weldr.mmdebstrap", "options": {"suite": "bookworm"}}
        ]}),
    );
    std::fs::set_permissions(&pipeline, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_turn, store) = fresh_user_store(u);
    let save = d.join("out/x.tar");
    let p = pipeline.to_str().unwrap();
    as_user(USER, &bin, &["--save", save.to_str().unwrap(), p]).fails_with(
        2,
        "stage io.weldr.mmdebstrap refused: native stages need root: systemd-nspawn runs only as the host's root",
    );
    assert!(!save.exists());
    let objects = std::fs::read_dir(store.join("objects"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(objects, 0, "a stage ran and was stored");
    // The audit says so too.
    let audit = as_user(USER, &bin, &["audit", p]);
    assert!(
        audit.stdout.contains("native stages need root"),
        "{}{}",
        audit.stdout,
        audit.stderr
    );
}

#[test]
#[ignore = "needs root: it creates a user and runs osbuild as it (tools/run-tests runs it)"]
fn without_subordinate_ids_or_with_a_store_of_someone_else_a_rootless_build_says_what_is_needed() {
    user();
    let (dir, bin) = workdir();
    let d = dir.path();
    let pipeline = write_pipeline(
        d,
        "p.json",
        json!({"pipeline": [{"name": "io.weldr.hostname", "options": {"hostname": "x"}}]}),
    );
    std::fs::set_permissions(&pipeline, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = pipeline.to_str().unwrap();
    as_user(NO_SUBIDS_USER, &bin, &[p]).fails_with(
        1,
        &format!(
            "cannot build rootless: /etc/subuid gives {NO_SUBIDS_USER} no range of 65536 subordinate ids, which a rootless build maps the tree's owners to; as root: usermod --add-subuids 100000-165535 {NO_SUBIDS_USER}"
        ),
    );
    // root's store: refused, and left as it was.
    let root_store = d.join("root-store");
    osbuild(&["--store", root_store.to_str().unwrap(), p]).ok();
    std::fs::set_permissions(&root_store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&root_store);
    as_user(USER, &bin, &["--store", root_store.to_str().unwrap(), p]).fails_with(
        1,
        "the store belongs to user 0, not to the user running osbuild",
    );
    assert_eq!(snapshot(&root_store), before);
}
