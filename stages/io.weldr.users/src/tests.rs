use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/bash\nmessagebus:x:101:103::/nonexistent:/usr/sbin/nologin\n";
const SHADOW: &str = "root:*:19675:0:99999:7:::\nmessagebus:!:19675::::::\n";
const GROUP: &str =
    "root:x:0:\nmail:x:8:\nsudo:x:27:\nusers:x:100:\nmessagebus:x:103:\nnogroup:x:65534:\n";
const GSHADOW: &str = "root:*::\nmail:*::\nsudo:*::\nusers:*::\nmessagebus:!::\nnogroup:*::\n";
const DEFS: &str = "UMASK 022\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\nUID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\n";
const DAY: Option<i64> = Some(19675);

struct Fixture {
    dir: tempfile::TempDir,
    tree: Tree,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["etc/skel/.config", "etc/default", "home", "var/mail"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        let files = [
            ("etc/passwd", PASSWD, 0o644),
            ("etc/shadow", SHADOW, 0o640),
            ("etc/group", GROUP, 0o644),
            ("etc/gshadow", GSHADOW, 0o640),
            ("etc/subuid", "", 0o644),
            ("etc/subgid", "", 0o644),
            ("etc/login.defs", DEFS, 0o644),
            ("etc/default/useradd", "SHELL=/bin/sh\n", 0o644),
            ("etc/skel/.profile", "# profile\n", 0o644),
            ("etc/skel/.secret", "s\n", 0o600),
            ("etc/skel/.config/app", "a\n", 0o640),
        ];
        for (f, text, mode) in files {
            std::fs::write(p.join(f), text).unwrap();
            std::fs::set_permissions(p.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::chown(p.join("etc/shadow"), Some(0), Some(42)).unwrap();
        std::os::unix::fs::symlink("/etc/skel/.profile", p.join("etc/skel/.link")).unwrap();
        let tree = Tree::open(p).unwrap();
        Fixture { dir, tree }
    }

    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(f)).unwrap()
    }

    fn meta(&self, f: &str) -> (u32, u32, u32) {
        let m = std::fs::symlink_metadata(self.dir.path().join(f)).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    }

    fn run(&self, json: &str) -> anyhow::Result<()> {
        run_on(&self.tree, serde_json::from_str(json).unwrap(), DAY)
    }

    fn err(&self, json: &str) -> OptionError {
        let e = self.run(json).unwrap_err();
        e.downcast_ref::<OptionError>()
            .unwrap_or_else(|| panic!("not an option error: {e:#}"))
            .clone()
    }
}

