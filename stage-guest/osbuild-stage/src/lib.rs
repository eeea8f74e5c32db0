//! The SDK for writing osbuild stages.
//!
//! A stage is one function over its typed options and the tree:
//!
//! ```ignore
//! use osbuild_stage::{Tree, anyhow};
//!
//! #[derive(serde::Deserialize)]
//! struct Options { hostname: String }
//!
//! fn run(tree: &Tree, options: Options) -> anyhow::Result<()> {
//!     tree.write("/etc/hostname", format!("{}\n", options.hostname))?;
//!     Ok(())
//! }
//!
//! osbuild_stage::stage!(run);
//! ```
//!
//! Built for `wasm32-wasip2` (`crate-type = ["cdylib"]`), [`stage!`] exports
//! `run` as a component of the `osbuild:stage` world and embeds the stage's
//! `stage.json` (name, summary, capabilities, options schema) in the `.wasm`
//! file as the `osbuild.stage` custom section, so the file is a complete
//! stage. For a native stage (a program run under systemd-nspawn),
//! [`native_stage!`] writes a `main` that reads the options from stdin.
//!
//! [`Tree`] is the same API either way. In a wasm stage, plain reads and
//! writes go through WASI (the tree is preopened as `/`) and everything WASI
//! lacks (modes, owners, xattrs, device nodes, absolute symlinks) goes
//! through the host's `tree` interface; natively, everything goes through
//! `osbuild-tree-fs`. Both resolve absolute symlinks inside the tree.
//!
//! Beside the stage API, [`formats`] holds the parsers and writers for the
//! files OS configuration stages edit (passwd/group/shadow, systemd units,
//! `KEY=value` files), so every stage shares one tested implementation.

pub use anyhow;
pub use serde;
pub use serde_json;

#[cfg(not(target_family = "wasm"))]
pub mod checks;
mod error;
pub mod formats;
mod tree;

pub use error::OptionError;
pub use tree::{EntryKind, Metadata, NodeKind, Tree};

#[doc(hidden)]
pub mod __private;

/// The generated bindings of the `osbuild:stage` world.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "stage",
        pub_export_macro: true,
        export_macro_name: "__export_stage",
        default_bindings_module: "osbuild_stage::bindings",
    });
}

/// Exports `run` as a wasm stage and embeds `stage.json` (next to the
/// stage's `Cargo.toml`) as its metadata.
///
/// `run` is `fn(&Tree, Options) -> anyhow::Result<()>` for any `Options`
/// that implements `serde::Deserialize`.
#[macro_export]
macro_rules! stage {
    ($run:path) => {
        #[cfg(target_family = "wasm")]
        #[unsafe(link_section = "osbuild.stage")]
        #[used]
        static __OSBUILD_STAGE_METADATA: [u8; include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/stage.json"
        ))
        .len()] = *include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/stage.json"));

        struct __OsbuildStage;

        impl $crate::bindings::Guest for __OsbuildStage {
            fn run(
                options: ::std::string::String,
            ) -> ::std::result::Result<(), $crate::bindings::osbuild::stage::types::StageError>
            {
                $crate::__private::run_wasm(&options, $run)
            }
        }

        $crate::bindings::__export_stage!(__OsbuildStage with_types_in $crate::bindings);
    };
}

/// Writes `main` for a native stage: reads the options (with `"tree"`
/// added by osbuild) as JSON from stdin, runs `run`, and exits 0 on success
/// or 1 with the error on stderr.
#[macro_export]
macro_rules! native_stage {
    ($run:path) => {
        fn main() {
            ::std::process::exit($crate::__private::run_native($run))
        }
    };
}

/// The output directory of a native stage (`/run/osbuild/output` under
/// osbuild), if osbuild gave it one.
#[cfg(not(target_family = "wasm"))]
pub fn output_dir() -> Option<std::path::PathBuf> {
    __private::OUTPUT_DIR.get().cloned()
}
