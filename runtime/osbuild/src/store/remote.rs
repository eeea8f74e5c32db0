//! The remote store: objects as OCI artifacts in a registry, shared by
//! every machine that builds with `--cache-from` / `--cache-to`.
//!
//! An object is one manifest, tagged with its id (ids are content hashes
//! over everything a stage depends on, so no two machines can mean two
//! things by one tag):
//!
//! ```text
//! artifactType  application/vnd.osbuild.object.v1
//! config        application/vnd.osbuild.object.config.v1+json   id, parent, stage, layer, outputs
//! layers        application/vnd.oci.image.layer.v1.tar+zstd     the tree (an OCI layer: .wh. whiteouts)
//!               application/vnd.osbuild.object.output.v1+zstd   one per output file (title: its name)
//!               application/vnd.osbuild.object.changes.v1+json  what the stage changed
//!               application/vnd.osbuild.object.packages.v1+json what a package stage installed
//! ```
//!
//! Every blob is deterministic (sorted tar, zstd, no times but the tree's
//! own), so two machines pushing one id push the same bytes. Blobs go
//! first and the manifest last: a push killed halfway leaves blobs no
//! manifest names, which a pull never finds. A pull checks every blob
//! against its digest and the config against what this build expects
//! (id, stage, parent) before anything is committed to the local store;
//! the tree is unpacked as an untrusted archive (`--from`'s rules).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

use anyhow::Context as _;
use osbuild_registry::{Descriptor, Hashing, Manifest, Remote};
use serde::{Deserialize, Serialize};

use super::{Layer, Object, ObjectInfo, OutputFile, Store};
use crate::archive;

pub const ARTIFACT_TYPE: &str = "application/vnd.osbuild.object.v1";
pub const CONFIG_TYPE: &str = "application/vnd.osbuild.object.config.v1+json";
pub const TREE_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OUTPUT_TYPE: &str = "application/vnd.osbuild.object.output.v1+zstd";
pub const CHANGES_TYPE: &str = "application/vnd.osbuild.object.changes.v1+json";
pub const PACKAGES_TYPE: &str = "application/vnd.osbuild.object.packages.v1+json";
const TITLE: &str = "org.opencontainers.image.title";
/// The manifest annotation holding the signature (`--cache-key`): a DSSE
/// envelope of [`signed_payload`].
pub const SIGNATURE_ANNOTATION: &str = "dev.osbuild.object.signature";
pub const SIGNED_TYPE: &str = "application/vnd.osbuild.object.signed.v1+json";

/// What a signature covers: the object's id and every blob its manifest
/// names, with its type, size and annotations (an output's name), in order.
/// Rebuilt from the manifest on the reading side, so that nothing in it
/// can be swapped.
fn signed_payload(id: &str, manifest: &Manifest) -> Vec<u8> {
    let blob = |d: &Descriptor| {
        serde_json::json!({
            "mediaType": d.media_type,
            "digest": d.digest,
            "size": d.size,
            "annotations": d.annotations,
        })
    };
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "config": blob(&manifest.config),
        "layers": manifest.layers.iter().map(blob).collect::<Vec<_>>(),
    }))
    .expect("serializable")
}

/// The key among `signers` that signed `manifest` as object `id`.
fn check_signature(
    manifest: &Manifest,
    id: &str,
    signers: &[crate::signing::VerifyingKey],
) -> Result<String, String> {
    let names = || {
        signers
            .iter()
            .map(|k| k.describe())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(text) = manifest
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
    else {
        return Err(format!(
            "it is not signed; the policy's cache-signers take only results signed by {}",
            names()
        ));
    };
    let envelope: crate::signing::dsse::Envelope = serde_json::from_str(text)
        .map_err(|e| format!("its signature is not a DSSE envelope: {e}"))?;
    let expected = signed_payload(id, manifest);
    for key in signers {
        if let Ok(payload) = crate::signing::dsse::open(&envelope, SIGNED_TYPE, key) {
            if payload == expected {
                return Ok(key.describe());
            }
            return Err(format!(
                "signed by {}, but for other content (another object's signature)",
                key.describe()
            ));
        }
    }
    Err(format!(
        "not signed by any of the policy's cache-signers ({})",
        names()
    ))
}

/// The most a config, a change record or a package list may be.
const MAX_CONFIG: u64 = 1 << 20;
const MAX_RECORD: u64 = 64 << 20;

/// `text` from a registry, fit for a message: quoted, at most 100 characters.
fn shown(text: &str) -> String {
    let short: String = text.chars().take(100).collect();
    format!("{short:?}")
}

/// What an object's config blob holds: its info without what is local
/// (size on disk, time of commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    format: u32,
    id: String,
    parent: Option<String>,
    stage: String,
    layer: Layer,
    outputs: Vec<OutputFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changes: Option<crate::changes::Counts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packages: Option<super::packages::PackageSet>,
}

