//! The shared support of workspace-diesel's integration suites (`library/`, `cli/`) and
//! benchmarks (`benches/`): one database per test, the example schema, a provisioned fixture, the
//! runner for the real binary, and the benchmarks' settings.

#![allow(missing_docs)]

pub mod bench;
pub mod busy;
pub mod citus;
pub mod cli;
pub mod db;
pub mod pgbouncer;
pub mod schema;
pub mod throwaway;
pub mod trojan;

pub use db::{admin_url, ScratchDb};

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{Migrator, TenantId};

/// The example tenant schema (`migrations_tenant/`, through the `migrations/tenant` link so that
/// the crate builds from its package too).
pub const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/tenant");
/// Shared tables used by the tests (a `plans` table to join with).
pub const SHARED_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/shared");
/// One small table per tenant, for the tests that create thousands of tenants.
pub const SCALE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/scale");

/// The example schema, then an additive migration (`notes.priority` with a default, and an
/// index on it): a release and the one after it, with [`Prefix`].
pub const ADDITIVE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/additive");

/// The first `n` migrations of a source, in version order: the tenant set of a release before.
pub struct Prefix<S>(pub S, pub usize);

impl<S: diesel::migration::MigrationSource<diesel::pg::Pg>>
    diesel::migration::MigrationSource<diesel::pg::Pg> for Prefix<S>
{
    fn migrations(
        &self,
    ) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<diesel::pg::Pg>>>> {
        let mut all = self.0.migrations()?;
        all.sort_by(|a, b| a.name().version().cmp(&b.name().version()));
        all.truncate(self.1);
        Ok(all)
    }
}

/// The migrator for the example schemas (tenant set and the tests' shared tables).
pub fn example_migrator() -> Migrator {
    Migrator::builder(TENANT_MIGRATIONS)
        .shared(SHARED_MIGRATIONS)
        .build()
        .expect("the example migrations")
}

/// A database of its own for one test: `dwx_<run>_test_<hash of the test's name>`. Dropped (with
/// `FORCE`) when the guard drops, unless the test panicked, so a failure can be inspected.
pub struct TestDb {
    db: ScratchDb,
}

impl TestDb {
    /// Creates a fresh database for the test named `test` (pass `module_path!()` + name).
    pub fn new(test: &str) -> Self {
        let mut h = DefaultHasher::new();
        test.hash(&mut h);
        let db = ScratchDb::create(&format!("test_{:016x}", h.finish()));
        Self { db }
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

    /// The migrator for the example schemas.
    pub fn migrator(&self) -> Migrator {
        Migrator::builder(TENANT_MIGRATIONS)
            .shared(SHARED_MIGRATIONS)
            .build()
            .expect("the example migrations")
    }

    /// Runs the shared migrations and creates `tenants`; returns their ids.
    pub fn provision(&self, tenants: &[&str]) -> Vec<TenantId> {
        let mut conn = self.conn();
        let migrator = self.migrator();
        migrator.run_shared(&mut conn).expect("shared migrations");
        tenants
            .iter()
            .map(|t| {
                let id = TenantId::new(t).expect("valid tenant id");
                migrator
                    .create_tenant(&mut conn, &id)
                    .expect("create tenant");
                id
            })
            .collect()
    }
}

/// A `TestDb` named after the calling test.
#[macro_export]
macro_rules! test_db {
    ($name:expr) => {
        $crate::TestDb::new(concat!(module_path!(), "::", $name))
    };
}
