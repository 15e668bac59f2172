//! A crate's import graph (which module names which) and its cycles.

use std::collections::{BTreeMap, BTreeSet};

use super::read::{is_tests, module_of, paths_in};
use super::Violation;

/// What `path`, written in `from`, imports: `Ok(Some(module))`, `Ok(None)` for a path that
/// names the file itself, or an item through `self::`/`super::` (local to the file: an inline
/// module such as `table!`'s, or a test module), `Err(())` for a `crate::` path through the root.
pub(super) fn resolve(
    modules: &BTreeSet<String>,
    from: &str,
    path: &[String],
) -> std::result::Result<Option<String>, ()> {
    let mut at: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split('/').collect()
    };
    let kind = path[0].as_str();
    match kind {
        "crate" => at.clear(),
        "self" => {}
        "super" => {
            at.pop();
        }
        _ => return Ok(None),
    }
    let rest = &path[1..];
    let mut consumed = 0;
    for seg in rest {
        let mut next = at.clone();
        next.push(seg);
        if modules.contains(&next.join("/")) {
            at = next;
            consumed += 1;
        } else {
            break;
        }
    }
    let found = at.join("/");
    if kind != "crate" && consumed == 0 {
        return Ok(None);
    }
    if found.is_empty() {
        // `crate::Name`: an item of the root, reached through its re-export.
        return match rest.first().map(String::as_str) {
            None | Some("*") => Ok(None),
            Some(_) => Err(()),
        };
    }
    if found == from {
        return Ok(None);
    }
    Ok(Some(found))
}

/// The import graph of a crate's files: module → (module → the first path naming it).
pub(super) type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Reads a crate's files into its import graph; `crate::Name` paths go to `through_root`.
pub(super) fn graph_of(files: &[(String, String)], through_root: &mut Vec<Violation>) -> Graph {
    let modules: BTreeSet<String> = files.iter().map(|(f, _)| module_of(f)).collect();
    let mut graph = Graph::new();
    for (file, src) in files.iter().filter(|(f, _)| !is_tests(f)) {
        let from = module_of(file);
        let edges = graph.entry(from.clone()).or_default();
        for path in paths_in(src) {
            match resolve(&modules, &from, &path) {
                Ok(Some(to)) => {
                    edges.entry(to).or_insert_with(|| path.join("::"));
                }
                Ok(None) => {}
                Err(()) if !from.is_empty() => through_root.push(Violation::ThroughRoot {
                    from: file.clone(),
                    path: path.join("::"),
                }),
                Err(()) => {}
            }
        }
    }
    graph
}

/// Every import cycle of `graph` (each reported once, from its smallest module).
pub(super) fn cycles(graph: &Graph) -> Vec<Violation> {
    fn visit(
        graph: &Graph,
        node: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut BTreeSet<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut ring = stack[at..].to_vec();
            let min = ring
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| n.as_str())
                .map(|(i, _)| i)
                .unwrap_or(0);
            ring.rotate_left(min);
            out.insert(ring);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_owned());
        if let Some(edges) = graph.get(node) {
            for to in edges.keys() {
                // The root re-exports everything; it is no part of a cycle between modules.
                if !to.is_empty() {
                    visit(graph, to, stack, done, out);
                }
            }
        }
        stack.pop();
        done.insert(node.to_owned());
    }
    let mut found = BTreeSet::new();
    for node in graph.keys().filter(|n| !n.is_empty()) {
        visit(
            graph,
            node,
            &mut Vec::new(),
            &mut BTreeSet::new(),
            &mut found,
        );
    }
    found
        .into_iter()
        .map(|cycle| Violation::Cycle { cycle })
        .collect()
}