impl Config {
    /// The object it sits on: it must be in the local store first.
    pub fn parent(&self) -> Option<&str> {
        match self.layer {
            Layer::Overlay => self.parent.as_deref(),
            Layer::Full => None,
        }
    }
}

/// Why a pull was not used. `Unreachable`: the registry, not the object.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] osbuild_registry::Error),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Local(#[from] anyhow::Error),
}

impl PullError {
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            PullError::Registry(osbuild_registry::Error::Unreachable { .. })
        )
    }
}

/// What a build expects of the object it pulls: the result of `stage`
/// sitting on `parent` (the previous stage's id, the `--from` object's, or
/// none for the first).
pub struct Expected<'a> {
    pub id: &'a str,
    pub stage: &'a str,
    pub parent: Option<&'a str>,
}

/// Bytes moved, for the build's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub objects: u64,
    pub bytes: u64,
}

fn valid_output_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
}

/// The remote's manifest for `id`, if it has one, with its config.
/// `None` also for an object written by an osbuild with another result
/// format (it cannot be used here, and is not an error).
pub fn find(remote: &Remote, id: &str) -> Result<Option<Found>, PullError> {
    let Some((manifest, digest)) = remote.manifest(id)? else {
        return Ok(None);
    };
    let what = format!("object {id} in {}", remote.location());
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
        || manifest.config.media_type != CONFIG_TYPE
    {
        return Err(PullError::Refused(format!(
            "{what}: the tag holds something else (artifact type {:?}, config {:?}), not an osbuild object",
            manifest.artifact_type, manifest.config.media_type
        )));
    }
    let bytes = remote.fetch_small(
        &manifest.config,
        &format!("the config of {what}"),
        MAX_CONFIG,
    )?;
    let config: Config = serde_json::from_slice(&bytes)
        .map_err(|e| PullError::Refused(format!("{what}: its config is not an object's: {e}")))?;
    if config.format != super::ids::RESULT_FORMAT {
        return Ok(None);
    }
    Ok(Some(Found {
        manifest,
        digest,
        config,
    }))
}

/// An object a registry has: its manifest (and that manifest's digest)
/// and config, not yet checked against what the build expects.
pub struct Found {
    manifest: Manifest,
    digest: String,
    pub config: Config,
}

/// The layers of `manifest` by role, checked against `config`.
struct Layers<'m> {
    tree: &'m Descriptor,
    outputs: Vec<(&'m OutputFile, &'m Descriptor)>,
    changes: Option<&'m Descriptor>,
    packages: Option<&'m Descriptor>,
}

fn layers<'m>(
    manifest: &'m Manifest,
    config: &'m Config,
    what: &str,
) -> Result<Layers<'m>, String> {
    let mut tree = None;
    let mut outputs: BTreeMap<&str, &Descriptor> = BTreeMap::new();
    let mut changes = None;
    let mut packages = None;
    for d in &manifest.layers {
        let slot = match d.media_type.as_str() {
            TREE_TYPE => &mut tree,
            CHANGES_TYPE => &mut changes,
            PACKAGES_TYPE => &mut packages,
            OUTPUT_TYPE => {
                let name = d
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TITLE))
                    .map(String::as_str)
                    .unwrap_or("");
                if !valid_output_name(name) || outputs.insert(name, d).is_some() {
                    return Err(format!(
                        "{what}: an output layer's name {name:?} is not a file name or comes twice"
                    ));
                }
                continue;
            }
            other => return Err(format!("{what}: a layer of unknown type {other:?}")),
        };
        if slot.replace(d).is_some() {
            return Err(format!("{what}: two layers of type {}", d.media_type));
        }
    }
    let tree = tree.ok_or_else(|| format!("{what}: no tree layer"))?;
    let mut paired = Vec::new();
    for o in &config.outputs {
        let d = outputs
            .remove(o.name.as_str())
            .ok_or_else(|| format!("{what}: the output {:?} has no layer", o.name))?;
        paired.push((o, d));
    }
    if let Some(name) = outputs.keys().next() {
        return Err(format!(
            "{what}: a layer for the output {name:?}, which the config does not list"
        ));
    }
    Ok(Layers {
        tree,
        outputs: paired,
        changes,
        packages,
    })
}

