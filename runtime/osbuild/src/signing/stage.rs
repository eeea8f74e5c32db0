//! Signatures on stages. A wasm stage carries its signature inside the
//! component, as the WebAssembly signatures convention has it (a
//! `signature` custom section first, over every byte after it; what
//! `wasmsign2` writes and checks), so the file stays one portable stage.
//! A native stage has it beside the executable, `NAME.sig`: an SSH
//! signature (namespace `osbuild-stage`) of the executable, a zero byte
//! and `NAME.json`, the bytes its digest is taken over, so the metadata
//! that grants its capabilities is signed too. `ssh-keygen -Y` reads and
//! writes the same files.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ssh_key::{HashAlg, LineEnding, SshSig};

use super::keys::{SigningKey, VerifyingKey};
use crate::stage::{Code, Origin, Stage};

/// The SSH signature namespace of a native stage's signature: a signature
/// made for anything else (a git commit, a file) is never taken for one.
pub const NAMESPACE: &str = "osbuild-stage";

/// What vouches for a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A built-in stage: trusted by where it comes from, the osbuild
    /// binary itself.
    Builtin,
    /// A valid signature by this key.
    Key(VerifyingKey),
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Builtin => f.write_str("builtin"),
            Signer::Key(k) => f.write_str(&k.describe()),
        }
    }
}

/// Who the signature a stage carries says signed it, before any key has
/// checked it: what an audit without the policy's keys can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Builtin,
    Unsigned,
    /// Signed, by the keys with these fingerprints (`SHA256:…`; empty
    /// when the signature names none).
    Signed(Vec<String>),
    /// A signature is there but cannot be read.
    Unreadable(String),
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::Builtin => f.write_str("builtin"),
            Claim::Unsigned => f.write_str("unsigned"),
            Claim::Signed(keys) if keys.is_empty() => f.write_str("signed (by an unnamed key)"),
            Claim::Signed(keys) => write!(f, "signed by {}", keys.join(", ")),
            Claim::Unreadable(e) => write!(f, "an unreadable signature ({e})"),
        }
    }
}

/// The bytes a native stage's signature covers: its executable, a zero
/// byte, and its metadata file (what its digest is taken over).
pub fn native_message(exe: &[u8], metadata: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(exe.len() + 1 + metadata.len());
    m.extend_from_slice(exe);
    m.push(0);
    m.extend_from_slice(metadata.as_bytes());
    m
}

/// A component's header: its 8 bytes are outside what a signature covers,
/// so a signed file must have exactly these.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// The most a signature section may hold: a few signatures are a few
/// hundred bytes.
const MAX_SIGNATURE_SECTION: usize = 64 << 10;

/// Walks a component's sections as wasmsign2 will read them, checking
/// that every length they hold fits in the bytes there are: wasmsign2
/// allocates what a length says before it reads, and a six-byte section
/// must not cost 4 GiB. A first section named `signature` is walked
/// inside too.
fn sane_sections(bytes: &[u8]) -> Result<(), String> {
    if bytes.get(..8) != Some(&COMPONENT_HEADER[..]) {
        return Err("not a component's header".into());
    }
    let mut r = Reader { b: bytes, at: 8 };
    let mut first = true;
    while r.at < bytes.len() {
        let id = r.byte()?;
        if id & 0x80 != 0 {
            return Err("a section id out of range".into());
        }
        let section = r.slice()?;
        if id == 0 {
            let mut inner = Reader { b: section, at: 0 };
            let name = inner.slice()?;
            if first && name == b"signature" {
                signature_data(section, inner)?;
            }
        }
        first = false;
    }
    Ok(())
}

/// The inside of a signature section, from just after its name.
fn signature_data(section: &[u8], mut r: Reader) -> Result<(), String> {
    if section.len() > MAX_SIGNATURE_SECTION {
        return Err(format!(
            "a signature section of {} bytes (at most {MAX_SIGNATURE_SECTION})",
            section.len()
        ));
    }
    for _ in 0..3 {
        r.byte()?; // Version, content type, hash function.
    }
    for _ in 0..r.count(64)? {
        let mut set = Reader {
            b: r.slice()?,
            at: 0,
        };
        for _ in 0..set.count(64)? {
            set.take(32)?;
        }
        for _ in 0..set.count(256)? {
            let mut sig = Reader {
                b: set.slice()?,
                at: 0,
            };
            sig.slice()?; // Key id.
            sig.byte()?; // Algorithm.
            sig.slice()?; // Signature.
        }
    }
    Ok(())
}

