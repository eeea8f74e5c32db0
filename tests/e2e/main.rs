//! The end-to-end tests: one binary, a module per area, each driving the
//! built `osbuild` on real pipelines with real tools.
//!
//! Tiers: a plain `cargo test` runs what needs neither root, nor the
//! network, nor QEMU. Tests that need them are `#[ignore]`d with the reason
//! (`needs root`, `needs root and a Debian mirror`, `boots QEMU`) and run in
//! `tools/run-tests` with `--include-ignored`.

mod common;

mod audit;
mod boot;
mod changes;
mod foundation;
mod hostile;
mod images;
mod languages;
mod library_accounts;
mod library_config;
mod monitor;
mod native;
mod packages;
mod provenance;
mod registry;
mod rootless;
mod store;