/// Everything `pull` needs besides the remote and what to pull.
pub struct PullContext<'a> {
    pub store: &'a Store,
    /// A directory on the store's file system, for downloads and the
    /// object being assembled.
    pub work: &'a Path,
    /// `--max-tree-size`: the most a tree may unpack to.
    pub max_tree_size: u64,
    /// The policy's `from-device-nodes`.
    pub allow_devices: bool,
    /// The policy's `cache-signers`: one of them must have signed the
    /// object (none: unsigned objects are taken).
    pub signers: &'a [crate::signing::VerifyingKey],
    pub interrupted: &'a dyn Fn() -> bool,
}

fn blob_to_file(
    remote: &Remote,
    desc: &Descriptor,
    what: &str,
    path: &Path,
) -> Result<(File, u64), PullError> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let got = {
        let mut w = BufWriter::with_capacity(1 << 20, &mut file);
        let got = remote.fetch_blob(desc, what, &mut w)?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        got
    };
    file.rewind()
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((file, got))
}

/// Decompresses `blob` into `dest`, leaving holes where blocks are zero
/// (a raw disk image stays sparse); at most `size` bytes.
fn unpack_output(
    blob: File,
    dest: &Path,
    size: u64,
    interrupted: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    let mut decoder = zstd::stream::read::Decoder::new(blob)?;
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(dest)
        .with_context(|| format!("creating {}", dest.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        if interrupted() {
            anyhow::bail!("interrupted");
        }
        let n = decoder.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            anyhow::bail!(
                "{}: longer than the {size} bytes its config states",
                dest.display()
            );
        }
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(std::io::SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(&buf[..n])?;
        }
    }
    if total != size {
        anyhow::bail!(
            "{}: {total} bytes, its config states {size}",
            dest.display()
        );
    }
    out.set_len(total)?;
    Ok(())
}

