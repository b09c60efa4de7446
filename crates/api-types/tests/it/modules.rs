//! The crate's modules depend on each other one way only: `limits` is a leaf, and no chain of
//! `crate::` paths leads from a module back to itself.

use std::collections::{BTreeMap, BTreeSet};

/// Each module of `src/` (but the root) and the modules its code names through `crate::`.
/// Comments are skipped: a doc link is not a dependency.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if name == "lib" || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut deps = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                if code[..at].ends_with('$') {
                    continue;
                }
                let rest = &code[at + "crate::".len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !module.is_empty() && module != name {
                    deps.insert(module);
                }
            }
        }
        graph.insert(name, deps);
    }
    graph
}

/// The modules in an order where each comes after everything it uses; `None` on a cycle.
fn topological(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut order: Vec<String> = Vec::new();
    while order.len() < graph.len() {
        let next = graph.iter().find(|(m, deps)| {
            !order.contains(m)
                && deps
                    .iter()
                    .all(|d| order.contains(d) || !graph.contains_key(d))
        })?;
        order.push(next.0.clone());
    }
    Some(order)
}

#[test]
fn the_module_graph_is_acyclic() {
    let graph = module_graph();
    assert!(graph.contains_key("validate") && graph.contains_key("schema"));
    let order = topological(&graph);
    assert!(order.is_some(), "a cycle among {graph:#?}");
}

#[test]
fn limits_is_a_leaf() {
    let graph = module_graph();
    assert_eq!(graph.get("limits"), Some(&BTreeSet::new()));
    assert!(graph["validate"].contains("limits"));
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_owned(), deps.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(topological(&graph), None);
}
