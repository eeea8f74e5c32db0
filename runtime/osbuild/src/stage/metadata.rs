//! Stage metadata: what a stage is, what it may touch, and its options schema.
//!
//! The same JSON document describes both kinds of stage: inside a wasm
//! stage it is the `osbuild.stage` custom section (written by the SDK's
//! `stage!` macro from the stage's `stage.json`), beside a native stage it
//! is `NAME.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::paths::PathSet;

/// The name of the custom section that carries a wasm stage's metadata.
pub const WASM_SECTION: &str = "osbuild.stage";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Wasm,
    Native,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Wasm => "wasm",
            Kind::Native => "native",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageMeta {
    /// Reverse-DNS name, e.g. `io.weldr.hostname`.
    pub name: String,
    pub kind: Kind,
    pub summary: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Option values that turn off a check the stage makes by default
    /// (`gpgcheck: false`): allowed, and flagged by `audit`.
    #[serde(
        default,
        rename = "insecure-options",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub insecure_options: Vec<InsecureOption>,
    /// JSON Schema of the stage's options.
    #[serde(default = "empty_schema")]
    pub schema: Value,
}

/// An option value that weakens what the stage checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsecureOption {
    /// Where, as an option pattern (`repos[].gpgcheck`).
    pub option: String,
    /// The value that weakens it.
    pub value: Value,
    /// What it means, for the audit (`packages are installed unsigned`).
    pub means: String,
}

impl InsecureOption {
    /// The JSON paths in `options` where this weakening is asked for.
    pub fn found_in(&self, options: &Value) -> Vec<String> {
        option_matches(options, &self.option)
            .into_iter()
            .filter(|(_, v)| **v == self.value)
            .map(|(path, _)| path)
            .collect()
    }
}

fn empty_schema() -> Value {
    serde_json::json!({ "type": "object", "additionalProperties": false })
}

/// Access to the tree: `"read"`, `"read-write"` (all of it), or scoped
/// to paths, `{"read": [...], "write": [...]}` (see [`super::paths`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TreeAccess {
    Read,
    #[default]
    ReadWrite,
    Scoped(TreeScope),
}

/// A path-scoped tree capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeScope {
    /// What it may read: the whole tree (`["/**"]` or missing; narrower
    /// sets are refused, as nothing would hold a stage to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<PathSet>,
    /// What it may change (create, modify, remove, rename, chmod, chown,
    /// xattrs, mtime, link); missing: nothing.
    #[serde(default)]
    pub write: PathSet,
    /// Options whose values are paths it may change too, for a stage that
    /// writes where its options say (`write[].path`; `chown.*` for an
    /// object's keys; a final `/**` for everything below the path too).
    #[serde(
        default,
        rename = "write-options",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "write_options"
    )]
    pub write_options: Vec<String>,
}

/// `write-options`: option patterns, checked for their shape.
fn write_options<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    let v = Vec::<String>::deserialize(d)?;
    for o in &v {
        let body = o.strip_suffix("/**").unwrap_or(o);
        let ok = !body.is_empty()
            && body.split('.').all(|part| {
                let name = part.strip_suffix("[]").unwrap_or(part);
                name == "*"
                    || (!name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            });
        if !ok {
            return Err(D::Error::custom(format!(
                "tree.write-options: {o:?} is not an option pattern (`a.b`, `a[].b`, `a.*` for an object's keys, optionally ending in `/**`)"
            )));
        }
    }
    Ok(v)
}

/// The longest option path, and the most option paths, a write set takes.
pub const MAX_OPTION_PATH: usize = 4096;
pub const MAX_OPTION_PATHS: usize = 4096;

/// A path a stage's options name as one it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionPath {
    /// Where in the options (`options.write[0].path`).
    pub at: String,
    /// As the option gives it (absolute).
    pub path: String,
    /// Everything below it too.
    pub below: bool,
}

impl OptionPath {
    pub fn pattern(&self) -> super::paths::Pattern {
        super::paths::Pattern::literal(&self.path, self.below)
    }
}

