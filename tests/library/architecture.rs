//! ARCHITECTURE.md's rules, checked: every library file's `use crate::` lines and inline
//! `crate::` paths against the layer table, no import through the crate root from inside the
//! crate, no import cycle (in the library and in the derive crate), and no library source file
//! over 550 lines but `pool.rs`. The rules are written once, in ARCHITECTURE.md; this file only
//! reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// The longest a library source file may be (`pool.rs` excepted).
const MAX_LINES: usize = 550;

/// One rule broken, in words a failing test can print.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Violation {
    /// `from` imports `to`, which the layer table does not allow.
    NotAllowed {
        from: String,
        to: String,
        path: String,
    },
    /// `from` names `path` through the crate root (`crate::Name`), not through its module.
    ThroughRoot { from: String, path: String },
    /// The files of `cycle` import each other in a ring.
    Cycle { cycle: Vec<String> },
    /// `file` has `lines` lines, over [`MAX_LINES`].
    TooLong { file: String, lines: usize },
    /// `file` is not in the layer table.
    Unlisted { file: String },
}

/// A module of a crate: a file's path below `src/` without `.rs` (`migrate/engine`), a
/// directory module by its directory (`migrate` for `migrate/mod.rs`), the root as "".
fn module_of(file: &str) -> String {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    match stem {
        "lib" | "main" => String::new(),
        _ => stem.strip_suffix("/mod").unwrap_or(stem).to_owned(),
    }
}

