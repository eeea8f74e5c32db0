//! Home directories: creating them from `/etc/skel` (as `useradd -m` and
//! `mkhomedir_helper` do), re-owning them (`usermod -g`), the mail spool,
//! and SSH keys.

use std::io;
use std::path::{Path, PathBuf};

use osbuild_stage::formats::passwd::Passwd;
use osbuild_stage::{EntryKind, Metadata, NodeKind, Tree, anyhow};

/// Which tool's copy of `/etc/skel` to make.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `useradd -m`: modes copied exactly, special files too, and symlinks
    /// into the skeleton directory pointed at the new home.
    Useradd,
    /// `mkhomedir_helper` (umask 022): files `(mode | 0222) & ~022` less
    /// what its chown after the chmod clears (setuid; setgid if group
    /// executable), directories 0755, symlinks verbatim, no special files.
    Mkhomedir,
}

/// Metadata following symlinks, or `None` if there is nothing there.
pub fn stat(tree: &Tree, path: impl AsRef<Path>) -> io::Result<Option<Metadata>> {
    match tree.metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates `home` (and missing parents, 0755 root:root) owned by
/// `uid:gid` with `mode`, and fills it from `skel`. Returns false, doing
/// nothing, if `home` exists already (`useradd` then only warns).
pub fn create(
    tree: &Tree,
    home: &str,
    uid: u32,
    gid: u32,
    mode: u32,
    skel: &str,
    style: Style,
) -> anyhow::Result<bool> {
    if stat(tree, home)?.is_some() {
        return Ok(false);
    }
    let mut path = PathBuf::from("/");
    for part in Path::new(home).components().skip(1) {
        path.push(part);
        if stat(tree, &path)?.is_none() {
            tree.create_dir(&path, 0o755)?;
            tree.set_owner(&path, 0, 0)?;
            tree.set_mode(&path, 0o755)?;
        }
    }
    tree.set_owner(home, uid, gid)?;
    tree.set_mode(home, mode)?;
    if stat(tree, skel)?.is_some_and(|m| m.is_dir()) {
        copy_tree(
            tree,
            Path::new(skel),
            Path::new(home),
            uid,
            gid,
            style,
            skel,
            home,
        )?;
    }
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
fn copy_tree(
    tree: &Tree,
    src: &Path,
    dst: &Path,
    uid: u32,
    gid: u32,
    style: Style,
    skel: &str,
    home: &str,
) -> anyhow::Result<()> {
    for name in tree.read_dir(src)? {
        let (s, d) = (src.join(&name), dst.join(&name));
        let m = tree.symlink_metadata(&s)?;
        match m.kind {
            EntryKind::Directory => {
                let mode = match style {
                    Style::Useradd => m.mode,
                    Style::Mkhomedir => 0o755,
                };
                tree.create_dir(&d, 0o700)?;
                copy_tree(tree, &s, &d, uid, gid, style, skel, home)?;
                tree.set_owner(&d, uid, gid)?;
                tree.set_mode(&d, mode)?;
            }
            EntryKind::Symlink => {
                let mut target = tree.read_link(&s)?.to_string_lossy().into_owned();
                if style == Style::Useradd
                    && let Some(rest) = target.strip_prefix(skel)
                {
                    target = format!("{home}{rest}");
                }
                tree.symlink(&target, &d)?;
                tree.set_owner(&d, uid, gid)?;
            }
            EntryKind::File => {
                let mode = match style {
                    Style::Useradd => m.mode,
                    Style::Mkhomedir => {
                        let mode = (m.mode | 0o222) & !0o022 & !0o4000;
                        if mode & 0o010 != 0 {
                            mode & !0o2000
                        } else {
                            mode
                        }
                    }
                };
                tree.write_with(&d, &tree.read(&s)?, mode, uid, gid)?;
            }
            EntryKind::BlockDevice | EntryKind::CharDevice | EntryKind::Fifo
                if style == Style::Useradd =>
            {
                let kind = match m.kind {
                    EntryKind::BlockDevice => NodeKind::BlockDevice,
                    EntryKind::CharDevice => NodeKind::CharDevice,
                    _ => NodeKind::Fifo,
                };
                tree.make_node(&d, kind, m.mode, m.rdev_major, m.rdev_minor)?;
                tree.set_owner(&d, uid, gid)?;
                tree.set_mode(&d, m.mode)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `usermod -g`'s `chown_tree`: every entry under `root` (and `root`)
/// whose group is `old_gid` gets `new_gid`; owners stay.
pub fn chown_tree(tree: &Tree, root: &Path, old_gid: u32, new_gid: u32) -> io::Result<()> {
    for name in tree.read_dir(root)? {
        let p = root.join(name);
        let m = tree.symlink_metadata(&p)?;
        if m.is_dir() {
            chown_tree(tree, &p, old_gid, new_gid)?;
        }
        if m.gid == old_gid {
            tree.set_owner(&p, m.uid, new_gid)?;
        }
    }
    let m = tree.symlink_metadata(root)?;
    if m.gid == old_gid {
        tree.set_owner(root, m.uid, new_gid)?;
    }
    Ok(())
}

/// `useradd`'s mail spool: `MAIL_DIR/NAME`, empty, owned by the user and
/// group `mail` with mode 0660 (or the user's group and 0600 without a
/// `mail` group). An existing file or a missing spool directory is left
/// alone, as useradd only warns then.
pub fn create_mail_spool(
    tree: &Tree,
    spool: &str,
    name: &str,
    uid: u32,
    group: (u32, u32),
) -> anyhow::Result<()> {
    let path = format!("{spool}/{name}");
    if tree.exists(&path)? || stat(tree, spool)?.is_none_or(|m| !m.is_dir()) {
        return Ok(());
    }
    tree.write_with(&path, b"", group.1, uid, group.0)?;
    Ok(())
}

/// Appends `keys` to `~/.ssh/authorized_keys` as osbuild does: `~/.ssh`
/// made 0700 if missing, the file 0600, both owned by the user.
pub fn add_ssh_keys(tree: &Tree, pw: &Passwd, keys: &[&str]) -> anyhow::Result<()> {
    let ssh = format!("{}/.ssh", pw.home.trim_end_matches('/'));
    if stat(tree, &ssh)?.is_none() {
        tree.create_dir(&ssh, 0o700)?;
        tree.set_owner(&ssh, pw.uid, pw.gid)?;
        tree.set_mode(&ssh, 0o700)?;
    }
    let file = format!("{ssh}/authorized_keys");
    let mut content = match tree.read(&file) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    // A file without a final newline would glue the first new key onto
    // its last line.
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(keys.join("\n").as_bytes());
    content.push(b'\n');
    tree.write(&file, &content)?;
    tree.set_owner(&file, pw.uid, pw.gid)?;
    tree.set_mode(&file, 0o600)?;
    Ok(())
}
