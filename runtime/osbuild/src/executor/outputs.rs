//! Files stages write to the output directory, checked and put in place.
//!
//! A stage's output directory is the stage's to fill, so what is in it is
//! untrusted: a symlink to `/etc/shadow`, a hard link to a host file, a
//! device node, a setuid copy of a shell. Only regular files with no links
//! elsewhere leave it, owned by osbuild's user, without setuid, setgid or
//! file capabilities; anything else fails the stage, naming the file.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::place::link_or_copy;
use crate::store::Object;

/// Checks every entry of a stage's output directory `dir` and makes each
/// file inert (see the module doc). `Err` says which file and why, for the
/// stage's failure message.
pub fn take(dir: &Path) -> Result<(), String> {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open its output directory: {e}"))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read its output directory: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read its output directory: {e}"))?;
        let name = entry.file_name();
        let stat = rustix::fs::statat(&dirfd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| format!("output {}: {e}", name.to_string_lossy()))?;
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        if kind != rustix::fs::FileType::RegularFile {
            return Err(format!(
                "output {}: is a {}; a stage may leave only regular files in its output directory",
                name.to_string_lossy(),
                kind_name(kind)
            ));
        }
        files.push((name, stat));
    }
    for (name, stat) in &files {
        // A link count beyond the links in this directory is a hard link
        // to a file elsewhere: the host's, another build's.
        let here = files
            .iter()
            .filter(|(_, s)| s.st_ino == stat.st_ino)
            .count() as u64;
        if stat.st_nlink > here {
            return Err(format!(
                "output {}: is a hard link to a file outside the output directory; a stage must write its outputs itself",
                name.to_string_lossy()
            ));
        }
        make_inert(&dirfd, name.as_os_str(), stat)
            .map_err(|e| format!("output {}: {e}", name.to_string_lossy()))?;
    }
    Ok(())
}

fn kind_name(kind: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match kind {
        FileType::Symlink => "symbolic link",
        FileType::Directory => "directory",
        FileType::BlockDevice => "block device",
        FileType::CharacterDevice => "character device",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        _ => "special file",
    }
}

/// Owned by osbuild's user, no setuid/setgid/sticky bits, no file
/// capabilities: an output is data, not a way to privilege.
fn make_inert(
    dirfd: &impl AsFd,
    name: &std::ffi::OsStr,
    seen: &rustix::fs::Stat,
) -> std::io::Result<()> {
    let fd = rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let now = rustix::fs::fstat(&fd)?;
    if now.st_ino != seen.st_ino || now.st_dev != seen.st_dev {
        return Err(std::io::Error::other("changed while osbuild checked it"));
    }
    let (uid, gid) = (rustix::process::geteuid(), rustix::process::getegid());
    if now.st_uid != uid.as_raw() || now.st_gid != gid.as_raw() {
        rustix::fs::fchown(&fd, Some(uid), Some(gid))?;
    }
    // fchown clears setuid/setgid already; the mode is set anyway. No
    // write for group or others: an output is a hard link into the store,
    // and a writable one would let any user change the stored copy.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(now.st_mode & 0o755))?;
    match rustix::fs::fremovexattr(&fd, "security.capability") {
        Ok(()) | Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Puts `from` into `dir` under its name (see [`link_or_copy`]; the store
/// notices if a linked output is changed later).
pub fn place_output(from: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = from.file_name().context("an output without a name")?;
    let dest = dir.join(name);
    link_or_copy(from, &dest)?;
    Ok(dest)
}

pub fn place_outputs_of(objects: &[&Object], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for o in objects {
        for out in &o.info.outputs {
            std::fs::create_dir_all(dir)?;
            written.push(place_output(&o.output_dir().join(&out.name), dir)?);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    #[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
    fn regular_files_pass_and_lose_setuid() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sh");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6755)).unwrap();
        take(dir.path()).unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755);
        assert_eq!(m.uid(), rustix::process::geteuid().as_raw());
    }

    #[test]
    fn symlinks_directories_fifos_and_outside_hard_links_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"s").unwrap();
        type Make<'a> = Box<dyn Fn(&Path) + 'a>;
        let cases: [(&str, Make); 3] = [
            (
                "symbolic link",
                Box::new(|d| std::os::unix::fs::symlink("/etc/shadow", d.join("x")).unwrap()),
            ),
            (
                "directory",
                Box::new(|d| std::fs::create_dir(d.join("x")).unwrap()),
            ),
            (
                "hard link",
                Box::new(|d| std::fs::hard_link(&secret, d.join("x")).unwrap()),
            ),
        ];
        for (what, make) in cases {
            let dir = tempfile::tempdir().unwrap();
            make(dir.path());
            let e = take(dir.path()).unwrap_err();
            assert!(
                e.starts_with("output x: ") && e.contains(what),
                "{what}: {e}"
            );
        }
        assert_eq!(std::fs::read(&secret).unwrap(), b"s");
    }

    #[test]
    #[ignore = "needs root: owners, modes and device nodes (tools/run-tests runs it)"]
    fn two_names_for_one_output_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        take(dir.path()).unwrap();
    }
}
