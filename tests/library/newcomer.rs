//! A newcomer's first hour, done literally from the README: a fresh crate outside this workspace
//! gets the dependencies of the installation section (the crates of this workspace by path, the
//! others from the registry), the files of the README's blocks written to the paths their first
//! line names (tenant migrations, `build.rs`, `src/main.rs`), and then the CLI example runs step by
//! step against a scratch database: `setup` creates it, a tenant is created, the library example
//! (`cargo run`) creates another and writes and reads a note, `migrate_all` and `list_tenants`;
//! the test support crate's README adds its development dependency and its test file, which
//! `cargo test` runs.
//!
//! The crate is built under the target directory (`newcomer/`), with a target directory of its
//! own that later runs reuse; the first build compiles Diesel and takes a few minutes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use workspace_diesel_tests::cli::{binary, repo_root};
use workspace_diesel_tests::{admin_url, ScratchDb};

/// A fenced block of the README: its language, the heading of its section and its text.
struct Block {
    lang: String,
    section: String,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut current: Option<Block> = None;
    for line in markdown.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => {
                    current = Some(Block {
                        lang: info.split(',').next().unwrap_or("").trim().to_owned(),
                        section: section.clone(),
                        text: String::new(),
                    })
                }
            }
            continue;
        }
        match current.as_mut() {
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            None => {
                if let Some(heading) = line.strip_prefix("## ") {
                    section = heading.trim().to_owned();
                }
            }
        }
    }
    assert!(current.is_none(), "an unclosed code block in the README");
    out
}

/// The commands of a shell block: one per line, comments and blank lines left out.
fn commands(block: &Block) -> Vec<Vec<String>> {
    block
        .text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The path a block's first line names: `// src/main.rs`, `-- migrations_tenant/.../up.sql`.
fn named_path(block: &Block) -> Option<PathBuf> {
    let first = block.text.lines().next()?;
    let rest = first
        .strip_prefix("// ")
        .or_else(|| first.strip_prefix("-- "))?;
    let path = rest.split(|c: char| c.is_whitespace() || c == ':').next()?;
    (path.contains('/') || path.ends_with(".rs")).then(|| PathBuf::from(path))
}

/// The dependency lines `cargo add` writes for one README line, with this workspace's crates
/// by path, and whether they are development dependencies (`--dev`).
fn dependency(args: &[String], workspace: &Path) -> (bool, Vec<String>) {
    assert_eq!(&args[..2], ["cargo", "add"], "{args:?}");
    let mut names = Vec::new();
    let mut features = Vec::new();
    let mut dev = false;
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--dev" => dev = true,
            "--features" | "-F" => features.extend(
                rest.next()
                    .expect("a feature list")
                    .split(',')
                    .map(str::to_owned),
            ),
            other => {
                assert!(!other.starts_with('-'), "unexpected flag {other}");
                names.push(other.to_owned());
            }
        }
    }
    let lines = names
        .into_iter()
        .map(|name| {
            let local = workspace.join(&name);
            let source = if local.join("Cargo.toml").exists() {
                format!("path = {:?}", local.display().to_string())
            } else {
                format!("version = {:?}", locked_version(&name))
            };
            format!("{name} = {{ {source}, features = {features:?} }}")
        })
        .collect();
    (dev, lines)
}

/// The version of `name` in the workspace's lock file, so the scratch crate builds what the
/// workspace was tested with.
fn locked_version(name: &str) -> String {
    let lock = fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let at = lock
        .find(&format!("\nname = \"{name}\"\nversion = \""))
        .unwrap_or_else(|| panic!("{name} is not in Cargo.lock"));
    let rest = &lock[at..];
    let start = rest.find("version = \"").unwrap() + "version = \"".len();
    let end = start + rest[start..].find('"').unwrap();
    format!("={}", &rest[start..end])
}

/// The target directory of the cargo that runs this test.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps")
        .to_owned()
}

fn run(mut command: Command, what: &str) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "{what} failed ({status}):\n{stdout}\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

