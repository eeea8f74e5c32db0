//! Stages by reference: a pipeline names a wasm stage in a registry as
//! `oci://REGISTRY/REPOSITORY@sha256:DIGEST` (the manifest's digest).
//!
//! The artifact is the one `wkg` and the CNCF wasm OCI layout use, so one
//! registry serves both: config `application/vnd.wasm.config.v0+json`,
//! one layer `application/wasm` (the component). A pulled stage is
//! checked against the digest the pipeline names (the manifest, and
//! through it the component) before anything runs, and kept in the store
//! (`STORE/stages/HEX/`) so the next build reads it from disk; from there
//! it is a stage like any other: its embedded metadata says what it may
//! reach, and the policy's `signers` apply to it by its name.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use osbuild_registry::auth::Credentials;
use osbuild_registry::{Descriptor, Location, Manifest, Remote};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Origin, Stage};

pub const CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_TYPE: &str = "application/wasm";
pub const ARTIFACT_TYPE: &str = "application/vnd.wasm.component.v1+wasm";

/// `oci://REGISTRY/REPOSITORY` with `@sha256:DIGEST` or `:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub location: Location,
    /// `sha256:HEX` of the manifest.
    pub digest: Option<String>,
    pub tag: Option<String>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether a pipeline's stage name is a reference (not a stage name).
pub fn is_reference(name: &str) -> bool {
    name.starts_with("oci://")
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, String> {
        let (rest, digest) = match text.rsplit_once('@') {
            Some((rest, d)) => {
                if !osbuild_registry::is_digest(d) {
                    return Err(format!(
                        "{text}: {d:?} is not a digest (sha256: and 64 lowercase hex digits)"
                    ));
                }
                (rest, Some(d.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a port is before it).
        let slash = rest.rfind('/').unwrap_or(0);
        let (base, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag
            && !osbuild_registry::is_tag(t)
        {
            return Err(format!("{text}: {t:?} is not a tag"));
        }
        let location = Location::parse(base).map_err(|e| e.to_string())?;
        Ok(Reference {
            location,
            digest,
            tag,
        })
    }
}

/// What is kept of a pulled stage beside its component.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pulled {
    reference: String,
    manifest: String,
    component: String,
}

/// Finds, pulls and pushes stages in registries; pulled ones are kept in
/// the store's `stages/`.
#[derive(Debug, Clone)]
pub struct RemoteStages {
    /// The store (checked to be the user's own before anything in it is
    /// read or written).
    pub store: PathBuf,
    /// `--registry-auth`: read (with Docker's and Podman's files) only
    /// when a registry is contacted.
    pub auth_file: Option<PathBuf>,
    /// The policy's `stage-registries`: the only places a pipeline may
    /// name stages from (`None`: anywhere). Checked before any contact.
    pub allowed: Option<Vec<String>>,
    /// `STORE/stages` for the store `store`, the store checked to be the
    /// user's own first, and (`true`) made a store if it is not one yet:
    /// [`crate`]'s `store::stages_dir` (given, so that stages do not
    /// depend on the store).
    pub stages_dir: fn(&Path, bool) -> Result<PathBuf, String>,
}

/// Whether `reference` is under one of `prefixes` (`oci://HOST/REPO`,
/// whole path components).
pub fn under(prefixes: &[String], reference: &str) -> bool {
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        reference
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with(['/', '@', ':']))
    })
}

