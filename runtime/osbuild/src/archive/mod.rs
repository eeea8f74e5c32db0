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
    Zstd,
}

impl Compression {
    /// The media type of an archive compressed so.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/x-tar",
            Compression::Gzip => "application/gzip",
            Compression::Zstd => "application/zstd",
        }
    }

    pub fn for_path(path: &Path) -> Result<Compression, String> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Ok(Compression::Gzip)
        } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            Ok(Compression::Zstd)
        } else if name.ends_with(".tar") {
            Ok(Compression::None)
        } else {
            Err(format!(
                "{name:?}: the archive name must end in .tar.gz, .tgz, .tar.zst, .tzst or .tar"
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
        Compression::Zstd => {
            let mut tar = pack::TarWriter::new(zstd_writer(file)?);
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

/// The zstd level `--save` writes: zstd's default, about gzip -6's ratio
/// at several times its speed.
pub const ZSTD_LEVEL: i32 = 3;

/// A zstd stream on every core. libzstd cuts the input into jobs of a size
/// set by the level, not by the number of workers, so the bytes are the
/// same on any machine (a test holds it to that); the checksum lets
/// `zstd -t` and `--from` find a damaged archive.
pub fn zstd_writer<W: Write>(inner: W) -> anyhow::Result<zstd::stream::write::Encoder<'static, W>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    zstd_writer_with(inner, workers)
}

fn zstd_writer_with<W: Write>(
    inner: W,
    workers: u32,
) -> anyhow::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
    enc.multithread(workers.max(1))?;
    enc.include_checksum(true)?;
    enc.include_contentsize(false)?;
    Ok(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8], workers: u32) -> Vec<u8> {
        let mut enc = zstd_writer_with(Vec::new(), workers).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_number_of_workers() {
        // Tens of MiB, several jobs: compressible text with a changing seed.
        let mut data = Vec::new();
        let mut x: u64 = 1;
        while data.len() < 24 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.extend_from_slice(format!("line {} {:x}\n", data.len() % 977, x >> 52).as_bytes());
        }
        let one = compress(&data, 1);
        assert_eq!(compress(&data, 2), one);
        assert_eq!(compress(&data, 7), one);
        assert!(
            one.len() < data.len() / 3,
            "{} of {}",
            one.len(),
            data.len()
        );
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }
}
