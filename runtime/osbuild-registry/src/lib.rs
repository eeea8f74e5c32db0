//! osbuild's client of OCI registries (Docker Distribution, Harbor, Quay,
//! GHCR, Zot...): the remote store and stages by reference travel as OCI
//! artifacts through it.
//!
//! The protocol is `oci-client`'s; this crate adds what osbuild needs on
//! top, behind a blocking API (the executor is synchronous):
//!
//! - [`Location`]: `oci://HOST[:PORT]/REPOSITORY`, parsed once at the edge.
//!   Loopback registries (127.0.0.0/8, `[::1]`, `localhost`) are spoken to
//!   in plain HTTP, as Docker does, and never given credentials; every
//!   other one over HTTPS.
//! - Every byte that comes back is checked against the digest that named
//!   it, and never more than the size its descriptor states is read: a
//!   registry (or a blob altered in its storage) cannot hand over other
//!   content or fill the disk ([`Error::Mismatch`], [`Error::TooLarge`]).
//! - Blobs go up from files, streamed, only when the registry lacks them;
//!   manifests last, so a push that dies leaves nothing a pull would use.
//! - Credentials come from the files Docker and Podman write ([`auth`]).

pub mod auth;

use std::io::{Read, Write};

use futures_util::StreamExt as _;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

pub use oci_client::manifest::{OciDescriptor as Descriptor, OciImageManifest as Manifest};

/// The media type of the manifests osbuild writes.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The largest manifest osbuild reads (they are a few KiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// What went wrong talking to a registry. Callers tell apart a registry
/// they cannot reach (fall back to building) from content that is wrong
/// (report it, never use it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{location} is not an OCI reference: {reason}")]
    BadLocation { location: String, reason: String },
    #[error("cannot reach the registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("the registry {registry} refused the credentials: {detail}")]
    Denied { registry: String, detail: String },
    #[error("{what}: the content does not match its digest (expected {expected}, got {actual})")]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: more than {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("{what}: {detail}")]
    Io {
        what: String,
        detail: std::io::Error,
    },
    #[error("the registry {registry}: {detail}")]
    Protocol { registry: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `oci://HOST[:PORT]/REPOSITORY`: a repository in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub registry: String,
    pub repository: String,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)
    }
}

fn bad(location: &str, reason: impl Into<String>) -> Error {
    Error::BadLocation {
        location: location.to_string(),
        reason: reason.into(),
    }
}

impl Location {
    /// Parses `oci://HOST[:PORT]/REPOSITORY`. The repository follows the
    /// distribution spec's grammar (lowercase path components joined by
    /// `/`), so nothing in it can change the URL it becomes.
    pub fn parse(text: &str) -> Result<Location> {
        let rest = text.strip_prefix("oci://").ok_or_else(|| {
            bad(
                text,
                "it must start with oci:// (oci://registry.example.com:5000/team/osbuild-cache)",
            )
        })?;
        let (registry, repository) = rest
            .split_once('/')
            .ok_or_else(|| bad(text, "it names no repository after the registry"))?;
        check_registry(registry).map_err(|r| bad(text, r))?;
        check_repository(repository).map_err(|r| bad(text, r))?;
        Ok(Location {
            registry: registry.to_string(),
            repository: repository.to_string(),
        })
    }

    /// Whether the registry is on this machine's loopback (plain HTTP).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => self.registry.split(':').next().unwrap_or(""),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn check_registry(registry: &str) -> std::result::Result<(), String> {
    let ok = !registry.is_empty()
        && registry.len() <= 255
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !ok {
        return Err(format!(
            "{registry:?} is not a registry host (letters, digits, '-', '.', a :port)"
        ));
    }
    Ok(())
}

fn check_repository(repository: &str) -> std::result::Result<(), String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
            && !c.contains("..")
    };
    if repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "{repository:?} is not a repository name (lowercase letters, digits, '.', '_', '-', components joined by '/')"
        ));
    }
    Ok(())
}

