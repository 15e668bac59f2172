//! Test support: one database per test, a scratch working directory with copies of the example
//! migrations, and a runner for the real binary.

#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use diesel::prelude::*;

#[path = "../../../workspace-diesel/tests/support/db.rs"]
mod db;

pub use db::ScratchDb;

/// A database of its own for one test: `dwx_<run>_cli_<hash of the test's name>`. Dropped (with
/// `FORCE`) when the guard drops, unless the test panicked, so a failure can be inspected.
pub struct TestDb {
    db: ScratchDb,
}

impl TestDb {
    /// Creates a fresh database for the test named `test`.
    pub fn new(test: &str) -> Self {
        let mut h = DefaultHasher::new();
        test.hash(&mut h);
        Self {
            db: ScratchDb::create(&format!("cli_{:016x}", h.finish())),
        }
    }

    /// The test database's URL.
    pub fn url(&self) -> &str {
        self.db.url()
    }

    /// A new connection to the test database.
    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(self.db.url()).expect("connect to the test database")
    }

    /// Runs one SQL query returning one boolean.
    pub fn check(&self, sql: &str) -> bool {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            b: bool,
        }
        let row: Row = diesel::sql_query(format!("SELECT ({sql}) AS b"))
            .get_result(&mut self.conn())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.b
    }

    /// Whether the schema `name` exists.
    pub fn schema_exists(&self, name: &str) -> bool {
        self.check(&format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = '{name}')"
        ))
    }

    /// Whether `public.workspaces` exists.
    pub fn registry_exists(&self) -> bool {
        self.check("pg_catalog.to_regclass('public.workspaces') IS NOT NULL")
    }
}

/// A `TestDb` named after the calling test.
#[macro_export]
macro_rules! test_db {
    ($name:expr) => {
        $crate::support::TestDb::new(concat!(module_path!(), "::", $name))
    };
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

impl Workdir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        copy_dir(
            &repo_root().join("migrations_tenant"),
            &dir.path().join("migrations_tenant"),
        );
        copy_dir(
            &repo_root().join("workspace-diesel/tests/migrations_shared"),
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_workspace-diesel"));
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

    /// Asserts failure with exit code 1 and exactly one stderr line `error: ...` containing
    /// `needle`; returns that line.
    #[track_caller]
    pub fn fails_with(&self, needle: &str) -> &str {
        assert_eq!(self.code, 1, "expected exit code 1, got {self:#?}");
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

fn copy_dir(from: &Path, to: &Path) {
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
