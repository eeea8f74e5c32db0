use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn tree() -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::open(dir.path()).unwrap();
    (dir, root)
}

#[test]
fn absolute_symlink_resolves_inside_the_tree() {
    let (dir, root) = tree();
    root.create_dir_all(Path::new("/usr/share/zoneinfo/Etc"))
        .unwrap();
    root.write(Path::new("/usr/share/zoneinfo/Etc/UTC"), b"tz", 0o644)
        .unwrap();
    root.create_dir(Path::new("etc"), 0o755).unwrap();
    root.symlink(
        Path::new("/usr/share/zoneinfo/Etc/UTC"),
        Path::new("/etc/localtime"),
    )
    .unwrap();
    assert_eq!(root.read(Path::new("/etc/localtime")).unwrap(), b"tz");
    assert_eq!(
        root.read_link(Path::new("/etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Etc/UTC")
    );
    assert_eq!(
        root.resolve(Path::new("/etc/localtime"), true).unwrap(),
        Path::new("/usr/share/zoneinfo/Etc/UTC")
    );
    // The host sees a dangling absolute link, exactly as stored.
    assert_eq!(
        std::fs::read_link(dir.path().join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Etc/UTC")
    );
}

#[test]
fn nothing_escapes_the_root() {
    let (dir, root) = tree();
    root.symlink(Path::new("/etc"), Path::new("hostetc"))
        .unwrap();
    root.symlink(Path::new("../../../../etc/passwd"), Path::new("passwd"))
        .unwrap();
    // Host /etc/passwd exists; the tree has no etc/passwd, so every way to it fails.
    for p in [
        "/hostetc/passwd",
        "passwd",
        "../../etc/passwd",
        "/../etc/passwd",
    ] {
        let err = root.read(Path::new(p)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{p}: {err}");
    }
    // Writing through the link lands inside the tree.
    root.create_dir(Path::new("etc"), 0o755).unwrap();
    root.write(Path::new("/hostetc/osbuild-test"), b"x", 0o644)
        .unwrap();
    assert!(dir.path().join("etc/osbuild-test").exists());
    assert!(!Path::new("/etc/osbuild-test").exists());
    root.set_mode(Path::new("/hostetc"), 0o700).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("etc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(
        root.resolve(Path::new("/hostetc/../.."), true).unwrap(),
        Path::new("/")
    );
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn metadata_owner_mode_times_and_xattrs() {
    let (dir, root) = tree();
    root.write(Path::new("shadow"), b"", 0o600).unwrap();
    root.set_owner(Path::new("shadow"), 0, 42, false).unwrap();
    root.set_mode(Path::new("shadow"), 0o4640).unwrap();
    root.set_mtime(Path::new("shadow"), 1_700_000_000, 5, false)
        .unwrap();
    let m = root.metadata(Path::new("shadow"), false).unwrap();
    assert_eq!(
        (m.kind, m.mode, m.gid, m.mtime_sec, m.mtime_nsec),
        (EntryKind::File, 0o4640, 42, 1_700_000_000, 5)
    );
    let host = std::fs::metadata(dir.path().join("shadow")).unwrap();
    assert_eq!((host.gid(), host.mode() & 0o7777), (42, 0o4640));

    root.set_xattr(Path::new("shadow"), "user.osbuild", b"v", false)
        .unwrap();
    assert_eq!(
        root.get_xattr(Path::new("shadow"), "user.osbuild", true)
            .unwrap(),
        Some(b"v".to_vec())
    );
    assert!(
        root.list_xattrs(Path::new("shadow"), false)
            .unwrap()
            .contains(&"user.osbuild".to_string())
    );
    root.remove_xattr(Path::new("shadow"), "user.osbuild", false)
        .unwrap();
    assert_eq!(
        root.get_xattr(Path::new("shadow"), "user.osbuild", false)
            .unwrap(),
        None
    );

    root.symlink(Path::new("/shadow"), Path::new("link"))
        .unwrap();
    root.set_mtime(Path::new("link"), 7, 0, false).unwrap();
    assert_eq!(
        root.metadata(Path::new("link"), false).unwrap().mtime_sec,
        7
    );
    assert_eq!(
        root.metadata(Path::new("link"), true).unwrap().mtime_sec,
        1_700_000_000
    );
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn device_nodes_and_fifos() {
    let (_dir, root) = tree();
    root.make_node(Path::new("null"), NodeKind::CharDevice, 0o666, 1, 3)
        .unwrap();
    root.make_node(Path::new("fifo"), NodeKind::Fifo, 0o640, 0, 0)
        .unwrap();
    let m = root.metadata(Path::new("null"), false).unwrap();
    assert_eq!(
        (m.kind, m.mode, m.rdev_major(), m.rdev_minor()),
        (EntryKind::CharDevice, 0o666, 1, 3)
    );
    assert_eq!(
        root.metadata(Path::new("fifo"), false).unwrap().kind,
        EntryKind::Fifo
    );
}

#[test]
fn names_ending_in_dotdot_are_refused() {
    let (_dir, root) = tree();
    let err = root.symlink(Path::new("x"), Path::new("a/..")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn remove_all_does_not_follow_symlinks() {
    let (dir, root) = tree();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), b"k").unwrap();
    root.create_dir_all(Path::new("a/b")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("a/b/out")).unwrap();
    root.remove_all(Path::new("a")).unwrap();
    assert!(!dir.path().join("a").exists());
    assert!(outside.path().join("keep").exists());
}

#[test]
fn no_symlinks_mode_refuses_paths_through_symlinks() {
    let (dir, _) = tree();
    let root = Root::open_no_symlinks(dir.path()).unwrap();
    root.create_dir(Path::new("real"), 0o755).unwrap();
    root.symlink(Path::new("/"), Path::new("up")).unwrap();
    root.symlink(Path::new("real"), Path::new("rel")).unwrap();
    for p in ["up/x", "rel/x"] {
        let err = root.create_file(Path::new(p), 0o644).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_eloop()), "{p}: {err}");
    }
    root.create_file(Path::new("real/x"), 0o644).unwrap();
    // The link itself can still be inspected.
    assert_eq!(
        root.metadata(Path::new("up"), false).unwrap().kind,
        EntryKind::Symlink
    );
}

fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn the_root_itself_can_be_changed() {
    let (dir, root) = tree();
    root.set_owner(Path::new(""), 0, 7, false).unwrap();
    root.set_mtime(Path::new("/"), 5, 0, false).unwrap();
    root.set_mode(Path::new("."), 0o750).unwrap();
    let m = std::fs::metadata(dir.path()).unwrap();
    assert_eq!((m.gid(), m.mtime(), m.mode() & 0o7777), (7, 5, 0o750));
}
