//! Output formats: the raw disk converted by `qemu-img`, then made
//! reproducible. qemu-img puts chance and the clock into three of them, and
//! each is set here from the image's seed and the source epoch:
//!
//! - vmdk (stream-optimised): the descriptor's content id (`CID=`);
//! - vhd (fixed, as Azure takes it): the footer's time stamp and unique
//!   id, and its checksum;
//! - vhdx: the headers' sequence numbers and write GUIDs, the log entry's
//!   GUID (both with their CRC-32C), and the virtual disk id.
//!
//! Each is found by its format's own structure and checked before it is
//! changed; a file that is not laid out as expected is an error, not
//! patched.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use osbuild_stage::anyhow;
use serde::Deserialize;

use crate::crc32c::crc32c;
use crate::layout::derived_uuid;
use crate::tools::run;

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    /// Stream-optimised, as VMware's OVAs and the clouds' importers take.
    Vmdk,
    /// Fixed size, as Azure takes it.
    #[serde(alias = "vhd")]
    Vpc,
    /// Dynamic, as Hyper-V makes it.
    Vhdx,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vpc => "vpc",
            Format::Vhdx => "vhdx",
        }
    }

    fn options(self) -> Option<&'static str> {
        match self {
            Format::Raw | Format::Qcow2 => None,
            Format::Vmdk => Some("subformat=streamOptimized"),
            // force_size: the virtual size is the raw size (whole MiB),
            // not rounded to the VHD geometry's cylinders.
            Format::Vpc => Some("subformat=fixed,force_size=on"),
            Format::Vhdx => Some("subformat=dynamic"),
        }
    }
}

/// Converts `raw` into `dest` (not raw) and makes the result reproducible.
pub fn convert(
    raw: &Path,
    format: Format,
    dest: &Path,
    seed: &str,
    epoch: i64,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", format.name()]);
    if let Some(o) = format.options() {
        cmd.args(["-o", o]);
    }
    run(cmd.arg(raw).arg(dest))?;
    let context = |e: anyhow::Error| e.context(format!("making {} reproducible", dest.display()));
    let mut f = File::options().read(true).write(true).open(dest)?;
    match format {
        Format::Raw | Format::Qcow2 => Ok(()),
        Format::Vmdk => fix_vmdk(&mut f, seed).map_err(context),
        Format::Vpc => fix_vhd(&mut f, seed, epoch).map_err(context),
        Format::Vhdx => fix_vhdx(&mut f, seed).map_err(context),
    }
}

