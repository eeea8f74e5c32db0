//! `--sbom`: an SPDX 2.3 JSON document of the final tree. One package per
//! installed Debian package (dpkg's status file) with its version,
//! architecture, maintainer as supplier, licenses from its
//! machine-readable copyright file, and a purl; the stages that built the
//! tree as its build tools.
//!
//! The same tree built by the same pipeline gives the same bytes: the
//! creation time is the source epoch, the namespace is derived from the
//! content, and everything is sorted.
//!
//! The tree is untrusted: every file is read through [`Root`] (inside the
//! tree, never a device or FIFO), capped, and what it says is data only.

pub mod dpkg;
pub mod licenses;
pub mod rpm;
pub mod sqlite;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use osbuild_tree_fs::Root;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The most osbuild reads of dpkg's status file.
const MAX_STATUS_BYTES: u64 = 64 << 20;
/// The most it reads of one copyright file, and of all of them.
const MAX_COPYRIGHT_BYTES: u64 = 1 << 20;
const MAX_ALL_COPYRIGHT_BYTES: u64 = 256 << 20;
/// The most packages a tree may list, and the most license names SPDX
/// does not list that a document declares: real systems have thousands of
/// packages and a few hundred such names.
const MAX_PACKAGES: usize = 200_000;
const MAX_EXTRACTED_LICENSES: usize = 4096;
/// The most of a license's text a document quotes, and of all of them.
const MAX_LICENSE_TEXT: usize = 64 << 10;
const MAX_ALL_LICENSE_TEXT: usize = 4 << 20;
/// The most it reads of the RPM database.
const MAX_RPMDB_BYTES: u64 = 1 << 30;

/// A stage that built the tree, as the SBOM names it.
#[derive(Debug, Clone)]
pub struct BuildTool {
    pub name: String,
    pub kind: String,
    /// sha256 (hex) of its code.
    pub digest: String,
    /// Who vouches for it (`builtin`, a key, `unsigned`).
    pub signer: String,
}

/// What the document says besides the tree's packages.
#[derive(Debug, Clone)]
pub struct About {
    /// The pipeline's name (the image's, in the document).
    pub name: String,
    pub source_epoch: i64,
    pub stages: Vec<BuildTool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Serialize)]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    name: String,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    supplier: String,
    download_location: &'static str,
    files_analyzed: bool,
    license_concluded: &'static str,
    license_declared: String,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    homepage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

