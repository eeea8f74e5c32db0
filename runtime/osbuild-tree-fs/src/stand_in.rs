//! Device-node stand-ins, for processes that may not make device nodes.
//!
//! A rootless build runs as root of a user namespace, where the kernel
//! refuses `mknod` of any device. An OS tree still needs `/dev/null` and
//! its kin, and `--save` must give the bytes a root build gives. So there,
//! a device node is kept as a *stand-in*: an empty regular file with the
//! node's mode and owner and an extended attribute naming its kind and
//! number. [`Root`](crate::Root) shows a stand-in as the node it stands
//! for (metadata, refusal to open it, the attribute hidden), so the
//! archive writer and the stages' `tree` interface see a device node.
//!
//! Only osbuild makes stand-ins: the attribute cannot be set through
//! [`Root::set_xattr`](crate::Root::set_xattr), archives carrying it are
//! refused, and a process that has not [`enable`]d stand-ins never reads
//! one as a device (in a root build, a native stage could set the
//! attribute itself).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::EntryKind;

/// The extended attribute that marks a stand-in: `c MAJOR:MINOR` or `b MAJOR:MINOR`.
pub const XATTR: &str = "user.osbuild.device";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Makes [`Root::make_node`](crate::Root::make_node) write stand-ins for
/// device nodes, and every [`Root`](crate::Root) read them as nodes, from
/// now on in this process.
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn encode(kind: EntryKind, major: u32, minor: u32) -> String {
    let k = if kind == EntryKind::BlockDevice {
        'b'
    } else {
        'c'
    };
    format!("{k} {major}:{minor}")
}

/// The kind and number a stand-in's attribute names; `None` for anything
/// else (the attribute is then ignored and the file is a file).
pub(crate) fn decode(value: &[u8]) -> Option<(EntryKind, u32, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let (kind, number) = s.split_once(' ')?;
    let kind = match kind {
        "c" => EntryKind::CharDevice,
        "b" => EntryKind::BlockDevice,
        _ => return None,
    };
    let (major, minor) = number.split_once(':')?;
    let digits = |d: &str| !d.is_empty() && d.len() <= 10 && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((kind, major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stand_in_names_its_kind_and_number_and_nothing_else_decodes() {
        assert_eq!(encode(EntryKind::CharDevice, 1, 3), "c 1:3");
        assert_eq!(decode(b"b 7:0"), Some((EntryKind::BlockDevice, 7, 0)));
        assert_eq!(
            decode(encode(EntryKind::CharDevice, 4095, 1048575).as_bytes()),
            Some((EntryKind::CharDevice, 4095, 1048575))
        );
        for bad in [
            &b""[..],
            b"c",
            b"c 1",
            b"c 1:",
            b"c :3",
            b"p 1:3",
            b"c +1:3",
            b"c 1:3 ",
            b"c 1:3\n",
            b" c 1:3",
            b"c 99999999999:1",
            b"c 1:\xff",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