/// Where a stage may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes<'a> {
    Nothing,
    Everything,
    Only(&'a PathSet),
}

impl TreeAccess {
    /// Whether it may change the tree at all.
    pub fn writable(&self) -> bool {
        match self {
            TreeAccess::Read => false,
            TreeAccess::ReadWrite => true,
            TreeAccess::Scoped(s) => !s.write.is_empty() || !s.write_options.is_empty(),
        }
    }

    pub fn writes(&self) -> Writes<'_> {
        match self {
            TreeAccess::Read => Writes::Nothing,
            TreeAccess::ReadWrite => Writes::Everything,
            TreeAccess::Scoped(s) if s.write.is_empty() && s.write_options.is_empty() => {
                Writes::Nothing
            }
            TreeAccess::Scoped(s) => Writes::Only(&s.write),
        }
    }

    /// The paths a path-scoped stage's `write-options` name in `options`,
    /// each with its JSON path and whether everything below it counts too.
    /// Only absolute paths of at most [`MAX_OPTION_PATH`] bytes with no
    /// `..` count (the others name no place the stage may claim; a stage
    /// whose schema lets them through is then held to its declared
    /// patterns), and at most [`MAX_OPTION_PATHS`] of them.
    pub fn write_paths(&self, options: &serde_json::Map<String, Value>) -> Vec<OptionPath> {
        let TreeAccess::Scoped(scope) = self else {
            return Vec::new();
        };
        let options = Value::Object(options.clone());
        let mut out = Vec::new();
        for o in &scope.write_options {
            let (body, below) = match o.strip_suffix("/**") {
                Some(b) => (b, true),
                None => (o.as_str(), false),
            };
            let found: Vec<(String, String)> = match body.strip_suffix(".*") {
                // An object's keys.
                Some(object) => option_matches(&options, object)
                    .into_iter()
                    .filter_map(|(at, v)| v.as_object().map(|m| (at, m)))
                    .flat_map(|(at, m)| {
                        m.keys()
                            .map(|k| (format!("{at}[{k:?}]"), k.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect(),
                None => option_values(&options, body)
                    .into_iter()
                    .map(|(at, v)| (at, v.to_string()))
                    .collect(),
            };
            for (at, path) in found {
                let usable = path.starts_with('/')
                    && path.len() <= MAX_OPTION_PATH
                    && !path.split('/').any(|c| c == "..");
                if usable && out.len() < MAX_OPTION_PATHS {
                    out.push(OptionPath {
                        at: format!("options.{at}"),
                        path,
                        below,
                    });
                }
            }
        }
        out
    }

    /// What it may read; `None`: the whole tree.
    pub fn reads(&self) -> Option<&PathSet> {
        match self {
            TreeAccess::Scoped(s) => s.read.as_ref(),
            _ => None,
        }
    }
}

impl Serialize for TreeAccess {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TreeAccess::Read => s.serialize_str("read"),
            TreeAccess::ReadWrite => s.serialize_str("read-write"),
            TreeAccess::Scoped(scope) => scope.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TreeAccess {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TreeAccess, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) if s == "read" => Ok(TreeAccess::Read),
            Value::String(s) if s == "read-write" => Ok(TreeAccess::ReadWrite),
            v @ Value::Object(_) => {
                let scope: TreeScope = serde_json::from_value(v).map_err(D::Error::custom)?;
                // Reads are not confined yet (WASI's preopened tree would
                // read past any pattern): a narrower read set would be a
                // promise the sandbox does not keep.
                if scope
                    .read
                    .as_ref()
                    .is_some_and(|r| *r != PathSet::everything())
                {
                    return Err(D::Error::custom(
                        "tree.read: this osbuild does not confine what a stage reads to paths; leave \"read\" out (or [\"/**\"]): every stage may read the whole tree",
                    ));
                }
                Ok(TreeAccess::Scoped(scope))
            }
            other => Err(D::Error::custom(format!(
                "tree: {other} is not \"read\", \"read-write\" or {{\"read\": [...], \"write\": [...]}} (glob patterns over tree paths)"
            ))),
        }
    }
}

/// What a stage may touch. A closed vocabulary: unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Capabilities {
    #[serde(default)]
    pub tree: TreeAccess,
    /// Writes files into the output directory.
    #[serde(default, skip_serializing_if = "is_false")]
    pub output: bool,
    /// Reaches the network.
    #[serde(default, skip_serializing_if = "is_false")]
    pub network: bool,
    /// Keeps CAP_SYS_ADMIN and CAP_MKNOD (native stages): it can mount, and
    /// so could make the build machine's read-only root writable. Needed by
    /// tools that mount inside the tree (mmdebstrap). Audits flag it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// Host device nodes it needs bound in (native stages). Grants the
    /// nodes and nothing else: no capability comes with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Creates block and character device nodes in the tree other than the
    /// harmless ones (null, zero, full, random, urandom, tty, console,
    /// ptmx), which any stage may make. The host never opens a node in a
    /// tree (trees are mounted `nodev`), but an image booted from the tree
    /// would: a node for a disk is a way to that disk.
    #[serde(default, skip_serializing_if = "is_false")]
    pub device_nodes: bool,
    /// Installs packages of this format through the store's package cache
    /// (native stages): it reads every cached package file, and osbuild
    /// keeps what it downloads (each by the sha256 osbuild computes); with
    /// a lock, it is handed the locked packages and must install exactly
    /// those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<PackageFormat>,
    /// Host programs a native stage runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_tools: Vec<String>,
    /// Options that name host paths the stage reads (`repos[].baseurl`: a
    /// `file://` URL or an absolute path in each element's `baseurl`). A
    /// native stage gets each one bound read-only at the same place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_paths: Vec<String>,
    /// Memory it needs beyond the default limit, in MiB (wasm stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Time it needs beyond the default limit, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// The package files a stage installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageFormat {
    Deb,
    Rpm,
}

