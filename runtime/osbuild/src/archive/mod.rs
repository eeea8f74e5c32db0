//! Tree archives: `--from` unpacks one into the tree, `--save` writes the
//! final tree as one, deterministically.

pub mod pack;
pub mod pgzip;
pub mod unpack;

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;

/// The compression a `--save` path asks for, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub fn for_path(path: &Path) -> Result<Compression, String> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Ok(Compression::Gzip)
        } else if name.ends_with(".tar") {
            Ok(Compression::None)
        } else {
            Err(format!(
                "{name:?}: the archive name must end in .tar.gz, .tgz or .tar"
            ))
        }
    }
}

/// Writes the tree at `tree` to `dest`, through a temporary file in the
/// same directory renamed into place: a failure leaves no partial archive.
pub fn save(tree: &Path, dest: &Path, interrupted: &dyn Fn() -> bool) -> anyhow::Result<u64> {
    let compression = Compression::for_path(dest).map_err(anyhow::Error::msg)?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".osbuild-save-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let root = osbuild_tree_fs::Root::open(tree)?;
    let file = BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone()?);
    let entries = match compression {
        Compression::Gzip => {
            let gz = pgzip::ParallelGzWriter::new(file, 6)?;
            let mut tar = pack::TarWriter::new(gz);
            tar.append_tree(&root, Path::new(""), interrupted)?;
            let n = tar.entries;
            tar.finish()?.finish()?.flush()?;
            n
        }
        Compression::None => {
            let mut tar = pack::TarWriter::new(file);
            tar.append_tree(&root, Path::new(""), interrupted)?;
            let n = tar.entries;
            tar.finish()?.flush()?;
            n
        }
    };
    tmp.as_file().sync_all().ok();
    // tempfile creates 0600; an archive is an ordinary output file. By
    // descriptor: the directory may be another user's, who could have put
    // a symlink at the temporary name by now.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(dest)
        .with_context(|| format!("moving the archive into place at {}", dest.display()))?;
    Ok(entries)
}
