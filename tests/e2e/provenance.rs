//! Where an image came from: stages signed with ssh-keygen's keys and
//! held to a policy's `signers`, the SPDX SBOM of the tree, and the SLSA
//! provenance of the build, each checked by the tools people already use:
//! ssh-keygen, pyspdxtools (spdx-tools), in-toto's attestation library and
//! securesystemslib's DSSE verifier (tools/setup installs them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;

/// The Python with the validators in it (tools/setup toolchains).
pub fn validators() -> PathBuf {
    let dir = std::env::var_os("OSBUILD_TOOLCHAINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/osbuild-toolchains"));
    let python = dir.join("validators/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `tools/setup toolchains` (it installs spdx-tools, in-toto-attestation and securesystemslib)",
        python.display()
    );
    python
}

/// Runs a validator; returns (exit code, stdout, stderr).
fn validate(program: &str, args: &[&Path]) -> (i32, String, String) {
    let python = validators();
    let mut cmd = if program == "pyspdxtools" {
        let mut c = Command::new(python.with_file_name("pyspdxtools"));
        c.arg("-i");
        c
    } else {
        let mut c = Command::new(&python);
        c.arg(repo_root().join("tests/validators").join(program));
        c
    };
    let out = cmd.args(args).output().expect("running a validator");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An ed25519 key pair made by ssh-keygen: (private key file, .pub line).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -C {name} -f {}",
        key.display()
    ));
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", key.display())))
        .unwrap();
    (key, public.trim().to_string())
}

fn fingerprint(key: &Path) -> String {
    let out = sh(&format!("ssh-keygen -l -f {}.pub", key.display()));
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// A `--libdir` holding copies of these test stages (and nothing else).
fn libdir_with(dir: &Path, stages: &[&str]) -> PathBuf {
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    for s in stages {
        let src = Path::new(test_stages());
        if src.join(format!("{s}.wasm")).exists() {
            std::fs::copy(src.join(format!("{s}.wasm")), lib.join(format!("{s}.wasm"))).unwrap();
        } else {
            std::fs::copy(src.join(s), lib.join(s)).unwrap();
            std::fs::copy(src.join(format!("{s}.json")), lib.join(format!("{s}.json"))).unwrap();
        }
    }
    lib
}

/// Changes one byte of `path`: the first `from` in it becomes `to`.
fn change_one_byte(path: &Path, from: &[u8], to: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} has no {:?}", path.display(), from));
    bytes[at] = to;
    std::fs::write(path, bytes).unwrap();
}

fn stage_cmd(args: &[&str]) -> Run {
    osbuild(&[&["--store", shared_store().to_str().unwrap()][..], args].concat())
}

