//! ed25519 keys in the formats people have: `ssh-keygen -t ed25519`'s
//! private key file and `ssh-ed25519 AAAA… comment` public key lines.

use std::path::Path;

use anyhow::{Context as _, bail};
use ssh_key::{HashAlg, private::KeypairData, public::KeyData};

/// The most osbuild reads of a key file: keys are a few hundred bytes.
const MAX_KEY_BYTES: u64 = 64 << 10;

/// A public key: who may have signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    ssh: ssh_key::PublicKey,
    raw: [u8; 32],
}

impl VerifyingKey {
    /// Parses one OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
    pub fn parse(line: &str) -> anyhow::Result<VerifyingKey> {
        let line = line.trim();
        let ssh = ssh_key::PublicKey::from_openssh(line).map_err(|e| {
            anyhow::anyhow!(
                "{:?} is not an OpenSSH public key line ({e}); give it as `ssh-ed25519 AAAA… comment`, as in a .pub file",
                abbreviate(line)
            )
        })?;
        VerifyingKey::from_ssh(ssh)
    }

    fn from_ssh(ssh: ssh_key::PublicKey) -> anyhow::Result<VerifyingKey> {
        let KeyData::Ed25519(pk) = ssh.key_data() else {
            bail!(
                "a {} key; osbuild signs and checks with ed25519 keys only (ssh-keygen -t ed25519)",
                ssh.algorithm()
            );
        };
        Ok(VerifyingKey { raw: pk.0, ssh })
    }

    /// Reads a public key file (a `.pub` file: its first key line).
    pub fn load(path: &Path) -> anyhow::Result<VerifyingKey> {
        let text = read_key_file(path)?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .with_context(|| format!("{}: no key in it", path.display()))?;
        if line.starts_with("-----BEGIN") {
            bail!(
                "{}: a private key; give the public key (the .pub file beside it)",
                path.display()
            );
        }
        VerifyingKey::parse(line).with_context(|| path.display().to_string())
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.ssh.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The fingerprint's 32 bytes: the key id a signature carries.
    pub fn fingerprint_bytes(&self) -> Vec<u8> {
        self.ssh.fingerprint(HashAlg::Sha256).as_bytes().to_vec()
    }

    /// The fingerprint and, if the key has one, its comment.
    pub fn describe(&self) -> String {
        match self.ssh.comment() {
            "" => self.fingerprint(),
            c => format!("{} ({})", self.fingerprint(), crate::changes::printable(c)),
        }
    }

    pub(crate) fn ssh(&self) -> &ssh_key::PublicKey {
        &self.ssh
    }

    pub(crate) fn wasmsign(&self) -> wasmsign2::PublicKey {
        wasmsign2::PublicKey {
            pk: ed25519_compact::PublicKey::new(self.raw),
            key_id: None,
        }
    }

    /// Whether `signature` is this key's ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519_compact::Signature::from_slice(signature).is_ok_and(|s| {
            ed25519_compact::PublicKey::new(self.raw)
                .verify(message, &s)
                .is_ok()
        })
    }
}

/// A private key: what signs.
pub struct SigningKey {
    ssh: ssh_key::PrivateKey,
    secret: ed25519_compact::SecretKey,
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "SigningKey({})", self.public.fingerprint())
    }
}

impl SigningKey {
    /// Reads an OpenSSH private key file (`ssh-keygen -t ed25519 -N ''`).
    pub fn load(path: &Path) -> anyhow::Result<SigningKey> {
        let text = read_key_file(path)?;
        let ssh = ssh_key::PrivateKey::from_openssh(text.trim()).map_err(|e| {
            anyhow::anyhow!(
                "{}: not an OpenSSH private key ({e}); make one with `ssh-keygen -t ed25519 -N '' -f FILE`",
                path.display()
            )
        })?;
        if ssh.is_encrypted() {
            bail!(
                "{}: the key is protected by a passphrase, which osbuild does not ask for; use a key without one (ssh-keygen -p -N '' -f FILE removes it from a copy)",
                path.display()
            );
        }
        let KeypairData::Ed25519(pair) = ssh.key_data() else {
            bail!(
                "{}: a {} key; osbuild signs with ed25519 keys only (ssh-keygen -t ed25519)",
                path.display(),
                ssh.algorithm()
            );
        };
        let secret = ed25519_compact::SecretKey::from_slice(&pair.to_bytes())
            .map_err(|e| anyhow::anyhow!("{}: a broken ed25519 key: {e}", path.display()))?;
        let public = VerifyingKey::from_ssh(ssh.public_key().clone())?;
        Ok(SigningKey {
            ssh,
            secret,
            public,
        })
    }

    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    /// The ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.secret.sign(message, None).to_vec()
    }

    pub(crate) fn ssh(&self) -> &ssh_key::PrivateKey {
        &self.ssh
    }

    pub(crate) fn wasmsign(&self) -> wasmsign2::SecretKey {
        wasmsign2::SecretKey {
            sk: self.secret.clone(),
        }
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::stage::read_regular_file(path, MAX_KEY_BYTES, true)
        .map_err(|e| anyhow::anyhow!("reading the key: {e}"))?;
    String::from_utf8(bytes)
        .with_context(|| format!("{}: not a key file (not text)", path.display()))
}

fn abbreviate(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    if short.len() < s.len() {
        format!("{short}…")
    } else {
        short
    }
}