impl PackageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageFormat::Deb => "deb",
            PackageFormat::Rpm => "rpm",
        }
    }
}

/// A host device a native stage may have bound in: a closed list, so a
/// stage cannot name `sda` or `mem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// `/dev/loop-control` and every `/dev/loopN`: loop devices over image
    /// files. Only for a stage run as the host's root
    /// (`OSBUILD_NATIVE_USERNS=0`): the host's loop devices are shared by
    /// all of it, so a stage in a user namespace is refused them.
    Loop,
    /// `/dev/fuse`: user-space file systems (mounting one needs `privileged`).
    Fuse,
    /// `/dev/kvm`: hardware virtualisation, e.g. to boot the image.
    Kvm,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Loop => "loop",
            Device::Fuse => "fuse",
            Device::Kvm => "kvm",
        }
    }

    /// The host nodes it grants, as shown by `audit`.
    pub fn nodes(self) -> &'static str {
        match self {
            Device::Loop => "/dev/loop-control and /dev/loop[0-9]*",
            Device::Fuse => "/dev/fuse",
            Device::Kvm => "/dev/kvm",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl StageMeta {
    pub fn parse(text: &str) -> Result<StageMeta, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Every section of a component, nested modules and components inline (as
/// `Parser::parse_all`), but with code sections skipped whole: a Python
/// stage has tens of thousands of function bodies that neither the
/// metadata nor the imports are in, and planning reads every stage.
fn sections(mut data: &[u8]) -> impl Iterator<Item = anyhow::Result<wasmparser::Payload<'_>>> {
    use wasmparser::{Chunk, Parser, Payload};
    let mut stack: Vec<Parser> = Vec::new();
    let mut cur = Parser::new(0);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let payload = match cur.parse(data, true) {
            Err(e) => {
                done = true;
                return Some(Err(e.into()));
            }
            Ok(Chunk::NeedMoreData(_)) => unreachable!("eof is given"),
            Ok(Chunk::Parsed { payload, consumed }) => {
                data = &data[consumed..];
                payload
            }
        };
        match &payload {
            Payload::CodeSectionStart { size, range, .. } => {
                cur.skip_section();
                match data.get(*size as usize..) {
                    Some(rest) => data = rest,
                    None => {
                        done = true;
                        return Some(Err(anyhow::anyhow!(
                            "the code section at byte {} runs past the end of the file",
                            range.start
                        )));
                    }
                }
            }
            Payload::ModuleSection { parser, .. } | Payload::ComponentSection { parser, .. } => {
                stack.push(std::mem::replace(&mut cur, parser.clone()));
            }
            Payload::End(_) => match stack.pop() {
                Some(p) => cur = p,
                None => done = true,
            },
            _ => {}
        }
        Some(Ok(payload))
    })
}