/// Rust source with its comments removed (strings and chars kept, so a path spelled in an
/// attribute's string still counts).
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if b[i] == b'\n' {
                            out.push('\n');
                        }
                        i += 1;
                    }
                }
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // A raw string: r"..." or r#"..."#.
                let start = i;
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                j += 1;
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                j = (j + close.len()).min(b.len());
                out.push_str(&src[start..j]);
                i = j;
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                out.push_str(&src[start..i]);
            }
            b'\'' => {
                // A char literal ('x', '\n', '"') is copied whole; a lifetime is one quote.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    src[i + 2..].find('\'').map(|k| i + 2 + k + 1)
                } else {
                    src[i + 1..]
                        .chars()
                        .next()
                        .map(|c| i + 1 + c.len_utf8())
                        .filter(|&k| b.get(k) == Some(&b'\''))
                        .map(|k| k + 1)
                };
                let end = end.unwrap_or(i + 1);
                out.push_str(&src[i..end]);
                i = end;
            }
            _ => {
                let c = src[i..].chars().next().expect("a char");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Whether `file` is a module's unit tests (`tests.rs`), which the rules leave out.
fn is_tests(file: &str) -> bool {
    file == "tests.rs" || file.ends_with("/tests.rs")
}

/// Every path a file names from `crate::`, `self::` or `super::`: the leaves of its `use`
/// trees and the paths written inline, as segment lists (starting with `crate`, `self` or
/// `super`). A file's inline unit tests (`#[cfg(test)] mod tests`, at its end) are left out.
fn paths_in(src: &str) -> Vec<Vec<String>> {
    let code = strip_comments(src);
    let code = match Regex::new(r"#\[cfg\(test\)\]\s*mod tests\s*\{")
        .expect("regex")
        .find(&code)
    {
        Some(m) => code[..m.start()].to_owned(),
        None => code,
    };
    let mut paths = Vec::new();
    let use_item = Regex::new(r"(?s)\buse\s+((?:crate|self|super)::[^;]*);").expect("regex");
    let mut rest = code.clone();
    let rename = Regex::new(r"\s+as\s+[A-Za-z_][A-Za-z0-9_]*").expect("regex");
    for m in use_item.captures_iter(&code) {
        let tree: String = rename
            .replace_all(&m[1], "")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        expand_use(&tree, &mut paths);
        rest = rest.replacen(&m[0], "", 1);
    }
    let inline = Regex::new(r"\b(crate|self|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)").expect("regex");
    for m in inline.captures_iter(&rest) {
        let mut path = vec![m[1].to_owned()];
        path.extend(
            m[2].split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        paths.push(path);
    }
    paths
}

/// Expands a `use` tree without whitespace (`crate::a::{b,c::{d,e}}`) into its leaf paths.
fn expand_use(tree: &str, out: &mut Vec<Vec<String>>) {
    fn go(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = tree[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let inner = &tree[open + 1..tree.rfind('}').expect("a closing brace")];
            let mut depth = 0;
            let mut start = 0;
            let mut parts = Vec::new();
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            parts.push(&inner[start..]);
            let base: Vec<String> = prefix.iter().cloned().chain(head).collect();
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                go(&base, part, out);
            }
        } else {
            let mut path: Vec<String> = prefix.to_vec();
            path.extend(
                tree.split("::")
                    .filter(|s| !s.is_empty() && *s != "self")
                    .map(str::to_owned),
            );
            out.push(path);
        }
    }
    go(&[], tree, out);
}

/// What `path`, written in `from`, imports: `Ok(Some(module))`, `Ok(None)` for a path that
/// names the file itself, or an item through `self::`/`super::` (local to the file: an inline
/// module such as `table!`'s, or a test module), `Err(())` for a `crate::` path through the root.
fn resolve(
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
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Reads a crate's files into its import graph; `crate::Name` paths go to `through_root`.
fn graph_of(files: &[(String, String)], through_root: &mut Vec<Violation>) -> Graph {
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
fn cycles(graph: &Graph) -> Vec<Violation> {
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

/// The layer table of ARCHITECTURE.md's library section, read as: module (a file's module, or
/// `migrate` for the whole directory) → (layer, the modules it may import). The engine's own
/// table (`### Inside migrate/`) adds its files, each allowed its listed siblings and the
/// layers its header names.
#[derive(Debug, Default)]
struct Layers {
    layer: BTreeMap<String, u32>,
    allowed: BTreeMap<String, BTreeSet<String>>,
}

fn cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    if !line.starts_with('|') || line.starts_with("| ---") {
        return None;
    }
    Some(
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect(),
    )
}

fn ticked(cell: &str) -> Vec<String> {
    let re = Regex::new(r"`([^`]+)`").expect("regex");
    re.captures_iter(cell).map(|c| c[1].to_owned()).collect()
}

/// The layers a cell names: `layers 0–3`, `layer 1`, `layers 0-1`.
fn layer_ranges(cell: &str) -> Vec<u32> {
    let re = Regex::new(r"layers? (\d+)(?:\s*[–-]\s*(\d+))?").expect("regex");
    let mut out = Vec::new();
    for c in re.captures_iter(cell) {
        let a: u32 = c[1].parse().expect("a layer");
        let b: u32 = c.get(2).map_or(a, |m| m.as_str().parse().expect("a layer"));
        out.extend(a..=b);
    }
    out
}

fn read_layers(arch: &str) -> Layers {
    let library = arch
        .split("\n## ")
        .find(|s| s.starts_with("The library"))
        .expect("ARCHITECTURE.md has a section `## The library`");
    let (outer, inner) = library
        .split_once("### Inside `migrate/`")
        .expect("the library section has `### Inside `migrate/``");
    let mut layers = Layers::default();
    let mut rules: Vec<(String, String)> = Vec::new();
    for row in outer.lines().filter_map(cells) {
        let Ok(layer) = row[0].parse::<u32>() else {
            continue;
        };
        for name in ticked(&row[1]) {
            let module = module_of(name.trim_end_matches('/'));
            layers.layer.insert(module.clone(), layer);
            rules.push((module, row[3].clone()));
        }
    }
    let by_layer = |l: u32, layers: &Layers| -> Vec<String> {
        layers
            .layer
            .iter()
            .filter(|(_, &x)| x == l)
            .map(|(m, _)| m.clone())
            .collect()
    };
    for (module, rule) in &rules {
        let mut allowed = BTreeSet::new();
        for l in layer_ranges(rule) {
            allowed.extend(by_layer(l, &layers));
        }
        for t in ticked(rule) {
            let name = t.split("::").next().unwrap_or(&t).to_owned();
            if layers.layer.contains_key(&name) {
                allowed.insert(name);
            }
        }
        layers.allowed.insert(module.clone(), allowed);
    }
    // The engine's files: its header names the layers every file may import besides its row.
    let mut header_layers = Vec::new();
    let migrate_layer = layers.layer.get("migrate").copied();
    for line in inner.lines() {
        let Some(row) = cells(line) else { continue };
        if row[0] == "order" {
            header_layers = layer_ranges(&row[3]);
            continue;
        }
        if row[0].parse::<u32>().is_err() {
            continue;
        }
        let file = ticked(&row[1]).into_iter().next().expect("a file");
        let module = match file.as_str() {
            "mod.rs" => "migrate".to_owned(),
            _ => format!("migrate/{}", module_of(&file)),
        };
        let mut allowed = BTreeSet::new();
        for &l in &header_layers {
            allowed.extend(by_layer(l, &layers));
        }
        for t in ticked(&row[3]) {
            let sibling = if t == "mod" {
                "migrate".to_owned()
            } else {
                format!("migrate/{t}")
            };
            allowed.insert(sibling);
        }
        if let Some(l) = migrate_layer {
            layers.layer.insert(module.clone(), l);
        }
        layers.allowed.insert(module, allowed);
    }
    layers
}

/// Checks the library's `files` (path below `src/`, source) against ARCHITECTURE.md's text.
fn check_library(arch: &str, files: &[(String, String)]) -> Vec<Violation> {
    let layers = read_layers(arch);
    let mut found = Vec::new();
    let graph = graph_of(files, &mut found);
    for (file, src) in files {
        let lines = src.lines().count();
        if lines > MAX_LINES && file != "pool.rs" {
            found.push(Violation::TooLong {
                file: file.clone(),
                lines,
            });
        }
        let module = module_of(file);
        if module.is_empty() || module == "prelude" || is_tests(file) {
            // The root and the prelude re-export; they are the public surface, not a layer.
            continue;
        }
        let Some(allowed) = layers.allowed.get(&module) else {
            found.push(Violation::Unlisted { file: file.clone() });
            continue;
        };
        for (to, path) in graph.get(&module).into_iter().flatten() {
            // A file of the engine reached from outside it counts as the engine (`migrate/`).
            let whole = to.split('/').next().unwrap_or(to).to_owned();
            let inside_engine = module.starts_with("migrate");
            let ok = allowed.contains(to)
                || (!inside_engine && allowed.contains(&whole))
                || (inside_engine && !to.starts_with("migrate") && allowed.contains(&whole));
            if !ok {
                found.push(Violation::NotAllowed {
                    from: file.clone(),
                    to: to.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    found.extend(cycles(&graph));
    found.sort();
    found
}

/// Every `.rs` file below `dir`, as (path below `dir` with `/`, source), sorted.
fn read_sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("below root");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((
                    rel,
                    std::fs::read_to_string(&path).expect("a readable file"),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_owned()
}

fn architecture() -> String {
    std::fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

fn library() -> Vec<(String, String)> {
    read_sources(&repo().join("workspace-diesel/src"))
}

#[test]
fn the_library_keeps_the_layer_table() {
    let found = check_library(&architecture(), &library());
    assert!(
        found.is_empty(),
        "ARCHITECTURE.md's rules are broken:\n{}",
        found
            .iter()
            .map(|v| format!("  {v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_derive_crate_has_no_import_cycle() {
    let files = read_sources(&repo().join("workspace-diesel-derive/src"));
    let mut through_root = Vec::new();
    let graph = graph_of(&files, &mut through_root);
    // The checker sees the derive crate's imports at all (a blind reader finds no edge).
    assert!(
        graph
            .get("table/expand")
            .is_some_and(|e| e.contains_key("table/model")),
        "{graph:?}"
    );
    let found = cycles(&graph);
    assert!(found.is_empty(), "{found:?}");
}

/// `src` with `code` added before its unit tests (or at its end).
fn inject(src: &str, code: &str) -> String {
    match src.find("#[cfg(test)]") {
        Some(at) => format!("{}{code}\n{}", &src[..at], &src[at..]),
        None => format!("{src}{code}"),
    }
}

/// The library as it is, with `file`'s source changed by `edit`.
fn edited(file: &str, edit: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let mut files = library();
    let (_, src) = files
        .iter_mut()
        .find(|(f, _)| f == file)
        .unwrap_or_else(|| panic!("{file} is a library file"));
    *src = edit(src);
    files
}

#[test]
fn the_checker_sees_each_kind_of_violation() {
    let arch = architecture();
    // The unedited library is clean (the test above), so each finding below is the edit's.
    let upward = check_library(
        &arch,
        &edited("sql.rs", |s| inject(s, "\nuse crate::migrate::Migrator;\n")),
    );
    assert!(
        upward.contains(&Violation::NotAllowed {
            from: "sql.rs".into(),
            to: "migrate".into(),
            path: "crate::migrate::Migrator".into(),
        }),
        "{upward:?}"
    );
    // An inline path in a function body counts as much as a `use` line.
    let inline = check_library(
        &arch,
        &edited("context.rs", |s| {
            inject(
                s,
                "\nfn _probe() { let _ = crate::pool::TenantPool::builder; }\n",
            )
        }),
    );
    assert!(
        inline.iter().any(|v| matches!(v,
            Violation::NotAllowed { from, to, .. } if from == "context.rs" && to == "pool")),
        "{inline:?}"
    );
    // A grouped `use` is read leaf by leaf.
    let grouped = check_library(
        &arch,
        &edited("tenant.rs", |s| {
            inject(
                s,
                "\nuse crate::{sql::quote_ident, connection::{rollback}};\n",
            )
        }),
    );
    assert!(
        grouped.iter().any(|v| matches!(v,
            Violation::NotAllowed { from, to, .. } if from == "tenant.rs" && to == "connection")),
        "{grouped:?}"
    );
    // Through the crate root.
    let root = check_library(
        &arch,
        &edited("roles.rs", |s| {
            inject(s, "\nfn _probe() -> Option<crate::Error> { None }\n")
        }),
    );
    assert!(
        root.contains(&Violation::ThroughRoot {
            from: "roles.rs".into(),
            path: "crate::Error".into(),
        }),
        "{root:?}"
    );
    // A cycle: `sql` (layer 0) importing `statements` back, and `statements` importing `sql`.
    let mut files = edited("sql.rs", |s| {
        inject(s, "\nuse crate::statements::Statement;\n")
    });
    let statements = files
        .iter_mut()
        .find(|(f, _)| f == "statements.rs")
        .expect("statements.rs");
    statements.1 = inject(&statements.1, "\nuse crate::sql::quote_ident;\n");
    let cycle = check_library(&arch, &files);
    assert!(
        cycle.contains(&Violation::Cycle {
            cycle: vec!["sql".into(), "statements".into()]
        }),
        "{cycle:?}"
    );
    // A file over the limit, and a file the table does not list.
    let long = check_library(
        &arch,
        &edited("trace.rs", |s| format!("{s}{}", "\n".repeat(MAX_LINES))),
    );
    assert!(
        long.iter()
            .any(|v| matches!(v, Violation::TooLong { file, .. } if file == "trace.rs")),
        "{long:?}"
    );
    let mut files = library();
    files.push(("stray.rs".into(), "pub(crate) fn f() {}\n".into()));
    assert!(check_library(&arch, &files).contains(&Violation::Unlisted {
        file: "stray.rs".into()
    }));
    // Comments do not count: a doc link through the root is no import.
    let doc = check_library(
        &arch,
        &edited("tenant.rs", |s| {
            inject(
                s,
                "\n/// See [`crate::Migrator`] and crate::migrate::Migrator.\nfn _probe() {}\n",
            )
        }),
    );
    assert!(doc.is_empty(), "{doc:?}");
}