/// `osbuild stage sign FILE --key KEY`.
fn sign(file: &Path, key: &Path) -> Run {
    stage_cmd(&[
        "stage",
        "sign",
        file.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
}

/// `osbuild stage verify FILE --key PUB`.
fn verify(file: &Path, public: &str) -> Run {
    stage_cmd(&["stage", "verify", file.to_str().unwrap(), "--key", public])
}

/// The architecture a package's purl names.
pub fn purl_arch(package: &Value) -> String {
    let purl = package["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap();
    purl.split(['?', '&'])
        .find_map(|q| q.strip_prefix("arch="))
        .unwrap()
        .to_string()
}

#[test]
fn keys_osbuild_cannot_use_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir_with(dir.path(), &["test.motd"]);
    let stage = lib.join("test.motd.wasm");
    let before = sha256(&stage);

    let locked = dir.path().join("locked");
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N secret -f {}",
        locked.display()
    ));
    sign(&stage, &locked).fails_with(1, "protected by a passphrase");
    let rsa = dir.path().join("rsa");
    sh(&format!(
        "ssh-keygen -q -t rsa -b 2048 -N '' -f {}",
        rsa.display()
    ));
    let run = sign(&stage, &rsa);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("ed25519") && run.stderr.contains(rsa.to_str().unwrap()),
        "{}",
        run.stderr
    );
    let (team, _) = keygen(dir.path(), "team");
    let team_pub = format!("{}.pub", team.display());
    sign(&stage, Path::new(&team_pub)).fails_with(1, "not an OpenSSH private key");
    verify(&stage, team.to_str().unwrap()).fails_with(1, "a private key; give the public key");
    sign(&stage, Path::new("/dev/zero")).fails_with(1, "not a regular file");
    assert_eq!(
        sha256(&stage),
        before,
        "a refused signing changed the stage"
    );
    verify(&stage, &team_pub).fails_with(1, "it has no signature");

    // A signature section whose lengths lie (a count of 1, then 4 GiB):
    // refused as unreadable before wasmsign2 would allocate what it says.
    let lying = dir.path().join("lying/test.motd.wasm");
    std::fs::create_dir_all(lying.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(&stage).unwrap();
    let section = [
        &[0u8, 19, 9][..],
        b"signature",
        &[0x01, 0x01, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ]
    .concat();
    bytes.splice(8..8, section);
    std::fs::write(&lying, bytes).unwrap();
    verify(&lying, &team_pub).fails_with(1, "its signature cannot be read");
    let audit_dir = lying.parent().unwrap().to_str().unwrap();
    let p = write_pipeline(
        dir.path(),
        "lying.json",
        json!({"pipeline": [{"name": "test.motd", "options": {}}]}),
    );
    let audit = osbuild(&["--libdir", audit_dir, "audit", p.to_str().unwrap()]);
    assert!(
        audit.stdout.contains("signer:   an unreadable signature"),
        "{}{}",
        audit.stdout,
        audit.stderr
    );

    // A native stage whose signature file is a FIFO: refused at once, not
    // waited on.
    let lib2 = libdir_with(&dir.path().join("n"), &["test.native-motd"]);
    let native = lib2.join("test.native-motd");
    sh(&format!("mkfifo {}.sig", native.display()));
    verify(&native, &team_pub).fails_with(1, "not a regular file");
    // A signature file that is a symlink is not followed (it could point
    // at a file only root may read).
    std::fs::remove_file(format!("{}.sig", native.display())).unwrap();
    let elsewhere = dir.path().join("elsewhere.sig");
    std::fs::write(&elsewhere, "-----BEGIN SSH SIGNATURE-----\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, format!("{}.sig", native.display())).unwrap();
    verify(&native, &team_pub).fails_with(1, "its signature:");
}

#[test]
#[ignore = "needs root (builds run nspawn and overlays)"]
fn a_policy_with_signers_runs_only_stages_signed_by_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let lib = libdir_with(dir.path(), &["test.motd", "test.native-motd"]);
    let lib_s = lib.to_str().unwrap();
    let (team, team_line) = keygen(dir.path(), "team");
    let (other, _) = keygen(dir.path(), "other");
    let team_pub = format!("{}.pub", team.display());
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        json!({"signers": {"*": [team_line], "io.weldr.*": ["builtin"]}}).to_string(),
    )
    .unwrap();
    let policy_s = policy.to_str().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "p.json",
        json!({"pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "signed"}},
            {"name": "test.motd", "options": {"text": "wasm\n"}},
            {"name": "test.native-motd", "options": {"text": "native"}},
        ]}),
    );
    let p = pipeline.to_str().unwrap();
    let build = || {
        osbuild(&[
            "--libdir",
            lib_s,
            "--policy",
            policy_s,
            "--output-directory",
            dir.path().to_str().unwrap(),
            p,
        ])
    };

    // Unsigned: refused before anything runs, each stage named.
    let run = build();
    run.fails_with(
        2,
        "stage test.motd refused: policy: is not signed as policy.signers[\"*\"] requires",
    );
    run.fails_with(2, "it has no signature");
    run.fails_with(2, "test.native-motd.sig is missing");
    assert!(
        !run.stderr.contains("io.weldr.hostname refused"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("[1/3]"),
        "a stage ran:\n{}",
        run.stderr
    );

    // Signed by a key the policy does not take: refused, the signer named.
    let wasm = lib.join("test.motd.wasm");
    let native = lib.join("test.native-motd");
    for f in [&wasm, &native] {
        sign(f, &other).ok();
    }
    let run = build();
    run.fails_with(2, &format!("it is signed by {}", fingerprint(&other)));
    assert!(
        run.stderr.contains("stage test.native-motd refused"),
        "{}",
        run.stderr
    );

    // Signed by the team's key: runs, and the audit names the signers.
    for f in [&wasm, &native] {
        sign(f, &team).ok();
        verify(f, &team_pub).ok();
    }
    // ssh-keygen checks the native stage's signature: its executable, a
    // zero byte, its metadata.
    sh(&format!(
        "{{ cat {n}; printf '\\0'; cat {n}.json; }} | ssh-keygen -Y check-novalidate -n osbuild-stage -s {n}.sig",
        n = native.display()
    ));
    build().ok();
    let audit = osbuild(&["--libdir", lib_s, "--policy", policy_s, "audit", p]);
    audit.ok();
    let team_fp = fingerprint(&team);
    assert!(
        audit
            .stdout
            .contains(&format!("signer:   {team_fp} (team)")),
        "{}",
        audit.stdout
    );
    assert_eq!(
        audit
            .stdout
            .matches(&format!("signer:   {team_fp}"))
            .count(),
        2
    );
    assert!(
        audit.stdout.contains("signer:   builtin"),
        "{}",
        audit.stdout
    );
    let audit_json: Value = serde_json::from_str(
        &osbuild(&[
            "--libdir", lib_s, "--policy", policy_s, "audit", "--json", p,
        ])
        .ok()
        .stdout,
    )
    .unwrap();
    assert_eq!(audit_json[0]["signer"], "builtin");
    assert_eq!(audit_json[1]["signer"], format!("{team_fp} (team)"));

    // One byte changed, in the code's metadata or the native metadata
    // file: the signature no longer holds, and the build is refused.
    change_one_byte(&wasm, b"Writes /etc/motd", b'w');
    verify(&wasm, &team_pub).fails_with(1, "not signed by");
    build().fails_with(2, "stage test.motd refused");
    let json_file = lib.join("test.native-motd.json");
    change_one_byte(&json_file, b"Writes /etc/motd", b'w');
    verify(&native, &team_pub).fails_with(1, "does not match its code and metadata");
    build().fails_with(2, "stage test.native-motd refused");
}

