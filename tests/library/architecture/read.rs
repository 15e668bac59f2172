//! Reading a crate's Rust source as the rules see it: its files, each file's module, its text
//! without comments, and every `crate::`, `self::` and `super::` path it names.

use std::path::Path;

use regex::Regex;

/// A module of a crate: a file's path below `src/` without `.rs` (`migrate/engine`), a
/// directory module by its directory (`migrate` for `migrate/mod.rs`), the root as "".
pub(super) fn module_of(file: &str) -> String {
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    match stem {
        "lib" | "main" => String::new(),
        _ => stem.strip_suffix("/mod").unwrap_or(stem).to_owned(),
    }
}

/// Rust source with its comments removed (strings and chars kept, so a path spelled in an
/// attribute's string still counts).
pub(super) fn strip_comments(src: &str) -> String {
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
pub(super) fn is_tests(file: &str) -> bool {
    file == "tests.rs" || file.ends_with("/tests.rs")
}

/// Every path a file names from `crate::`, `self::` or `super::`: the leaves of its `use`
/// trees and the paths written inline, as segment lists (starting with `crate`, `self` or
/// `super`). A file's inline unit tests (`#[cfg(test)] mod tests`, at its end) are left out.
pub(super) fn paths_in(src: &str) -> Vec<Vec<String>> {
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
pub(super) fn expand_use(tree: &str, out: &mut Vec<Vec<String>>) {
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

/// Every `.rs` file below `dir`, as (path below `dir` with `/`, source), sorted.
pub(super) fn read_sources(dir: &Path) -> Vec<(String, String)> {
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
