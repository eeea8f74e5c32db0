//! `--save`: the tree as a deterministic tar archive.
//!
//! Entries are sorted (bytewise, parents first), named `./path`, with
//! numeric owners only (no user or group names), mode, mtime, xattrs
//! (`SCHILY.xattr.*`), hardlinks, symlinks, device nodes and fifos; no
//! atime or ctime. Long names, large ids, sub-second mtimes and xattrs go
//! into PAX records. The same tree gives the same bytes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context as _;
use osbuild_tree_fs::{EntryKind, Metadata, Root};
use tar::{EntryType, Header};

/// Writes tar entries for a tree into `out`.
pub struct TarWriter<W: Write> {
    out: W,
    /// First path seen for each multiply-linked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    pub entries: u64,
    /// Writing an overlayfs upper layer as an OCI layer: the prefix of
    /// overlayfs's own xattrs, which are not written; whiteouts become
    /// `.wh.NAME` and opaque directories get a `.wh..wh..opq` entry.
    layer: Option<String>,
}

/// The OCI layer spellings of a whiteout and of an opaque directory.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "LEN KEY=VALUE\n", where LEN counts the whole record including itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len += 1;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

const OCTAL_MAX: u64 = 0o7777777;

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            links: HashMap::new(),
            entries: 0,
            layer: None,
        }
    }

    /// A writer of an overlayfs upper layer (whose own xattrs start with
    /// `overlay_prefix`) as an OCI image layer.
    pub fn for_layer(out: W, overlay_prefix: &str) -> Self {
        TarWriter {
            layer: Some(overlay_prefix.to_string()),
            ..TarWriter::new(out)
        }
    }

    /// An empty regular file owned by root, mode 0644, time 0: the OCI
    /// layer's whiteout markers.
    fn append_marker(&mut self, name: &[u8]) -> anyhow::Result<()> {
        let mut header = Header::new_ustar();
        let mut pax = Vec::new();
        Self::set_name(&mut header, name, &mut pax)?;
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        header.set_entry_type(EntryType::Regular);
        header.set_cksum();
        self.write_pax(&pax)?;
        self.out.write_all(header.as_bytes())?;
        self.entries += 1;
        Ok(())
    }

    fn write_pax(&mut self, pax: &[u8]) -> io::Result<()> {
        if pax.is_empty() {
            return Ok(());
        }
        let mut ph = Header::new_ustar();
        let pname = b"./PaxHeaders/entry";
        ph.as_ustar_mut().unwrap().name[..pname.len()].copy_from_slice(pname);
        ph.set_mode(0o644);
        ph.set_mtime(0);
        ph.set_uid(0);
        ph.set_gid(0);
        ph.set_size(pax.len() as u64);
        ph.set_entry_type(EntryType::XHeader);
        ph.set_cksum();
        self.out.write_all(ph.as_bytes())?;
        self.write_block_padded(pax)
    }

    fn write_block_padded(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        let pad = (512 - data.len() % 512) % 512;
        self.out.write_all(&[0u8; 512][..pad])
    }

    fn set_name(header: &mut Header, name: &[u8], pax: &mut Vec<u8>) -> io::Result<()> {
        let ustar = header.as_ustar_mut().expect("ustar header");
        if name.len() <= 100 {
            ustar.name[..name.len()].copy_from_slice(name);
        } else {
            pax.extend(pax_record("path", name));
            let short = &name[..100];
            ustar.name.copy_from_slice(short);
        }
        Ok(())
    }

    /// Appends one entry; `name` is its archive path (`./etc/hostname`).
    pub fn append(
        &mut self,
        root: &Root,
        rel: &Path,
        name: &[u8],
        meta: &Metadata,
    ) -> anyhow::Result<()> {
        let mut header = Header::new_ustar();
        let mut pax = Vec::new();
        Self::set_name(&mut header, name, &mut pax)?;
        header.set_mode(meta.mode);
        for (key, id, setter) in [
            (
                "uid",
                meta.uid as u64,
                Header::set_uid as fn(&mut Header, u64),
            ),
            (
                "gid",
                meta.gid as u64,
                Header::set_gid as fn(&mut Header, u64),
            ),
        ] {
            if id > OCTAL_MAX {
                pax.extend(pax_record(key, id.to_string().as_bytes()));
                setter(&mut header, 0);
            } else {
                setter(&mut header, id);
            }
        }
        header.set_mtime(meta.mtime_sec.max(0) as u64);
        if meta.mtime_nsec != 0 || meta.mtime_sec < 0 {
            pax.extend(pax_record(
                "mtime",
                format!("{}.{:09}", meta.mtime_sec, meta.mtime_nsec).as_bytes(),
            ));
        }
        for xattr in root
            .list_xattrs(rel, false)
            .with_context(|| format!("listing xattrs of {}", rel.display()))?
        {
            if self
                .layer
                .as_ref()
                .is_some_and(|p| xattr.starts_with(p.as_str()))
            {
                continue;
            }
            let value = root
                .get_xattr(rel, &xattr, false)
                .with_context(|| format!("reading xattr {xattr} of {}", rel.display()))?
                .unwrap_or_default();
            pax.extend(pax_record(&format!("SCHILY.xattr.{xattr}"), &value));
        }

        let mut data: Option<File> = None;
        let mut size = 0u64;
        let mut link_name: Option<Vec<u8>> = None;
        match meta.kind {
            EntryKind::Directory => header.set_entry_type(EntryType::Directory),
            EntryKind::Symlink => {
                header.set_entry_type(EntryType::Symlink);
                let target = root.read_link(rel)?;
                link_name = Some(target.as_os_str().as_bytes().to_vec());
            }
            EntryKind::File => {
                let key = (meta.dev, meta.ino);
                match (meta.nlink > 1).then(|| self.links.get(&key)).flatten() {
                    Some(first) => {
                        header.set_entry_type(EntryType::Link);
                        link_name = Some(first.clone());
                    }
                    None => {
                        if meta.nlink > 1 {
                            self.links.insert(key, name.to_vec());
                        }
                        header.set_entry_type(EntryType::Regular);
                        size = meta.size;
                        let file = root
                            .open_file(rel)
                            .with_context(|| format!("opening {}", rel.display()))?;
                        // What was opened must be what was looked at: an
                        // entry swapped since (for a link, say) is refused.
                        let opened = file.metadata()?;
                        if (opened.dev(), opened.ino()) != (meta.dev, meta.ino) || !opened.is_file()
                        {
                            anyhow::bail!("{} changed while it was saved", rel.display());
                        }
                        data = Some(file);
                    }
                }
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                header.set_entry_type(if meta.kind == EntryKind::CharDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                header.set_device_major(meta.rdev_major())?;
                header.set_device_minor(meta.rdev_minor())?;
            }
            EntryKind::Fifo => header.set_entry_type(EntryType::Fifo),
            EntryKind::Socket => {
                // tar cannot hold sockets; they are runtime state anyway.
                return Ok(());
            }
        }
        if let Some(target) = &link_name {
            let ustar = header.as_ustar_mut().expect("ustar header");
            if target.len() <= 100 {
                ustar.linkname[..target.len()].copy_from_slice(target);
            } else {
                pax.extend(pax_record("linkpath", target));
                ustar.linkname.copy_from_slice(&target[..100]);
            }
        }
        if size > 0o77777777777 {
            pax.extend(pax_record("size", size.to_string().as_bytes()));
            header.set_size(0);
        } else {
            header.set_size(size);
        }
        header.set_cksum();

        self.write_pax(&pax)?;
        self.out.write_all(header.as_bytes())?;
        if let Some(mut file) = data {
            let copied = io::copy(&mut io::Read::take(&mut file, size), &mut self.out)?;
            if copied != size {
                anyhow::bail!("{} changed size while being archived", rel.display());
            }
            let pad = ((512 - size % 512) % 512) as usize;
            self.out.write_all(&[0u8; 512][..pad])?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Appends `rel` and, for a directory, everything below it, sorted.
    pub fn append_tree(
        &mut self,
        root: &Root,
        rel: &Path,
        interrupted: &dyn Fn() -> bool,
    ) -> anyhow::Result<()> {
        if interrupted() {
            anyhow::bail!(crate::error::BuildError::Interrupted);
        }
        let meta = root
            .metadata(rel, false)
            .with_context(|| format!("reading {}", rel.display()))?;
        let mut name = b"./".to_vec();
        name.extend_from_slice(rel.as_os_str().as_bytes());
        if let Some(prefix) = self.layer.clone() {
            let base = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            if base.starts_with(WHITEOUT_PREFIX) {
                anyhow::bail!(
                    "{}: a name starting with .wh. cannot be kept in an OCI layer (it means a deletion there)",
                    rel.display()
                );
            }
            if meta.kind == EntryKind::CharDevice && meta.rdev == 0 {
                let mut marker = b"./".to_vec();
                if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                    marker.extend_from_slice(parent.as_os_str().as_bytes());
                    marker.push(b'/');
                }
                marker.extend_from_slice(WHITEOUT_PREFIX);
                marker.extend_from_slice(base);
                return self.append_marker(&marker);
            }
            if meta.kind == EntryKind::Directory {
                if !rel.as_os_str().is_empty() {
                    name.push(b'/');
                }
                self.append(root, rel, &name, &meta)?;
                let opaque = root
                    .get_xattr(rel, &format!("{prefix}opaque"), false)
                    .with_context(|| format!("reading the xattrs of {}", rel.display()))?
                    .is_some_and(|v| v == b"y");
                if opaque {
                    let mut marker = name.clone();
                    marker.extend_from_slice(OPAQUE_MARKER);
                    self.append_marker(&marker)?;
                }
                for n in root.read_dir(rel)? {
                    self.append_tree(root, &rel.join(n), interrupted)?;
                }
                return Ok(());
            }
        }
        if meta.kind == EntryKind::Directory && !rel.as_os_str().is_empty() {
            name.push(b'/');
        }
        self.append(root, rel, &name, &meta)?;
        if meta.kind == EntryKind::Directory {
            let names: Vec<OsString> = root.read_dir(rel)?;
            for n in names {
                self.append_tree(root, &rel.join(n), interrupted)?;
            }
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        let r = pax_record("k", &[b'x'; 95]);
        let text = String::from_utf8(r.clone()).unwrap();
        assert_eq!(
            text.split(' ').next().unwrap().parse::<usize>().unwrap(),
            r.len()
        );
    }
}