/// Reads wasmsign2's encoding: LEB128 lengths and counts, each checked.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or("a signature section cut short")?;
        self.at += 1;
        Ok(v)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.byte()?;
            v |= u32::from(b & 0x7f) << (i * 7);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number too long in a signature section".into())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(len)
            .filter(|e| *e <= self.b.len())
            .ok_or("a length in a signature section runs past its end")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn slice(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn count(&mut self, max: u32) -> Result<u32, String> {
        let n = self.u32()?;
        if n > max {
            return Err(format!(
                "{n} entries in a signature section (at most {max})"
            ));
        }
        Ok(n)
    }
}

/// The signature `stage` carries, unchecked.
pub fn claim(stage: &Stage) -> Claim {
    if stage.origin == Origin::Builtin {
        return Claim::Builtin;
    }
    match &stage.code {
        Code::Wasm(bytes) => {
            if let Err(e) = sane_sections(bytes) {
                return Claim::Unreadable(e);
            }
            match wasmsign2::signature_info_from_reader(&mut Cursor::new(&bytes[..]), None) {
                Ok(info) if info.is_signed() => Claim::Signed(
                    info.key_ids()
                        .iter()
                        .map(|id| fingerprint_of_id(id))
                        .collect(),
                ),
                Ok(_) | Err(wasmsign2::WSError::NoSignatures) => Claim::Unsigned,
                Err(e) => Claim::Unreadable(e.to_string()),
            }
        }
        Code::Native(..) => match &stage.detached_signature {
            None => Claim::Unsigned,
            Some(bytes) => match SshSig::from_pem(bytes) {
                Ok(sig) => Claim::Signed(vec![
                    ssh_key::PublicKey::from(sig.public_key().clone())
                        .fingerprint(HashAlg::Sha256)
                        .to_string(),
                ]),
                Err(e) => Claim::Unreadable(e.to_string()),
            },
        },
    }
}

/// A key id as osbuild writes it (the key's SHA256 fingerprint) shown as
/// `ssh-keygen -l` would; another signer's id as hex.
fn fingerprint_of_id(id: &[u8]) -> String {
    use base64ct::Encoding as _;
    if id.len() == 32 {
        format!("SHA256:{}", base64ct::Base64Unpadded::encode_string(id))
    } else {
        format!("key id {}", hex::encode(id))
    }
}

/// Whether `key` signed `stage`; the error says why not.
pub fn verify(stage: &Stage, key: &VerifyingKey) -> Result<(), String> {
    match &stage.code {
        Code::Wasm(bytes) => {
            sane_sections(bytes).map_err(|e| format!("its signature cannot be read: {e}"))?;
            key.wasmsign()
                .verify(&mut Cursor::new(&bytes[..]), None)
                .map_err(|e| match e {
                    wasmsign2::WSError::NoSignatures => "it has no signature".to_string(),
                    wasmsign2::WSError::VerificationFailed => {
                        format!("its signature is not {}'s", key.describe())
                    }
                    e => format!("its signature cannot be checked: {e}"),
                })
        }
        Code::Native(exe, _) => {
            let Some(bytes) = &stage.detached_signature else {
                return Err(match &stage.origin {
                    Origin::File(p) => format!(
                        "it has no signature ({} is missing)",
                        crate::stage::detached_signature_path(p).display()
                    ),
                    Origin::Builtin | Origin::Oci(_) => "it has no signature".to_string(),
                });
            };
            let sig = SshSig::from_pem(bytes)
                .map_err(|e| format!("its signature file is not an SSH signature: {e}"))?;
            let metadata = stage.native_metadata.as_deref().unwrap_or_default();
            key.ssh()
                .verify(NAMESPACE, &native_message(exe, metadata), &sig)
                .map_err(|e| match e {
                    ssh_key::Error::PublicKey => {
                        format!("its signature is not {}'s", key.describe())
                    }
                    ssh_key::Error::Namespace => format!(
                        "its signature is for {:?}, not {NAMESPACE:?}",
                        sig.namespace()
                    ),
                    _ => format!(
                        "its signature by {} does not match its code and metadata",
                        key.describe()
                    ),
                })
        }
    }
}