/// A small Debian-like tree: dpkg's status with packages in every state,
/// DEP-5 and free-form copyright files, os-release, and traps: a FIFO as a
/// copyright file, a copyright file that is a symlink to a host file.
fn dpkg_tree_archive(dir: &Path, host_file: &Path) -> PathBuf {
    let src = dir.join("tree");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        host_file,
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: host\nLicense: HostSecret\n",
    )
    .unwrap();
    sh(&format!(
        r#"
        cd {src}
        mkdir -p var/lib/dpkg etc usr/share/doc/base-files usr/share/doc/libfoo usr/share/doc/plain usr/share/doc/fifo usr/share/doc/leak
        printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n' > etc/os-release
        cat > var/lib/dpkg/status <<'EOF'
Package: libfoo
Status: install ok installed
Maintainer: Foo Team <foo@lists.example.org>
Architecture: amd64
Multi-Arch: same
Source: foo (1:2.0+dfsg-1)
Version: 1:2.0+dfsg-1+b1
Homepage: https://foo.example.org/
Description: the foo library
 Longer text.

Package: libfoo
Status: install ok installed
Maintainer: Foo Team <foo@lists.example.org>
Architecture: i386
Multi-Arch: same
Version: 1:2.0+dfsg-1+b1
Description: the foo library

Package: base-files
Status: install ok installed
Maintainer: A Person <person@example.org>
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
Description: removed, its configuration kept

Package: plain
Status: install ok installed
Architecture: all
Version: 3
Description: free-form copyright

Package: fifo
Status: install ok installed
Architecture: all
Version: 4
Description: its copyright file is a FIFO

Package: leak
Status: install ok installed
Architecture: all
Version: 5
Description: its copyright file is a symlink to a host file

Package: nobody
Status: install ok installed
Maintainer: <>
Architecture: all
Version: 7
Description: an empty maintainer
EOF
        printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: foo\nLicense: GPL-2+ or Odd-License\n\nLicense: Odd-License\n Use it well.\n' > usr/share/doc/libfoo/copyright
        printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: Debian\nLicense: GPL-2+\n' > usr/share/doc/base-files/copyright
        printf 'This is free software under some terms.\n' > usr/share/doc/plain/copyright
        mkfifo usr/share/doc/fifo/copyright
        ln -s {host} usr/share/doc/leak/copyright
        "#,
        src = src.display(),
        host = host_file.display()
    ));
    let archive = dir.join("tree.tar");
    sh(&format!(
        "tar --numeric-owner -C {} -cf {} .",
        src.display(),
        archive.display()
    ));
    archive
}

