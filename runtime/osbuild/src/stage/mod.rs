//! Stages: finding them by name, and what they declare about themselves.
//!
//! A stage is looked up in each `--libdir` (in order), then among the
//! built-in stages embedded in the binary. In a directory, a wasm stage is
//! `NAME.wasm`; a native stage is the executable `NAME` with `NAME.json`
//! beside it.

pub mod metadata;
pub mod paths;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub mod remote;

pub use metadata::{Capabilities, Device, Kind, StageMeta, TreeAccess, TreeScope, Writes};
pub use paths::{PathSet, Pattern};

/// A stage's code.
#[derive(Debug, Clone)]
pub enum Code {
    Wasm(Cow<'static, [u8]>),
    /// A native executable: a file on disk, or bytes embedded in osbuild
    /// (written out before it runs).
    Native(Cow<'static, [u8]>, Option<PathBuf>),
}

/// Where a stage came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(PathBuf),
    /// Pulled from a registry: the reference, pinned by digest.
    Oci(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Oci(r) => f.write_str(r),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub meta: StageMeta,
    pub code: Code,
    pub origin: Origin,
    /// sha256 (hex) of what the stage is: its code, and for a native stage
    /// also its metadata file. Part of every stage id.
    pub digest: String,
    /// A `--libdir` stage with a built-in stage's name: a policy's
    /// allowances for that name are the built-in's, not this code's.
    pub shadows_builtin: bool,
    /// A native stage's metadata file as read (its signature covers it).
    pub native_metadata: Option<Cow<'static, str>>,
    /// A native stage's detached signature (`NAME.sig`), as read.
    pub detached_signature: Option<Vec<u8>>,
}

/// The most osbuild reads of a `--libdir` stage's code and metadata: a
/// `--libdir` is not trusted, and `/dev/zero` or a FIFO there must not
/// fill the memory or hang planning.
pub(crate) const MAX_STAGE_BYTES: u64 = 512 << 20;
const MAX_METADATA_BYTES: u64 = 1 << 20;

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    read_regular_file(path, max, true)
}

/// A regular file's bytes, at most `max` of them (opened without blocking,
/// so a FIFO is refused, not waited on; a final symlink followed only if
/// `follow`): for files an untrusted party may have put there (a
/// `--libdir`, a stage project), where `/dev/zero` must not fill the
/// memory.
pub fn read_regular_file(path: &Path, max: u64, follow: bool) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | nofollow)
        .open(path)
        .map_err(err)?;
    let m = file.metadata().map_err(err)?;
    if !m.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if m.len() > max {
        return Err(format!(
            "{}: {} bytes, more than the {max} osbuild reads of it",
            path.display(),
            m.len()
        ));
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "{}: grew past the {max} bytes osbuild reads of it",
            path.display()
        ));
    }
    Ok(bytes)
}

impl Stage {
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn kind(&self) -> Kind {
        self.meta.kind
    }

    /// A wasm stage from its component's bytes.
    pub fn from_wasm_bytes(bytes: Cow<'static, [u8]>, origin: Origin) -> Result<Stage, String> {
        let section = metadata::wasm_metadata(&bytes)
            .map_err(|e| format!("{origin}: not a wasm component: {e}"))?
            .ok_or_else(|| {
                format!(
                    "{origin}: has no `{}` metadata section; build it with osbuild-stage's `stage!` macro",
                    metadata::WASM_SECTION
                )
            })?;
        let text =
            String::from_utf8(section).map_err(|_| format!("{origin}: metadata is not UTF-8"))?;
        let meta =
            StageMeta::parse(&text).map_err(|e| format!("{origin}: invalid metadata: {e}"))?;
        if meta.kind != Kind::Wasm {
            return Err(format!(
                "{origin}: a .wasm file whose metadata says kind {}",
                meta.kind
            ));
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        Ok(Stage {
            meta,
            code: Code::Wasm(bytes),
            origin,
            digest,
            shadows_builtin: false,
            native_metadata: None,
            detached_signature: None,
        })
    }

    fn native(
        exe: Cow<'static, [u8]>,
        path: Option<PathBuf>,
        meta_text: Cow<'static, str>,
        origin: Origin,
    ) -> Result<Stage, String> {
        let meta =
            StageMeta::parse(&meta_text).map_err(|e| format!("{origin}: invalid metadata: {e}"))?;
        if meta.kind != Kind::Native {
            return Err(format!(
                "{origin}: a native stage whose metadata says kind {}",
                meta.kind
            ));
        }
        let mut h = Sha256::new();
        h.update(&exe);
        h.update([0]);
        h.update(meta_text.as_bytes());
        Ok(Stage {
            meta,
            code: Code::Native(exe, path),
            origin,
            digest: hex::encode(h.finalize()),
            shadows_builtin: false,
            native_metadata: Some(meta_text),
            detached_signature: None,
        })
    }

    /// Loads a stage from a file: `X.wasm`, or a native executable with
    /// `X.json` beside it.
    pub fn load_file(path: &Path) -> Result<Stage, String> {
        let origin = Origin::File(path.to_path_buf());
        let bytes = read_capped(path, MAX_STAGE_BYTES)?;
        if path.extension().is_some_and(|e| e == "wasm") {
            return Stage::from_wasm_bytes(Cow::Owned(bytes), origin);
        }
        let meta_path = path.with_file_name(format!(
            "{}.json",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let meta = read_capped(&meta_path, MAX_METADATA_BYTES)
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| format!("{}: not UTF-8", meta_path.display()))
            })
            .map_err(|e| format!("{e} (a native stage needs its metadata beside it)"))?;
        let sig_path = detached_signature_path(path);
        let detached_signature = match read_regular_file(&sig_path, MAX_SIGNATURE_BYTES, false) {
            Ok(sig) => Some(sig),
            // Nothing there at all (not even a dangling link): unsigned.
            Err(_) if sig_path.symlink_metadata().is_err() => None,
            Err(e) => return Err(format!("its signature: {e}")),
        };
        let mut stage = Stage::native(
            Cow::Owned(bytes),
            Some(path.to_path_buf()),
            Cow::Owned(meta),
            origin,
        )?;
        stage.detached_signature = detached_signature;
        Ok(stage)
    }