/// Whether `tag` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"._-".contains(&x))
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits (the only
/// algorithm osbuild takes).
pub fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `sha256:HEX` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A writer that hashes what goes through it, for blobs made on the way
/// to a file.
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The writer, the digest (`sha256:HEX`) and the size of what was written.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.size)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A connection to one repository of one registry.
pub struct Remote {
    location: Location,
    client: oci_client::Client,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.location)
    }
}

// ring is deprecated in rustls for lacking post-quantum key exchange; the
// alternative (aws-lc-rs) is a C build of minutes on every clean build.
#[allow(deprecated)]
fn install_crypto() {
    // Once per process; a second install (another Remote) is refused and harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Remote {
    /// A client for `location`, with the credentials found for its
    /// registry (none: anonymous).
    pub fn new(location: Location, credentials: &auth::Credentials) -> Result<Remote> {
        install_crypto();
        let protocol = if location.is_loopback() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(config).map_err(|e| Error::Protocol {
            registry: location.registry.clone(),
            detail: format!("setting up the HTTP client: {e}"),
        })?;
        // Never in clear text: a loopback port is anyone's to bind while
        // the registry is not running.
        let auth = match credentials.for_registry(&location.registry) {
            Some((user, password)) if !location.is_loopback() => {
                RegistryAuth::Basic(user, password)
            }
            _ => RegistryAuth::Anonymous,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                what: "starting the registry client".into(),
                detail: e,
            })?;
        Ok(Remote {
            location,
            client,
            auth,
            runtime,
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn reference(&self, tag: &str) -> Reference {
        if is_digest(tag) {
            Reference::with_digest(
                self.location.registry.clone(),
                self.location.repository.clone(),
                tag.to_string(),
            )
        } else {
            Reference::with_tag(
                self.location.registry.clone(),
                self.location.repository.clone(),
                tag.to_string(),
            )
        }
    }

    fn error(&self, what: &str, e: OciDistributionError) -> Error {
        let registry = self.location.registry.clone();
        match e {
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                Error::Unreachable {
                    registry,
                    detail: chain(&e),
                }
            }
            OciDistributionError::AuthenticationFailure(detail)
            | OciDistributionError::UnauthorizedError { url: detail } => {
                Error::Denied { registry, detail }
            }
            OciDistributionError::ServerError {
                code: 401 | 403,
                message,
                ..
            } => Error::Denied {
                registry,
                detail: message,
            },
            e => Error::Protocol {
                registry,
                detail: format!("{what}: {}", error_text(&e)),
            },
        }
    }

    fn authenticate(&self, reference: &Reference, push: bool) -> Result<()> {
        let op = if push {
            oci_client::RegistryOperation::Push
        } else {
            oci_client::RegistryOperation::Pull
        };
        self.runtime
            .block_on(self.client.auth(reference, &self.auth, op))
            .map(|_| ())
            .map_err(|e| self.error("authenticating", e))
    }

    /// The manifest `tag` (or `sha256:` digest) names, with its digest;
    /// `None` if the registry has no such tag. By digest, the bytes must
    /// hash to it.
    pub fn manifest(&self, tag: &str) -> Result<Option<(Manifest, String)>> {
        let reference = self.reference(tag);
        self.authenticate(&reference, false)?;
        let fetched = self.runtime.block_on(self.client.pull_manifest_raw(
            &reference,
            &self.auth,
            &[MANIFEST_TYPE],
        ));
        let (body, _) = match fetched {
            Ok(v) => v,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.error(&format!("fetching the manifest {tag}"), e)),
        };
        let what = format!("{}:{tag}", self.location);
        if body.len() > MAX_MANIFEST {
            return Err(Error::TooLarge {
                what,
                limit: MAX_MANIFEST as u64,
            });
        }
        let digest = digest_of(&body);
        if is_digest(tag) && digest != tag {
            return Err(Error::Mismatch {
                what: format!("the manifest {what}"),
                expected: tag.to_string(),
                actual: digest,
            });
        }
        let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| Error::Invalid {
            what: format!("the manifest {what}"),
            detail: format!("not an OCI image manifest: {e}"),
        })?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !is_digest(&d.digest) || d.size < 0 {
                return Err(Error::Invalid {
                    what: format!("the manifest {what}"),
                    detail: format!(
                        "a descriptor's digest {:?} is not sha256:HEX or its size {} is negative",
                        d.digest, d.size
                    ),
                });
            }
        }
        Ok(Some((manifest, digest)))
    }

    /// Writes the blob `desc` names into `out`, checking its digest and
    /// never reading past its stated size. `out` may hold a partial blob
    /// on error; the caller throws it away.
    pub fn fetch_blob(&self, desc: &Descriptor, what: &str, out: &mut dyn Write) -> Result<u64> {
        if !is_digest(&desc.digest) {
            return Err(Error::Invalid {
                what: what.to_string(),
                detail: format!("{:?} is not a sha256 digest", desc.digest),
            });
        }
        let limit = u64::try_from(desc.size).unwrap_or(0);
        let reference = self.reference("latest");
        self.authenticate(&reference, false)?;
        self.runtime.block_on(async {
            // By digest, not the descriptor: oci-client checks only at the
            // end, and reads whatever length the registry sends.
            let bare = Descriptor {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                size: desc.size,
                ..Default::default()
            };
            let mut stream = self
                .client
                .pull_blob_stream(&reference, &bare)
                .await
                .map_err(|e| self.error(&format!("fetching {what}"), e))?;
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    // oci-client checks the digest too, at the end: by then
                    // every byte went through `hasher`, which names the
                    // content that came.
                    Err(e)
                        if e.get_ref()
                            .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) =>
                    {
                        break;
                    }
                    Err(e) => {
                        return Err(Error::Io {
                            what: format!("fetching {what}"),
                            detail: e,
                        });
                    }
                };
                got += chunk.len() as u64;
                if got > limit {
                    return Err(Error::TooLarge {
                        what: what.to_string(),
                        limit,
                    });
                }
                hasher.update(&chunk);
                out.write_all(&chunk).map_err(|e| Error::Io {
                    what: format!("writing {what}"),
                    detail: e,
                })?;
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != desc.digest {
                return Err(Error::Mismatch {
                    what: what.to_string(),
                    expected: desc.digest.clone(),
                    actual,
                });
            }
            if got != limit {
                return Err(Error::Invalid {
                    what: what.to_string(),
                    detail: format!("{got} bytes, the manifest says {limit}"),
                });
            }
            Ok(got)
        })
    }

    /// [`Remote::fetch_blob`] into memory, for small blobs (at most `max` bytes).
    pub fn fetch_small(&self, desc: &Descriptor, what: &str, max: u64) -> Result<Vec<u8>> {
        if u64::try_from(desc.size).unwrap_or(u64::MAX) > max {
            return Err(Error::TooLarge {
                what: what.to_string(),
                limit: max,
            });
        }
        let mut out = Vec::new();
        self.fetch_blob(desc, what, &mut out)?;
        Ok(out)
    }

    /// Whether the registry has the blob `digest`.
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        let reference = self.reference("latest");
        self.authenticate(&reference, true)?;
        self.runtime
            .block_on(self.client.blob_exists(&reference, digest))
            .map_err(|e| self.error(&format!("looking for the blob {digest}"), e))
    }

    /// Uploads `file` (already hashed: `digest`, `size`) unless the
    /// registry has it. Returns the bytes sent. The registry itself checks
    /// the digest before it keeps the blob.
    pub fn push_file(&self, file: std::fs::File, digest: &str, size: u64) -> Result<u64> {
        if self.has_blob(digest)? {
            return Ok(0);
        }
        let reference = self.reference("latest");
        let stream = futures_util::stream::unfold(Some(file), |state| async move {
            let mut file = state?;
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(OciDistributionError::IoError(e)), None)),
            }
        });
        if size == 0 {
            // The chunked upload refuses an empty stream.
            self.runtime
                .block_on(
                    self.client
                        .push_blob(&reference, bytes::Bytes::new(), digest),
                )
                .map_err(|e| self.error(&format!("uploading the blob {digest}"), e))?;
            return Ok(0);
        }
        self.runtime
            .block_on(
                self.client
                    .push_blob_stream(&reference, stream, digest, Some(size)),
            )
            .map_err(|e| self.error(&format!("uploading the blob {digest}"), e))?;
        Ok(size)
    }

    /// Uploads `data` as a blob unless the registry has it; returns its descriptor.
    pub fn push_bytes(&self, media_type: &str, data: &[u8]) -> Result<(Descriptor, u64)> {
        let digest = digest_of(data);
        let desc = Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size: data.len() as i64,
            ..Default::default()
        };
        if self.has_blob(&digest)? {
            return Ok((desc, 0));
        }
        let reference = self.reference("latest");
        self.runtime
            .block_on(self.client.push_blob(
                &reference,
                bytes::Bytes::copy_from_slice(data),
                &digest,
            ))
            .map_err(|e| self.error(&format!("uploading the blob {digest}"), e))?;
        Ok((desc, data.len() as u64))
    }

    /// Puts `manifest` under `tag`. Returns its digest and size in bytes.
    pub fn push_manifest(&self, tag: &str, manifest: &Manifest) -> Result<(String, u64)> {
        let body = serde_json::to_vec(manifest).map_err(|e| Error::Invalid {
            what: "the manifest".into(),
            detail: e.to_string(),
        })?;
        let reference = self.reference(tag);
        self.authenticate(&reference, true)?;
        let content_type = MANIFEST_TYPE.parse().expect("a valid header value");
        self.runtime
            .block_on(
                self.client
                    .push_manifest_raw(&reference, body.clone(), content_type),
            )
            .map_err(|e| self.error(&format!("putting the manifest {tag}"), e))?;
        Ok((digest_of(&body), body.len() as u64))
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        _ => false,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn error_text(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|e| format!("{:?}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        e => chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = Location::parse("oci://127.0.0.1:5000/team/osbuild-cache").unwrap();
        assert_eq!(l.registry, "127.0.0.1:5000");
        assert_eq!(l.repository, "team/osbuild-cache");
        assert!(l.is_loopback());
        assert_eq!(l.to_string(), "oci://127.0.0.1:5000/team/osbuild-cache");
        assert!(!Location::parse("oci://ghcr.io/a/b").unwrap().is_loopback());
        assert!(Location::parse("oci://[::1]:5000/a").unwrap().is_loopback());
        for bad in [
            "https://ghcr.io/a",
            "oci://ghcr.io",
            "oci://ghcr.io/",
            "oci://ghcr.io/A",
            "oci://ghcr.io/a/../b",
            "oci://ghcr.io/a?x=1",
            "oci://ghcr.io/a#b",
            "oci://user@ghcr.io/a",
            "oci://ghcr.io/a//b",
            "oci://ghcr.io/a:tag",
        ] {
            let e = Location::parse(bad).unwrap_err();
            assert!(matches!(e, Error::BadLocation { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn tags_and_digests() {
        assert!(is_tag(&"a".repeat(128)));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(!is_tag("-a"));
        assert!(!is_tag("a/b"));
        assert!(is_digest(&format!("sha256:{}", "0".repeat(64))));
        assert!(!is_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_digest(&format!("sha512:{}", "0".repeat(64))));
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer() {
        let mut w = Hashing::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (out, digest, size) = w.finish();
        assert_eq!(out, b"abc");
        assert_eq!(size, 3);
        assert_eq!(digest, digest_of(b"abc"));
    }
}
