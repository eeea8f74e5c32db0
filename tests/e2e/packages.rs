//! Packages as sources: the store's package cache (each file under the
//! sha256 osbuild computed), locks (`osbuild lock`), builds with a lock
//! that install exactly it, offline, to the same bytes; the same for dnf
//! with a repository made here. Each test has a store of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{Value, json};

fn minbase(extra: &[&str]) -> Value {
    json!({"source_epoch": 1700000000, "pipeline": [
        {"name": "io.weldr.mmdebstrap", "options": {
            "suite": "bookworm", "variant": "minbase", "mirrors": [mirror()], "packages": extra}}
    ]})
}

/// The package cache's files: sha256 (the file name) → the file's own
/// sha256, which must be the same.
fn cache(store: &Path) -> BTreeMap<String, String> {
    let dir = store.join("packages/sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), sha256(&e.path()))
        })
        .collect()
}

fn assert_content_addressed(store: &Path) {
    for (name, sum) in cache(store) {
        assert_eq!(name, sum, "a cached package is not under its own digest");
    }
}

fn report(run: &Run) -> Value {
    run.ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

struct Builds {
    dir: PathBuf,
    store: PathBuf,
}

impl Builds {
    fn new(dir: &Path) -> Builds {
        Builds {
            dir: dir.to_path_buf(),
            store: dir.join("store"),
        }
    }

    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        [&["--store", self.store.to_str().unwrap()][..], extra].concat()
    }

    fn run(&self, extra: &[&str]) -> Run {
        osbuild(&self.args(extra))
    }

    fn clear_objects(&self) {
        self.run(&["store", "clear", "--objects"]).ok();
        assert!(
            !cache(&self.store).is_empty(),
            "store clear --objects emptied the package cache"
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[test]
#[ignore = "needs root and the Debian mirror (tools/run-tests runs it)"]
fn mmdebstrap_downloads_each_package_once_and_a_lock_builds_offline_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let b = Builds::new(dir.path());
    let one = write_pipeline(dir.path(), "one.json", minbase(&[]));
    let two = write_pipeline(dir.path(), "two.json", minbase(&["less"]));

    // An empty store: everything is downloaded, and kept.
    let first = report(&b.run(&["--json", one.to_str().unwrap()]));
    let p1 = &first["stages"][0]["packages"];
    let count1 = p1["count"].as_u64().unwrap();
    assert!(count1 > 50, "{p1}");
    assert_eq!(p1["locked"], false);
    assert_eq!(p1["downloaded"]["added"].as_u64().unwrap(), count1, "{p1}");
    // The mirror's signed release and its package index are kept too.
    assert_eq!(p1["downloaded"]["added_indexes"], 2, "{p1}");
    assert_eq!(cache(&b.store).len() as u64, count1 + 2);
    assert_content_addressed(&b.store);

    // One package more: only it and what it newly needs are downloaded.
    let unlocked = b.path("unlocked.tar");
    let run = b.run(&[
        "--json",
        "--save",
        unlocked.to_str().unwrap(),
        two.to_str().unwrap(),
    ]);
    let second = report(&run);
    let p2 = &second["stages"][0]["packages"];
    let count2 = p2["count"].as_u64().unwrap();
    let added = p2["downloaded"]["added"].as_u64().unwrap();
    assert!(added >= 1, "{p2}");
    assert_eq!(
        added,
        count2 - count1,
        "downloaded more than the new packages: {p2}"
    );
    assert_eq!(p2["downloaded"]["added_indexes"], 0, "{p2}");
    assert!(
        run.stderr.contains(&format!(
            "package cache: {count1} of the mirrors' packages are cached"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(cache(&b.store).len() as u64, count2 + 2);
    let listed: Value =
        serde_json::from_str(&b.run(&["store", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(listed["packages"]["count"].as_u64().unwrap(), count2 + 2);
    assert!(
        listed["packages"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"].as_str().unwrap().starts_with("less_")),
        "{listed}"
    );

    // The lock: from the stored result, every package with its digest.
    let lock_path = b.path("two.lock.json");
    b.run(&["lock", two.to_str().unwrap()]).ok();
    let lock: Value = serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
    let stage = &lock["stages"][0];
    assert_eq!(stage["name"], "io.weldr.mmdebstrap");
    let packages = stage["resolved"]["packages"].as_array().unwrap();
    assert_eq!(packages.len() as u64, count2);
    let cached = cache(&b.store);
    for p in packages {
        let sha = p["sha256"].as_str().unwrap();
        assert!(cached.contains_key(sha), "{p} is not in the package cache");
        assert!(p["url"].as_str().unwrap().starts_with(&mirror()), "{p}");
    }
    let less = packages
        .iter()
        .find(|p| p["name"] == "less")
        .unwrap()
        .clone();
    assert!(
        stage["resolved"]["repositories"][0]["date"].is_string(),
        "{stage}"
    );
    b.run(&["lock", two.to_str().unwrap()])
        .fails_with(2, "exists: osbuild lock --update");
    let inspect = b
        .run(&["--inspect", two.to_str().unwrap()])
        .ok()
        .stdout
        .clone();
    assert!(
        inspect.contains(&format!("locked: {count2} packages, resolved ")),
        "{inspect}"
    );

    // No network at all, an empty object store, the warm package cache.
    b.clear_objects();
    let offline = b.path("offline.tar");
    let run = osbuild_offline(&b.args(&[
        "--json",
        "--save",
        offline.to_str().unwrap(),
        two.to_str().unwrap(),
    ]));
    let built = report(&run);
    assert_eq!(built["stages"][0]["packages"]["locked"], true);
    assert_eq!(built["stages"][0]["packages"]["downloaded"]["added"], 0);
    // Online, with the same lock, from an empty object store again.
    b.clear_objects();
    let online = b.path("online.tar");
    b.run(&["--save", online.to_str().unwrap(), two.to_str().unwrap()])
        .ok();
    assert_eq!(sha256(&offline), sha256(&online));
    // And the unlocked build installed the same: the same bytes.
    assert_eq!(sha256(&offline), sha256(&unlocked));

    // The lock with less's entry changed, written to NAME.
    let with_less = |name: &str, change: &dyn Fn(&mut Value)| -> PathBuf {
        let mut bad = lock.clone();
        let entry = bad["stages"][0]["resolved"]["packages"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["name"] == "less")
            .unwrap();
        change(entry);
        let path = b.path(name);
        std::fs::write(&path, bad.to_string()).unwrap();
        path
    };
    let url = less["url"].as_str().unwrap().to_string();

    // A version neither the mirror nor the cache has.
    let before = cache(&b.store);
    let bad_version = with_less("bad-version.lock.json", &|entry| {
        entry["version"] = json!("999:1.0-1");
        entry["url"] = json!(url.replace(
            &format!("less_{}", less["version"].as_str().unwrap()),
            "less_999.1.0-1"
        ));
        entry["sha256"] = json!("1".repeat(64));
    });
    b.run(&[
        "--lock",
        bad_version.to_str().unwrap(),
        two.to_str().unwrap(),
    ])
    .fails_with(1, "less 999:1.0-1 (amd64)")
    .fails_with(1, "is not in the signed indexes");
    // A digest the archive did not sign for the file.
    let bad_sha = with_less("bad-sha.lock.json", &|entry| {
        entry["sha256"] = json!("2".repeat(64));
    });
    let file_name = url.rsplit('/').next().unwrap();
    b.run(&["--lock", bad_sha.to_str().unwrap(), two.to_str().unwrap()])
        .fails_with(1, file_name)
        .fails_with(1, &format!("(sha256 {}", "2".repeat(64)))
        .fails_with(1, "is not in the signed indexes");
    // A package the archive never signed, though its file is cached (it
    // is less's): refused before anything is downloaded or installed.
    let mut bad = lock.clone();
    let mut evil = less.clone();
    evil["name"] = json!("evil");
    evil["url"] = json!(url.replace("/less/less_", "/less/evil_"));
    bad["stages"][0]["resolved"]["packages"]
        .as_array_mut()
        .unwrap()
        .push(evil);
    let unsigned = b.path("unsigned.lock.json");
    std::fs::write(&unsigned, bad.to_string()).unwrap();
    b.run(&["--lock", unsigned.to_str().unwrap(), two.to_str().unwrap()])
        .fails_with(1, "the lock's evil ")
        .fails_with(1, "a lock cannot add packages the archive did not sign");
    // A lock that names no signed release is refused too (on an empty
    // object store: its packages are the good lock's, whose result is
    // stored, and would be reused).
    b.clear_objects();
    let mut bad = lock.clone();
    bad["stages"][0]["resolved"]["repositories"][0]
        .as_object_mut()
        .unwrap()
        .remove("release_sha256");
    let no_release = b.path("no-release.lock.json");
    std::fs::write(&no_release, bad.to_string()).unwrap();
    b.run(&[
        "--lock",
        no_release.to_str().unwrap(),
        two.to_str().unwrap(),
    ])
    .fails_with(1, "the lock names no signed release for");
    assert_eq!(
        cache(&b.store),
        before,
        "a failed build changed the package cache"
    );
    assert_content_addressed(&b.store);
    // A lock made for other options is refused before anything runs.
    b.run(&["--lock", lock_path.to_str().unwrap(), one.to_str().unwrap()])
        .fails_with(2, "pipeline[0].options: changed since the lock");

    // Updating against an unchanged mirror changes nothing.
    let update = b.run(&["lock", "--update", two.to_str().unwrap()]);
    update.ok();
    assert!(
        update.stdout.contains(&format!(
            "stage 1 io.weldr.mmdebstrap: {count2} packages\n  no package changed"
        )),
        "{}",
        update.stdout
    );
}

/// A signed local repository with `osbuild-test-two` 1.0 (and, once
/// [`add_version_two`] ran, 2.0): (repository dir, public key).
fn two_versions_repo(d: &Path) -> (PathBuf, PathBuf) {
    let key = test_gpg_key(d);
    std::fs::create_dir_all(d.join("rpm/SPECS")).unwrap();
    std::fs::create_dir_all(d.join("repo")).unwrap();
    build_version(d, "1.0");
    (d.join("repo"), key)
}

fn build_version(d: &Path, version: &str) {
    let d = d.display();
    sh(&format!(
        r#"
        export GNUPGHOME={d}/gnupg HOME={d}
        cat > {d}/rpm/SPECS/two.spec <<'SPEC'
Name:           osbuild-test-two
Version:        {version}
Release:        1
Summary:        A package for osbuild's tests, in two versions
License:        MIT
BuildArch:      noarch
%description
Installs one file that says its version.
%install
mkdir -p %{{buildroot}}/usr/share/osbuild-test-two
echo "version {version}" > %{{buildroot}}/usr/share/osbuild-test-two/version
%files
/usr/share/osbuild-test-two/version
SPEC
        SOURCE_DATE_EPOCH=1700000000 rpmbuild --quiet --define "_topdir {d}/rpm" --define "use_source_date_epoch_as_buildtime 1" -bb {d}/rpm/SPECS/two.spec
        cp {d}/rpm/RPMS/noarch/osbuild-test-two-{version}-1.noarch.rpm {d}/repo/
        rpmsign --define "_gpg_name test@osbuild.invalid" --define "__gpg /usr/bin/gpg" --addsign {d}/repo/osbuild-test-two-{version}-1.noarch.rpm </dev/null 2>/dev/null
        createrepo_c --quiet --update {d}/repo
        "#
    ));
}

#[test]
#[ignore = "needs root and systemd-nspawn (tools/run-tests runs it)"]
fn dnf_installs_exactly_the_locked_version_of_two_and_caches_it() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, key) = two_versions_repo(dir.path());
    let b = Builds::new(dir.path());
    let allow = dir.path().to_str().unwrap().to_string();
    let pipeline = write_pipeline(
        dir.path(),
        "rpm.json",
        json!({"source_epoch": 1700000000, "pipeline": [{"name": "io.weldr.dnf", "options": {
            "packages": ["osbuild-test-two"],
            "repos": [{"id": "local", "baseurl": format!("file://{}", repo.display()), "gpgkey": format!("file://{}", key.display())}],
            "releasever": "40"}}]}),
    );
    let p = pipeline.to_str().unwrap();
    // The lock, while the repository has 1.0 only.
    b.run(&["--allow-host-path", &allow, "lock", p]).ok();
    let lock_path = b.path("rpm.lock.json");
    let lock: Value = serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
    let locked = &lock["stages"][0]["resolved"]["packages"];
    assert_eq!(locked.as_array().unwrap().len(), 1, "{lock}");
    assert_eq!(locked[0]["name"], "osbuild-test-two");
    assert_eq!(locked[0]["version"], "1.0-1");
    let one_rpm = repo.join("osbuild-test-two-1.0-1.noarch.rpm");
    assert_eq!(locked[0]["sha256"].as_str().unwrap(), sha256(&one_rpm));
    assert_eq!(
        locked[0]["url"].as_str().unwrap(),
        format!("file://{}", one_rpm.display())
    );

    // 2.0 is published; the build with the lock installs 1.0, exactly.
    build_version(dir.path(), "2.0");
    let tree_tar = b.path("locked.tar");
    let built = report(&b.run(&[
        "--allow-host-path",
        &allow,
        "--json",
        "--save",
        tree_tar.to_str().unwrap(),
        p,
    ]));
    let set = &built["stages"][0]["packages"];
    assert_eq!(set["locked"], true, "{set}");
    // Fetched from the repository by its file:// URL, checked, and kept.
    assert_eq!(set["downloaded"]["added"], 1, "{set}");
    assert!(cache(&b.store).contains_key(locked[0]["sha256"].as_str().unwrap()));
    let tree = b.path("tree");
    extract(&tree_tar, &tree);
    assert_eq!(
        std::fs::read_to_string(tree.join("usr/share/osbuild-test-two/version")).unwrap(),
        "version 1.0\n"
    );
    assert_eq!(
        sh(&format!(
            "rpm --root {} --dbpath /var/lib/rpm -qa osbuild-test-two",
            tree.display()
        ))
        .trim(),
        "osbuild-test-two-1.0-1.noarch"
    );

    // Without the lock the same pipeline gets 2.0; the update says so.
    let update = b.run(&["--allow-host-path", &allow, "lock", "--update", p]);
    update.ok();
    assert!(
        update
            .stdout
            .contains("osbuild-test-two (noarch): 1.0-1 -> 2.0-1"),
        "{}",
        update.stdout
    );
    let lock: Value = serde_json::from_slice(&std::fs::read(&lock_path).unwrap()).unwrap();
    assert_eq!(
        lock["stages"][0]["resolved"]["packages"][0]["version"],
        "2.0-1"
    );

    // A digest the repository's file does not have: refused, naming it,
    // and nothing of it kept.
    let mut bad = lock.clone();
    bad["stages"][0]["resolved"]["packages"][0]["sha256"] = json!("3".repeat(64));
    let bad_path = b.path("bad.lock.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let before = cache(&b.store);
    b.run(&[
        "--allow-host-path",
        &allow,
        "--lock",
        bad_path.to_str().unwrap(),
        p,
    ])
    .fails_with(1, "osbuild-test-two-2.0-1.noarch.rpm")
    .fails_with(1, "not the lock's 3333");
    assert_eq!(cache(&b.store), before);
    assert_content_addressed(&b.store);
}

#[test]
#[ignore = "needs root and the Debian mirror (tools/run-tests runs it)"]
fn two_builds_fill_one_package_cache_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = Builds::new(dir.path());
    let one = write_pipeline(dir.path(), "one.json", minbase(&["less"]));
    let two = write_pipeline(dir.path(), "two.json", minbase(&["bzip2"]));
    let spawn = |p: &Path| {
        std::process::Command::new(OSBUILD)
            .args([
                "--store",
                b.store.to_str().unwrap(),
                "--json",
                p.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, c) = (spawn(&one), spawn(&two));
    let mut counts = Vec::new();
    for child in [a, c] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        counts.push(r["stages"][0]["packages"]["count"].as_u64().unwrap());
    }
    // Both sets are in the cache, each file once, each under its digest,
    // nothing half-written left.
    assert_content_addressed(&b.store);
    let files = cache(&b.store).len() as u64;
    assert!(
        files > counts[0].max(counts[1]),
        "{files} files for {counts:?}"
    );
    assert!(
        files < counts[0] + counts[1],
        "{files} files for {counts:?}: shared packages twice?"
    );
    let tmp: Vec<_> = std::fs::read_dir(b.store.join("packages/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    // Each lock's packages are all there: a build with it runs offline.
    for p in [&one, &two] {
        b.run(&["lock", p.to_str().unwrap()]).ok();
    }
    b.clear_objects();
    for p in [&one, &two] {
        osbuild_offline(&b.args(&[p.to_str().unwrap()])).ok();
    }
}

/// The package cache is a capability like the others: audit shows it,
/// and a policy that does not name the stage refuses it before anything
/// runs.
#[test]
#[ignore = "needs root: osbuild builds in mount namespaces of its own (tools/run-tests runs it)"]
fn the_packages_capability_is_audited_and_refusable() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "p.json", minbase(&[]));
    let audit = osbuild(&["audit", p.to_str().unwrap()]);
    audit.ok();
    assert!(audit.stdout.contains("packages deb"), "{}", audit.stdout);
    assert!(
        audit
            .stdout
            .contains("the store's package cache read-only (every cached package file"),
        "{}",
        audit.stdout
    );
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"packages": ["io.weldr.dnf"]}"#).unwrap();
    let store = dir.path().join("store");
    osbuild(&[
        "--store",
        store.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        p.to_str().unwrap(),
    ])
    .fails_with(
        2,
        "pipeline[0].name: stage io.weldr.mmdebstrap refused: policy: uses the store's package cache",
    );
    assert!(!store.join("packages/sha256").exists() || cache(&store).is_empty());
}