    fn builtin(b: &'static Builtin) -> Result<Stage, String> {
        match b.kind {
            Kind::Wasm => Stage::from_wasm_bytes(Cow::Borrowed(b.code), Origin::Builtin),
            Kind::Native => Stage::native(
                Cow::Borrowed(b.code),
                None,
                Cow::Borrowed(b.metadata),
                Origin::Builtin,
            ),
        }
    }
}

/// The most osbuild reads of a native stage's signature file.
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;

/// Where a native stage's detached signature is: `NAME.sig` beside its
/// executable (see [`crate::signing::stage`]).
pub fn detached_signature_path(exe: &Path) -> PathBuf {
    let mut name = exe.file_name().unwrap_or_default().to_os_string();
    name.push(".sig");
    exe.with_file_name(name)
}

/// Whether `name` can name a stage (and so be looked up as a file name).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A stage embedded in the program that uses this library (the `osbuild`
/// binary embeds `osbuild-builtins`): its code and, for a native stage,
/// the metadata file that sits beside the executable (a wasm stage carries
/// its own inside).
#[derive(Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub kind: Kind,
    pub code: &'static [u8],
    pub metadata: &'static str,
}

/// Finds stages by name: in each `--libdir` in order, then among the
/// built-ins it was given. The library has no stages of its own.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    builtins: &'static [Builtin],
    libdirs: Vec<PathBuf>,
    /// Where stages named `oci://...` come from and are kept.
    remote: Option<remote::RemoteStages>,
}

impl Registry {
    pub fn new(builtins: &'static [Builtin], libdirs: Vec<PathBuf>) -> Registry {
        Registry {
            builtins,
            libdirs,
            remote: None,
        }
    }

    /// Finds stages named by reference (`oci://...@sha256:...`) too.
    pub fn with_remote(mut self, remote: remote::RemoteStages) -> Registry {
        self.remote = Some(remote);
        self
    }

    /// The directories searched before the built-ins.
    pub fn libdirs(&self) -> &[PathBuf] {
        &self.libdirs
    }

    /// The stage called `name`, or `None` if no directory and no built-in
    /// has it. An error means a file was found but is not a valid stage.
    pub fn find(&self, name: &str) -> Result<Option<Stage>, String> {
        if remote::is_reference(name) {
            return match &self.remote {
                // A pulled stage that calls itself by a built-in's name
                // gets none of what a policy allows the built-in.
                Some(r) => r.find(name).map(|mut stage| {
                    stage.shadows_builtin = self.builtins.iter().any(|b| b.name == stage.name());
                    Some(stage)
                }),
                None => Err(format!(
                    "{name}: stages from registries are not looked up here"
                )),
            };
        }
        if !valid_name(name) {
            return Ok(None);
        }
        for dir in &self.libdirs {
            let wasm = dir.join(format!("{name}.wasm"));
            let native = dir.join(name);
            let path = if wasm.is_file() {
                wasm
            } else if native.is_file() {
                native
            } else {
                continue;
            };
            let mut stage = Stage::load_file(&path)?;
            stage.shadows_builtin = self.builtins.iter().any(|b| b.name == name);
            if stage.meta.name != name {
                return Err(format!(
                    "{}: declares the name {:?}; a stage file must be named after its stage",
                    path.display(),
                    stage.meta.name
                ));
            }
            return Ok(Some(stage));
        }
        match self.builtins.iter().find(|b| b.name == name) {
            Some(b) => Stage::builtin(b).map(Some),
            None => Ok(None),
        }
    }

    /// The names of every stage that can be found, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.builtins.iter().map(|b| b.name.to_string()).collect();
        for dir in &self.libdirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if let Some(stem) = file.strip_suffix(".wasm") {
                    names.push(stem.to_string());
                } else if let Some(stem) = file.strip_suffix(".json")
                    && dir.join(stem).is_file()
                {
                    names.push(stem.to_string());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}