/// `(name, version, architecture)` of each package dpkg-query lists with
/// its files in the tree (everything but `config-files`).
pub fn dpkg_query(tree: &Path) -> BTreeSet<(String, String, String)> {
    sh(&format!(
        "dpkg-query --admindir={}/var/lib/dpkg -W -f '${{Package}}\\t${{Version}}\\t${{Architecture}}\\t${{db:Status-Status}}\\n'",
        tree.display()
    ))
    .lines()
    .filter_map(|l| {
        let mut f = l.split('\t');
        let (n, v, a, s) = (f.next()?, f.next()?, f.next()?, f.next()?);
        (s != "config-files" && s != "not-installed")
            .then(|| (n.to_string(), v.to_string(), a.to_string()))
    })
    .collect()
}

/// `(name, version, architecture)` of each Debian package in an SBOM (the
/// architecture from its purl).
pub fn sbom_debs(sbom: &Value) -> BTreeSet<(String, String, String)> {
    sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-deb-"))
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap().to_string(),
                purl_arch(p),
            )
        })
        .collect()
}

/// Checks an SBOM file with pyspdxtools; returns it parsed.
pub fn check_sbom(path: &Path) -> Value {
    let (code, out, err) = validate("pyspdxtools", &[path]);
    assert_eq!(code, 0, "pyspdxtools -i {}:\n{out}\n{err}", path.display());
    assert!(
        !out.contains("ERROR") && !err.contains("ERROR"),
        "pyspdxtools found problems in {}:\n{out}\n{err}",
        path.display()
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Checks a provenance with in-toto's library; returns (sha256, name) of
/// each subject.
pub fn check_provenance(path: &Path) -> BTreeSet<(String, String)> {
    let (code, out, err) = validate("check_provenance.py", &[path]);
    assert_eq!(
        code,
        0,
        "check_provenance.py {}:\n{out}\n{err}",
        path.display()
    );
    out.lines()
        .map(|l| {
            let (d, n) = l.split_once(' ').unwrap();
            (d.to_string(), n.to_string())
        })
        .collect()
}

/// The statement inside a provenance file (an envelope or not).
pub fn statement(path: &Path) -> Value {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    match v.get("payload") {
        Some(p) => {
            let out = sh(&format!("printf %s '{}' | base64 -d", p.as_str().unwrap()));
            serde_json::from_str(&out).unwrap()
        }
        None => v,
    }
}

/// A resolved dependency of a statement, by name.
pub fn dependency<'a>(statement: &'a Value, name: &str) -> &'a Value {
    statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no dependency {name:?} in {statement:#}"))
}

#[test]
#[ignore = "needs root (builds mount overlays)"]
fn sbom_and_provenance_check_out_with_the_validators_and_survive_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host_file = d.join("host-copyright");
    let archive = dpkg_tree_archive(d, &host_file);
    let (team, team_line) = keygen(d, "team");
    let (other, _) = keygen(d, "other");
    let pipeline = write_pipeline(
        d,
        "p.json",
        json!({"name": "Provenance test", "source_epoch": 1700000000, "pipeline": [
            {"name": "io.weldr.hostname", "options": {"hostname": "sbom"}},
        ]}),
    );
    let store = d.join("store");
    let build = |tag: &str| {
        let run = osbuild(&[
            "--store",
            store.to_str().unwrap(),
            "--from",
            archive.to_str().unwrap(),
            "--save",
            d.join(format!("{tag}.tar.gz")).to_str().unwrap(),
            "--sbom",
            d.join(format!("{tag}.spdx.json")).to_str().unwrap(),
            "--provenance",
            d.join(format!("{tag}.intoto.json")).to_str().unwrap(),
            "--provenance-key",
            team.to_str().unwrap(),
            "--json",
            pipeline.to_str().unwrap(),
        ]);
        run.ok();
        serde_json::from_str::<Value>(&run.stdout).unwrap()
    };
    let first = build("a");
    assert_eq!(first["stages"][0]["cached"], false);

    // The SBOM: valid SPDX, the packages dpkg-query lists, nothing from
    // the host, no hang on the FIFO.
    let sbom = check_sbom(&d.join("a.spdx.json"));
    let tree = d.join("a-tree");
    extract(&d.join("a.tar.gz"), &tree);
    let listed = dpkg_query(&tree);
    assert_eq!(sbom_debs(&sbom), listed);
    assert_eq!(listed.len(), 7, "{listed:?}");
    let pkg = |id: &str| {
        sbom["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["SPDXID"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
            .clone()
    };
    let foo = pkg("SPDXRef-deb-libfoo-amd64");
    assert_eq!(
        foo["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/libfoo@1%3A2.0%2Bdfsg-1%2Bb1?arch=amd64&distro=debian-12"
    );
    assert_eq!(
        foo["licenseDeclared"],
        "GPL-2.0-or-later OR LicenseRef-Debian-Odd-License"
    );
    assert_eq!(
        foo["supplier"],
        "Organization: Foo Team (foo@lists.example.org)"
    );
    assert_eq!(
        foo["sourceInfo"],
        "built from the Debian source package foo (1:2.0+dfsg-1)"
    );
    assert_eq!(
        pkg("SPDXRef-deb-base-files-amd64")["supplier"],
        "Person: A Person (person@example.org)"
    );
    assert_eq!(
        pkg("SPDXRef-deb-plain-all")["licenseDeclared"],
        "NOASSERTION"
    );
    assert_eq!(
        pkg("SPDXRef-deb-fifo-all")["licenseDeclared"],
        "NOASSERTION"
    );
    assert_eq!(
        pkg("SPDXRef-deb-leak-all")["licenseDeclared"],
        "NOASSERTION"
    );
    let text = std::fs::read_to_string(d.join("a.spdx.json")).unwrap();
    assert!(
        !text.contains("HostSecret"),
        "the SBOM read a host file through a symlink"
    );
    let odd = sbom["hasExtractedLicensingInfos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["licenseId"] == "LicenseRef-Debian-Odd-License")
        .unwrap();
    assert_eq!(odd["extractedText"], "Use it well.");
    assert_eq!(sbom["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let stage = pkg("SPDXRef-stage-1-io.weldr.hostname");
    assert_eq!(
        stage["comment"],
        "osbuild stage 1 of the pipeline (wasm; signer: builtin)"
    );
    assert_eq!(
        sbom["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["relationshipType"] == "BUILD_TOOL_OF"
                && r["spdxElementId"] == stage["SPDXID"])
            .count(),
        1
    );

    // The provenance: in-toto's library reads it, securesystemslib checks
    // its envelope, its subject is the archive, and osbuild verifies it.
    let prov = d.join("a.intoto.json");
    let subjects = check_provenance(&prov);
    assert_eq!(
        subjects,
        BTreeSet::from([(sha256(&d.join("a.tar.gz")), "a.tar.gz".to_string())])
    );
    let (code, _, err) = validate("check_dsse.py", &[&prov, Path::new(&team_line)]);
    assert_eq!(code, 0, "{err}");
    let other_line = std::fs::read_to_string(format!("{}.pub", other.display())).unwrap();
    let (code, _, _) = validate("check_dsse.py", &[&prov, Path::new(other_line.trim())]);
    assert_ne!(code, 0, "securesystemslib took another key's signature");
    let team_pub = format!("{}.pub", team.display());
    let a_tar = d.join("a.tar.gz");
    osbuild(&[
        "verify-provenance",
        prov.to_str().unwrap(),
        "--key",
        &team_pub,
        "--subject",
        a_tar.to_str().unwrap(),
    ])
    .ok();
    osbuild(&[
        "verify-provenance",
        prov.to_str().unwrap(),
        "--key",
        &team_pub,
        "--subject",
        pipeline.to_str().unwrap(),
    ])
    .fails_with(
        1,
        "is not a subject of this provenance (its subjects: a.tar.gz)",
    );
    osbuild(&[
        "verify-provenance",
        prov.to_str().unwrap(),
        "--key",
        &format!("{}.pub", other.display()),
    ])
    .fails_with(1, "no signature in the envelope is");
    // One byte of the payload changed (a base64 letter for another).
    let tampered = d.join("tampered.json");
    let mut env: Value = serde_json::from_slice(&std::fs::read(&prov).unwrap()).unwrap();
    let mut payload = env["payload"].as_str().unwrap().as_bytes().to_vec();
    payload[40] = if payload[40] == b'A' { b'B' } else { b'A' };
    env["payload"] = Value::String(String::from_utf8(payload).unwrap());
    std::fs::write(&tampered, serde_json::to_vec(&env).unwrap()).unwrap();
    osbuild(&[
        "verify-provenance",
        tampered.to_str().unwrap(),
        "--key",
        &team_pub,
    ])
    .fails_with(1, "no signature in the envelope is");

    let st = statement(&prov);
    let stage_dep = dependency(&st, "stage:1:io.weldr.hostname");
    assert_eq!(stage_dep["annotations"]["signer"], "builtin");
    assert_eq!(stage_dep["annotations"]["kind"], "wasm");
    assert_eq!(
        dependency(&st, "from:tree.tar")["digest"]["sha256"],
        sha256(&archive)
    );
    assert_eq!(
        dependency(&st, "pipeline:p.json")["digest"]["sha256"],
        sha256(&pipeline)
    );
    assert_eq!(
        st["predicate"]["buildDefinition"]["externalParameters"]["pipeline"]["name"],
        "Provenance test"
    );

    // A cached rebuild: the same SBOM bytes, the same subjects and
    // dependencies; the stage now from the cache.
    let second = build("b");
    assert_eq!(second["stages"][0]["cached"], true);
    assert_eq!(
        std::fs::read(d.join("a.spdx.json")).unwrap(),
        std::fs::read(d.join("b.spdx.json")).unwrap(),
        "a cached rebuild's SBOM differs"
    );
    let st_b = statement(&d.join("b.intoto.json"));
    assert_eq!(st_b["subject"][0]["digest"], st["subject"][0]["digest"]);
    assert_eq!(
        st_b["predicate"]["buildDefinition"]["resolvedDependencies"],
        st["predicate"]["buildDefinition"]["resolvedDependencies"]
    );
    let byproduct = |s: &Value| {
        s["predicate"]["runDetails"]["byproducts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "stage:1:io.weldr.hostname")
            .unwrap()["annotations"]["cached"]
            .clone()
    };
    assert_eq!(
        (byproduct(&st), byproduct(&st_b)),
        (json!(false), json!(true))
    );

    // Without a key: the bare statement, which in-toto's library reads.
    let bare = d.join("bare.json");
    osbuild(&[
        "--store",
        store.to_str().unwrap(),
        "--from",
        archive.to_str().unwrap(),
        "--save",
        d.join("c.tar").to_str().unwrap(),
        "--provenance",
        bare.to_str().unwrap(),
        pipeline.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        check_provenance(&bare),
        BTreeSet::from([(sha256(&d.join("c.tar")), "c.tar".to_string())])
    );
    // A source epoch past the year 9999, which no RFC 3339 time can say.
    let far = write_pipeline(
        d,
        "far.json",
        json!({"source_epoch": 9223372036854775807i64, "pipeline": []}),
    );
    osbuild(&[far.to_str().unwrap()]).fails_with(2, "up to the end of the year 9999");
    // No subject to name: refused before anything runs.
    osbuild(&[
        "--provenance",
        bare.to_str().unwrap(),
        pipeline.to_str().unwrap(),
    ])
    .fails_with(2, "a provenance needs a subject");
}

/// The README's example (tests/e2e/boot.rs builds it): `builds` are the
/// SBOM and provenance files (`X.spdx.json`, `X.intoto.json`) of two
/// builds from empty stores and a cached rebuild, which also saved the
/// tree to `tree`.
pub fn check_example(builds: &[PathBuf], image: &Path, tree: &Path) {
    let file = |b: &PathBuf, ext: &str| PathBuf::from(format!("{}.{ext}", b.display()));
    let sbom_bytes: Vec<Vec<u8>> = builds
        .iter()
        .map(|b| std::fs::read(file(b, "spdx.json")).unwrap())
        .collect();
    assert!(
        sbom_bytes.windows(2).all(|w| w[0] == w[1]),
        "the example's SBOMs differ between builds: {builds:?}"
    );
    let sbom = check_sbom(&file(&builds[0], "spdx.json"));
    let dir = tempfile::tempdir().unwrap();
    sh(&format!(
        "tar -C {} -xf {} ./var/lib/dpkg",
        dir.path().display(),
        tree.display()
    ));
    let listed = dpkg_query(dir.path());
    assert!(listed.len() > 100, "{listed:?}");
    assert!(listed.iter().any(|(n, ..)| n == "linux-image-amd64"));
    assert_eq!(sbom_debs(&sbom), listed, "the SBOM and dpkg-query disagree");
    eprintln!(
        "SBOM: {} packages, {} bytes",
        listed.len(),
        sbom_bytes[0].len()
    );

    let image_sha = sha256(image);
    let name = image.file_name().unwrap().to_str().unwrap().to_string();
    let statements: Vec<Value> = builds
        .iter()
        .map(|b| {
            let subjects = check_provenance(&file(b, "intoto.json"));
            assert!(
                subjects.contains(&(image_sha.clone(), name.clone())),
                "{subjects:?} lacks {name} {image_sha}"
            );
            statement(&file(b, "intoto.json"))
        })
        .collect();
    let deps = |s: &Value| s["predicate"]["buildDefinition"]["resolvedDependencies"].clone();
    assert!(
        statements.windows(2).all(|w| deps(&w[0]) == deps(&w[1])),
        "the example's provenance names other inputs in another build"
    );
    // The host tools the native stages ran, with the versions dpkg has.
    for (tool, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("grub-mkimage", "grub-common"),
    ] {
        let dep = dependency(&statements[0], &format!("tool:{tool}"));
        let version = sh(&format!("dpkg-query -W -f '${{Version}}' {package}"));
        assert_eq!(dep["annotations"]["version"], version.as_str(), "{dep:#}");
        assert!(
            dep["annotations"]["package"]
                .as_str()
                .is_some_and(|p| p.starts_with(package)),
            "{dep:#}"
        );
        let path = dep["uri"]
            .as_str()
            .unwrap()
            .strip_prefix("file://")
            .unwrap();
        assert_eq!(dep["digest"]["sha256"], sha256(Path::new(path)), "{dep:#}");
    }
    eprintln!(
        "provenance: {} bytes, {} dependencies",
        std::fs::metadata(file(&builds[0], "intoto.json"))
            .unwrap()
            .len(),
        deps(&statements[0]).as_array().unwrap().len()
    );
}