/// Who of `allowed` vouches for `stage`, or why none does.
pub fn vouch(stage: &Stage, allowed: &[Allowed]) -> Result<Signer, String> {
    let mut why = Vec::new();
    for a in allowed {
        match a {
            Allowed::Builtin if stage.origin == Origin::Builtin => return Ok(Signer::Builtin),
            Allowed::Builtin => {}
            Allowed::Key(key) => match verify(stage, key) {
                Ok(()) => return Ok(Signer::Key(key.clone())),
                Err(e) => why.push(e),
            },
        }
    }
    why.dedup();
    Err(match claim(stage) {
        Claim::Unsigned | Claim::Builtin => why
            .into_iter()
            .next()
            .unwrap_or_else(|| "it is not a built-in stage".to_string()),
        claim => format!("it is {claim}"),
    })
}

/// What a policy accepts as a stage's signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// `builtin`: the stages built into osbuild.
    Builtin,
    Key(VerifyingKey),
}

impl Allowed {
    pub fn parse(s: &str) -> anyhow::Result<Allowed> {
        if s == "builtin" {
            Ok(Allowed::Builtin)
        } else {
            VerifyingKey::parse(s).map(Allowed::Key)
        }
    }
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowed::Builtin => f.write_str("builtin"),
            Allowed::Key(k) => f.write_str(&k.describe()),
        }
    }
}

/// Signs the stage file at `path` (a `.wasm` component in place; a native
/// executable with `NAME.sig` beside it); returns the file written.
pub fn sign_file(path: &Path, key: &SigningKey) -> anyhow::Result<PathBuf> {
    let stage = Stage::load_file(path).map_err(anyhow::Error::msg)?;
    match &stage.code {
        Code::Wasm(bytes) => {
            sane_sections(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let module = wasmsign2::Module::deserialize(&mut Cursor::new(&bytes[..]))
                .with_context(|| format!("{}: reading its sections", path.display()))?;
            let signed = key
                .wasmsign()
                .sign(module, Some(&key.public().fingerprint_bytes()))
                .with_context(|| format!("signing {}", path.display()))?;
            let mut out = Vec::with_capacity(bytes.len() + 256);
            signed
                .serialize(&mut out)
                .with_context(|| format!("signing {}", path.display()))?;
            // The signed component must still be the same stage.
            let check = Stage::from_wasm_bytes(Cow::Owned(out.clone()), stage.origin.clone())
                .map_err(|e| anyhow::anyhow!("the signed component does not load: {e}"))?;
            if let Err(e) = verify(&check, key.public()) {
                bail!("the signed component does not verify: {e}");
            }
            replace(path, &out)?;
            Ok(path.to_path_buf())
        }
        Code::Native(exe, _) => {
            let metadata = stage.native_metadata.as_deref().unwrap_or_default();
            let sig = key
                .ssh()
                .sign(NAMESPACE, HashAlg::Sha512, &native_message(exe, metadata))
                .with_context(|| format!("signing {}", path.display()))?;
            let pem = sig
                .to_pem(LineEnding::LF)
                .context("encoding the signature")?;
            let out = crate::stage::detached_signature_path(path);
            replace(&out, pem.as_bytes())?;
            Ok(out)
        }
    }
}

/// Writes `bytes` to `path` through a file beside it renamed over it,
/// keeping the mode of the file it replaces.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mode = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component_with_first_section(section: &[u8]) -> Vec<u8> {
        let mut b = COMPONENT_HEADER.to_vec();
        b.push(0);
        b.push(section.len() as u8);
        b.extend_from_slice(section);
        b
    }

    #[test]
    fn a_signature_section_whose_lengths_lie_is_refused_before_wasmsign2_reads_it() {
        // The reviewer's six bytes: a count of 1, then a length of 4 GiB.
        let mut lying = vec![9];
        lying.extend_from_slice(b"signature");
        lying.extend_from_slice(&[0x01, 0x01, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        let e = sane_sections(&component_with_first_section(&lying)).unwrap_err();
        assert!(e.contains("runs past its end"), "{e}");
        let mut many = vec![9];
        many.extend_from_slice(b"signature");
        many.extend_from_slice(&[0x01, 0x01, 0x01, 0x41]);
        let e = sane_sections(&component_with_first_section(&many)).unwrap_err();
        assert!(e.contains("65 entries"), "{e}");
        // Not a signature section first, or no section: unsigned, fine.
        let mut other = vec![4];
        other.extend_from_slice(b"name");
        assert_eq!(sane_sections(&component_with_first_section(&other)), Ok(()));
        assert_eq!(sane_sections(&COMPONENT_HEADER), Ok(()));
        // A core module's header is not a stage's.
        let mut module = component_with_first_section(&other);
        module[4..8].copy_from_slice(&[1, 0, 0, 0]);
        assert!(sane_sections(&module).is_err());
    }
}
