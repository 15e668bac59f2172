//! The documentation's structure: every relative link between the Markdown files resolves (file
//! and heading), the library's crate documentation (its README, rendered on docs.rs) links only
//! to absolute addresses, each published crate's manifest names its own README, the front door
//! stays short, and CI runs the test command the README gives.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use workspace_diesel_tests::cli::repo_root;

/// The crates whose manifests name a README.
const CRATES: &[&str] = &[
    "workspace-diesel",
    "workspace-diesel-derive",
    "workspace-diesel-cli",
    "workspace-diesel-axum",
    "workspace-diesel-test",
    "workspace-diesel-demo",
];

/// The Markdown files of the repository: the root's, `docs/`, and each crate's README.
fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("docs")] {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    for krate in CRATES {
        files.push(root.join(krate).join("README.md"));
    }
    files.sort();
    files
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            lines.push(line);
        }
    }
    lines
}

/// The targets of the inline links `[text](target)` of a Markdown text, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        // Inline code may hold `](`: leave it out.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`; a repeated
/// heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let mut slug = String::new();
        for c in heading.trim().chars() {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                slug.extend(c.to_lowercase());
            } else if c == ' ' {
                slug.push('-');
            }
        }
        let mut unique = slug.clone();
        let mut n = 0;
        while seen.contains(&unique) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
        seen.insert(unique);
    }
    seen
}

fn is_absolute(target: &str) -> bool {
    target.starts_with("https://") || target.starts_with("http://") || target.starts_with("mailto:")
}

fn shown(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_relative_link_between_the_markdown_files_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", shown(&file)));
        for target in links(&text) {
            if is_absolute(&target) {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target}: no such file", shown(&file)));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{}: {target}: no such heading", shown(&file)));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_anchor_rule_is_githubs() {
    let text = "# Scale: 10 to 10,000 tenants\n## `print-schema`\n## Cost\n```sh\n# a comment\n```\n### Cost\n## Web requests (workspace-diesel-axum)\n";
    let expected: BTreeSet<String> = [
        "scale-10-to-10000-tenants",
        "print-schema",
        "cost",
        "cost-1",
        "web-requests-workspace-diesel-axum",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(anchors(text), expected);
    assert_eq!(
        links("see [a](b.md#c), `x](y)` and [d](https://e)"),
        ["b.md#c", "https://e"]
    );
}

#[test]
fn the_library_crate_docs_link_only_to_absolute_addresses() {
    // The README is the crate's documentation on docs.rs (`#![doc = include_str!(..)]`), where a
    // link to a repository file would not resolve.
    let root = repo_root();
    let lib = fs::read_to_string(root.join("workspace-diesel/src/lib.rs")).unwrap();
    assert!(
        lib.starts_with(
            "#![doc = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/README.md\"))]"
        ),
        "lib.rs includes the crate README as its documentation"
    );
    let readme = root.join("workspace-diesel/README.md");
    let meta = fs::symlink_metadata(&readme).unwrap();
    assert!(
        meta.is_file(),
        "workspace-diesel/README.md is a file of its own"
    );
    let text = fs::read_to_string(&readme).unwrap();
    let relative: Vec<String> = links(&text)
        .into_iter()
        .filter(|t| !is_absolute(t))
        .collect();
    assert!(relative.is_empty(), "relative links: {relative:?}");
    for word in ["ARCHITECTURE.md", "](docs/", "](../"] {
        assert!(!text.contains(word), "{word}");
    }
}

#[test]
fn each_crate_names_its_own_readme() {
    let root = repo_root();
    for krate in CRATES {
        let manifest = fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("\nreadme = \"README.md\"\n"),
            "{krate}/Cargo.toml: readme = \"README.md\""
        );
        let readme = root.join(krate).join("README.md");
        let meta = fs::symlink_metadata(&readme).unwrap();
        assert!(meta.is_file(), "{krate}/README.md is a file of its own");
        let text = fs::read_to_string(&readme).unwrap();
        assert!(text.starts_with(&format!("# {krate}\n")), "{krate}");
    }
}

/// The README's test command: the line after `# the tests` in its "The two commands" section.
fn readme_test_command() -> String {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## The two commands\n")
        .nth(1)
        .expect("a `## The two commands` section");
    let mut lines = section.lines();
    lines
        .find(|l| l.starts_with("# the tests"))
        .expect("a `# the tests` comment");
    lines
        .find(|l| l.starts_with("cargo test"))
        .expect("the test command")
        .trim()
        .to_owned()
}

#[test]
fn ci_runs_the_test_command_of_the_readme() {
    let command = readme_test_command();
    assert!(command.starts_with("cargo "), "{command}");
    let ci = fs::read_to_string(repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run does not run `{command}`"
    );
}

#[test]
fn the_front_door_stays_short() {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 220, "README.md has {lines} lines");
    for needed in [
        "## Installation",
        "cargo add workspace-diesel",
        "diesel_workspace",
        "libpq",
        "## Example: library",
        "## Example: CLI",
        "## Features",
        "BENCHMARKS.md",
    ] {
        assert!(readme.contains(needed), "{needed}");
    }
}
