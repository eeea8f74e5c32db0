use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

const GROUP: &str = "root:x:0:\nsudo:x:27:\nusers:x:100:\nnogroup:x:65534:\n";
const GSHADOW: &str = "root:*::\nsudo:*::\nusers:*::\nnogroup:*::\n";

fn tree(gshadow: bool) -> (tempfile::TempDir, Tree) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("group"), GROUP).unwrap();
    if gshadow {
        std::fs::write(etc.join("gshadow"), GSHADOW).unwrap();
        std::fs::set_permissions(etc.join("gshadow"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
    }
    std::fs::write(etc.join("login.defs"), "GID_MIN 1000\nGID_MAX 60000\n").unwrap();
    let tree = Tree::open(dir.path()).unwrap();
    (dir, tree)
}

fn read(dir: &Path, p: &str) -> String {
    std::fs::read_to_string(dir.join(p)).unwrap()
}

fn opts(json: &str) -> Options {
    osbuild_stage::serde_json::from_str(json).unwrap()
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn adds_groups_in_name_order_with_backups() {
    let (dir, tree) = tree(true);
    run(
        &tree,
        opts(r#"{"groups": {"web": {}, "db": {"gid": 2000}, "app": {}}}"#),
    )
    .unwrap();
    // app first (1000), db with its gid, web above the highest (2001).
    assert_eq!(
        read(dir.path(), "etc/group"),
        format!("{GROUP}app:x:1000:\ndb:x:2000:\nweb:x:2001:\n")
    );
    assert_eq!(
        read(dir.path(), "etc/gshadow"),
        format!("{GSHADOW}app:!::\ndb:!::\nweb:!::\n")
    );
    // The backups hold the files as they were before the last groupadd.
    assert_eq!(
        read(dir.path(), "etc/group-"),
        format!("{GROUP}app:x:1000:\ndb:x:2000:\n")
    );
    assert_eq!(
        read(dir.path(), "etc/gshadow-"),
        format!("{GSHADOW}app:!::\ndb:!::\n")
    );
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("etc/gshadow"), 0o640);
    assert_eq!(mode("etc/gshadow-"), 0o640);
    assert_eq!(mode("etc/group-"), 0o644);
    // The lock file the tools leave behind.
    assert_eq!(mode("etc/.pwd.lock"), 0o600);
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn without_gshadow_only_group_changes() {
    let (dir, tree) = tree(false);
    run(&tree, opts(r#"{"groups": {"web": {}}}"#)).unwrap();
    assert_eq!(
        read(dir.path(), "etc/group"),
        format!("{GROUP}web:x:1000:\n")
    );
    assert!(!dir.path().join("etc/gshadow").exists());
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn refuses_taken_names_and_gids_unless_forced() {
    let (dir, tree) = tree(true);
    let err = run(&tree, opts(r#"{"groups": {"sudo": {}}}"#)).unwrap_err();
    let err = err.downcast_ref::<OptionError>().unwrap();
    assert_eq!(err.option, "groups.sudo");
    assert!(err.message.contains("already exists"), "{}", err.message);

    let err = run(&tree, opts(r#"{"groups": {"web": {"gid": 27}}}"#)).unwrap_err();
    let err = err.downcast_ref::<OptionError>().unwrap();
    assert_eq!(err.option, "groups.web.gid");
    assert!(err.message.contains("group sudo"), "{}", err.message);
    // Nothing was written.
    assert_eq!(read(dir.path(), "etc/group"), GROUP);
    assert!(!dir.path().join("etc/group-").exists());
    assert!(!dir.path().join("etc/.pwd.lock").exists());

    // --force: an existing group is left alone, a taken gid is replaced.
    run(
        &tree,
        opts(r#"{"force": true, "groups": {"sudo": {"gid": 5}, "web": {"gid": 27}}}"#),
    )
    .unwrap();
    assert_eq!(
        read(dir.path(), "etc/group"),
        format!("{GROUP}web:x:1000:\n")
    );
}

#[test]
fn rejects_invalid_names() {
    let (_dir, tree) = tree(true);
    for bad in ["", "-x", "a b", "a:b", ".", "..", &"x".repeat(33)] {
        let json = format!(r#"{{"groups": {{"{bad}": {{}}}}}}"#);
        let err = run(&tree, opts(&json)).unwrap_err();
        assert!(err.downcast_ref::<OptionError>().is_some(), "{bad:?}");
    }
    assert_eq!(invalid_name("a.b_c-d"), None);
    assert_eq!(invalid_name(&"x".repeat(32)), None);
}

#[test]
fn missing_group_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::open(dir.path()).unwrap();
    let err = run(&tree, opts(r#"{"groups": {"web": {}}}"#)).unwrap_err();
    assert!(err.to_string().contains("/etc/group"), "{err}");
}
