//! The built-in stages, embedded in the `osbuild` binary.
//!
//! The build script compiles every stage under `stages/` (wasm stages for
//! `wasm32-wasip2`, native stages for the host) with a nested `cargo build`
//! into `target/stage-build`, and includes the results here, so that a plain
//! `cargo build` gives an `osbuild` that needs no stage directory. It also
//! builds the test stages under `tests/stages/` into [`TEST_STAGES_DIR`],
//! which the end-to-end tests pass to `osbuild --libdir`.

/// What kind of program a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wasm,
    Native,
}

/// One built-in stage: its code and, for native stages, the metadata file
/// that sits beside the executable (wasm stages carry theirs inside).
#[derive(Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub kind: Kind,
    pub code: &'static [u8],
    pub metadata: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
