use super::*;

/// This machine image's own configuration: deb822 only, no sources.list.
const MACHINE: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

const NODESOURCE: &str = "\
Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/nodesource.gpg
";

fn deb822(text: &str) -> Vec<Source> {
    parse_deb822("/etc/apt/sources.list.d/debian.sources", text)
}

fn one_line(text: &str) -> Vec<Source> {
    parse_one_line("/etc/apt/sources.list", text)
}

#[test]
fn deb822_only_as_on_this_machine_image() {
    let s = deb822(MACHINE);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
    assert_eq!(
        mirror(&s, "bookworm", None).unwrap(),
        "http://deb.debian.org/debian"
    );
    assert!(!has_suite(&s, "bookworm-backports"));
    let added = backports_source(&s, "bookworm").unwrap().unwrap();
    assert!(
        added.contains("\nURIs: http://deb.debian.org/debian\n"),
        "{added}"
    );
    assert!(added.contains("\nSuites: bookworm-backports\n"), "{added}");
    assert!(
        added.contains("\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        "{added}"
    );
    // What it writes is read back as the backports entry, so a second run adds nothing.
    let mut again = s.clone();
    again.extend(parse_deb822("osbuild-backports.sources", &added));
    assert_eq!(backports_source(&again, "bookworm").unwrap(), None);
}

#[test]
fn one_line_sources_list_only() {
    let s = one_line(
        "# comment\n\
         deb http://ftp.de.debian.org/debian bookworm main contrib\n\
         deb-src http://ftp.de.debian.org/debian bookworm main\n\
         deb http://security.debian.org/debian-security bookworm-security main\n",
    );
    assert_eq!(s.len(), 3);
    assert_eq!(
        mirror(&s, "bookworm", None).unwrap(),
        "http://ftp.de.debian.org/debian"
    );
    assert_eq!(s[0].components, ["main", "contrib"]);
}

#[test]
fn one_line_options_signed_by_and_arch() {
    for line in [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] https://mirror.example/debian bookworm main",
        "deb [ arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg ] https://mirror.example/debian bookworm main",
        "deb [arch=amd64,i386 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] https://mirror.example/debian bookworm main # trailing",
    ] {
        let s = one_line(line);
        assert_eq!(s.len(), 1, "{line}");
        assert_eq!(
            mirror(&s, "bookworm", None).unwrap(),
            "https://mirror.example/debian",
            "{line}"
        );
        let added = backports_source(&s, "bookworm").unwrap().unwrap();
        assert!(
            added.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
            "{line}: {added}"
        );
    }
    // An unterminated option list is rejected by apt; it is skipped here.
    assert!(one_line("deb [arch=amd64 http://x/debian bookworm main").is_empty());
}

#[test]
fn both_files_and_third_party_repositories() {
    let mut s = deb822(NODESOURCE);
    s.extend(one_line(
        "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
    ));
    s.extend(one_line("deb http://mirror.example/debian bookworm main\n"));
    s.extend(deb822(MACHINE));
    // The first entry that serves bookworm, not the first entry.
    assert_eq!(
        mirror(&s, "bookworm", None).unwrap(),
        "http://mirror.example/debian"
    );
    // No Debian archive at all: an error that lists what it saw and the fix.
    let err = mirror(&s[..2], "bookworm", None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no Debian archive serving bookworm"),
        "{text}"
    );
    assert!(
        text.contains("deb.nodesource.com/node_20.x nodistro"),
        "{text}"
    );
    assert!(
        text.contains("URIs: http://deb.debian.org/debian"),
        "{text}"
    );
}

#[test]
fn a_mirror_path_that_is_not_slash_debian() {
    let s = deb822(
        "Types: deb\nURIs: https://mirror.example.org/pub/linux/deb/\nSuites: bookworm\nComponents: main\n",
    );
    assert_eq!(
        mirror(&s, "bookworm", None).unwrap(),
        "https://mirror.example.org/pub/linux/deb/"
    );
}