/// Pulls the object `want` into the local store. Its parent must be in
/// the local store already. Returns the object and the bytes fetched.
pub fn pull(
    remote: &Remote,
    want: &Expected<'_>,
    found: Found,
    cx: &PullContext<'_>,
) -> Result<(Object, u64), PullError> {
    let Found {
        manifest,
        digest: found_digest,
        config,
    } = found;
    let what = format!("object {} in {}", want.id, remote.location());
    let refused = |m: String| PullError::Refused(m);
    if config.id != want.id || config.stage != want.stage {
        return Err(refused(format!(
            "{what}: its config says it is {} of stage {}, not {} of {}",
            shown(&config.id),
            shown(&config.stage),
            want.id,
            want.stage
        )));
    }
    let parent_ok = match config.layer {
        Layer::Overlay => config.parent.as_deref() == want.parent,
        Layer::Full => config.parent.is_none(),
    };
    if !parent_ok {
        let name = |p: Option<&str>| p.map_or("nothing".to_string(), shown);
        return Err(refused(format!(
            "{what}: it sits on {}, which is not this build's previous result ({})",
            name(config.parent.as_deref()),
            name(want.parent)
        )));
    }
    let layers = layers(&manifest, &config, &what).map_err(refused)?;
    // Sizes first, before any download: the tree's blob and the outputs
    // together stay within --max-tree-size (an output is zstd: a small
    // blob can stand for terabytes).
    let outputs_total = config
        .outputs
        .iter()
        .try_fold(0u64, |t, o| t.checked_add(o.size))
        .unwrap_or(u64::MAX);
    let tree_blob = u64::try_from(layers.tree.size).unwrap_or(u64::MAX);
    if outputs_total.saturating_add(tree_blob) > cx.max_tree_size {
        return Err(refused(format!(
            "{what}: its tree ({tree_blob} bytes compressed) and outputs ({outputs_total} bytes) are over --max-tree-size ({} bytes)",
            cx.max_tree_size
        )));
    }
    if !cx.signers.is_empty() {
        check_signature(&manifest, want.id, cx.signers)
            .map_err(|why| refused(format!("{what}: {why}")))?;
    }
    let downloads = tempfile::Builder::new()
        .prefix("pull-blobs-")
        .tempdir_in(cx.work)
        .context("creating a directory for the downloads")?;
    let staged = tempfile::Builder::new()
        .prefix("pull-")
        .tempdir_in(cx.work)
        .context("creating a directory for the pulled object")?;
    let mut fetched = 0u64;

    let (blob, n) = blob_to_file(
        remote,
        layers.tree,
        &format!("the tree of {what}"),
        &downloads.path().join("tree.tar.zst"),
    )?;
    fetched += n;
    let tree = staged.path().join("tree");
    std::fs::create_dir(&tree).context("creating the pulled tree")?;
    let archive_name = Path::new(&format!("the tree of {what}")).to_path_buf();
    archive::unpack::unpack_layer(
        blob,
        &archive_name,
        &tree,
        cx.allow_devices,
        cx.max_tree_size,
        crate::rootless::overlay_xattr_prefix(),
        cx.interrupted,
    )
    .map_err(|e| match e {
        archive::unpack::UnpackError::Refused { entry, reason } => {
            refused(format!("{what}: its tree's entry {entry:?} {reason}"))
        }
        archive::unpack::UnpackError::Interrupted => {
            PullError::Local(anyhow::anyhow!(crate::error::BuildError::Interrupted))
        }
        // Content that came whole (its digest checked) but is not a tree
        // osbuild can unpack is the object's fault, not this machine's.
        archive::unpack::UnpackError::Io(e) => refused(format!("{what}: its tree: {e:#}")),
    })?;

    let mut outputs = Vec::new();
    if !layers.outputs.is_empty() {
        let dir = staged.path().join("output");
        std::fs::create_dir(&dir).context("creating the pulled outputs' directory")?;
        for (i, (o, d)) in layers.outputs.iter().enumerate() {
            let blob_path = downloads.path().join(format!("output-{i}.zst"));
            let (blob, n) = blob_to_file(
                remote,
                d,
                &format!("the output {} of {what}", o.name),
                &blob_path,
            )?;
            fetched += n;
            let dest = dir.join(&o.name);
            unpack_output(blob, &dest, o.size, cx.interrupted)
                .map_err(|e| refused(format!("{what}: {e:#}")))?;
            std::fs::remove_file(&blob_path).ok();
            let mtime = std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(u64::try_from(o.mtime_ns).unwrap_or(0));
            File::options()
                .write(true)
                .open(&dest)
                .and_then(|f| f.set_modified(mtime))
                .with_context(|| format!("setting the mtime of {}", dest.display()))?;
            outputs.push(OutputFile::of(&dest).context("reading a pulled output")?);
        }
    }
    for (desc, file, name) in [
        (layers.changes, crate::changes::FILE_NAME, "change record"),
        (
            layers.packages,
            super::packages::RESOLVED_FILE,
            "package list",
        ),
    ] {
        let Some(desc) = desc else { continue };
        if u64::try_from(desc.size).unwrap_or(u64::MAX) > MAX_RECORD {
            return Err(refused(format!(
                "{what}: its {name} is over {MAX_RECORD} bytes"
            )));
        }
        let (_, n) = blob_to_file(
            remote,
            desc,
            &format!("the {name} of {what}"),
            &staged.path().join(file),
        )?;
        fetched += n;
    }
    let info = ObjectInfo {
        id: config.id.clone(),
        parent: config.parent.clone(),
        stage: config.stage.clone(),
        layer: config.layer,
        size: 0,
        outputs,
        created: 0,
        changes: config.changes,
        packages: config.packages.clone(),
        pulled: Some(format!("{}@{}", remote.location(), found_digest)),
    };
    let staged = staged.keep();
    let object = cx.store.commit(&staged, info);
    if object.is_err() {
        let _ = super::remove_tree(&staged);
    }
    Ok((object?, fetched))
}

/// Why an object stays local (not an error of the registry's).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotPushed(pub String);

/// A blob made in `work` on the way to the registry.
struct Made {
    path: std::path::PathBuf,
    digest: String,
    size: u64,
}

