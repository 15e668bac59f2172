//! Shared test support: one database per test, the example schema, and a provisioned fixture.

#![allow(dead_code)]

pub mod schema;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{Migrator, TenantId};

/// The example tenant schema (`migrations_tenant/`).
pub const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
/// Shared tables used by the tests (a `plans` table to join with).
pub const SHARED_MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/migrations_shared");

/// The admin connection URL, read once.
pub fn admin_url() -> String {
    dotenvy::var("DATABASE_URL").expect("DATABASE_URL must be set in order to run tests")
}

/// A database of its own for one test: `dw_test_<hash of the test's name>`. Dropped (with
/// `FORCE`) when the guard drops, unless the test panicked, so a failure can be inspected.
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates a fresh database for the test named `test` (pass `module_path!()` + name).
    pub fn new(test: &str) -> Self {
        let mut h = DefaultHasher::new();
        test.hash(&mut h);
        let name = format!("dw_test_{:016x}", h.finish());
        let admin = admin_url();
        let mut conn = PgConnection::establish(&admin).expect("connect to the admin database");
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .expect("drop a leftover test database");
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create the test database");
        let url = replace_db(&admin, &name);
        Self { name, url }
    }

    /// The test database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection to the test database.
    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connect to the test database")
    }

    /// The migrator for the example schemas.
    pub fn migrator(&self) -> Migrator {
        Migrator::builder(TENANT_MIGRATIONS)
            .shared(SHARED_MIGRATIONS)
            .build()
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

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} of the failed test", self.name);
            return;
        }
        if let Ok(mut conn) = PgConnection::establish(&admin_url()) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Swaps the database name of a `postgres://` URL.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A `TestDb` named after the calling test.
#[macro_export]
macro_rules! test_db {
    ($name:expr) => {
        $crate::support::TestDb::new(concat!(module_path!(), "::", $name))
    };
}
