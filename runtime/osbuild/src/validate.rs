//! Checking a stage's options against its JSON Schema, before anything runs.

use serde_json::Value;

use crate::error::InputError;
use crate::stage::Stage;

/// Appends a JSON pointer's segments to `base` as a readable path:
/// `/users/alice/groups/0` under `pipeline[2].options` gives
/// `pipeline[2].options.users.alice.groups[0]`.
fn join_path(base: &str, location: &jsonschema::paths::Location) -> String {
    let mut out = base.to_string();
    for seg in location.segments() {
        match seg {
            jsonschema::paths::LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
            jsonschema::paths::LocationSegment::Property(p) => {
                out.push('.');
                out.push_str(&p);
            }
        }
    }
    out
}

/// Compiled schemas, one per stage (by digest): compiling costs more than
/// validating, and a pipeline may run a stage many times.
#[derive(Default)]
pub struct Validators {
    compiled: std::collections::HashMap<String, Result<jsonschema::Validator, String>>,
}

impl Validators {
    /// Every way `options` breaks `stage`'s schema, each at its path below
    /// `at` (e.g. `pipeline[2].options`).
    pub fn check(&mut self, stage: &Stage, options: &Value, at: &str) -> Vec<InputError> {
        let compiled = self
            .compiled
            .entry(stage.digest.clone())
            .or_insert_with(|| {
                jsonschema::validator_for(&stage.meta.schema).map_err(|e| e.to_string())
            });
        match compiled {
            Ok(validator) => validator
                .iter_errors(options)
                .map(|e| InputError::new(join_path(at, e.instance_path()), e.to_string()))
                .collect(),
            Err(e) => vec![InputError::new(
                at,
                format!(
                    "stage {} ({}) has an invalid options schema: {e}",
                    stage.name(),
                    stage.origin
                ),
            )],
        }
    }
}

/// Every way `options` breaks `stage`'s schema; see [`Validators::check`].
pub fn options(stage: &Stage, options: &Value, at: &str) -> Vec<InputError> {
    Validators::default().check(stage, options, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{Code, Origin, StageMeta};

    fn stage(schema: Value) -> Stage {
        Stage {
            meta: StageMeta {
                name: "t".into(),
                kind: crate::stage::Kind::Wasm,
                summary: String::new(),
                description: String::new(),
                capabilities: Default::default(),
                insecure_options: Vec::new(),
                schema,
            },
            code: Code::Wasm(Vec::new().into()),
            origin: Origin::Builtin,
            shadows_builtin: false,
            native_metadata: None,
            detached_signature: None,
            digest: String::new(),
        }
    }

    #[test]
    fn errors_carry_the_option_path() {
        let s = stage(serde_json::json!({
            "type": "object",
            "properties": {"users": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"uid": {"type": "integer"}, "groups": {"type": "array", "items": {"type": "string"}}}
            }}}
        }));
        let errs = options(
            &s,
            &serde_json::json!({"users": {"alice": {"uid": "x", "groups": ["a", 3]}}}),
            "pipeline[2].options",
        );
        let mut msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        msgs.sort();
        assert_eq!(
            msgs,
            vec![
                "pipeline[2].options.users.alice.groups[1]: 3 is not of type \"string\"",
                "pipeline[2].options.users.alice.uid: \"x\" is not of type \"integer\"",
            ]
        );
    }
}
