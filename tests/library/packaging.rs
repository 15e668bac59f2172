//! What the published crates carry: the licence files their manifests name, the README, and
//! nothing of the unpublished tests crate. (`.ci/run` builds every crate from its tarball with
//! `cargo package --workspace`.)

use std::fs;
use std::process::Command;

use workspace_diesel_tests::cli::repo_root;

const PUBLISHED: &[&str] = &[
    "workspace-diesel",
    "workspace-diesel-derive",
    "workspace-diesel-cli",
    "workspace-diesel-test",
];

fn package_list(krate: &str) -> Vec<String> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["package", "--list", "--allow-dirty", "--quiet", "-p", krate])
        .current_dir(repo_root())
        .output()
        .expect("run cargo package --list");
    assert!(
        out.status.success(),
        "{krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn published_crates_carry_their_licences_and_readme() {
    let root = repo_root();
    let workspace = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(workspace.contains("license = \"MIT OR Apache-2.0\""));
    let mit = fs::read_to_string(root.join("LICENSE-MIT")).unwrap();
    assert!(mit.starts_with("MIT License\n\nCopyright (c) 2026 workspace-diesel contributors\n"));
    let apache = fs::read_to_string(root.join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License\n                           Version 2.0, January 2004"));
    assert!(apache.contains("Copyright 2026 workspace-diesel contributors"));
    for krate in PUBLISHED {
        let files = package_list(krate);
        for needed in ["Cargo.toml", "LICENSE-MIT", "LICENSE-APACHE", "README.md"] {
            assert!(
                files.iter().any(|f| f == needed),
                "{krate} lacks {needed}: {files:?}"
            );
        }
        let manifest = fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        assert!(manifest.contains("license.workspace = true"), "{krate}");
        assert!(!manifest.contains("publish = false"), "{krate}");
        // The packaged licences are the root's texts.
        for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
            assert_eq!(
                fs::read_to_string(root.join(krate).join(licence)).unwrap(),
                fs::read_to_string(root.join(licence)).unwrap(),
                "{krate}/{licence}"
            );
        }
    }
    let tests = fs::read_to_string(root.join("tests/Cargo.toml")).unwrap();
    assert!(tests.contains("\npublish = false\n"));
}

#[test]
fn the_changelog_lists_what_is_unreleased() {
    let changelog = fs::read_to_string(repo_root().join("CHANGELOG.md")).unwrap();
    assert!(changelog.starts_with("# Changelog\n"));
    assert!(changelog.contains("[Keep a Changelog](https://keepachangelog.com/"));
    let unreleased = changelog
        .split("\n## [Unreleased]\n")
        .nth(1)
        .expect("an Unreleased section");
    assert!(unreleased.contains("\n### Added\n"));
    for item in [
        "TenantId",
        "tenant_table!",
        "Migrator",
        "pool",
        "workspace-diesel-cli",
    ] {
        assert!(unreleased.contains(item), "{item}");
    }
}