impl Package {
    /// A package that asserts nothing but its name: SPDX's NOASSERTION
    /// wherever a field is required.
    fn new(name: String, spdx_id: String) -> Package {
        Package {
            name,
            spdx_id,
            version_info: None,
            supplier: "NOASSERTION".into(),
            download_location: "NOASSERTION",
            files_analyzed: false,
            license_concluded: "NOASSERTION",
            license_declared: "NOASSERTION".into(),
            copyright_text: "NOASSERTION",
            summary: None,
            homepage: None,
            source_info: None,
            checksums: Vec::new(),
            external_refs: Vec::new(),
            primary_package_purpose: None,
            comment: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtractedLicense {
    license_id: String,
    extracted_text: String,
    name: String,
    comment: &'static str,
}

/// The SPDX document of the tree at `tree`, as JSON bytes.
pub fn of_tree(tree: &Path, about: &About) -> anyhow::Result<Vec<u8>> {
    let root = Root::open(tree).with_context(|| format!("opening the tree {}", tree.display()))?;
    let debs = match read_capped(&root, "var/lib/dpkg/status", MAX_STATUS_BYTES)? {
        Some(text) => dpkg::parse_status(&String::from_utf8_lossy(&text)),
        None => Vec::new(),
    };
    let distro = os_release(&root);
    let mut budget = MAX_ALL_COPYRIGHT_BYTES;
    let mut extracted: BTreeMap<String, (String, licenses::Source, Option<String>)> =
        BTreeMap::new();
    let mut quoted = 0;
    let mut ids = Ids::default();
    let image_id = "SPDXRef-image".to_string();
    let mut packages = vec![Package {
        summary: Some("The operating system tree osbuild built".into()),
        primary_package_purpose: Some("OPERATING-SYSTEM"),
        ..Package::new(about.name.clone(), image_id.clone())
    }];
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: image_id.clone(),
    }];
    let mut found: Vec<Found> = debs
        .iter()
        .map(|p| Found {
            id: format!("SPDXRef-deb-{}-{}", p.name, p.architecture),
            source: licenses::Source::Debian,
            name: p.name.clone(),
            version: p.version.clone(),
            supplier: p.maintainer.as_deref().map_or("NOASSERTION".into(), actor),
            license: licenses_of(&root, &p.name, &mut budget),
            summary: p.summary.clone(),
            homepage: p.homepage.clone(),
            source_info: p
                .source
                .as_ref()
                .map(|s| format!("built from the Debian source package {s}")),
            purl: purl(&distro, p),
        })
        .collect();
    for p in rpm_packages(&root)? {
        found.push(Found {
            id: format!("SPDXRef-rpm-{}-{}", p.name, p.architecture),
            source: licenses::Source::Rpm,
            supplier: match (&p.vendor, &p.packager) {
                (Some(v), _) if !clean_actor(v).is_empty() => {
                    format!("Organization: {}", clean_actor(v))
                }
                (_, Some(packager)) => actor(packager),
                (_, None) => "NOASSERTION".into(),
            },
            license: p
                .license
                .as_deref()
                .and_then(|l| licenses::expression(l, licenses::Source::Rpm))
                .map(|(e, others)| (e, others.into_iter().map(|o| (o, None)).collect())),
            summary: p.summary.clone(),
            homepage: p.url.clone(),
            source_info: p
                .source_rpm
                .as_ref()
                .map(|s| format!("built from the source RPM {s}")),
            purl: rpm_purl(&distro, &p),
            name: p.name,
            version: p.version,
        });
    }
    if found.len() > MAX_PACKAGES {
        anyhow::bail!(
            "the tree lists {} packages, more than the {MAX_PACKAGES} an SBOM takes",
            found.len()
        );
    }
    for f in found {
        let source = f.source;
        // Only names not yet declared take room: packages that come first
        // cannot crowd out the names every later package uses.
        let room = |others: &BTreeMap<String, Option<String>>| {
            let new = others
                .keys()
                .filter(|n| !extracted.contains_key(&licenses::Term::reference(source, n)))
                .count();
            extracted.len() + new <= MAX_EXTRACTED_LICENSES
        };
        let declared = match f.license {
            Some((expr, others)) if room(&others) => {
                for (name, text) in others {
                    let entry = extracted
                        .entry(licenses::Term::reference(source, &name))
                        .or_insert((name, source, None));
                    if entry.2.is_none() && quoted < MAX_ALL_LICENSE_TEXT {
                        entry.2 = text.map(|t| quote(&t));
                        quoted += entry.2.as_ref().map_or(0, String::len);
                    }
                }
                expr
            }
            _ => "NOASSERTION".to_string(),
        };
        let id = ids.unique(&f.id);
        relationships.push(Relationship {
            spdx_element_id: image_id.clone(),
            relationship_type: "CONTAINS",
            related_spdx_element: id.clone(),
        });
        packages.push(Package {
            version_info: Some(f.version),
            supplier: f.supplier,
            license_declared: declared,
            summary: f.summary,
            homepage: f
                .homepage
                .filter(|h| h.starts_with("https://") || h.starts_with("http://"))
                .filter(|h| !h.contains(char::is_whitespace)),
            source_info: f.source_info,
            external_refs: vec![ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: f.purl,
            }],
            ..Package::new(f.name, id)
        });
    }
    for (i, s) in about.stages.iter().enumerate() {
        let id = ids.unique(&format!("SPDXRef-stage-{}-{}", i + 1, s.name));
        relationships.push(Relationship {
            spdx_element_id: id.clone(),
            relationship_type: "BUILD_TOOL_OF",
            related_spdx_element: image_id.clone(),
        });
        packages.push(Package {
            version_info: Some(format!("sha256:{}", s.digest)),
            checksums: vec![Checksum {
                algorithm: "SHA256",
                checksum_value: s.digest.clone(),
            }],
            primary_package_purpose: Some("APPLICATION"),
            comment: Some(format!(
                "osbuild stage {} of the pipeline ({}; signer: {})",
                i + 1,
                s.kind,
                s.signer
            )),
            ..Package::new(s.name.clone(), id)
        });
    }
    let has_extracted_licensing_infos = extracted
        .into_iter()
        .map(|(id, (name, source, text))| ExtractedLicense {
            extracted_text: text.filter(|t| !t.trim().is_empty()).unwrap_or_else(|| match source {
                licenses::Source::Debian => format!("The license Debian's copyright files call {name:?}; the packages' copyright files (/usr/share/doc/PACKAGE/copyright) have its terms."),
                licenses::Source::Rpm => format!("The license an RPM package's header names as {name:?}."),
            }),
            license_id: id,
            name,
            comment: match source {
                licenses::Source::Debian => "a license name of Debian's copyright files that SPDX does not list",
                licenses::Source::Rpm => "a license an RPM header names that SPDX does not list as such",
            },
        })
        .collect();
    let mut doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: about.name.clone(),
        document_namespace: String::new(),
        creation_info: CreationInfo {
            created: crate::mtime::rfc3339(about.source_epoch),
            creators: vec![format!("Tool: osbuild-{}", env!("CARGO_PKG_VERSION"))],
        },
        packages,
        relationships,
        has_extracted_licensing_infos,
    };
    // The namespace names this content: the document without it, hashed.
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(&doc)?));
    doc.document_namespace = format!(
        "https://osbuild.org/spdxdocs/{}-{digest}",
        slug(&about.name)
    );
    let mut bytes = serde_json::to_vec_pretty(&doc)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A license's text as the document quotes it: at most
