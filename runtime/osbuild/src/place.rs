//! Putting a file in place whole, the way the store's outputs and the
//! native runner copy both need it.

use std::path::Path;

use anyhow::Context as _;

/// Puts `from` at `dest`, replacing what is there, never half-written: a
/// hard link where the file systems allow it (no copy of a multi-GB image),
/// else a copy with the same mode. Several processes may place the same
/// file at once: each works under a temporary name of its own.
///
/// The directory may belong to someone else (a user's output directory):
/// it is opened once, and every name in it is made exclusively (`linkat`,
/// `O_CREAT|O_EXCL`) and renamed relative to that descriptor, so nothing
/// planted there (a symlink at a temporary name, a swapped directory) makes
/// osbuild write or change a file anywhere else.
pub fn link_or_copy(from: &Path, dest: &Path) -> anyhow::Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    let name = dest
        .file_name()
        .with_context(|| format!("{} has no file name", dest.display()))?;
    let dirfd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("opening the directory {}", dir.display()))?;
    let src = open_regular(from).with_context(|| format!("opening {}", from.display()))?;
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut attempt = 0;
    let tmp = loop {
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = format!(
            ".{}.{}-{n}-{nanos}.osbuild-partial",
            name.to_string_lossy(),
            std::process::id()
        );
        // The stored file by its descriptor: never a path followed again.
        let linked = rustix::fs::linkat(&src, "", &dirfd, &tmp, AtFlags::EMPTY_PATH);
        match linked {
            Ok(()) => break tmp,
            Err(rustix::io::Errno::EXIST) if attempt < 100 => {}
            Err(_) => match copy_into(&src, &dirfd, &tmp) {
                Ok(()) => break tmp,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("copying {} to {}", from.display(), dir.display())
                    });
                }
            },
        }
        attempt += 1;
    };
    let renamed = rustix::fs::renameat(&dirfd, &tmp, &dirfd, name);
    // rename(2) does nothing when both names are links to one file (the
    // same stored output placed again, or another process was first).
    let _ = rustix::fs::unlinkat(&dirfd, &tmp, AtFlags::empty());
    renamed
        .map_err(std::io::Error::from)
        .with_context(|| format!("writing {}", dest.display()))
}

/// Opens a regular file without following a symlink or blocking on a FIFO.
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Copies `src` to a new file `name` in `dir` (made exclusively, never
/// through a symlink), keeping its permission bits except write for group
/// and others, setuid, setgid and sticky.
fn copy_into(src: &std::fs::File, dir: &impl std::os::fd::AsFd, name: &str) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::PermissionsExt;
    let meta = src.metadata()?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut dst = std::fs::File::from(fd);
    let mut reader = src;
    std::io::copy(&mut reader, &mut dst)?;
    dst.set_permissions(std::fs::Permissions::from_mode(
        meta.permissions().mode() & 0o755,
    ))?;
    Ok(())
}

/// Copies an executable (`/proc/self/exe`, which is a magic link) to `to`,
/// mode 0755, whole or not at all.
pub fn copy_exe(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = to
        .parent()
        .with_context(|| format!("{} has no parent directory", to.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut src =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    std::io::copy(&mut src, tmp.as_file_mut())
        .with_context(|| format!("copying {}", from.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))?;
    tmp.persist(to)
        .with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_copy_across_file_systems_drops_write_for_others() {
        // /dev/shm is a tmpfs: linkat gives EXDEV, so this copies.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let from = shm.path().join("from");
        std::fs::write(&from, b"image").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("disk");
        link_or_copy(&from, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"image");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_copy_never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"host file").unwrap();
        let from = dir.path().join("from");
        std::fs::write(&from, b"output").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&victim, out.join(".tmp")).unwrap();
        let dirfd = std::fs::File::open(&out).unwrap();
        let src = open_regular(&from).unwrap();
        let e = copy_into(&src, &dirfd, ".tmp").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"host file");
    }

    #[test]
    fn placing_the_same_file_again_leaves_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::write(&from, b"image").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        for _ in 0..2 {
            link_or_copy(&from, &out.join("disk")).unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["disk"]);
        let placed = out.join("disk");
        assert_eq!(std::fs::read(&placed).unwrap(), b"image");
        let mode = std::fs::metadata(&placed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
