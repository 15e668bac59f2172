//! ARCHITECTURE.md's rules, checked: every library file's `use crate::` lines and inline
//! `crate::` paths against the layer table, no import through the crate root from inside the
//! crate, no import cycle (in the library and in the derive crate), and no source file of any
//! crate of the workspace (each member's `src/`) over 550 lines.
//! The rules are written once, in ARCHITECTURE.md; this file only reads them.

mod graph;
mod read;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

use self::graph::{cycles, graph_of};
use self::read::{is_tests, module_of, read_sources};

/// The longest a source file of any crate may be.
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
        if lines > MAX_LINES {
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

/// The workspace's members (their directories), as the root manifest lists them.
fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let list = Regex::new(r"(?s)\bmembers\s*=\s*\[([^\]]*)\]")
        .expect("regex")
        .captures(&manifest)
        .expect("the root manifest lists its members")[1]
        .to_owned();
    Regex::new(r#""([^"]+)""#)
        .expect("regex")
        .captures_iter(&list)
        .map(|c| c[1].to_owned())
        .collect()
}

/// The files of `crates` (each a member's directory and the files of its `src/`, as
/// [`read_sources`] gives them) over [`MAX_LINES`], named by their path below the repository.
fn too_long(crates: &[(String, Vec<(String, String)>)]) -> Vec<Violation> {
    let mut found = Vec::new();
    for (member, files) in crates {
        for (file, src) in files {
            let path = format!("{member}/src/{file}");
            let lines = src.lines().count();
            if lines > MAX_LINES {
                found.push(Violation::TooLong { file: path, lines });
            }
        }
    }
    found
}

/// Every member's `src/` files, by member.
fn workspace_sources() -> Vec<(String, Vec<(String, String)>)> {
    members()
        .into_iter()
        .map(|m| {
            let files = read_sources(&repo().join(&m).join("src"));
            (m, files)
        })
        .collect()
}

#[test]
fn every_crate_keeps_its_files_short() {
    let crates = workspace_sources();
    // Every member is read, each with its sources (a blind reader finds nothing too long).
    for expected in ["workspace-diesel", "workspace-diesel-cli", "tests", "xtask"] {
        assert!(
            crates
                .iter()
                .any(|(m, files)| m == expected && !files.is_empty()),
            "{expected} is read: {:?}",
            crates.iter().map(|(m, f)| (m, f.len())).collect::<Vec<_>>()
        );
    }
    let found = too_long(&crates);
    assert!(found.is_empty(), "files over {MAX_LINES} lines: {found:?}");
    // Negative controls: a file of another crate over the limit is found, and so is one of the
    // library's pool files (no file is excepted).
    let mut edited = crates.clone();
    let (_, cli) = edited
        .iter_mut()
        .find(|(m, _)| m == "workspace-diesel-cli")
        .expect("the CLI");
    cli.push(("stray.rs".into(), "\n".repeat(MAX_LINES + 1)));
    let (_, library) = edited
        .iter_mut()
        .find(|(m, _)| m == "workspace-diesel")
        .expect("the library");
    let (_, pool) = library
        .iter_mut()
        .find(|(f, _)| f == "pool/manager.rs")
        .expect("the library's pool/manager.rs");
    *pool = "\n".repeat(MAX_LINES + 1);
    let found = too_long(&edited);
    for file in [
        "workspace-diesel-cli/src/stray.rs",
        "workspace-diesel/src/pool/manager.rs",
    ] {
        assert!(
            found.contains(&Violation::TooLong {
                file: file.into(),
                lines: MAX_LINES + 1
            }),
            "{found:?}"
        );
    }
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