fn make_blob(
    work: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<Made> {
    let path = work.join(name);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut hashing = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    {
        let mut z = archive::zstd_writer(&mut hashing)?;
        fill(&mut z)?;
        z.finish()?;
    }
    let (mut w, digest, size) = hashing.finish();
    w.flush()?;
    Ok(Made { path, digest, size })
}

fn upload(remote: &Remote, made: &Made, media_type: &str) -> anyhow::Result<(Descriptor, u64)> {
    let file =
        File::open(&made.path).with_context(|| format!("opening {}", made.path.display()))?;
    let sent = remote.push_file(file, &made.digest, made.size)?;
    let _ = std::fs::remove_file(&made.path);
    Ok((
        Descriptor {
            media_type: media_type.to_string(),
            digest: made.digest.clone(),
            size: made.size as i64,
            ..Default::default()
        },
        sent,
    ))
}

/// Pushes `object` unless the remote has it. Returns the bytes sent
/// (`None`: it was there already).
pub fn push(
    remote: &Remote,
    object: &Object,
    work: &Path,
    key: Option<&crate::signing::SigningKey>,
    interrupted: &dyn Fn() -> bool,
) -> anyhow::Result<Option<u64>> {
    let id = &object.info.id;
    if let Some(from) = &object.info.pulled {
        return Err(NotPushed(format!(
            "pulled from {from}: only what this machine built is pushed"
        ))
        .into());
    }
    if !object.outputs_intact() {
        return Err(NotPushed(
            "an output changed through the output directory since the stage wrote it".into(),
        )
        .into());
    }
    if let Some((manifest, _)) = remote.manifest(id)? {
        // There already; with a key, it must carry this key's signature
        // (else it is signed again: only the manifest goes up).
        let signed = match key {
            None => true,
            Some(key) => check_signature(&manifest, id, std::slice::from_ref(key.public())).is_ok(),
        };
        if signed {
            return Ok(None);
        }
    }
    let work = tempfile::Builder::new()
        .prefix("push-")
        .tempdir_in(work)
        .context("creating a directory for the push")?;
    let work = work.path();
    let mut sent = 0u64;
    let mut layers = Vec::new();

    let tree = make_blob(work, "tree.tar.zst", |out| {
        let root = osbuild_tree_fs::Root::open(object.tree())
            .with_context(|| format!("opening {}", object.tree().display()))?;
        let mut tar =
            archive::pack::TarWriter::for_layer(out, crate::rootless::overlay_xattr_prefix());
        tar.append_tree(&root, Path::new(""), interrupted)?;
        tar.finish()?;
        Ok(())
    })
    .with_context(|| format!("packing the tree of object {id}"))?;
    let (desc, n) = upload(remote, &tree, TREE_TYPE)?;
    sent += n;
    layers.push(desc);

    for (i, o) in object.info.outputs.iter().enumerate() {
        let src = object.output_dir().join(&o.name);
        let made = make_blob(work, &format!("output-{i}.zst"), |out| {
            let mut f = File::open(&src).with_context(|| format!("opening {}", src.display()))?;
            std::io::copy(&mut f, out).with_context(|| format!("reading {}", src.display()))?;
            Ok(())
        })?;
        let (mut desc, n) = upload(remote, &made, OUTPUT_TYPE)?;
        desc.annotations = Some(BTreeMap::from([(TITLE.to_string(), o.name.clone())]));
        sent += n;
        layers.push(desc);
    }
    for (file, media_type) in [
        (crate::changes::FILE_NAME, CHANGES_TYPE),
        (super::packages::RESOLVED_FILE, PACKAGES_TYPE),
    ] {
        let path = object.dir.join(file);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let (desc, n) = remote.push_bytes(media_type, &data)?;
        sent += n;
        layers.push(desc);
    }
    let config = Config {
        format: super::ids::RESULT_FORMAT,
        id: id.clone(),
        parent: object.info.parent.clone(),
        stage: object.info.stage.clone(),
        layer: object.info.layer,
        outputs: object.info.outputs.clone(),
        changes: object.info.changes,
        packages: object.info.packages.clone(),
    };
    let (config_desc, n) = remote.push_bytes(CONFIG_TYPE, &serde_json::to_vec(&config)?)?;
    sent += n;
    let mut manifest = Manifest {
        schema_version: 2,
        media_type: Some(osbuild_registry::MANIFEST_TYPE.to_string()),
        config: config_desc,
        layers,
        subject: None,
        artifact_type: Some(ARTIFACT_TYPE.to_string()),
        annotations: None,
    };
    if let Some(key) = key {
        let envelope = crate::signing::dsse::seal(SIGNED_TYPE, &signed_payload(id, &manifest), key);
        manifest.annotations = Some(BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_string(),
            serde_json::to_string(&envelope)?,
        )]));
    }
    let (_, n) = remote.push_manifest(id, &manifest)?;
    Ok(Some(sent + n))
}
