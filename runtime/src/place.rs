//! Putting a file in place whole, the way the store's outputs and the
//! native runner copy both need it.

use std::path::Path;

use anyhow::Context as _;

/// Puts `from` at `dest`, replacing what is there, never half-written: a
/// hard link where the file systems allow it (no copy of a multi-GB image),
/// else a copy with the same mode. Several processes may place the same
/// file at once: each works under a temporary name of its own.
pub fn link_or_copy(from: &Path, dest: &Path) -> anyhow::Result<()> {
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    let name = dest
        .file_name()
        .with_context(|| format!("{} has no file name", dest.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".osbuild-partial")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?
        .into_temp_path();
    std::fs::remove_file(&tmp).ok();
    // Never through a symlink: `from` is a stage's output, checked to be a
    // regular file; a link planted since must not lead anywhere.
    let linked = rustix::fs::linkat(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        &*tmp,
        rustix::fs::AtFlags::empty(),
    );
    if linked.is_err() {
        copy_nofollow(from, &tmp)
            .with_context(|| format!("copying {} to {}", from.display(), dir.display()))?;
    }
    let tmp_name = tmp.to_path_buf();
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    // rename(2) does nothing when both names are links to one file (the
    // same stored output placed again, or another process was first).
    let _ = std::fs::remove_file(&tmp_name);
    Ok(())
}

/// Copies a regular file, opened without following a symlink, keeping
/// its permission bits (not setuid, setgid or sticky).
fn copy_nofollow(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(from)?;
    let meta = src.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut dst = std::fs::File::create(to)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.set_permissions(std::fs::Permissions::from_mode(
        meta.permissions().mode() & 0o777,
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