/// [`MAX_LICENSE_TEXT`] bytes, control characters but line breaks and tabs
/// as `?` (JSON would write each as six bytes).
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LICENSE_TEXT));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_LICENSE_TEXT {
            out.push_str("\n[…]");
            break;
        }
        out.push(if c.is_control() && c != '\n' && c != '\t' {
            '?'
        } else {
            c
        });
    }
    out
}

/// A package found in the tree, whichever database listed it.
struct Found {
    id: String,
    /// Whose names its licenses are in.
    source: licenses::Source,
    name: String,
    version: String,
    supplier: String,
    license: Option<(String, BTreeMap<String, Option<String>>)>,
    summary: Option<String>,
    homepage: Option<String>,
    source_info: Option<String>,
    purl: String,
}

/// Where rpm keeps its database (the second a link to the first on
/// Fedora); the first file found is read.
const RPMDBS: &[&str] = &[
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "var/lib/rpm/rpmdb.sqlite",
];

/// The RPM packages in the tree's rpm database, if it has one.
fn rpm_packages(root: &Root) -> anyhow::Result<Vec<rpm::Package>> {
    for path in RPMDBS {
        if let Some(bytes) = read_capped(root, path, MAX_RPMDB_BYTES)? {
            return rpm::parse_rpmdb(&bytes).map_err(|e| {
                anyhow::anyhow!("the RPM database /{path} in the tree cannot be read: {e}")
            });
        }
    }
    Ok(Vec::new())
}

/// `pkg:rpm/fedora/NAME@VERSION-RELEASE?arch=ARCH&epoch=E&distro=fedora-40`.
fn rpm_purl(distro: &(Option<String>, Option<String>), p: &rpm::Package) -> String {
    let (epoch, version) = match p.version.split_once(':') {
        Some((e, v)) => (Some(e), v),
        None => (None, p.version.as_str()),
    };
    let vendor = distro.0.as_deref().map(|v| format!("{}/", pct(v)));
    let mut s = format!(
        "pkg:rpm/{}{}@{}?arch={}",
        vendor.unwrap_or_default(),
        pct(&p.name),
        pct(version),
        pct(&p.architecture)
    );
    if let Some(e) = epoch {
        s.push_str("&epoch=");
        s.push_str(&pct(e));
    }
    if let Some(d) = &distro.1 {
        s.push_str("&distro=");
        s.push_str(&pct(d));
    }
    s
}

/// SPDX ids are `SPDXRef-` and letters, digits, `.` and `-`; names are
/// made to fit, and made unique.
#[derive(Default)]
struct Ids {
    used: std::collections::HashSet<String>,
    /// The next suffix to try per id made from a name: ids made alike
    /// cost one try each, not one per id made before (a tree with a
    /// million names alike must not cost a million squared).
    next: std::collections::HashMap<String, u64>,
}

impl Ids {
    fn unique(&mut self, want: &str) -> String {
        let base: String = want
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if self.used.insert(base.clone()) {
            return base;
        }
        let n = self.next.entry(base.clone()).or_insert(2);
        loop {
            let id = format!("{base}-{n}");
            *n += 1;
            if self.used.insert(id.clone()) {
                return id;
            }
        }
    }
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    let s: String = s.chars().take(64).collect();
    if s.is_empty() { "tree".into() } else { s }
}

/// Text fit for an actor: no parentheses (they hold the address), no
/// line breaks.
fn clean_actor(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '(' | ')' | '\n' | '\r'))
        .collect::<String>()
        .trim()
        .to_string()
}

/// `Name <address>` as an SPDX actor: a team as an organization.
fn actor(maintainer: &str) -> String {
    let (name, mail) = match maintainer.split_once('<') {
        Some((n, m)) => (n.trim(), m.trim_end_matches('>').trim()),
        None => (maintainer.trim(), ""),
    };
    let clean = clean_actor;
    if clean(name).is_empty() {
        return "NOASSERTION".to_string();
    }
    let lower = name.to_ascii_lowercase();
    let kind = if [
        "team",
        "maintainers",
        "group",
        "developers",
        "project",
        "packagers",
        "debian",
        "list",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        "Organization"
    } else {
        "Person"
    };
    if mail.is_empty() {
        format!("{kind}: {}", clean(name))
    } else {
        format!("{kind}: {} ({})", clean(name), clean(mail))
    }
}

