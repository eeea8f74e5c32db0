//! `--provenance`: what a build made and what went into it, as an in-toto
//! Statement v1 with an SLSA Provenance v1 predicate, the format GitHub,
//! GitLab and Tekton Chains write.
//!
//! - subjects: every output file and the `--save` archive, with sha256;
//! - build definition: the pipeline (content and sha256) as the external
//!   parameter; as resolved dependencies the pipeline file, the `--from`
//!   archive, every stage (name, kind, code digest, signer) and the host
//!   tools the native stages run (path, sha256, package and version);
//! - run details: osbuild (version, sha256 of its executable), start and
//!   finish, and per stage its id and whether it came from the cache.
//!
//! With a key it travels signed in a DSSE envelope ([`crate::signing::dsse`]);
//! [`verify`] checks one.

pub mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64ct::Encoding as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::executor::BuildReport;
use crate::policy::Policy;
use crate::signing::{SigningKey, VerifyingKey, dsse};
use crate::stage::Kind;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What the build definition's parameters mean: this document's own type.
pub const BUILD_TYPE: &str = "https://github.com/osbuild/osbuild-rs/provenance/build/v1";
pub const BUILDER_ID: &str = "https://github.com/osbuild/osbuild-rs/osbuild";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Value,
}

/// in-toto's ResourceDescriptor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    /// Base64 of the resource itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, Value>>,
}

fn sha256(hex: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_string(), hex.to_string())])
}

fn annotations(v: Value) -> Option<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// What the build was asked and how it went, besides its report.
pub struct Invocation<'a> {
    /// The pipeline file as given, and its bytes as read.
    pub pipeline_path: &'a Path,
    pub pipeline_bytes: &'a [u8],
    pub from: Option<&'a Path>,
    pub policy: Option<&'a Policy>,
    /// Seconds since 1970.
    pub started: i64,
    pub finished: i64,
    /// The cache was used (`--no-cache` not given).
    pub cache: bool,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn digest_of(path: &Path) -> anyhow::Result<String> {
    crate::store::ids::file_digest(path).with_context(|| format!("hashing {}", path.display()))
}

/// The provenance of a finished build.
pub fn statement(report: &BuildReport, inv: &Invocation) -> anyhow::Result<Statement> {
    let mut subject = Vec::new();
    for out in &report.outputs {
        let name = out
            .strip_prefix(&report.output_dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| file_name(out));
        subject.push(ResourceDescriptor {
            name: Some(name),
            digest: sha256(&digest_of(out)?),
            ..Default::default()
        });
    }
    if let Some(saved) = &report.saved {
        subject.push(ResourceDescriptor {
            name: Some(file_name(saved)),
            digest: sha256(&digest_of(saved)?),
            media_type: Some(archive_type(saved).to_string()),
            ..Default::default()
        });
    }
    if subject.is_empty() {
        anyhow::bail!(
            "the build wrote no output file and no --save archive: a provenance needs a subject (add --save ARCHIVE)"
        );
    }

    let pipeline_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(inv.pipeline_bytes));
    let pipeline_value: Value =
        serde_json::from_slice(inv.pipeline_bytes).context("the pipeline is no longer JSON")?;
    let mut deps = vec![ResourceDescriptor {
        name: Some(format!("pipeline:{}", file_name(inv.pipeline_path))),
        digest: sha256(&pipeline_digest),
        content: Some(base64ct::Base64::encode_string(inv.pipeline_bytes)),
        media_type: Some("application/json".into()),
        ..Default::default()
    }];
    if let (Some(from), Some(digest)) = (inv.from, &report.from_digest) {
        deps.push(ResourceDescriptor {
            name: Some(format!("from:{}", file_name(from))),
            digest: sha256(digest),
            media_type: Some(archive_type(from).to_string()),
            ..Default::default()
        });
    }
    let mut tools: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut byproducts = Vec::new();
    for s in &report.stages {
        let stage = &s.stage;
        let label = format!("stage:{}:{}", s.index + 1, s.name);
        deps.push(ResourceDescriptor {
            name: Some(label.clone()),
            // A stage from a registry: where it was pulled from, by digest.
            uri: match &stage.origin {
                crate::stage::Origin::Oci(reference) => Some(reference.clone()),
                _ => None,
            },
            digest: sha256(&stage.digest),
            annotations: annotations(json!({
                "stage": stage.name(),
                "index": s.index + 1,
                "kind": stage.kind().to_string(),
                "origin": stage.origin.to_string(),
                "signer": s.signer,
            })),
            ..Default::default()
        });
        if stage.kind() == Kind::Native {
            for t in &stage.meta.capabilities.host_tools {
                let used_by = tools.entry(t.clone()).or_default();
                if !used_by.contains(&s.name) {
                    used_by.push(s.name.clone());
                }
            }
        }
        let mut run = json!({
            "id": s.id,
            "cached": s.cached,
            "durationMs": s.duration.as_millis() as u64,
        });
        // A result another machine built: which registry object it was.
        if let Some(pulled) = &s.pulled {
            run["pulledFrom"] = pulled.clone().into();
        }
        byproducts.push(ResourceDescriptor {
            name: Some(label),
            annotations: annotations(run),
            ..Default::default()
        });
    }
    for (name, used_by) in tools {
        let t = tools::resolve(&name);
        deps.push(ResourceDescriptor {
            name: Some(format!("tool:{name}")),
            uri: t.path.as_ref().map(|p| format!("file://{}", p.display())),
            digest: t.sha256.as_deref().map(sha256).unwrap_or_default(),
            annotations: annotations(json!({
                "package": t.package,
                "version": t.version,
                "usedBy": used_by,
                "found": t.path.is_some(),
            })),
            ..Default::default()
        });
    }
    if let Some(sbom) = &report.sbom {
        byproducts.push(ResourceDescriptor {
            name: Some(format!("sbom:{}", file_name(sbom))),
            digest: sha256(&digest_of(sbom)?),
            media_type: Some("application/spdx+json".into()),
            ..Default::default()
        });
    }

    let exe = std::env::current_exe().ok();
    let exe_digest = crate::store::ids::file_digest(Path::new("/proc/self/exe")).ok();
    let builder_dependencies = vec![ResourceDescriptor {
        name: Some("osbuild".into()),
        uri: exe.as_ref().map(|p| format!("file://{}", p.display())),
        digest: exe_digest.as_deref().map(sha256).unwrap_or_default(),
        ..Default::default()
    }];
    let predicate = json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "pipeline": pipeline_value,
                "from": inv.from.map(file_name),
                "save": report.saved.as_deref().map(file_name),
            },
            "internalParameters": {
                "sourceEpoch": report.source_epoch,
                "cache": inv.cache,
                "policy": inv.policy.and_then(|p| p.file_digest.as_ref()).map(|d| json!({
                    "sha256": d,
                })),
            },
            "resolvedDependencies": deps,
        },
        "runDetails": {
            "builder": {
                "id": BUILDER_ID,
                "version": { "osbuild": env!("CARGO_PKG_VERSION") },
                "builderDependencies": builder_dependencies,
            },
            "metadata": {
                "invocationId": invocation_id(inv, &pipeline_digest),
                "startedOn": crate::mtime::rfc3339(inv.started),
                "finishedOn": crate::mtime::rfc3339(inv.finished),
            },
            "byproducts": byproducts,
        },
    });
    Ok(Statement {
        type_: STATEMENT_TYPE.into(),
        subject,
        predicate_type: PREDICATE_TYPE.into(),
        predicate,
    })
}

