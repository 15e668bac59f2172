//! The CLI suite's support: a scratch working directory with copies of the example migrations,
//! and a runner for the real binary (built once per run with the same cargo, or taken from
//! `WORKSPACE_DIESEL_BIN`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::TestDb;

/// The `workspace-diesel` binary: `WORKSPACE_DIESEL_BIN` when set, else the workspace's own,
/// built once per run by the cargo that runs the tests (same profile and target directory).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("WORKSPACE_DIESEL_BIN") {
            return PathBuf::from(bin);
        }
        cargo_build(
            &["-p", "workspace-diesel-cli", "--bin", "workspace-diesel"],
            Path::new("workspace-diesel"),
        )
    })
}

/// The library's `quickstart` example, built once per run like [`binary`].
pub fn quickstart() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build(
            &["-p", "workspace-diesel", "--example", "quickstart"],
            Path::new("examples/quickstart"),
        )
    })
}

/// Runs `cargo build --quiet <what>` with the test's profile and target directory; returns the
/// executable at `<target>/<profile>/<file>`.
fn cargo_build(what: &[&str], file: &Path) -> PathBuf {
    // The test executable is `<target>/<profile>/deps/<name>-<hash>`.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("the target directory");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--quiet"])
        .args(what)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(repo_root());
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build {what:?} failed");
    let mut path = profile_dir.join(file);
    path.set_extension(std::env::consts::EXE_EXTENSION);
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A temporary working directory holding `migrations_tenant/` (the example notes schema) and
/// `migrations_shared/` (a `plans` table), copied from the repository.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

impl Workdir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        copy_dir(
            &repo_root().join("migrations_tenant"),
            &dir.path().join("migrations_tenant"),
        );
        copy_dir(
            &repo_root().join("tests/migrations/shared"),
            &dir.path().join("migrations_shared"),
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a tenant (or shared) migration `<version>_<name>` with `up` and `down` SQL.
    pub fn add_migration(&self, shared: bool, dir_name: &str, up: &str, down: &str) {
        let base = if shared {
            "migrations_shared"
        } else {
            "migrations_tenant"
        };
        let dir = self.path().join(base).join(dir_name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("up.sql"), up).unwrap();
        fs::write(dir.join("down.sql"), down).unwrap();
    }

    /// The binary, run in this directory against `db` (through `DATABASE_URL`).
    pub fn cmd(&self, db: &TestDb) -> Command {
        let mut cmd = Command::new(binary());
        cmd.current_dir(self.path())
            .env("DATABASE_URL", db.url())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary with `args` against `db`.
    pub fn run(&self, db: &TestDb, args: &[&str]) -> Run {
        Run::from(self.cmd(db).args(args).output().expect("run the binary"))
    }

    /// Runs the binary with `args` against the database at `url` (e.g. a Citus coordinator).
    pub fn run_url(&self, url: &str, args: &[&str]) -> Run {
        let mut cmd = Command::new(binary());
        cmd.current_dir(self.path())
            .env("DATABASE_URL", url)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        Run::from(cmd.args(args).output().expect("run the binary"))
    }
}

/// A finished run: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().expect("an exit code"),
            stdout: String::from_utf8(o.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(o.stderr).expect("utf-8 stderr"),
        }
    }
}

impl Run {
    /// Asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        &self.stdout
    }

    /// Asserts a usage error: exit code 2 and exactly one stderr line `error: ...` containing
    /// `needle`; returns that line.
    #[track_caller]
    pub fn fails_usage(&self, needle: &str) -> &str {
        self.fails_with_code(2, needle)
    }

    /// The JSON document on stderr of a run with `--format json` that failed with `code`; its
    /// `format`, `ok`, `exit_code` and `kind` are checked.
    #[track_caller]
    pub fn json_error(&self, code: i32) -> serde_json::Value {
        assert_eq!(self.code, code, "expected exit code {code}, got {self:#?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:#?}");
        let doc: serde_json::Value =
            serde_json::from_str(self.stderr.trim()).unwrap_or_else(|e| panic!("{e}: {self:#?}"));
        assert_eq!(doc["format"], 1, "{doc}");
        assert_eq!(doc["ok"], false, "{doc}");
        assert_eq!(doc["exit_code"], code, "{doc}");
        assert_eq!(
            doc["kind"],
            if code == 2 { "usage" } else { "failure" },
            "{doc}"
        );
        doc
    }

    /// Asserts failure with exit code 1 and exactly one stderr line `error: ...` containing
    /// `needle`; returns that line.
    #[track_caller]
    pub fn fails_with(&self, needle: &str) -> &str {
        self.fails_with_code(1, needle)
    }

    #[track_caller]
    fn fails_with_code(&self, code: i32, needle: &str) -> &str {
        assert_eq!(self.code, code, "expected exit code {code}, got {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected one line on stderr, got {self:#?}");
        assert!(lines[0].starts_with("error: "), "{self:#?}");
        assert!(
            lines[0].contains(needle),
            "expected {needle:?} in {self:#?}"
        );
        lines[0]
    }
}

/// Copies the directory `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}
