//! Glue the export macros expand to. Not a public API.

use serde::de::DeserializeOwned;

use crate::{OptionError, Tree};

/// Splits an error from `run` into a message and, for an [`OptionError`]
/// anywhere in its chain, the option it is about.
fn describe(err: &anyhow::Error) -> (String, Option<String>) {
    if let Some(o) = err.downcast_ref::<OptionError>() {
        return (o.message.clone(), Some(o.option.clone()));
    }
    let option = err
        .chain()
        .find_map(|e| e.downcast_ref::<OptionError>())
        .map(|o| o.option.clone());
    (format!("{err:#}"), option)
}

fn parse<O: DeserializeOwned>(options: serde_json::Value) -> Result<O, (String, Option<String>)> {
    serde_json::from_value(options).map_err(|e| (format!("invalid options: {e}"), None))
}

#[cfg(target_family = "wasm")]
pub fn run_wasm<O: DeserializeOwned>(
    options: &str,
    run: fn(&Tree, O) -> anyhow::Result<()>,
) -> Result<(), crate::bindings::osbuild::stage::types::StageError> {
    use crate::bindings::osbuild::stage::types::StageError;
    let result = serde_json::from_str::<serde_json::Value>(options)
        .map_err(|e| (format!("options are not JSON: {e}"), None))
        .and_then(parse::<O>)
        .and_then(|opts| run(&Tree::wasm(), opts).map_err(|e| describe(&e)));
    result.map_err(|(message, option_path)| StageError {
        message,
        option_path,
    })
}

/// Host builds of a wasm stage (`cargo check`, clippy) compile the export
/// glue but never call it.
#[cfg(not(target_family = "wasm"))]
pub fn run_wasm<O: DeserializeOwned>(
    _options: &str,
    _run: fn(&Tree, O) -> anyhow::Result<()>,
) -> Result<(), crate::bindings::osbuild::stage::types::StageError> {
    unreachable!("wasm stages run under osbuild's wasm host")
}

/// Reads the options from stdin, runs the stage, and returns the exit code.
#[cfg(not(target_family = "wasm"))]
pub fn run_native<O: DeserializeOwned>(run: fn(&Tree, O) -> anyhow::Result<()>) -> i32 {
    match native_main(run) {
        Ok(()) => 0,
        Err((message, option)) => {
            match option {
                Some(o) => eprintln!("error: options.{o}: {message}"),
                None => eprintln!("error: {message}"),
            }
            1
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn native_main<O: DeserializeOwned>(
    run: fn(&Tree, O) -> anyhow::Result<()>,
) -> Result<(), (String, Option<String>)> {
    let mut options: serde_json::Value = serde_json::from_reader(std::io::stdin().lock())
        .map_err(|e| (format!("reading options from stdin: {e}"), None))?;
    let obj = options
        .as_object_mut()
        .ok_or_else(|| ("options on stdin are not a JSON object".to_string(), None))?;
    let tree = match obj.remove("tree") {
        Some(serde_json::Value::String(t)) => t,
        _ => return Err(("options on stdin have no \"tree\" path".to_string(), None)),
    };
    let output = match obj.remove("output") {
        Some(serde_json::Value::String(out)) => Some(out.into()),
        _ => None,
    };
    crate::context::set_native(output);
    let tree = Tree::open(&tree).map_err(|e| (format!("opening the tree {tree}: {e}"), None))?;
    let opts = parse::<O>(options)?;
    run(&tree, opts).map_err(|e| describe(&e))
}

#[cfg(target_family = "wasm")]
pub fn run_native<O: DeserializeOwned>(_run: fn(&Tree, O) -> anyhow::Result<()>) -> i32 {
    unreachable!("native stages are not built for wasm")
}
