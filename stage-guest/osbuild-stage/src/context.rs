//! What osbuild tells every stage besides its options, the same way for
//! wasm and native stages: the source epoch and the output directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The build's facts for this stage; see [`context`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    source_epoch: i64,
    output_dir: Option<PathBuf>,
}

impl Context {
    /// The pipeline's source epoch (seconds): the time to stamp anything a
    /// stage writes with, so that two builds give the same bytes.
    pub fn source_epoch(&self) -> i64 {
        self.source_epoch
    }

    /// Where the stage writes its outputs (images), if osbuild gave it an
    /// output directory (native stages declaring `output`).
    pub fn output_dir(&self) -> Option<&Path> {
        self.output_dir.as_deref()
    }
}

static CONTEXT: OnceLock<Context> = OnceLock::new();

/// This stage's context. A wasm stage's clock is fixed at the source
/// epoch by osbuild and it has no output directory; a native stage gets
/// `SOURCE_DATE_EPOCH` and the `"output"` osbuild puts beside its options.
pub fn context() -> &'static Context {
    CONTEXT.get_or_init(|| Context {
        source_epoch: from_environment(),
        output_dir: None,
    })
}

#[cfg(target_family = "wasm")]
fn from_environment() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(not(target_family = "wasm"))]
fn from_environment() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Set once by the native entry point, before the stage runs.
#[cfg(not(target_family = "wasm"))]
pub(crate) fn set_native(output_dir: Option<PathBuf>) {
    let _ = CONTEXT.set(Context {
        source_epoch: from_environment(),
        output_dir,
    });
}