#[test]
fn another_release_from_the_hosts_archive() {
    let s = deb822(MACHINE);
    // trixie is not configured, but the archive serving bookworm has it.
    assert_eq!(
        mirror(&s, "trixie", Some("bookworm")).unwrap(),
        "http://deb.debian.org/debian"
    );
    // Without the host's release, only suites it can relate count.
    assert!(mirror(&s, "trixie", None).is_err());
    // Only updates configured: still the archive.
    let updates = deb822("Types: deb\nURIs: http://m.example/debian\nSuites: bookworm-updates\n");
    assert_eq!(
        mirror(&updates, "bookworm", None).unwrap(),
        "http://m.example/debian"
    );
}

#[test]
fn backports_already_configured_either_way() {
    let mut s = deb822(MACHINE);
    s.extend(one_line(
        "deb http://deb.debian.org/debian bookworm-backports main\n",
    ));
    assert_eq!(backports_source(&s, "bookworm").unwrap(), None);
    let s = deb822(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates bookworm-backports\nComponents: main\n",
    );
    assert_eq!(backports_source(&s, "bookworm").unwrap(), None);
    // A disabled backports stanza does not count.
    let mut s = deb822(MACHINE);
    s.extend(deb822(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nEnabled: no\n",
    ));
    assert!(backports_source(&s, "bookworm").unwrap().is_some());
}

#[test]
fn deb822_details() {
    // Field names in any case, several URIs, continuation lines, an inline key.
    let s = deb822(
        "types: deb deb-src\n\
         uris: ftp://old.example/debian\n  http://a.example/debian\n\
         suites: bookworm\n\
         components: main\n\
         signed-by:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----\n",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].uris.len(), 2);
    assert_eq!(
        mirror(&s, "bookworm", None).unwrap(),
        "http://a.example/debian"
    );
    let added = backports_source(&s, "bookworm").unwrap().unwrap();
    assert!(
        added.contains("Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n"),
        "{added}"
    );
    // The inline key reads back as one field.
    let back = parse_deb822("x.sources", &added);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].suites, ["bookworm-backports"]);
    // deb-src only, or a stanza without URIs, is no binary archive.
    let src = deb822(
        "Types: deb-src\nURIs: http://a.example/debian\nSuites: bookworm\n\nTypes: deb\nSuites: bookworm\n",
    );
    assert!(mirror(&src, "bookworm", None).is_err());
}

#[test]
fn qemu_from_the_suite_of_qemu_utils() {
    assert_eq!(
        qemu_suite("1:10.0.2+ds-2+deb13u1~bpo12+1", "bookworm").as_deref(),
        Some("bookworm-backports")
    );
    assert_eq!(qemu_suite("1:7.2+dfsg-7+deb12u7", "bookworm"), None);
}

#[test]
fn reads_files_the_way_apt_does() {
    let root = std::env::temp_dir().join(format!("apt-sources-test-{}", std::process::id()));
    let d = root.join("etc/apt/sources.list.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("debian.sources"), MACHINE).unwrap();
    fs::write(d.join("nodesource.sources.disabled-by-farm"), NODESOURCE).unwrap();
    fs::write(
        d.join("other.list"),
        "deb http://o.example/debian bookworm-backports main\n",
    )
    .unwrap();
    fs::write(
        d.join("notes.txt"),
        "deb http://t.example/debian bookworm main\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_CODENAME=bookworm\n",
    )
    .unwrap();
    let s = read(&root).unwrap();
    let files: Vec<&str> = s
        .iter()
        .map(|s| s.file.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(files, ["debian.sources", "debian.sources", "other.list"]);
    assert_eq!(codename(&root).as_deref(), Some("bookworm"));
    assert_eq!(backports_source(&s, "bookworm").unwrap(), None);
    fs::remove_dir_all(&root).unwrap();
    // Nothing configured at all reads as no sources, not an error.
    assert_eq!(read(&root).unwrap(), Vec::<Source>::new());
}
