use super::*;
use std::path::Path;

fn tree_with(units: &[(&str, &str)]) -> (tempfile::TempDir, Tree) {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::open(dir.path()).unwrap();
    tree.create_dir_all("/usr/lib/systemd/system").unwrap();
    tree.symlink("usr/lib", "/lib").unwrap();
    for (name, text) in units {
        tree.write_str(format!("/usr/lib/systemd/system/{name}"), text)
            .unwrap();
    }
    (dir, tree)
}

fn link(tree: &Tree, path: &str) -> String {
    tree.read_link(path).unwrap().to_string_lossy().into_owned()
}

#[test]
fn enable_wanted_by_alias_and_also() {
    let (_d, tree) = tree_with(&[
        (
            "a.service",
            "[Install]\nWantedBy=multi-user.target\nAlias=b.service\nAlso=a.socket\n",
        ),
        ("a.socket", "[Install]\nWantedBy=sockets.target\n"),
    ]);
    let i = Installer::new(&tree).unwrap();
    i.enable("a").unwrap();
    assert_eq!(
        link(
            &tree,
            "/etc/systemd/system/multi-user.target.wants/a.service"
        ),
        "/usr/lib/systemd/system/a.service"
    );
    assert_eq!(
        link(&tree, "/etc/systemd/system/b.service"),
        "/usr/lib/systemd/system/a.service"
    );
    assert_eq!(
        link(&tree, "/etc/systemd/system/sockets.target.wants/a.socket"),
        "/usr/lib/systemd/system/a.socket"
    );
    // Enabling twice is fine.
    Installer::new(&tree).unwrap().enable("a.service").unwrap();
    Installer::new(&tree).unwrap().disable("a.service").unwrap();
    assert_eq!(
        tree.read_dir("/etc/systemd/system/multi-user.target.wants")
            .unwrap(),
        Vec::<String>::new()
    );
    assert!(!tree.exists("/etc/systemd/system/b.service").unwrap());
    assert!(
        !tree
            .exists("/etc/systemd/system/sockets.target.wants/a.socket")
            .unwrap()
    );
}

#[test]
fn templates_use_default_instance_or_the_given_one() {
    let (_d, tree) = tree_with(&[(
        "getty@.service",
        "[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
    )]);
    let i = Installer::new(&tree).unwrap();
    i.enable("getty@.service").unwrap();
    i.enable("getty@tty2.service").unwrap();
    let wants = "/etc/systemd/system/getty.target.wants";
    assert_eq!(
        tree.read_dir(wants).unwrap(),
        vec!["getty@tty1.service", "getty@tty2.service"]
    );
    assert_eq!(
        link(&tree, &format!("{wants}/getty@tty2.service")),
        "/usr/lib/systemd/system/getty@.service"
    );
    Installer::new(&tree)
        .unwrap()
        .disable("getty@tty2.service")
        .unwrap();
    assert_eq!(tree.read_dir(wants).unwrap(), vec!["getty@tty1.service"]);
}

#[test]
fn follows_the_trees_lib_convention() {
    let (_d, tree) = tree_with(&[("x.service", "[Install]\nWantedBy=multi-user.target\n")]);
    tree.create_dir_all("/etc/systemd/system/multi-user.target.wants")
        .unwrap();
    tree.symlink(
        "/lib/systemd/system/cron.service",
        "/etc/systemd/system/multi-user.target.wants/cron.service",
    )
    .unwrap();
    Installer::new(&tree).unwrap().enable("x.service").unwrap();
    assert_eq!(
        link(
            &tree,
            "/etc/systemd/system/multi-user.target.wants/x.service"
        ),
        "/lib/systemd/system/x.service"
    );
}

#[test]
fn missing_and_masked_units_are_errors() {
    let (_d, tree) = tree_with(&[("a.service", "[Install]\nWantedBy=multi-user.target\n")]);
    let i = Installer::new(&tree).unwrap();
    match i.enable("nope.service") {
        Err(Error::Option(m)) => assert!(m.contains("nope.service does not exist"), "{m}"),
        _ => panic!("expected an error"),
    }
    i.mask("a.service").unwrap();
    assert_eq!(link(&tree, "/etc/systemd/system/a.service"), "/dev/null");
    match Installer::new(&tree).unwrap().enable("a.service") {
        Err(Error::Option(m)) => assert!(m.contains("masked"), "{m}"),
        _ => panic!("expected an error"),
    }
}

#[test]
fn aliases_are_resolved_to_the_real_unit() {
    let (_d, tree) = tree_with(&[(
        "ssh.service",
        "[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n",
    )]);
    tree.symlink("ssh.service", "/usr/lib/systemd/system/sshd.service")
        .unwrap();
    Installer::new(&tree).unwrap().enable("sshd").unwrap();
    assert_eq!(
        link(
            &tree,
            "/etc/systemd/system/multi-user.target.wants/ssh.service"
        ),
        "/usr/lib/systemd/system/ssh.service"
    );
    assert_eq!(
        link(&tree, "/etc/systemd/system/sshd.service"),
        "/usr/lib/systemd/system/ssh.service"
    );
}

#[test]
fn set_default_replaces_the_link() {
    let (_d, tree) = tree_with(&[("multi-user.target", ""), ("graphical.target", "")]);
    let i = Installer::new(&tree).unwrap();
    i.set_default("graphical.target").unwrap();
    i.set_default("multi-user").unwrap();
    assert_eq!(
        link(&tree, "/etc/systemd/system/default.target"),
        "/usr/lib/systemd/system/multi-user.target"
    );
    assert!(matches!(
        i.set_default("nope.target"),
        Err(Error::Option(_))
    ));
    assert!(Path::new("/").exists());
}
