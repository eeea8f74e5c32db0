//! Compiles the test stages under `tests/stages/` (through
//! `osbuild-stage-build`) into a directory laid out like a `--libdir`:
//! `<target>/stage-build/test-stages-<profile>`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use osbuild_stage_build::{Kind, build, discover, target_dir};

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target = target_dir(&out).unwrap_or_else(|e| panic!("{e}"));
    let built = discover(&manifest.join("../stages"))
        .and_then(|stages| build(&stages, &target))
        .unwrap_or_else(|e| panic!("{e}"));
    // Beside the nested build, one per profile: the benchmarks (release)
    // find it there without asking cargo, and a debug and a release build
    // never empty each other's.
    let profile = env::var("PROFILE").unwrap_or_else(|_| "debug".into());
    let libdir = target.join(format!("test-stages-{profile}"));
    // Start empty, so a removed test stage does not linger.
    match fs::remove_dir_all(&libdir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            panic!("removing {}: {e}", libdir.display())
        }
        _ => {}
    }
    fs::create_dir_all(&libdir).unwrap();
    for b in &built {
        let name = &b.stage.name;
        match b.stage.kind {
            Kind::Wasm => copy(&b.artifact, &libdir.join(format!("{name}.wasm"))),
            Kind::Native => {
                copy(&b.artifact, &libdir.join(name));
                copy(
                    &b.stage.metadata_path(),
                    &libdir.join(format!("{name}.json")),
                );
            }
        }
    }
    println!(
        "cargo:rustc-env=OSBUILD_TEST_STAGES_DIR={}",
        libdir.display()
    );
}
