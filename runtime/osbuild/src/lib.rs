//! osbuild: builds operating system images from a pipeline of stages.
//!
//! A pipeline (JSON, [`pipeline`]) names stages and their options. Each
//! stage is found by name ([`stage`]) among the `--libdir` directories and
//! the stages built into the binary, and checked against its options
//! schema ([`validate`]) before anything runs. The [`executor`] then gives
//! each stage the tree in turn:
//!
//! - wasm stages (pure logic) run in-process in wasmtime ([`wasm`]), with
//!   the tree preopened and the `tree` host interface for what WASI lacks;
//! - native stages (host tools) run under systemd-nspawn.
//!
//! `--from` and `--save` move trees in and out as deterministic archives
//! ([`archive`]); [`mtime`] makes every entry a stage touched carry the
//! source epoch. The command line is the `osbuild-cli` crate.

pub mod archive;
pub mod audit;
pub mod boot;
pub mod error;
pub mod executor;
pub mod mtime;
pub mod native;
pub mod output;
pub mod pipeline;
pub mod place;
pub mod policy;
pub mod progress;
pub mod reach;
pub mod rootless;
pub mod signals;
pub mod stage;
pub mod store;
pub mod validate;
pub mod wasm;