use osbuild_stage::serde_json;

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn adds_a_user_like_useradd() {
    let f = Fixture::new();
    f.run(r#"{"users": {"alice": {}}}"#).unwrap();
    assert_eq!(
        f.read("etc/passwd"),
        format!("{PASSWD}alice:x:1000:1000::/home/alice:/bin/sh\n")
    );
    assert_eq!(
        f.read("etc/shadow"),
        format!("{SHADOW}alice:!:19675:0:99999:7:::\n")
    );
    assert_eq!(f.read("etc/group"), format!("{GROUP}alice:x:1000:\n"));
    assert_eq!(f.read("etc/gshadow"), format!("{GSHADOW}alice:!::\n"));
    assert_eq!(f.read("etc/subuid"), "alice:100000:65536\n");
    assert_eq!(f.read("etc/subgid"), "alice:100000:65536\n");
    // Backups of the previous contents, with the original owner and mode.
    assert_eq!(f.read("etc/passwd-"), PASSWD);
    assert_eq!(f.read("etc/shadow-"), SHADOW);
    assert_eq!(f.meta("etc/shadow"), (0o640, 0, 42));
    assert_eq!(f.meta("etc/shadow-"), (0o640, 0, 42));
    assert_eq!(f.meta("etc/.pwd.lock"), (0o600, 0, 0));
    // Without CREATE_HOME (Debian) and without keys: no home.
    assert!(!f.dir.path().join("home/alice").exists());
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn all_options_and_home_from_skel() {
    let f = Fixture::new();
    f.run(
        r#"{"users": {"bob": {"uid": 1500, "groups": ["sudo", "users"], "description": "Bob B",
            "home": "/srv/people/bob", "shell": "/bin/bash", "password": "$6$salt$hash",
            "expiredate": 20000, "keys": ["ssh-ed25519 AAAA one"], "key": "ssh-rsa BBBB two"}}}"#,
    )
    .unwrap();
    assert!(
        f.read("etc/passwd")
            .ends_with("bob:x:1500:1500:Bob B:/srv/people/bob:/bin/bash\n")
    );
    assert!(
        f.read("etc/shadow")
            .ends_with("bob:$6$salt$hash:19675:0:99999:7::20000:\n")
    );
    let group = f.read("etc/group");
    assert!(group.contains("sudo:x:27:bob\n") && group.contains("users:x:100:bob\n"));
    assert!(group.ends_with("bob:x:1500:\n"));
    assert!(f.read("etc/gshadow").contains("sudo:*::bob\n"));
    assert_eq!(f.meta("srv/people"), (0o755, 0, 0));
    assert_eq!(f.meta("srv/people/bob"), (0o755, 1500, 1500));
    assert_eq!(f.meta("srv/people/bob/.profile"), (0o644, 1500, 1500));
    assert_eq!(f.meta("srv/people/bob/.secret"), (0o600, 1500, 1500));
    assert_eq!(f.meta("srv/people/bob/.config"), (0o755, 1500, 1500));
    assert_eq!(f.meta("srv/people/bob/.config/app"), (0o640, 1500, 1500));
    // A link into the skeleton now points into the home.
    assert_eq!(
        std::fs::read_link(f.dir.path().join("srv/people/bob/.link")).unwrap(),
        Path::new("/srv/people/bob/.profile")
    );
    assert_eq!(f.meta("srv/people/bob/.ssh"), (0o700, 1500, 1500));
    assert_eq!(
        f.meta("srv/people/bob/.ssh/authorized_keys"),
        (0o600, 1500, 1500)
    );
    assert_eq!(
        f.read("srv/people/bob/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA one\nssh-rsa BBBB two\n"
    );
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn allocates_ids_in_name_order_and_skips_taken_gids() {
    let f = Fixture::new();
    // "carol" sorts after "bob"; bob's uid 1001 makes carol 1002; group
    // 1002 is taken by "web", so carol's group gets 1003.
    std::fs::write(
        f.dir.path().join("etc/group"),
        format!("{GROUP}web:x:1002:\n"),
    )
    .unwrap();
    f.run(r#"{"users": {"carol": {}, "bob": {"uid": 1001}}}"#)
        .unwrap();
    let passwd = f.read("etc/passwd");
    assert!(passwd.contains("bob:x:1001:1001:"), "{passwd}");
    assert!(passwd.contains("carol:x:1002:1003:"), "{passwd}");
    assert_eq!(
        f.read("etc/subuid"),
        "bob:100000:65536\ncarol:165536:65536\n"
    );
    // The backups hold the state before the last useradd (carol's).
    assert!(
        f.read("etc/passwd-")
            .ends_with("bob:x:1001:1001::/home/bob:/bin/sh\n")
    );
    assert_eq!(f.read("etc/subuid-"), "bob:100000:65536\n");
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn primary_group_without_private_group() {
    let f = Fixture::new();
    f.run(r#"{"users": {"dave": {"gid": 100, "uid": 500}}}"#)
        .unwrap();
    assert!(
        f.read("etc/passwd")
            .ends_with("dave:x:500:100::/home/dave:/bin/sh\n")
    );
    assert_eq!(f.read("etc/group"), GROUP);
    // The group files were not changed, so they have no backups.
    assert!(!f.dir.path().join("etc/group-").exists());
    // A uid outside UID_MIN..UID_MAX gets no subordinate ids.
    assert_eq!(f.read("etc/subuid"), "");
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn bad_inputs_name_the_option() {
    let f = Fixture::new();
    let e = f.err(r#"{"users": {"alice": {"groups": ["sudo", "nosuch"]}}}"#);
    assert_eq!(e.option, "users.alice.groups[1]");
    assert!(e.message.contains("nosuch"), "{}", e.message);
    let e = f.err(r#"{"users": {"alice": {"uid": 101}}}"#);
    assert_eq!(e.option, "users.alice.uid");
    assert!(e.message.contains("messagebus"), "{}", e.message);
    let e = f.err(r#"{"users": {"alice": {"gid": 4242}}}"#);
    assert_eq!(e.option, "users.alice.gid");
    let e = f.err(r#"{"users": {"sudo": {}}}"#);
    assert_eq!(e.option, "users.sudo");
    assert!(e.message.contains("gid 27"), "{}", e.message);
    let e = f.err(r#"{"users": {"root": {"uid": 5}}}"#);
    assert_eq!(e.option, "users.root.uid");
    for (json, option) in [
        (r#"{"users": {"a:b": {}}}"#, "users.a:b"),
        (r#"{"users": {"..": {}}}"#, "users..."),
        (r#"{"users": {"a": {"home": "rel/dir"}}}"#, "users.a.home"),
        (
            r#"{"users": {"a": {"description": "x:y"}}}"#,
            "users.a.description",
        ),
        (
            r#"{"users": {"a": {"keys": ["k1\nk2"]}}}"#,
            "users.a.keys[0]",
        ),
        (
            r#"{"users": {"a": {"home": "", "key": "k"}}}"#,
            "users.a.key",
        ),
    ] {
        assert_eq!(f.err(json).option, option, "{json}");
    }
    std::fs::remove_file(f.dir.path().join("etc/shadow")).unwrap();
    let f2 = Fixture {
        tree: Tree::open(f.dir.path()).unwrap(),
        dir: f.dir,
    };
    let e = f2.err(r#"{"users": {"alice": {"expiredate": 20000}}}"#);
    assert_eq!(e.option, "users.alice.expiredate");
    // Nothing was written by the failed runs.
    assert_eq!(f2.read("etc/passwd"), PASSWD);
    assert!(!f2.dir.path().join("etc/passwd-").exists());
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn modifies_existing_users_like_usermod() {
    let f = Fixture::new();
    f.run(r#"{"users": {"alice": {"groups": ["sudo", "users"]}}}"#)
        .unwrap();
    let passwd_backup = f.read("etc/passwd-");
    // Replacing the supplementary groups only touches the group files.
    f.run(r#"{"users": {"alice": {"groups": ["users", "mail"]}}}"#)
        .unwrap();
    let group = f.read("etc/group");
    assert!(
        group.contains("sudo:x:27:\n") && group.contains("mail:x:8:alice\n"),
        "{group}"
    );
    assert!(f.read("etc/gshadow").contains("sudo:*::\n"));
    assert_eq!(f.read("etc/passwd-"), passwd_backup);
    // Options equal to the current values change nothing at all.
    let before = f.read("etc/group-");
    f.run(r#"{"users": {"alice": {"shell": "/bin/sh", "uid": 1000, "description": ""}}}"#)
        .unwrap();
    assert_eq!(f.read("etc/group-"), before);
    assert_eq!(f.read("etc/passwd-"), passwd_backup);
    // A password sets the last-change day; an expiry date alone only
    // rewrites /etc/shadow.
    f.run(r#"{"users": {"messagebus": {"password": "$6$x", "expiredate": 21000}}}"#)
        .unwrap();
    assert!(
        f.read("etc/shadow")
            .contains("messagebus:$6$x:19675:::::21000:\n")
    );
    assert!(
        f.read("etc/passwd")
            .contains("messagebus:x:101:103::/nonexistent:")
    );
    // A modified system user does not get its /nonexistent home created.
    assert!(!f.dir.path().join("nonexistent").exists());
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn usermod_gid_reowns_the_home_and_home_is_created() {
    let f = Fixture::new();
    f.run(r#"{"users": {"erin": {"home": "/home/erin"}}}"#)
        .unwrap();
    assert_eq!(f.meta("home/erin/.profile"), (0o644, 1000, 1000));
    f.run(r#"{"users": {"erin": {"gid": 100}}}"#).unwrap();
    assert_eq!(f.meta("home/erin"), (0o755, 1000, 100));
    assert_eq!(f.meta("home/erin/.config/app"), (0o640, 1000, 100));
    assert_eq!(f.meta("home/erin/.link").1, 1000);
    assert_eq!(f.meta("home/erin/.link").2, 100);
    // A new home for an existing user is made as mkhomedir_helper makes it.
    f.run(r#"{"users": {"messagebus": {"home": "/var/lib/mb"}}}"#)
        .unwrap();
    assert_eq!(f.meta("var/lib/mb"), (0o755, 101, 103));
    // (0600 | 0222) & ~022
    assert_eq!(f.meta("var/lib/mb/.secret"), (0o600, 101, 103));
    // Subdirectories 0755, files (0640 | 0222) & ~022.
    assert_eq!(f.meta("var/lib/mb/.config"), (0o755, 101, 103));
    assert_eq!(f.meta("var/lib/mb/.config/app"), (0o640, 101, 103));
    assert_eq!(
        std::fs::read_link(f.dir.path().join("var/lib/mb/.link")).unwrap(),
        Path::new("/etc/skel/.profile")
    );
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn keys_are_appended_and_passwords_expired() {
    let f = Fixture::new();
    f.run(r#"{"users": {"root": {"key": "ssh-ed25519 AAAA root"}}}"#)
        .unwrap();
    // /root did not exist in the fixture: it is created for the keys.
    assert_eq!(f.meta("root/.ssh/authorized_keys"), (0o600, 0, 0));
    std::fs::write(f.dir.path().join("root/.ssh/authorized_keys"), "old").unwrap();
    f.run(r#"{"users": {"root": {"keys": ["k2", "k3"], "force_password_reset": true}}}"#)
        .unwrap();
    assert_eq!(f.read("root/.ssh/authorized_keys"), "old\nk2\nk3\n");
    assert!(f.read("etc/shadow").starts_with("root:*:0:0:99999:7:::\n"));
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn mail_spool_and_useradd_defaults() {
    let f = Fixture::new();
    std::fs::write(
        f.dir.path().join("etc/default/useradd"),
        "SHELL=/bin/zsh\nHOME=/srv/h\nINACTIVE=5\nEXPIRE=2030-01-02\nCREATE_MAIL_SPOOL=yes\nGROUP=27\n",
    )
    .unwrap();
    std::fs::write(
        f.dir.path().join("etc/login.defs"),
        DEFS.replace("USERGROUPS_ENAB yes", "CREATE_HOME yes\nUMASK 027"),
    )
    .unwrap();
    f.run(r#"{"users": {"dd": {}}}"#).unwrap();
    assert!(
        f.read("etc/passwd")
            .ends_with("dd:x:1000:27::/srv/h/dd:/bin/zsh\n")
    );
    assert!(
        f.read("etc/shadow")
            .ends_with("dd:!:19675:0:99999:7:5:21916:\n")
    );
    assert_eq!(f.meta("srv/h/dd"), (0o750, 1000, 27));
    assert_eq!(f.meta("var/mail/dd"), (0o660, 1000, 8));
    assert_eq!(f.read("etc/group"), GROUP);
}
