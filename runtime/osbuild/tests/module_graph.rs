//! The library's top-level modules import each other without a circle:
//! planning asks `reach`, `audit` renders it, the hosts implement `host`,
//! and none of them imports back. (A circle between audit, plan and the
//! executor, and one between rootless and store, were undone; this keeps
//! them undone.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::NAME` paths in the code (not tests, not comments) of each
/// top-level module.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut todo = vec![src.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Code only: not the tests, not comments (doc links are no
            // imports).
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let deps = graph.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for d in graph.get(&m).into_iter().flatten() {
            if d == to {
                return true;
            }
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    false
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(
        graph.contains_key("reach") && graph.contains_key("executor"),
        "{graph:?}"
    );
    let circles: Vec<String> = graph
        .iter()
        .flat_map(|(m, deps)| {
            deps.iter()
                .filter(|d| reaches(&graph, d, m))
                .map(move |d| format!("{m} -> {d} -> ... -> {m}"))
        })
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}