#[test]
fn the_readme_first_hour_works_in_a_fresh_crate() {
    let root = repo_root().canonicalize().unwrap();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = blocks(&readme);
    // The test support crate's README: its installation line and its test file.
    let testing = fs::read_to_string(root.join("workspace-diesel-test/README.md")).unwrap();
    let testing = self::blocks(&testing);

    // Every Rust block names the file it belongs in, so every one is compiled below.
    for block in blocks.iter().filter(|b| b.lang == "rust") {
        assert!(
            named_path(block).is_some(),
            "a Rust block of section `{}` names no file:\n{}",
            block.section,
            block.text
        );
    }

    // cargo new, then the installation section's lines.
    let home = target_dir().join("newcomer");
    let krate = home.join("notes_app");
    let _ = fs::remove_dir_all(&krate);
    fs::create_dir_all(krate.join("src")).unwrap();
    let install = blocks
        .iter()
        .find(|b| b.section == "Installation" && b.lang == "sh")
        .expect("an installation block");
    let mut deps = Vec::new();
    let mut dev_deps = Vec::new();
    let mut installs_cli = false;
    let testing_install = testing
        .iter()
        .find(|b| b.section == "Installation" && b.lang == "sh")
        .expect("the test crate's installation block");
    for args in commands(install)
        .into_iter()
        .chain(commands(testing_install))
    {
        match args.get(1).map(String::as_str) {
            Some("add") => match dependency(&args, &root) {
                (false, lines) => deps.extend(lines),
                (true, lines) => dev_deps.extend(lines),
            },
            Some("install") => {
                assert_eq!(args, ["cargo", "install", "workspace-diesel-cli"]);
                installs_cli = true;
            }
            _ => panic!("unexpected installation step {args:?}"),
        }
    }
    assert!(installs_cli, "the installation section installs the CLI");
    assert!(
        deps.iter().any(|d| d.starts_with("workspace-diesel = ")),
        "{deps:?}"
    );
    fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"notes_app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             # Not a member of the repository's workspace.\n[workspace]\n\n[dependencies]\n{}\n\n\
             [dev-dependencies]\n{}\n",
            deps.join("\n"),
            dev_deps.join("\n")
        ),
    )
    .unwrap();
    fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();

    // Paste every block that names its file.
    let mut written = Vec::new();
    for block in blocks.iter().chain(&testing) {
        if let Some(path) = named_path(block) {
            let file = krate.join(&path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, &block.text).unwrap();
            written.push(path);
        }
    }
    for needed in ["src/main.rs", "build.rs", "tests/notes.rs"] {
        assert!(written.iter().any(|p| p == Path::new(needed)), "{needed}");
    }
    assert!(
        written
            .iter()
            .any(|p| p.starts_with("migrations_tenant") && p.ends_with("up.sql")),
        "{written:?}"
    );

    // Build it.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_in_crate = |args: &[&str]| {
        let mut c = Command::new(&cargo);
        c.args(args)
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", home.join("target"))
            .env_remove("RUSTFLAGS");
        c
    };
    run(cargo_in_crate(&["build", "--quiet"]), "cargo build");

    // The CLI example, step by step, against a database `setup` creates.
    let db = ScratchDb::create("newcomer");
    PgConnection::establish(&admin_url())
        .unwrap()
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name()))
        .unwrap();
    let cli = blocks
        .iter()
        .find(|b| b.section == "Example: CLI" && b.lang == "sh")
        .expect("a CLI example");
    let mut outputs = Vec::new();
    let mut url_set = false;
    for args in commands(cli) {
        let line = args.join(" ");
        let out = match args[0].as_str() {
            "export" => {
                assert!(args[1].starts_with("DATABASE_URL="), "{line}");
                url_set = true;
                continue;
            }
            "workspace-diesel" => {
                assert!(url_set, "{line} runs before DATABASE_URL is set");
                let mut c = Command::new(binary());
                c.args(&args[1..])
                    .current_dir(&krate)
                    .env("DATABASE_URL", db.url());
                run(c, &line)
            }
            "cargo" => {
                assert_eq!(args, ["cargo", "run"]);
                let mut c = cargo_in_crate(&["run", "--quiet"]);
                c.env("DATABASE_URL", db.url());
                run(c, &line)
            }
            _ => panic!("unexpected step {line}"),
        };
        outputs.push((line, out));
    }
    let output_of = |step: &str| {
        outputs
            .iter()
            .find(|(line, _)| line.starts_with(step))
            .map(|(_, out)| out.as_str())
            .unwrap_or_else(|| panic!("no step `{step}`"))
    };
    assert!(
        output_of("cargo run").contains("acme note 1: hello"),
        "{}",
        output_of("cargo run")
    );
    let tenants = output_of("workspace-diesel list_tenants");
    for tenant in ["acme", "globex"] {
        assert!(
            tenants
                .lines()
                .any(|l| l.starts_with(tenant) && l.contains("up to date")),
            "{tenants}"
        );
    }

    // Each tenant holds its own rows: acme the note, globex none.
    let mut conn = PgConnection::establish(db.url()).unwrap();
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count = |conn: &mut PgConnection, schema: &str| {
        diesel::sql_query(format!("SELECT count(*) AS n FROM \"{schema}\".notes"))
            .get_result::<Count>(conn)
            .unwrap()
            .n
    };
    assert_eq!(count(&mut conn, "acme"), 1);
    assert_eq!(count(&mut conn, "globex"), 0);

    // The test support crate's example test: a database and a tenant of its own.
    let mut test = cargo_in_crate(&["test", "--quiet"]);
    test.env("DATABASE_URL", admin_url());
    let out = run(test, "cargo test");
    assert!(out.contains("1 passed"), "{out}");

    // Run again, as a newcomer would: the tenant exists, a second note is added.
    let mut again = cargo_in_crate(&["run", "--quiet"]);
    again.env("DATABASE_URL", db.url());
    let out = run(again, "cargo run (again)");
    assert!(out.contains("acme note 2: hello"), "{out}");
    assert_eq!(count(&mut conn, "acme"), 2);
}
