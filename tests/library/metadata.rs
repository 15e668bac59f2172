//! What the manifests declare is true: the workspace's `rust-version` is the highest minimum
//! declared in the locked dependency graph, `default-features = false` leaves r2d2 out, and every
//! published crate carries keywords, categories and docs.rs settings.

use std::process::Command;

use serde_json::Value;
use workspace_diesel_tests::cli::repo_root;

fn cargo(args: &[&str]) -> String {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn metadata() -> Value {
    serde_json::from_str(&cargo(&["metadata", "--format-version", "1"])).expect("metadata JSON")
}

/// `1.88` and `1.88.0` as (1, 88, 0).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u64>().expect("a numeric version"));
    (
        parts.next().expect("major"),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn is_member(meta: &Value, id: &str) -> bool {
    meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == id)
}

#[test]
fn rust_version_is_the_highest_minimum_of_the_locked_graph() {
    let meta = metadata();
    let resolved: Vec<&str> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let mut highest = None;
    let mut declared = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        let id = package["id"].as_str().unwrap();
        let Some(rust_version) = package["rust_version"].as_str() else {
            continue;
        };
        if is_member(&meta, id) {
            declared.push((package["name"].as_str().unwrap(), version(rust_version)));
        } else if resolved.contains(&id) {
            let v = version(rust_version);
            if highest.as_ref().is_none_or(|(h, _)| v > *h) {
                highest = Some((v, package["name"].as_str().unwrap().to_owned()));
            }
        }
    }
    let (highest, by) = highest.expect("some dependency declares a rust-version");
    assert!(declared.len() >= 6, "{declared:?}");
    for (name, v) in declared {
        assert_eq!(
            v, highest,
            "{name} declares rust-version {v:?}, the locked graph needs {highest:?} ({by})"
        );
    }
}

/// The packages (with their features) a dependent gets from `workspace-diesel` with `features`.
fn library_tree(features: &[&str]) -> Vec<String> {
    let mut args = vec![
        "tree",
        "-p",
        "workspace-diesel",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "-f",
        "{p} [{f}]",
    ];
    args.extend_from_slice(features);
    cargo(&args).lines().map(str::to_owned).collect()
}

#[test]
fn default_features_off_leaves_r2d2_out() {
    let without = library_tree(&["--no-default-features"]);
    assert!(
        without.iter().any(|l| l.starts_with("diesel v")),
        "{without:?}"
    );
    for line in &without {
        assert!(!line.starts_with("r2d2 v"), "r2d2 is pulled in: {line}");
        assert!(
            !(line.starts_with("diesel v") && line.contains("r2d2")),
            "diesel's r2d2 feature is on: {line}"
        );
    }
    // Negative control: the default features bring it.
    let with = library_tree(&[]);
    assert!(with.iter().any(|l| l.starts_with("r2d2 v")), "{with:?}");
    assert!(with
        .iter()
        .any(|l| l.starts_with("diesel v") && l.contains("r2d2")));
}

#[test]
fn published_crates_have_keywords_categories_and_docs_rs_settings() {
    let meta = metadata();
    let mut published = 0;
    for package in meta["packages"].as_array().unwrap() {
        if !is_member(&meta, package["id"].as_str().unwrap()) {
            continue;
        }
        let name = package["name"].as_str().unwrap();
        if package["publish"] == serde_json::json!([]) {
            continue;
        }
        published += 1;
        let keywords = package["keywords"].as_array().unwrap();
        assert!(
            (1..=5).contains(&keywords.len()),
            "{name}: keywords {keywords:?}"
        );
        for k in keywords {
            let k = k.as_str().unwrap();
            assert!(
                k.len() <= 20
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{name}: keyword {k:?}"
            );
        }
        let categories = package["categories"].as_array().unwrap();
        assert!(!categories.is_empty(), "{name}: no categories");
        assert_eq!(
            package["metadata"]["docs"]["rs"]["all-features"], true,
            "{name}: no [package.metadata.docs.rs] all-features"
        );
        assert!(package["description"].as_str().is_some(), "{name}");
    }
    assert_eq!(published, 5, "the five published crates");
    let security = std::fs::read_to_string(repo_root().join("SECURITY.md")).expect("SECURITY.md");
    assert!(security.contains("Reporting a vulnerability"), "{security}");
}

#[test]
fn ci_leaves_the_set_up_to_the_test_command() {
    let root = repo_root();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(
        last, "cargo test --workspace --all-features",
        ".ci/run ends with the test command"
    );
    // The set-up is the xtask's, not the script's, and the Citus suites must not skip.
    let lines: Vec<&str> = ci.lines().map(str::trim).collect();
    assert!(lines.contains(&"cargo xtask setup"), "{ci}");
    assert!(
        lines.contains(&"export WORKSPACE_DIESEL_REQUIRE_CITUS=1"),
        "{ci}"
    );
    for install in ["apt-get", "cluster.sh", "install.sh", "pg_ctlcluster"] {
        assert!(!ci.contains(install), ".ci/run runs {install} itself");
    }
    let alias = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
    assert!(alias.contains("xtask = \"run -p xtask --\""), "{alias}");
}
