use super::*;

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn one_api_over_a_host_directory() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::open(dir.path()).unwrap();
    tree.create_dir_all("/etc/systemd/system").unwrap();
    tree.write_str("etc/hostname", "box\n").unwrap();
    assert_eq!(tree.read_to_string("/etc/hostname").unwrap(), "box\n");
    tree.symlink("/etc/hostname", "/etc/name").unwrap();
    assert_eq!(tree.read_to_string("/etc/name").unwrap(), "box\n");
    assert_eq!(
        tree.read_link("/etc/name").unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        tree.read_dir("/etc").unwrap(),
        vec!["hostname", "name", "systemd"]
    );
    assert!(tree.symlink_metadata("/etc/name").unwrap().is_symlink());
    assert_eq!(tree.read_optional("/etc/nothing").unwrap(), None);
    let err = tree.read("/etc/nothing").unwrap_err();
    assert!(err.to_string().starts_with("/etc/nothing: "), "{err}");
    tree.write_with("/etc/shadow", b"", 0o640, 0, 42).unwrap();
    let m = tree.metadata("/etc/shadow").unwrap();
    assert_eq!((m.mode, m.gid), (0o640, 42));
    tree.remove_all("/etc").unwrap();
    assert!(!tree.exists("/etc").unwrap());
}
