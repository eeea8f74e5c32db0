use super::*;

fn pkg(name: &str, version: &str, sha: char) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        architecture: "amd64".into(),
        url: format!("http://deb.debian.org/debian/pool/main/x/{name}/{name}_{version}_amd64.deb"),
        sha256: sha.to_string().repeat(64),
        size: 10,
    }
}

fn lock_with(p: Package) -> String {
    serde_json::json!({
        "version": 1,
        "stages": [{"index": 0, "name": "io.weldr.mmdebstrap", "options_sha256": "0".repeat(64),
                    "resolved_at": 1, "resolved": {"packages": [p]}}]
    })
    .to_string()
}

#[test]
fn a_lock_round_trips() {
    let text = lock_with(pkg("bash", "5.2.15-2+b7", 'a'));
    let lock = LockFile::parse(text.as_bytes()).unwrap();
    assert_eq!(LockFile::parse(lock.to_text().as_bytes()).unwrap(), lock);
    assert_eq!(
        lock.stage(0).unwrap().resolved.packages[0].file_name(),
        "bash_5.2.15-2+b7_amd64.deb"
    );
    assert!(lock.stage(1).is_none());
}

#[test]
fn hostile_fields_are_refused_by_json_path() {
    type Change = Box<dyn Fn(&mut Package)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|p| p.url = "http://m/pool/../../../etc/passwd.deb".into()),
            ".url",
        ),
        (Box::new(|p| p.url = "http://m/pool/a b.deb".into()), ".url"),
        (Box::new(|p| p.url = "http://m/pool/x.deb\n".into()), ".url"),
        (Box::new(|p| p.url = "ftp://m/pool/x.deb".into()), ".url"),
        (Box::new(|p| p.url = "http://m/pool/..".into()), ".url"),
        (
            Box::new(|p| p.url = "http://m/pool/%2e%2e/%2e%2e/x.deb".into()),
            ".url",
        ),
        (
            Box::new(|p| p.url = "file:///srv/repo/x%2Fy.rpm".into()),
            ".url",
        ),
        (
            Box::new(|p| p.url = "http://m/pool/script.sh".into()),
            ".url",
        ),
        (Box::new(|p| p.url = "http://m/pool/-rf.deb".into()), ".url"),
        (Box::new(|p| p.name = "--force-all".into()), ".name"),
        (Box::new(|p| p.name = "a;b".into()), ".name"),
        (Box::new(|p| p.version = "1 2".into()), ".version"),
        (
            Box::new(|p| p.architecture = "amd64/..".into()),
            ".architecture",
        ),
        (Box::new(|p| p.sha256 = "A".repeat(64)), ".sha256"),
        (Box::new(|p| p.sha256 = "a".repeat(63)), ".sha256"),
    ];
    for (change, field) in cases {
        let mut p = pkg("bash", "5.2", 'a');
        change(&mut p);
        let e = LockFile::parse(lock_with(p.clone()).as_bytes()).unwrap_err();
        assert_eq!(
            e.at,
            format!("stages[0].resolved.packages[0]{field}"),
            "{p:?}: {e}"
        );
    }
}

#[test]
fn a_file_named_twice_and_another_format_are_refused() {
    let r = Resolved {
        repositories: vec![],
        packages: vec![pkg("a", "1", 'a'), pkg("a", "1", 'b')],
    };
    assert_eq!(r.check("x").unwrap_err().at, "x.packages[1].url");
    let text = lock_with(pkg("a", "1", 'a')).replace("\"version\":1", "\"version\":2");
    let e = LockFile::parse(text.as_bytes()).unwrap_err();
    assert_eq!(e.at, "version");
    assert!(e.message.contains("osbuild lock --update"), "{e}");
}

#[test]
fn the_digest_covers_every_package_field() {
    let base = Resolved {
        repositories: vec![],
        packages: vec![pkg("a", "1", 'a')],
    };
    let d = base.digest();
    let mut other = base.clone();
    other.packages[0].size = 11;
    assert_ne!(other.digest(), d);
    let mut other = base.clone();
    other.packages[0].sha256 = "b".repeat(64);
    assert_ne!(other.digest(), d);

    // The repositories' dates say when; they do not change what is installed.
    let mut other = base.clone();
    other.repositories.push(Repository {
        url: "http://m/".into(),
        date: Some("x".into()),
        release_sha256: Some("c".repeat(64)),
        indexes: vec![IndexFile {
            path: "main/binary-amd64/Packages".into(),
            sha256: "d".repeat(64),
        }],
    });
    other.check("x").unwrap();
    assert_eq!(other.digests().count(), 3);
    assert_eq!(other.digest(), d);
}

#[test]
fn a_diff_names_each_package_with_old_and_new_versions() {
    let old = vec![pkg("a", "1", 'a'), pkg("b", "1", 'b'), pkg("c", "1", 'c')];
    let new = vec![pkg("a", "2", 'd'), pkg("c", "1", 'e'), pkg("d", "1", 'f')];
    let shown: Vec<String> = diff(&old, &new).iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            "a (amd64): 1 -> 2",
            "b (amd64): 1 -> (removed)",
            format!(
                "c (amd64): 1 (sha256 {}) -> 1 (sha256 {})",
                "c".repeat(12),
                "e".repeat(12)
            )
            .as_str(),
            "d (amd64): (none) -> 1",
        ]
    );
    assert!(diff(&old, &old).is_empty());
}

#[test]
fn a_hostile_index_path_is_refused() {
    for path in [
        "../../etc/passwd",
        "/etc/passwd",
        "main//Packages",
        "main/Packages\n",
        "",
    ] {
        let r = Resolved {
            repositories: vec![Repository {
                url: "http://m/".into(),
                date: None,
                release_sha256: None,
                indexes: vec![IndexFile {
                    path: path.into(),
                    sha256: "d".repeat(64),
                }],
            }],
            packages: vec![],
        };
        assert_eq!(
            r.check("x").unwrap_err().at,
            "x.repositories[0].indexes[0].path",
            "{path:?}"
        );
    }
}

#[test]
fn stage_references_must_pin_the_same_repository_by_digest() {
    let d = "a".repeat(64);
    let good = format!(
        r#"{{"version": {FORMAT}, "stages": [], "references": {{"oci://r/x:v1": "oci://r/x@sha256:{d}"}}}}"#
    );
    let lock = LockFile::parse(good.as_bytes()).unwrap();
    assert_eq!(
        lock.references["oci://r/x:v1"],
        format!("oci://r/x@sha256:{d}")
    );
    assert_eq!(LockFile::parse(lock.to_text().as_bytes()).unwrap(), lock);
    for pinned in [
        format!("oci://evil/x@sha256:{d}"),
        format!("oci://r/@sha256:{d}"),
        "oci://r/x@sha256:abc".to_string(),
        "oci://r/x:v2".to_string(),
    ] {
        let text = format!(
            r#"{{"version": {FORMAT}, "stages": [], "references": {{"oci://r/x:v1": "{pinned}"}}}}"#
        );
        let e = LockFile::parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.at, "references[\"oci://r/x:v1\"]", "{pinned}");
    }
}
