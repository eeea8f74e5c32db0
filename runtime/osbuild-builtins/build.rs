//! Compiles every stage under `stages/` (through `osbuild-stage-build`)
//! and generates `builtin.rs`, which embeds them.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use osbuild_stage_build::{Kind, build, discover, target_dir};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let stages_dir = manifest.join("../../stages");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let run = || -> Result<String, osbuild_stage_build::Error> {
        let stages = discover(&stages_dir)?;
        let built = build(&stages, &target_dir(&out)?)?;
        let mut code = String::from(
            "/// The built-in stages, sorted by name.\npub static BUILTIN: &[Builtin] = &[\n",
        );
        for b in &built {
            let kind = match b.stage.kind {
                Kind::Wasm => "Wasm",
                Kind::Native => "Native",
            };
            writeln!(
                code,
                "    Builtin {{ name: {:?}, kind: Kind::{kind}, code: include_bytes!({:?}), metadata: include_str!({:?}) }},",
                b.stage.name,
                b.artifact,
                b.stage.metadata_path(),
            )
            .unwrap();
        }
        code.push_str("];\n");
        Ok(code)
    };
    match run() {
        Ok(code) => fs::write(out.join("builtin.rs"), code).unwrap(),
        Err(e) => panic!("{e}"),
    }
}