/// The tree's distribution, from os-release: (`ID`, `ID-VERSION_ID`).
fn os_release(root: &Root) -> (Option<String>, Option<String>) {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| read_capped(root, p, 64 << 10).ok().flatten())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let field = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .filter(|v| {
                    !v.is_empty()
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
                })
        })
    };
    let id = field("ID").map(|i| i.to_ascii_lowercase());
    let distro = id
        .as_ref()
        .and_then(|id| field("VERSION_ID").map(|v| format!("{id}-{v}")));
    (id, distro)
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`.
fn purl(distro: &(Option<String>, Option<String>), p: &dpkg::Package) -> String {
    let mut s = format!(
        "pkg:deb/{}/{}@{}?arch={}",
        pct(distro.0.as_deref().unwrap_or("debian")),
        pct(&p.name),
        pct(&p.version),
        pct(&p.architecture)
    );
    if let Some(d) = &distro.1 {
        s.push_str("&distro=");
        s.push_str(&pct(d));
    }
    s
}

/// Percent-encoding as purl wants it: all but letters, digits and `.-_~`.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The licenses of a package's copyright file, within the budget of
/// bytes. Best effort: a file missing, unreadable or too large leaves the
/// package's license NOASSERTION, as SPDX has it for "not known".
fn licenses_of(
    root: &Root,
    package: &str,
    budget: &mut u64,
) -> Option<(String, BTreeMap<String, Option<String>>)> {
    // dpkg's names are letters, digits and `+-.`; the file is read inside
    // the tree whatever the name, but a name with a `/` is no package's.
    if *budget == 0 || package.contains('/') || package.starts_with('.') {
        return None;
    }
    let path = format!("usr/share/doc/{package}/copyright");
    let bytes = read_capped(root, &path, MAX_COPYRIGHT_BYTES.min(*budget)).ok()??;
    *budget = budget.saturating_sub(bytes.len() as u64);
    dpkg::copyright_licenses(&String::from_utf8_lossy(&bytes))
}

/// A file of the tree, at most `max` bytes (more is an error naming it);
/// `None` if there is no regular file there.
fn read_capped(root: &Root, path: &str, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let file = match root.open_file(Path::new(path)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A directory, device node or FIFO where the file should be: not
        // a file to read, and never opened.
        Err(_) => return Ok(None),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading /{path} in the tree"))?;
    if bytes.len() as u64 > max {
        anyhow::bail!("/{path} in the tree is larger than the {max} bytes osbuild reads of it");
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_alike_are_made_unique_once_each() {
        let mut ids = Ids::default();
        let got: Vec<String> = [
            "SPDXRef-deb-p+",
            "SPDXRef-deb-p/",
            "SPDXRef-deb-p--2",
            "SPDXRef-deb-p_",
        ]
        .iter()
        .map(|w| ids.unique(w))
        .collect();
        assert_eq!(
            got,
            [
                "SPDXRef-deb-p-",
                "SPDXRef-deb-p--2",
                "SPDXRef-deb-p--2-2",
                "SPDXRef-deb-p--3"
            ]
        );
        // Many alike: each gets the next suffix, none repeats.
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| ids.unique("SPDXRef-x")).collect();
        assert_eq!(many.len(), 10_000);
        assert_eq!(ids.next["SPDXRef-x"], 10_001);
    }

    #[test]
    fn license_texts_are_quoted_bounded_and_without_control_characters() {
        assert_eq!(quote("a\u{1}b\nc\td"), "a?b\nc\td");
        let long = "é".repeat(MAX_LICENSE_TEXT);
        let q = quote(&long);
        assert!(
            q.len() <= MAX_LICENSE_TEXT + 8 && q.ends_with("[…]"),
            "{}",
            q.len()
        );
    }

    #[test]
    fn an_empty_maintainer_is_no_assertion_not_an_empty_actor() {
        assert_eq!(actor("<>"), "NOASSERTION");
        assert_eq!(actor("()"), "NOASSERTION");
        assert_eq!(
            actor("A Person <a@example.org>"),
            "Person: A Person (a@example.org)"
        );
        assert_eq!(
            actor("Debian X Team <x@lists.debian.org>"),
            "Organization: Debian X Team (x@lists.debian.org)"
        );
    }
}
