use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::*;
use osbuild_stage::serde_json::{self, json};

fn tree() -> (tempfile::TempDir, Tree) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nwww-data:x:33:\nadm:x:4:\n").unwrap();
    let tree = Tree::open(dir.path()).unwrap();
    (dir, tree)
}

fn options(v: Value) -> Options {
    serde_json::from_value(v).unwrap()
}

fn stat(root: &Path, p: &str) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(root.join(p.trim_start_matches('/'))).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn option_of(err: anyhow::Error) -> String {
    err.downcast_ref::<OptionError>()
        .unwrap_or_else(|| panic!("not an option error: {err:#}"))
        .option
        .clone()
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn all_operations() {
    let (dir, tree) = tree();
    let root = dir.path();
    std::fs::create_dir_all(root.join("var/cache/old/sub")).unwrap();
    std::fs::write(root.join("var/cache/old/sub/f"), "x").unwrap();
    run(
        &tree,
        options(json!({
            "remove": ["/var/cache/old", "/does/not/exist"],
            "mkdir": [
                {"path": "/srv/www/html", "parents": true, "mode": "0750", "user": "www-data", "group": "www-data"},
                {"path": "/var/spool/drop", "mode": 1023, "parents": true},
                {"path": "/etc", "exist_ok": true}
            ],
            "write": [
                {"path": "/srv/www/html/index.html", "content": "<h1>hi</h1>\n", "user": 33, "group": "adm", "mode": "0640"},
                {"path": "/etc/motd", "content": "welcome\n"}
            ],
            "symlink": [
                {"target": "../srv/www/html/index.html", "link_name": "/etc/index.html"},
                {"target": "/srv/www", "link_name": "/var/www"}
            ],
            "chown": {"/etc/motd": {"group": "adm"}},
            "chmod": {"/etc/motd": {"mode": "u+x,go-r"}, "/srv/www": {"mode": "a+rX", "recursive": true}}
        })),
    )
    .unwrap();
    assert!(!root.join("var/cache/old").exists());
    assert_eq!(stat(root, "/srv/www/html"), (0o755, 33, 33)); // a+rX made it 0755
    assert_eq!(stat(root, "/srv/www"), (0o755, 0, 0));
    assert_eq!(stat(root, "/var/spool/drop"), (0o1777, 0, 0));
    assert_eq!(stat(root, "/srv/www/html/index.html"), (0o644, 33, 4)); // a+rX on 0640
    assert_eq!(
        std::fs::read_to_string(root.join("srv/www/html/index.html")).unwrap(),
        "<h1>hi</h1>\n"
    );
    assert_eq!(stat(root, "/etc/motd"), (0o700, 0, 4));
    assert_eq!(
        std::fs::read_link(root.join("etc/index.html")).unwrap(),
        Path::new("../srv/www/html/index.html")
    );
    assert_eq!(
        std::fs::read_link(root.join("var/www")).unwrap(),
        Path::new("/srv/www")
    );
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn rewriting_keeps_mode_and_owner_unless_given() {
    let (dir, tree) = tree();
    let root = dir.path();
    std::fs::write(root.join("etc/conf"), "old").unwrap();
    std::os::unix::fs::chown(root.join("etc/conf"), Some(33), Some(33)).unwrap();
    std::fs::set_permissions(
        root.join("etc/conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    run(
        &tree,
        options(json!({"write": [{"path": "/etc/conf", "content": "new"}]})),
    )
    .unwrap();
    assert_eq!(stat(root, "/etc/conf"), (0o600, 33, 33));
    run(
        &tree,
        options(json!({"write": [{"path": "/etc/conf", "content": "new", "user": "root", "mode": 420}]})),
    )
    .unwrap();
    assert_eq!(stat(root, "/etc/conf"), (0o644, 0, 33));
    // An identical symlink is accepted again.
    let link = json!({"symlink": [{"target": "conf", "link_name": "/etc/link"}]});
    run(&tree, options(link.clone())).unwrap();
    run(&tree, options(link)).unwrap();
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn recursive_chown_does_not_follow_symlinks() {
    let (dir, tree) = tree();
    let root = dir.path();
    std::fs::create_dir_all(root.join("srv/app")).unwrap();
    std::fs::write(root.join("srv/app/f"), "").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("srv/app/l")).unwrap();
    run(
        &tree,
        options(json!({"chown": {"/srv/app": {"user": "www-data", "group": "www-data", "recursive": true}}})),
    )
    .unwrap();
    assert_eq!(stat(root, "/srv/app").1, 33);
    assert_eq!(stat(root, "/srv/app/f").1, 33);
    assert_eq!(stat(root, "/srv/app/l").1, 33);
    assert_eq!(stat(root, "/etc/passwd").1, 0);
}

#[test]
fn escapes_and_bad_input_name_the_option() {
    let (dir, tree) = tree();
    let cases = [
        (
            json!({"write": [{"path": "/../../outside", "content": "x"}]}),
            "write[0].path",
        ),
        (
            json!({"write": [{"path": "/etc/../../x", "content": "x"}]}),
            "write[0].path",
        ),
        (
            json!({"write": [{"path": "etc/x", "content": "x"}]}),
            "write[0].path",
        ),
        (json!({"mkdir": [{"path": "/a/.."}]}), "mkdir[0].path"),
        (json!({"remove": ["/"]}), "remove[0]"),
        (json!({"remove": ["/etc/../.."]}), "remove[0]"),
        (
            json!({"symlink": [{"target": "../../../../etc/shadow", "link_name": "/etc/x"}]}),
            "symlink[0].target",
        ),
        (
            json!({"symlink": [{"target": "x", "link_name": "/../x"}]}),
            "symlink[0].link_name",
        ),
        (json!({"chmod": {"/../x": {"mode": "0755"}}}), "chmod./../x"),
        (
            json!({"chmod": {"/etc": {"mode": "u+q"}}}),
            "chmod./etc.mode",
        ),
        (json!({"chmod": {"/nope": {"mode": "0755"}}}), "chmod./nope"),
        (
            json!({"chown": {"/etc": {"user": "nobody-here"}}}),
            "chown./etc.user",
        ),
        (
            json!({"chown": {"/etc": {"group": "nogroup-here"}}}),
            "chown./etc.group",
        ),
        (json!({"chown": {"/etc": {}}}), "chown./etc"),
        (json!({"mkdir": [{"path": "/etc"}]}), "mkdir[0].path"),
        (json!({"mkdir": [{"path": "/x/y"}]}), "mkdir[0].path"),
        (
            json!({"mkdir": [{"path": "/x", "mode": "0999"}]}),
            "mkdir[0].mode",
        ),
        (
            json!({"write": [{"path": "/nodir/f", "content": ""}]}),
            "write[0].path",
        ),
        (
            json!({"write": [{"path": "/etc", "content": ""}]}),
            "write[0].path",
        ),
        (
            json!({"symlink": [{"target": "x", "link_name": "/etc/passwd"}]}),
            "symlink[0].link_name",
        ),
    ];
    for (v, option) in cases {
        let err = run(&tree, options(v.clone())).unwrap_err();
        assert_eq!(option_of(err), option, "{v}");
    }
    // Nothing escaped.
    assert!(!dir.path().parent().unwrap().join("outside").exists());
    // A link to the root from the top is fine; one more `..` is not.
    check_target("t", "/etc/x", "../").unwrap();
    assert!(check_target("t", "/etc/x", "../..").is_err());
    assert!(check_target("t", "/x", "..").is_err());
    check_target("t", "/x", "/usr/../etc").unwrap();
}
