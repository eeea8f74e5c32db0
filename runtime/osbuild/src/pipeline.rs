//! The pipeline file: parsed and checked at the edge, before anything runs.
//!
//! ```json
//! { "name": "Example", "source_epoch": 1700000000,
//!   "pipeline": [ { "name": "io.weldr.hostname", "options": { "hostname": "box" } } ] }
//! ```

use serde_json::{Map, Value};

use crate::error::InputError;

/// The last second of the year 9999: SBOMs and provenance write the
/// source epoch as an RFC 3339 time, which has four digits for the year.
pub const MAX_SOURCE_EPOCH: i64 = 253_402_300_799;

/// A pipeline, checked for shape (not yet for stage names or options).
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: Option<String>,
    /// The pipeline's own source epoch (`SOURCE_DATE_EPOCH` overrides it).
    pub source_epoch: Option<i64>,
    pub stages: Vec<StageCall>,
}

/// One stage of the pipeline as written.
#[derive(Debug, Clone, PartialEq)]
pub struct StageCall {
    pub name: String,
    pub options: Map<String, Value>,
}

impl StageCall {
    /// The JSON path of this stage in the pipeline file.
    pub fn json_path(index: usize) -> String {
        format!("pipeline[{index}]")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a pipeline; every problem found is reported, each with its JSON path.
pub fn parse(text: &str) -> Result<Pipeline, Vec<InputError>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        vec![InputError::new(
            "(pipeline)",
            format!("not valid JSON: {e}"),
        )]
    })?;
    let mut errors = Vec::new();
    let Value::Object(top) = value else {
        return Err(vec![InputError::new(
            "(pipeline)",
            format!("must be a JSON object, found {}", type_name(&value)),
        )]);
    };
    for key in top.keys() {
        if !["name", "pipeline", "source_epoch"].contains(&key.as_str()) {
            errors.push(InputError::new(
                key,
                "unknown key: a pipeline has \"name\", \"source_epoch\" and \"pipeline\"",
            ));
        }
    }
    let name = match top.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            errors.push(InputError::new(
                "name",
                format!("must be a string, found {}", type_name(v)),
            ));
            None
        }
    };
    let source_epoch = match top.get("source_epoch") {
        None => None,
        Some(v) => match v.as_i64() {
            Some(n) if (0..=MAX_SOURCE_EPOCH).contains(&n) => Some(n),
            _ => {
                errors.push(InputError::new(
                    "source_epoch",
                    format!(
                        "must be an integer from 0 to {MAX_SOURCE_EPOCH} (seconds since 1970, up to the end of the year 9999), found {v}"
                    ),
                ));
                None
            }
        },
    };
    let mut stages = Vec::new();
    match top.get("pipeline") {
        None => errors.push(InputError::new(
            "pipeline",
            "missing: the list of stages to run",
        )),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match parse_stage(i, item) {
                    Ok(stage) => stages.push(stage),
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
        Some(v) => errors.push(InputError::new(
            "pipeline",
            format!("must be an array of stages, found {}", type_name(v)),
        )),
    }
    if errors.is_empty() {
        Ok(Pipeline {
            name,
            source_epoch,
            stages,
        })
    } else {
        Err(errors)
    }
}

fn parse_stage(index: usize, item: &Value) -> Result<StageCall, Vec<InputError>> {
    let at = StageCall::json_path(index);
    let Value::Object(obj) = item else {
        return Err(vec![InputError::new(
            &at,
            format!(
                "a stage must be an object with \"name\" and \"options\", found {}",
                type_name(item)
            ),
        )]);
    };
    let mut errors = Vec::new();
    for key in obj.keys() {
        if key != "name" && key != "options" {
            errors.push(InputError::new(
                format!("{at}.{key}"),
                "unknown key: a stage has \"name\" and \"options\"",
            ));
        }
    }
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            errors.push(InputError::new(format!("{at}.name"), "must not be empty"));
            None
        }
        Some(v) => {
            errors.push(InputError::new(
                format!("{at}.name"),
                format!("must be a string, found {}", type_name(v)),
            ));
            None
        }
        None => {
            errors.push(InputError::new(
                format!("{at}.name"),
                "missing: which stage to run",
            ));
            None
        }
    };
    let options = match obj.get("options") {
        None => Some(Map::new()),
        Some(Value::Object(o)) => Some(o.clone()),
        Some(v) => {
            errors.push(InputError::new(
                format!("{at}.options"),
                format!("must be an object, found {}", type_name(v)),
            ));
            None
        }
    };
    match (name, options) {
        (Some(name), Some(options)) if errors.is_empty() => Ok(StageCall { name, options }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn parses_the_design_example() {
        let p = parse(
            r#"{"name": "x", "pipeline": [{"name": "a", "options": {"k": 1}}, {"name": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(p.name.as_deref(), Some("x"));
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].options["k"], 1);
        assert!(p.stages[1].options.is_empty());
    }

    #[test]
    fn every_error_has_its_path() {
        assert_eq!(
            errs(
                r#"{"pipeline": [{"name": "a"}, {"options": {}}, {"name": "c", "options": []}, 5]}"#
            ),
            vec![
                "pipeline[1].name: missing: which stage to run",
                "pipeline[2].options: must be an object, found an array",
                "pipeline[3]: a stage must be an object with \"name\" and \"options\", found a number",
            ]
        );
        assert_eq!(
            errs(r#"{"pipeline": [{"name": 3}]}"#),
            vec!["pipeline[0].name: must be a string, found a number"]
        );
        assert_eq!(errs(r#"{"pipelin": []}"#).len(), 2);
        assert!(errs(r#"{"pipeline": []} trailing"#)[0].contains("trailing characters"));
        assert!(errs("[]")[0].contains("must be a JSON object"));
        assert_eq!(errs(r#"{"pipeline": [], "source_epoch": -1}"#).len(), 1);
    }
}
