//! The test stages (`tests/stages/`), built for the end-to-end tests.
//!
//! A dev-dependency of `osbuild-cli` only: the stages here escape, flood,
//! probe and misbehave on purpose, and must never ship in a binary.

/// The test stages, as a directory to pass to `osbuild --libdir`.
pub const TEST_STAGES_DIR: &str = env!("OSBUILD_TEST_STAGES_DIR");
