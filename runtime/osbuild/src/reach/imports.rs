//! What a wasm stage's binary imports, and which imports a stage may have.
//!
//! The one import check: planning refuses a stage on it, `osbuild audit`
//! shows it, and the wasm host checks it again before linking (a stage
//! can reach the host only through what its component imports, so this
//! is the sandbox's boundary for wasm stages, not metadata).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::stage::{Capabilities, Code, Stage, metadata};

use super::Refusal;

/// The versions of the stage world this osbuild links (`wit/stage.wit`
/// and `wit/previous/`).
pub const WORLDS: [&str; 2] = ["osbuild:stage@0.2.0", "osbuild:stage@0.1.0"];

/// What one import needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Linked for every stage: cli, io, clocks, filesystem, random, and
    /// the stage world's interfaces.
    Nothing,
    /// An `osbuild:stage` interface of a version osbuild does not link.
    UnknownWorld,
    /// `wasi:sockets`: the `network` capability.
    Network,
    /// Anything else: osbuild links nothing else for a stage.
    Never,
}

/// What `import` (`wasi:sockets/tcp@0.2.6`) needs to be linked.
pub fn need(import: &str) -> Need {
    match import.split('/').next().unwrap_or(import) {
        "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:filesystem" | "wasi:random" => Need::Nothing,
        "osbuild:stage" => {
            let version = import.split_once('@').map_or("", |(_, v)| v);
            if WORLDS
                .iter()
                .any(|w| w.strip_prefix("osbuild:stage@") == Some(version))
            {
                Need::Nothing
            } else {
                Need::UnknownWorld
            }
        }
        "wasi:sockets" => Need::Network,
        _ => Need::Never,
    }
}

/// The stage worlds `imports` come from (`osbuild:stage@0.3.0`).
pub fn worlds_of(imports: &[String]) -> String {
    let mut worlds: Vec<String> = imports
        .iter()
        .map(|i| {
            let (name, version) = i.split_once('@').unwrap_or((i, "unversioned"));
            let package = name.split('/').next().unwrap_or(name);
            format!("{package}@{version}")
        })
        .collect();
    worlds.dedup();
    worlds.join(", ")
}

/// A component's imports, or why they could not be read.
pub type Read = Result<Arc<[String]>, String>;

/// The imports of a wasm stage's component, read once per digest for the
/// whole process (planning, audit and the wasm host share it).
pub fn of(stage: &Stage) -> Option<Read> {
    static READ: OnceLock<Mutex<HashMap<String, Read>>> = OnceLock::new();
    let Code::Wasm(bytes) = &stage.code else {
        return None;
    };
    let cache = READ.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap().get(&stage.digest) {
        return Some(r.clone());
    }
    // Parsed outside the lock: two threads may read one component twice,
    // never block each other on it.
    let read = metadata::wasm_imports(bytes)
        .map(Arc::from)
        .map_err(|e| e.to_string());
    cache
        .lock()
        .unwrap()
        .insert(stage.digest.clone(), read.clone());
    Some(read)
}

/// Why `imports` are more than a stage declaring `caps` may have, grouped:
/// sockets without `network`, then what is never linked.
pub fn refusals(caps: &Capabilities, imports: &[String]) -> Vec<Refusal> {
    let mut sockets = Vec::new();
    let mut never = Vec::new();
    let mut unknown = Vec::new();
    for i in imports {
        match need(i) {
            Need::Nothing => {}
            Need::UnknownWorld => unknown.push(i.clone()),
            Need::Network if caps.network => {}
            Need::Network => sockets.push(i.clone()),
            Need::Never => never.push(i.clone()),
        }
    }
    let mut v = Vec::new();
    if !unknown.is_empty() {
        v.push(Refusal::UnknownWorld(unknown));
    }
    if !sockets.is_empty() {
        v.push(Refusal::UndeclaredSockets(sockets));
    }
    if !never.is_empty() {
        v.push(Refusal::NeverGranted(never));
    }
    v
}

/// The import check for one stage: its refusals (none for a native stage,
/// whose reach is not in its binary).
pub fn check(stage: &Stage) -> Vec<Refusal> {
    match of(stage) {
        None => Vec::new(),
        Some(Err(e)) => vec![Refusal::UnreadableComponent(e)],
        Some(Ok(list)) => refusals(&stage.meta.capabilities, &list),
    }
}

/// Imports grouped by package: `wasi:cli/{exit,stdout}@0.2.6`.
pub fn compact(imports: &[String]) -> String {
    let mut groups: Vec<(&str, Vec<&str>, &str)> = Vec::new();
    for i in imports {
        let (name, version) = i.split_once('@').unwrap_or((i, ""));
        let (package, iface) = name.split_once('/').unwrap_or((name, ""));
        match groups
            .iter_mut()
            .find(|(p, _, v)| *p == package && *v == version)
        {
            Some(g) => g.1.push(iface),
            None => groups.push((package, vec![iface], version)),
        }
    }
    groups
        .into_iter()
        .map(|(p, ifaces, v)| {
            let at = if v.is_empty() {
                String::new()
            } else {
                format!("@{v}")
            };
            if ifaces.len() == 1 {
                format!("{p}/{}{at}", ifaces[0])
            } else {
                format!("{p}/{{{}}}{at}", ifaces.join(","))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(network: bool) -> Capabilities {
        Capabilities {
            network,
            ..Default::default()
        }
    }

    /// The refusals' messages for `imports`.
    fn refused(network: bool, imports: &[&str]) -> Vec<String> {
        let imports: Vec<String> = imports.iter().map(|i| i.to_string()).collect();
        refusals(&caps(network), &imports)
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn sockets_need_network_and_the_rest_is_never_linked() {
        let imports: Vec<String> = [
            "wasi:cli/stdout@0.2.6",
            "wasi:sockets/tcp@0.2.6",
            "wasi:sockets/network@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
        ]
        .map(String::from)
        .to_vec();
        let got: Vec<String> = refusals(&caps(false), &imports)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "imports wasi:sockets/{tcp,network}@0.2.6, which need the `network` capability; the stage does not declare it",
                "imports wasi:http/outgoing-handler@0.2.6, which osbuild never grants to a stage",
            ]
        );
        let got = refusals(&caps(true), &imports);
        assert_eq!(got, [Refusal::NeverGranted(vec![imports[3].clone()])]);
    }

    #[test]
    fn a_stage_built_for_a_world_osbuild_does_not_link_is_refused_naming_its_version() {
        let got = refused(
            false,
            &["osbuild:stage/tree@0.3.0", "osbuild:stage/types@0.3.0"],
        );
        assert_eq!(
            got,
            [
                "was built for osbuild:stage@0.3.0 (imports osbuild:stage/{tree,types}@0.3.0); \
              this osbuild runs stages built for osbuild:stage@0.2.0 and osbuild:stage@0.1.0: \
              rebuild it with `osbuild stage build`, or use an osbuild that knows that world"
            ]
        );
    }

    #[test]
    fn a_package_name_is_matched_whole() {
        assert_eq!(need("wasi:clocks/wall-clock@0.2.6"), Need::Nothing);
        assert_eq!(need("wasi:clocksx/evil@0.2.6"), Need::Never);
        assert_eq!(need("osbuild:stage/tree@0.1.0"), Need::Nothing);
        assert_eq!(need("osbuild:stage/console@0.2.0"), Need::Nothing);
        assert_eq!(need("osbuild:stage/tree@0.3.0"), Need::UnknownWorld);
        assert_eq!(need("osbuild:stage/tree"), Need::UnknownWorld);
        assert_eq!(need("osbuild:stagex/tree"), Need::Never);
    }
}