/// The metadata section of a wasm stage, found without running it (it may
/// sit in a core module nested in the component).
pub fn wasm_metadata(bytes: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    for payload in sections(bytes) {
        if let wasmparser::Payload::CustomSection(reader) = payload?
            && reader.name() == WASM_SECTION
        {
            return Ok(Some(reader.data().to_vec()));
        }
    }
    Ok(None)
}

/// `component` with `metadata` (a `stage.json`, checked first) added as its
/// `osbuild.stage` custom section: what `osbuild stage build` does to a
/// component made by componentize-py or componentize-js, whose toolchains
/// cannot embed a section themselves (the Rust SDK's `stage!` does).
pub fn embed_wasm_metadata(component: &[u8], metadata: &str) -> anyhow::Result<Vec<u8>> {
    use wasm_encoder::ComponentSection as _;
    StageMeta::parse(metadata).map_err(|e| anyhow::anyhow!("invalid stage.json: {e}"))?;
    if wasm_metadata(component)?.is_some() {
        anyhow::bail!("the component already has an `{WASM_SECTION}` section");
    }
    let mut out = component.to_vec();
    wasm_encoder::CustomSection {
        name: WASM_SECTION.into(),
        data: metadata.as_bytes().into(),
    }
    .append_to_component(&mut out);
    Ok(out)
}

/// The interfaces a component imports from the host, e.g.
/// `wasi:filesystem/types@0.2.6` (nested modules import from their parent,
/// not the host, and are not counted).
pub fn wasm_imports(bytes: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut imports = Vec::new();
    // `sections` walks nested modules and components inline; track depth.
    let mut depth = 0usize;
    for payload in sections(bytes) {
        match payload? {
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import?;
                    // Type imports (`use types.{stage-error}`) grant nothing.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        imports.push(import.name.name.to_string());
                    }
                }
            }
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => {
                depth += 1;
            }
            wasmparser::Payload::End(_) => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    imports.sort();
    imports.dedup();
    Ok(imports)
}

/// The string values of the options at `pattern` (`a.b`, `a[].b` for
/// every array element), as `(json path, string)` pairs.
pub fn option_values<'a>(options: &'a Value, pattern: &str) -> Vec<(String, &'a str)> {
    option_matches(options, pattern)
        .into_iter()
        .filter_map(|(at, v)| v.as_str().map(|s| (at, s)))
        .collect()
}

