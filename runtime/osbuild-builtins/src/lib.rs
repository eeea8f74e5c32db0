//! The built-in stages, embedded in the `osbuild` binary.
//!
//! The build script compiles every stage under `stages/` (wasm stages for
//! `wasm32-wasip2`, native stages for the host; see `osbuild-stage-build`)
//! and includes the results here, so that a plain `cargo build` gives an
//! `osbuild` that needs no stage directory. The library (`osbuild`) does
//! not depend on this crate: the binary hands [`registry`]'s built-ins to
//! it, so checking or testing the library builds no stage.

use std::path::PathBuf;

use osbuild::stage::{Builtin, Kind, Registry};

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// A registry of the built-in stages, after the stages in `libdirs`.
pub fn registry(libdirs: Vec<PathBuf>) -> Registry {
    Registry::new(BUILTIN, libdirs)
}