/// The most osbuild reads of a component from a registry.
const MAX_COMPONENT: u64 = super::MAX_STAGE_BYTES;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl RemoteStages {
    /// `STORE/stages`, the store checked first: what is kept there runs.
    fn cache(&self) -> Result<PathBuf, String> {
        (self.stages_dir)(&self.store, false)
    }

    fn dir(&self, manifest: &str) -> Result<PathBuf, String> {
        Ok(self
            .cache()?
            .join(manifest.strip_prefix("sha256:").unwrap_or(manifest)))
    }

    /// The stage a pipeline names by reference (a digest is required:
    /// the pipeline says exactly what runs).
    pub fn find(&self, name: &str) -> Result<Stage, String> {
        let reference = Reference::parse(name)?;
        if let Some(allowed) = &self.allowed
            && !under(allowed, name)
        {
            return Err(format!(
                "{name}: the policy's stage-registries do not include it ({}); osbuild did not contact it",
                allowed.join(", ")
            ));
        }
        let Some(digest) = reference.digest.clone() else {
            return Err(format!(
                "{name}: a stage from a registry is named by digest (oci://REGISTRY/REPOSITORY@sha256:...); `osbuild stage pull {name}` prints it"
            ));
        };
        if let Some(stage) = self.cached(&digest, name)? {
            return Ok(stage);
        }
        self.pull(&reference).map(|(stage, _)| stage)
    }

    /// A stage pulled before, re-read and checked.
    fn cached(&self, manifest: &str, name: &str) -> Result<Option<Stage>, String> {
        let dir = self.dir(manifest)?;
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(None);
        }
        let kept = || -> Option<Vec<u8>> {
            let text = super::read_regular_file(&dir.join("pulled.json"), 64 << 10, false).ok()?;
            let pulled: Pulled = serde_json::from_slice(&text).ok()?;
            let bytes =
                super::read_regular_file(&dir.join("stage.wasm"), MAX_COMPONENT, false).ok()?;
            (pulled.manifest == manifest && sha256(&bytes) == pulled.component).then_some(bytes)
        };
        match kept() {
            Some(bytes) => {
                Stage::from_wasm_bytes(Cow::Owned(bytes), Origin::Oci(name.to_string())).map(Some)
            }
            None => {
                // Not what was pulled (a build killed while keeping it, a
                // disk error): gone, and pulled again.
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| format!("removing {}: {e}", dir.display()))?;
                Ok(None)
            }
        }
    }

    fn remote(&self, location: &Location) -> Result<Remote, String> {
        let credentials = Credentials::load(self.auth_file.as_deref())?;
        Remote::new(location.clone(), &credentials).map_err(|e| e.to_string())
    }

    /// Pulls `reference` (by digest or tag), checks it is a wasm stage,
    /// keeps it. Returns the stage and the manifest's digest.
    pub fn pull(&self, reference: &Reference) -> Result<(Stage, String), String> {
        let remote = self.remote(&reference.location)?;
        let want = reference
            .digest
            .clone()
            .or_else(|| reference.tag.clone())
            .unwrap_or_else(|| "latest".into());
        let (manifest, digest) = remote
            .manifest(&want)
            .map_err(|e| format!("{reference}: {e}"))?
            .ok_or_else(|| match &reference.digest {
                Some(_) => format!(
                    "{reference}: the registry has no manifest with this digest (a digest mistyped, or a stage deleted from it)"
                ),
                None => format!("{reference}: the registry has no such tag"),
            })?;
        let layer = component_layer(&manifest).map_err(|e| format!("{reference}: {e}"))?;
        let bytes = remote
            .fetch_small(
                layer,
                &format!("the component of {reference}"),
                MAX_COMPONENT,
            )
            .map_err(|e| e.to_string())?;
        let pinned = Reference {
            digest: Some(digest.clone()),
            tag: None,
            ..reference.clone()
        }
        .to_string();
        let stage = Stage::from_wasm_bytes(Cow::Owned(bytes), Origin::Oci(pinned.clone()))?;
        self.keep(&digest, &pinned, &stage)?;
        Ok((stage, digest))
    }

    fn keep(&self, manifest: &str, reference: &str, stage: &Stage) -> Result<(), String> {
        let super::Code::Wasm(bytes) = &stage.code else {
            return Ok(());
        };
        let cache = (self.stages_dir)(&self.store, true)?;
        let err =
            |e: std::io::Error| format!("keeping the pulled stage in {}: {e}", cache.display());
        std::fs::create_dir_all(&cache).map_err(err)?;
        let tmp = tempfile::Builder::new()
            .prefix(".pull-")
            .tempdir_in(&cache)
            .map_err(err)?;
        std::fs::write(tmp.path().join("stage.wasm"), bytes).map_err(err)?;
        let pulled = Pulled {
            reference: reference.to_string(),
            manifest: manifest.to_string(),
            component: sha256(bytes),
        };
        std::fs::write(
            tmp.path().join("pulled.json"),
            serde_json::to_vec_pretty(&pulled).expect("serializable"),
        )
        .map_err(err)?;
        let dest = cache.join(manifest.strip_prefix("sha256:").unwrap_or(manifest));
        match std::fs::rename(tmp.path(), &dest) {
            Ok(()) => {
                let _ = tmp.keep();
                Ok(())
            }
            // Another build kept it meanwhile: the same bytes.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                Ok(())
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Pushes the wasm stage at `path` to `reference` (its tag, or
    /// `latest`). Returns the pinned reference (`...@sha256:`).
    pub fn push(&self, path: &Path, reference: &Reference, epoch: i64) -> Result<String, String> {
        if reference.digest.is_some() {
            return Err(format!(
                "{reference}: push to a tag (or none: latest); the digest is the registry's answer"
            ));
        }
        let stage = Stage::load_file(path)?;
        let super::Code::Wasm(bytes) = &stage.code else {
            return Err(format!(
                "{}: a native stage; only wasm stages (portable components) go to registries",
                path.display()
            ));
        };
        let remote = self.remote(&reference.location)?;
        let (layer, _) = remote
            .push_bytes(LAYER_TYPE, bytes)
            .map_err(|e| e.to_string())?;
        let config = serde_json::json!({
            "created": crate::mtime::rfc3339(epoch),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.digest],
            "component": {
                "imports": super::metadata::wasm_imports(bytes).map_err(|e| format!("{e:#}"))?,
                "exports": [],
            },
        });
        let (config, _) = remote
            .push_bytes(
                CONFIG_TYPE,
                &serde_json::to_vec(&config).expect("serializable"),
            )
            .map_err(|e| e.to_string())?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(osbuild_registry::MANIFEST_TYPE.to_string()),
            config,
            layers: vec![layer],
            subject: None,
            artifact_type: Some(ARTIFACT_TYPE.to_string()),
            annotations: Some(
                [(
                    "org.opencontainers.image.title".to_string(),
                    stage.name().to_string(),
                )]
                .into(),
            ),
        };
        let tag = reference.tag.as_deref().unwrap_or("latest");
        let (digest, _) = remote
            .push_manifest(tag, &manifest)
            .map_err(|e| e.to_string())?;
        Ok(format!("{}@{digest}", reference.location))
    }
}