fn read_at(f: &mut File, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_at(f: &mut File, offset: u64, bytes: &[u8]) -> anyhow::Result<()> {
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(bytes)?;
    Ok(())
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// VMDK sparse header: magic, descriptor offset and size (sectors).
fn fix_vmdk(f: &mut File, seed: &str) -> anyhow::Result<()> {
    let header = read_at(f, 0, 512)?;
    if &header[..4] != b"KDMV" {
        anyhow::bail!("no VMDK sparse header");
    }
    let (offset, sectors) = (le64(&header, 28), le64(&header, 36));
    if offset == 0 || sectors == 0 || sectors > 128 {
        anyhow::bail!("no embedded descriptor ({sectors} sectors at {offset})");
    }
    let mut desc = read_at(f, offset * 512, sectors as usize * 512)?;
    let at =
        find(&desc, b"\nCID=").ok_or_else(|| anyhow::anyhow!("the descriptor has no CID"))? + 5;
    let old = desc.get(at..at + 8).unwrap_or_default();
    if old.len() != 8 || !old.iter().all(u8::is_ascii_hexdigit) {
        anyhow::bail!("the descriptor's CID is not 8 hex digits");
    }
    // Any id but ffffffff, which means "no parent".
    let cid = &derived_uuid(&format!("vmdk cid {seed}"))[..8];
    let cid = if cid == "ffffffff" { "fffffffe" } else { cid };
    desc[at..at + 8].copy_from_slice(cid.as_bytes());
    write_at(f, offset * 512, &desc)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Seconds from the Unix epoch to VHD's (2000-01-01T00:00:00Z).
const VHD_EPOCH: i64 = 946_684_800;

/// VHD footer (the last 512 bytes; big-endian): time stamp at 24, checksum
/// at 64 (one's complement of the byte sum), unique id at 68.
fn fix_vhd(f: &mut File, seed: &str, epoch: i64) -> anyhow::Result<()> {
    let len = f.metadata()?.len();
    if len < 512 {
        anyhow::bail!("shorter than a VHD footer");
    }
    let mut footer = read_at(f, len - 512, 512)?;
    if &footer[..8] != b"conectix" {
        anyhow::bail!("no VHD footer");
    }
    let stamp = (epoch - VHD_EPOCH).clamp(0, u32::MAX as i64) as u32;
    footer[24..28].copy_from_slice(&stamp.to_be_bytes());
    footer[68..84].copy_from_slice(&uuid_bytes(&derived_uuid(&format!("vhd id {seed}"))));
    footer[64..68].fill(0);
    let sum = footer
        .iter()
        .fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
    write_at(f, len - 512, &footer)
}

/// A UUID's 16 bytes in its textual order (VHD's unique id).
fn uuid_bytes(u: &str) -> [u8; 16] {
    let hex: String = u.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

/// A GUID's 16 bytes as VHDX (and GPT) store them: the first three fields
/// little-endian.
fn guid_bytes(u: &str) -> [u8; 16] {
    let mut b = uuid_bytes(u);
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

const VHDX_HEADERS: [u64; 2] = [64 << 10, 128 << 10];
const VHDX_REGION_TABLE: u64 = 192 << 10;
const VHDX_METADATA_REGION: &str = "8b7ca206-4790-4b9a-b8fe-575f050f886e";
const VHDX_PAGE83: &str = "beca12ab-b2e6-4523-93ef-c309e000c746";

fn fix_vhdx(f: &mut File, seed: &str) -> anyhow::Result<()> {
    let guid = |what: &str| guid_bytes(&derived_uuid(&format!("vhdx {what} {seed}")));
    let mut headers = Vec::new();
    for at in VHDX_HEADERS {
        let h = read_at(f, at, 4096)?;
        if &h[..4] != b"head" {
            anyhow::bail!("no VHDX header at {at}");
        }
        headers.push((at, h));
    }
    // The newer header has the higher sequence number: keep their order.
    let first = headers.iter().map(|(_, h)| le64(h, 8)).min().unwrap_or(0);
    for (at, h) in &mut headers {
        let seq = le64(h, 8) - first + 1;
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..32].copy_from_slice(&guid("file write"));
        h[32..48].copy_from_slice(&guid("data write"));
        if h[48..64].iter().any(|b| *b != 0) {
            anyhow::bail!("the VHDX log is in use (its header names a log)");
        }
        seal(h, 4);
        write_at(f, *at, h)?;
    }
    // The log qemu-img leaves behind (inactive: no header names it) has a
    // GUID of chance.
    let (log_len, log_at) = (le32(&headers[0].1, 68), le64(&headers[0].1, 72));
    let mut at = log_at;
    while at + 64 <= log_at + u64::from(log_len) {
        let head = read_at(f, at, 64)?;
        if &head[..4] != b"loge" {
            break;
        }
        let len = le32(&head, 8);
        if len < 64
            || !len.is_multiple_of(4096)
            || at + u64::from(len) > log_at + u64::from(log_len)
        {
            anyhow::bail!("a VHDX log entry at {at} has length {len}");
        }
        let mut entry = read_at(f, at, len as usize)?;
        entry[32..48].copy_from_slice(&guid("log"));
        seal(&mut entry, 4);
        write_at(f, at, &entry)?;
        at += u64::from(len);
    }
    // The virtual disk id, in the metadata region.
    let table = read_at(f, VHDX_REGION_TABLE, 64 << 10)?;
    if &table[..4] != b"regi" {
        anyhow::bail!("no VHDX region table");
    }
    let count = le32(&table, 8).min(2047) as usize;
    let region = (0..count)
        .map(|i| &table[16 + i * 32..48 + i * 32])
        .find(|e| e[..16] == guid_bytes(VHDX_METADATA_REGION))
        .map(|e| (le64(e, 16), le32(e, 24)))
        .ok_or_else(|| anyhow::anyhow!("no VHDX metadata region"))?;
    let meta = read_at(f, region.0, 64 << 10)?;
    if &meta[..8] != b"metadata" {
        anyhow::bail!("no VHDX metadata table");
    }
    let items = u16::from_le_bytes([meta[10], meta[11]]).min(2047) as usize;
    let page83 = (0..items)
        .map(|i| &meta[32 + i * 32..64 + i * 32])
        .find(|e| e[..16] == guid_bytes(VHDX_PAGE83))
        .map(|e| (le32(e, 16), le32(e, 20)))
        .ok_or_else(|| anyhow::anyhow!("no VHDX virtual disk id"))?;
    if page83.1 != 16 || page83.0 + 16 > region.1 {
        anyhow::bail!("the VHDX virtual disk id is not 16 bytes in its region");
    }
    write_at(f, region.0 + u64::from(page83.0), &guid("disk id"))
}

/// Sets the CRC-32C of `block` (computed with its checksum field zero) at `at`.
fn seal(block: &mut [u8], at: usize) {
    block[at..at + 4].fill(0);
    let sum = crc32c(block);
    block[at..at + 4].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            guid_bytes("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
    }
}
