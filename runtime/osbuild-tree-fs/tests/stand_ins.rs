//! Device-node stand-ins (a rootless build's `/dev/null`): a process of
//! its own, because enabling them is process-wide.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use osbuild_tree_fs::{EntryKind, NodeKind, Root, stand_in};

fn tree() -> (tempfile::TempDir, Root) {
    stand_in::enable();
    let dir = tempfile::tempdir().unwrap();
    let root = Root::open(dir.path()).unwrap();
    (dir, root)
}

#[test]
#[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
fn a_stand_in_is_seen_as_the_node_it_stands_for_and_is_never_opened() {
    let (dir, root) = tree();
    root.make_node(Path::new("/null"), NodeKind::CharDevice, 0o666, 1, 3)
        .unwrap();
    root.make_node(Path::new("/loop0"), NodeKind::BlockDevice, 0o660, 7, 0)
        .unwrap();
    root.make_node(Path::new("/fifo"), NodeKind::Fifo, 0o600, 0, 0)
        .unwrap();

    // On disk: an empty regular file with the node's mode; a real FIFO.
    let on_disk = std::fs::symlink_metadata(dir.path().join("null")).unwrap();
    assert!(on_disk.is_file());
    assert_eq!((on_disk.len(), on_disk.mode() & 0o7777), (0, 0o666));
    assert!(
        std::fs::symlink_metadata(dir.path().join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let m = root.metadata(Path::new("/null"), false).unwrap();
    assert_eq!(
        (m.kind, m.rdev_major(), m.rdev_minor(), m.mode),
        (EntryKind::CharDevice, 1, 3, 0o666)
    );
    let m = root.metadata(Path::new("/loop0"), true).unwrap();
    assert_eq!(
        (m.kind, m.rdev_major(), m.rdev_minor()),
        (EntryKind::BlockDevice, 7, 0)
    );
    std::os::unix::fs::symlink("/null", dir.path().join("link")).unwrap();
    assert_eq!(
        root.metadata(Path::new("/link"), true).unwrap().kind,
        EntryKind::CharDevice
    );
    assert_eq!(
        root.metadata(Path::new("/link"), false).unwrap().kind,
        EntryKind::Symlink
    );

    // The marking attribute is hidden, and no one else may set or remove it.
    assert!(
        root.list_xattrs(Path::new("/null"), false)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        root.get_xattr(Path::new("/null"), stand_in::XATTR, false)
            .unwrap(),
        None
    );
    for e in [
        root.set_xattr(Path::new("/null"), stand_in::XATTR, b"c 8:0", false)
            .unwrap_err(),
        root.remove_xattr(Path::new("/null"), stand_in::XATTR, false)
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("osbuild's own"), "{e}");
    }

    // A user attribute, refused on a device node by the kernel, is refused
    // on its stand-in (followed through a link too); a trusted one is not.
    for (path, follow) in [("/null", false), ("/link", true)] {
        let e = root
            .set_xattr(Path::new(path), "user.note", b"x", follow)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc_eperm()), "{path}: {e}");
    }
    root.set_xattr(Path::new("/null"), "trusted.note", b"x", false)
        .unwrap();
    assert_eq!(
        root.list_xattrs(Path::new("/null"), false).unwrap(),
        ["trusted.note"]
    );
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    root.set_xattr(Path::new("/empty"), "user.note", b"x", false)
        .unwrap();

    // Opened for reading or writing, it is refused as a device would be.
    for e in [
        root.open_file(Path::new("/null")).unwrap_err(),
        root.read(Path::new("/link")).unwrap_err(),
        root.write(Path::new("/null"), b"x", 0o644).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("a character device (1:3)"), "{e}");
    }
    assert_eq!(std::fs::read(dir.path().join("null")).unwrap(), b"");
    // It goes as a file goes.
    root.rename(Path::new("/null"), Path::new("/null2"))
        .unwrap();
    assert_eq!(
        root.metadata(Path::new("/null2"), false).unwrap().kind,
        EntryKind::CharDevice
    );
    root.remove_file(Path::new("/null2")).unwrap();
    assert!(!root.exists(Path::new("/null2")).unwrap());
}

#[test]
fn only_an_empty_file_with_a_well_formed_mark_is_a_stand_in() {
    let (dir, root) = tree();
    let mark = |name: &str, contents: &[u8], value: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        rustix::fs::setxattr(&p, stand_in::XATTR, value, rustix::fs::XattrFlags::empty()).unwrap();
    };
    mark("written-into", b"data", b"c 1:3");
    mark("garbage", b"", b"c one:three");
    mark("unknown-kind", b"", b"p 1:3");
    for name in ["written-into", "garbage", "unknown-kind"] {
        let m = root.metadata(Path::new(name), false).unwrap();
        assert_eq!(m.kind, EntryKind::File, "{name}");
    }
    assert_eq!(root.read(Path::new("written-into")).unwrap(), b"data");
}

fn libc_eperm() -> i32 {
    1
}