/// The component layer of a wasm artifact's manifest.
fn component_layer(manifest: &Manifest) -> Result<&Descriptor, String> {
    if manifest.config.media_type != CONFIG_TYPE {
        return Err(format!(
            "not a wasm component (its config is {:?}, not {CONFIG_TYPE})",
            manifest.config.media_type
        ));
    }
    match manifest.layers.as_slice() {
        [layer] if layer.media_type == LAYER_TYPE => Ok(layer),
        _ => Err(format!(
            "a wasm stage is one {LAYER_TYPE} layer; this has {} layers ({})",
            manifest.layers.len(),
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_prefixes() {
        let allowed = vec!["oci://reg.example.com/stages".to_string()];
        assert!(under(
            &allowed,
            "oci://reg.example.com/stages/motd@sha256:0"
        ));
        assert!(!under(
            &allowed,
            "oci://reg.example.com/stages-evil/motd@sha256:0"
        ));
        assert!(!under(
            &allowed,
            "oci://reg.example.com.evil/stages/motd@sha256:0"
        ));
        assert!(!under(&allowed, "oci://other/stages/motd@sha256:0"));
    }

    #[test]
    fn references() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("oci://127.0.0.1:5000/ns/com.example.motd@{d}")).unwrap();
        assert_eq!(r.location.registry, "127.0.0.1:5000");
        assert_eq!(r.location.repository, "ns/com.example.motd");
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag, None);
        let r = Reference::parse("oci://127.0.0.1:5000/ns/motd:v1.2").unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.location.registry, "127.0.0.1:5000");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/ns/motd:v1.2");
        let r = Reference::parse("oci://ghcr.io/ns/motd").unwrap();
        assert_eq!((r.tag, r.digest), (None, None));
        for bad in [
            "oci://ghcr.io/ns/motd@sha256:abc",
            "oci://ghcr.io/ns/motd@md5:0",
            "oci://ghcr.io/ns/motd:-x",
            "oci://ghcr.io/ns/Motd",
            "ghcr.io/ns/motd",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