/// A name for this run: the pipeline, the start and the process.
fn invocation_id(inv: &Invocation, pipeline_digest: &str) -> String {
    let seed = format!("{pipeline_digest}:{}:{}", inv.started, std::process::id());
    let h = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes()));
    format!("urn:osbuild:invocation:{}", &h[..32])
}

/// An archive's media type, by its name (`--from` reads any by its
/// content; a name that says none is taken for a plain tar).
fn archive_type(path: &Path) -> &'static str {
    crate::archive::Compression::for_path(path)
        .unwrap_or(crate::archive::Compression::None)
        .media_type()
}

/// The statement as the file `--provenance` writes: the JSON, or, with a
/// key, a DSSE envelope of it.
pub fn encode(statement: &Statement, key: Option<&SigningKey>) -> anyhow::Result<Vec<u8>> {
    let payload = serde_json::to_vec(statement)?;
    let mut out = match key {
        None => serde_json::to_vec_pretty(statement)?,
        Some(key) => serde_json::to_vec_pretty(&dsse::seal(dsse::IN_TOTO, &payload, key))?,
    };
    out.push(b'\n');
    Ok(out)
}

/// What [`verify`] found.
#[derive(Debug)]
pub struct Verified {
    pub statement: Statement,
    /// The subject the `--subject` file is, if one was asked about.
    pub subjects: Vec<ResourceDescriptor>,
}

/// Checks a `--provenance-key` provenance: the envelope's signature by
/// `key`, that it holds an SLSA v1 provenance, and that each of
/// `subjects` (files) is one of its subjects by sha256.
pub fn verify(
    envelope: &[u8],
    key: &VerifyingKey,
    subjects: &[PathBuf],
) -> Result<Verified, String> {
    let env: dsse::Envelope = serde_json::from_slice(envelope).map_err(|e| {
        format!(
            "not a DSSE envelope ({e}); only a provenance written with --provenance-key is signed"
        )
    })?;
    let payload = dsse::open(&env, dsse::IN_TOTO, key)?;
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| format!("the signed payload is not an in-toto Statement: {e}"))?;
    if statement.type_ != STATEMENT_TYPE {
        return Err(format!(
            "the statement's _type is {:?}, not {STATEMENT_TYPE:?}",
            statement.type_
        ));
    }
    if statement.predicate_type != PREDICATE_TYPE {
        return Err(format!(
            "the statement's predicateType is {:?}, not {PREDICATE_TYPE:?}",
            statement.predicate_type
        ));
    }
    let mut found = Vec::new();
    for path in subjects {
        let digest = crate::store::ids::file_digest(path)
            .map_err(|e| format!("--subject {}: {e}", path.display()))?;
        match statement
            .subject
            .iter()
            .find(|s| s.digest.get("sha256") == Some(&digest))
        {
            Some(s) => found.push(s.clone()),
            None => {
                let names: Vec<String> = statement
                    .subject
                    .iter()
                    .map(|s| s.name.clone().unwrap_or_default())
                    .collect();
                return Err(format!(
                    "{} (sha256:{digest}) is not a subject of this provenance (its subjects: {})",
                    path.display(),
                    names.join(", ")
                ));
            }
        }
    }
    Ok(Verified {
        statement,
        subjects: found,
    })
}