/// The values of the options at `pattern`, as `(json path, value)` pairs.
pub fn option_matches<'a>(options: &'a Value, pattern: &str) -> Vec<(String, &'a Value)> {
    fn walk<'a>(v: &'a Value, parts: &[&str], at: String, out: &mut Vec<(String, &'a Value)>) {
        let Some((first, rest)) = parts.split_first() else {
            out.push((at, v));
            return;
        };
        let (key, each) = match first.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (*first, false),
        };
        let Some(child) = v.get(key) else {
            return;
        };
        let at = if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        };
        if each {
            if let Value::Array(items) = child {
                for (i, item) in items.iter().enumerate() {
                    walk(item, rest, format!("{at}[{i}]"), out);
                }
            }
        } else {
            walk(child, rest, at, out);
        }
    }
    let parts: Vec<&str> = pattern.split('.').collect();
    let mut out = Vec::new();
    walk(options, &parts, String::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding: a code section claiming more bytes than the file
    /// has (at the top or in a nested module) panicked planning, audit
    /// and `osbuild stages`.
    #[test]
    fn a_truncated_code_section_is_an_error_not_a_panic() {
        let module = b"\0asm\x01\0\0\0\x0a\x64\x00";
        assert!(wasm_metadata(module).is_err());
        assert!(wasm_imports(module).is_err());
        let mut component = b"\0asm\x0d\0\x01\0\x01\x14".to_vec();
        component.extend_from_slice(b"\0asm\x01\0\0\0\x0a\x0a\x00");
        assert!(wasm_metadata(&component).is_err());
        assert!(wasm_imports(&component).is_err());
    }

    #[test]
    fn metadata_embedded_in_a_component_is_found_and_embedded_once() {
        let empty = wasm_encoder::Component::new().finish();
        let json =
            r#"{"name": "x.y", "kind": "wasm", "summary": "s", "schema": {"type": "object"}}"#;
        let with = embed_wasm_metadata(&empty, json).unwrap();
        assert_eq!(wasm_metadata(&with).unwrap().unwrap(), json.as_bytes());
        wasmparser::Validator::new().validate_all(&with).unwrap();
        let again = embed_wasm_metadata(&with, json).unwrap_err().to_string();
        assert_eq!(
            again,
            "the component already has an `osbuild.stage` section"
        );
        let bad = embed_wasm_metadata(&empty, r#"{"name": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("invalid stage.json: "), "{bad}");
    }

    #[test]
    fn finds_option_values_by_pattern() {
        let v = serde_json::json!({"repos": [{"baseurl": "file:///a"}, {"baseurl": "http://b"}], "x": {"y": "z"}});
        assert_eq!(
            option_values(&v, "repos[].baseurl"),
            vec![
                ("repos[0].baseurl".to_string(), "file:///a"),
                ("repos[1].baseurl".to_string(), "http://b")
            ]
        );
        assert_eq!(option_values(&v, "x.y"), vec![("x.y".to_string(), "z")]);
        assert!(option_values(&v, "nope[].x").is_empty());
    }

    #[test]
    fn the_tree_capability_reads_as_a_word_or_a_scope_and_refuses_what_nothing_holds() {
        let caps = |tree: serde_json::Value| {
            serde_json::from_value::<Capabilities>(serde_json::json!({ "tree": tree }))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            caps(serde_json::json!("read")).unwrap().tree,
            TreeAccess::Read
        );
        assert_eq!(
            caps(serde_json::json!("read-write")).unwrap().tree,
            TreeAccess::ReadWrite
        );
        let scoped = caps(serde_json::json!({"write": ["/etc/hostname"]})).unwrap();
        assert!(scoped.tree.writable());
        match scoped.tree.writes() {
            Writes::Only(set) => assert!(set.contains("/etc/hostname") && !set.contains("/etc")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            serde_json::to_value(&scoped).unwrap(),
            serde_json::json!({"tree": {"write": ["/etc/hostname"]}})
        );
        let nothing = caps(serde_json::json!({})).unwrap();
        assert!(!nothing.tree.writable());
        assert!(caps(serde_json::json!({"read": ["/**"], "write": []})).is_ok());
        let e = caps(serde_json::json!({"read": ["/etc/**"]})).unwrap_err();
        assert!(e.contains("does not confine what a stage reads"), "{e}");
        let e = caps(serde_json::json!({"write": ["etc"]})).unwrap_err();
        assert!(e.contains("a tree path pattern is absolute"), "{e}");
        let e = caps(serde_json::json!({"write": ["/x"], "delete": []})).unwrap_err();
        assert!(e.contains("unknown field `delete`"), "{e}");
        let e = caps(serde_json::json!("write")).unwrap_err();
        assert!(e.contains("is not \"read\", \"read-write\""), "{e}");
    }

    #[test]
    fn finds_insecure_option_values() {
        let o: InsecureOption = serde_json::from_value(serde_json::json!(
            {"option": "repos[].gpgcheck", "value": false, "means": "unsigned"}
        ))
        .unwrap();
        let v = serde_json::json!({"repos": [{"gpgcheck": true}, {}, {"gpgcheck": false}]});
        assert_eq!(o.found_in(&v), vec!["repos[2].gpgcheck".to_string()]);
    }
}
