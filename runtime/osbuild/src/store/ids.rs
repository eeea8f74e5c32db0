//! Stage ids: what makes a stage's result what it is.
//!
//! A stage's id hashes the previous stage's id (or the `--from` archive's
//! digest), the stage's name, its options in canonical form, the digest of
//! the stage's own code, and the source epoch. Change any of them (a fixed
//! stage included: unlike osbuild, the code is part of the id) and this
//! stage and every later one get new ids, so nothing stale is reused. The
//! version of osbuild's own result format is part of every id as well.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// JSON with object keys sorted at every level and no insignificant space.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    write(&map[*k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Bumped whenever osbuild itself changes what a stage's result is (how
/// trees are unpacked, which mtimes are clamped, ...), so results made by
/// an older osbuild are never taken for current ones.
pub const RESULT_FORMAT: u32 = 3;

fn hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(b"osbuild stage id");
    h.update(RESULT_FORMAT.to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The id of the tree unpacked from a `--from` archive.
pub fn from_archive(archive_digest: &str) -> String {
    hash(&[b"from", archive_digest.as_bytes()])
}

/// The id of a stage's result.
pub fn stage(
    previous: Option<&str>,
    name: &str,
    options: &Value,
    code_digest: &str,
    epoch: i64,
) -> String {
    hash(&[
        previous.unwrap_or("").as_bytes(),
        name.as_bytes(),
        canonical_json(options).as_bytes(),
        code_digest.as_bytes(),
        &epoch.to_le_bytes(),
    ])
}

/// sha256 of a file, hex.
pub fn file_digest(path: &std::path::Path) -> std::io::Result<String> {
    reader_digest(&mut std::fs::File::open(path)?)
}

/// The sha256 (hex) of everything `r` reads from here on.
pub fn reader_digest(r: &mut impl std::io::Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(r, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_everywhere() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"z": [2, {"y": 1, "x": null}], "c": "s"}})),
            r#"{"a":{"c":"s","z":[2,{"x":null,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn every_input_changes_the_id() {
        let base = stage(Some("p"), "n", &json!({"a": 1}), "d", 0);
        assert_eq!(base, stage(Some("p"), "n", &json!({"a": 1}), "d", 0));
        for other in [
            stage(None, "n", &json!({"a": 1}), "d", 0),
            stage(Some("q"), "n", &json!({"a": 1}), "d", 0),
            stage(Some("p"), "m", &json!({"a": 1}), "d", 0),
            stage(Some("p"), "n", &json!({"a": 2}), "d", 0),
            stage(Some("p"), "n", &json!({"a": 1}), "e", 0),
            stage(Some("p"), "n", &json!({"a": 1}), "d", 1),
        ] {
            assert_ne!(base, other);
        }
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            stage(Some("ab"), "c", &json!({}), "d", 0),
            stage(Some("a"), "bc", &json!({}), "d", 0)
        );
    }
}
