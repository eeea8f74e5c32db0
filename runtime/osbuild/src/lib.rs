//! osbuild: builds operating system images from a pipeline of stages.
//!
//! This crate is the library: everything a build does. It has no stages
//! of its own; the `osbuild` command (crate `osbuild-cli`) hands it the
//! built-in stages (crate `osbuild-builtins`) through a [`stage::Registry`].
//!
//! A build goes through these modules, in order:
//!
//! - [`pipeline`] parses the pipeline JSON; [`stage`] finds each stage by
//!   name (`--libdir`, then the built-ins) and reads its metadata;
//!   [`validate`] checks its options against the stage's schema.
//! - [`reach`] decides what each stage may touch on the host: its declared
//!   capabilities, a wasm component's real imports, what the hosts grant,
//!   the host paths the operator allows, and the [`policy`]'s verdict.
//!   [`executor`]'s plan refuses a build on it; [`audit`] renders it.
//! - [`executor`] runs the stages in turn, each on the tree the previous
//!   one left: wasm stages (pure logic) in-process in wasmtime ([`wasm`]),
//!   with the tree preopened and the `tree` host interface for what WASI
//!   lacks; native stages (host tools) under systemd-nspawn in a user
//!   namespace of their own ([`native`]).
//! - [`store`] keeps each stage's result under an id that covers its code,
//!   options and inputs, hands trees from stage to stage as overlay layers,
//!   and serves rebuilds; [`archive`] moves trees in and out (`--from`,
//!   `--save`) as deterministic archives; [`mtime`] gives every entry a
//!   stage touched the source epoch.
//!
//! What went into a build and what it made: [`signing`] signs and checks
//! stages (a policy's `signers`) and provenance envelopes; [`sbom`] lists
//! the final tree's packages (SPDX); [`provenance`] records the build
//! (in-toto, SLSA). [`changes`] records what each stage changed.
//!
//! Around them: [`progress`] and [`output`] report, [`signals`] stops
//! cleanly, [`rootless`] lets an ordinary user build wasm pipelines, and
//! [`boot`] starts an image in QEMU.

pub mod archive;
pub mod audit;
pub mod boot;
pub mod changes;
pub mod error;
pub mod executor;
pub mod host;
pub mod mtime;
pub mod native;
pub mod output;
pub mod pipeline;
pub mod place;
pub mod policy;
pub mod progress;
pub mod provenance;
pub mod reach;
pub mod rootless;
pub mod sbom;
pub mod signals;
pub mod signing;
pub mod stage;
pub mod store;
pub mod userns;
pub mod validate;
pub mod wasm;
