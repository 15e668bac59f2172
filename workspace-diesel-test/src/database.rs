//! The per-test database: created, migrated with the shared set, its warm pool filled, dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::ConnectionError;
use diesel_workspace::{Error, Migrator, Result, TenantId};

use crate::tenant::TestTenant;

/// The variable holding the admin URL: a server where the test may create databases.
pub const ADMIN_URL_ENV: &str = "DATABASE_URL";

/// The variable that keeps the database of a failed test when set (not empty, not `0`), as
/// [`TestDatabaseBuilder::keep_on_failure`] does.
pub const KEEP_ENV: &str = "WORKSPACE_DIESEL_TEST_KEEP";

/// The prefix of every test database's name: `wdtest_<pid>_<sequence>_<label>`.
pub const PREFIX: &str = "wdtest_";

/// How many connections a [`TestDatabase`] opens at most for the life-cycle calls (creating and
/// dropping test tenants): tests running at once wait for one rather than exhaust the server's
/// `max_connections`.
const LIFE_CYCLE_CONNECTIONS: usize = 4;

/// The kept connections: the idle ones, and how many are in use.
#[derive(Default)]
struct Connections {
    idle: Vec<PgConnection>,
    out: usize,
}

/// The default size of the warm pool a [`TestDatabase`] fills.
const DEFAULT_SPARES: usize = 4;

/// Builds a [`TestDatabase`]; start from [`TestDatabase::builder`].
#[must_use]
pub struct TestDatabaseBuilder {
    migrator: Migrator,
    admin_url: Option<String>,
    spares: usize,
    keep_on_failure: bool,
    label: String,
}

impl TestDatabaseBuilder {
    /// The admin URL (a server and a database to connect to for `CREATE DATABASE`). Defaults to
    /// the `DATABASE_URL` variable.
    pub fn admin_url(mut self, url: impl Into<String>) -> Self {
        self.admin_url = Some(url.into());
        self
    }

    /// How many spare schemas to provision up front: each [`TestDatabase::tenant`] claims one
    /// (about a millisecond); once the pool is empty a tenant is provisioned in full (the cost of
    /// its migrations). Defaults to 4.
    pub fn spares(mut self, spares: usize) -> Self {
        self.spares = spares;
        self
    }

    /// Keeps the database (and the tenants of failing tests) when a test panics, and prints its
    /// URL, so that it can be inspected. Defaults to `false`, or `true` when `WORKSPACE_DIESEL_TEST_KEEP`
    /// is set. A kept database is never dropped by a later run: drop it by hand.
    pub fn keep_on_failure(mut self, keep: bool) -> Self {
        self.keep_on_failure = keep;
        self
    }

    /// A label in the database's name (lowercase letters, digits and `_` kept, the rest
    /// replaced by `_`, at most 30 bytes), to tell test databases apart. Defaults to `db`.
    pub fn label(mut self, label: &str) -> Self {
        self.label = label
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .take(30)
            .collect();
        self
    }

    /// Creates the database, runs the registry's and the shared migrations in it, and fills the
    /// warm pool. A failure after the database was created drops it again.
    ///
    /// # Errors
    /// [`Error::Connection`] when `DATABASE_URL` is unset or no server answers, [`Error::Query`]
    /// when `CREATE DATABASE` fails, and the errors of
    /// [`Migrator::run_shared`] and [`Migrator::fill_spares`].
    pub fn create(self) -> Result<TestDatabase> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let admin_url = match self.admin_url {
            Some(url) => url,
            None => std::env::var(ADMIN_URL_ENV).map_err(|_| {
                Error::Connection(ConnectionError::BadConnection(format!(
                    "{ADMIN_URL_ENV} is not set: set it to a server where tests may create databases"
                )))
            })?,
        };
        let name = format!(
            "{PREFIX}{}_{}_{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
            self.label
        );
        let mut admin = PgConnection::establish(&admin_url)?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(Error::Query)?;
        let url = replace_database(&admin_url, &name);
        // From here on, dropping `inner` drops the database.
        let inner = Arc::new(Inner {
            name,
            admin_url,
            url,
            migrator: self.migrator,
            idle: Mutex::new(Connections::default()),
            returned: Condvar::new(),
            next_tenant: AtomicU64::new(0),
            keep_on_failure: self.keep_on_failure,
            failed: AtomicBool::new(false),
        });
        let db = TestDatabase { inner };
        db.with_connection(|conn| {
            db.inner.migrator.run_shared(conn)?;
            if self.spares > 0 {
                db.inner.migrator.fill_spares(conn, self.spares)?;
            }
            Ok(())
        })?;
        Ok(db)
    }
}

/// A database of its own for a test: see the [crate docs](crate).
///
/// Cloning it is cheap; the database is dropped when the last clone and the last
/// [`TestTenant`] taken from it are gone.
#[derive(Clone)]
pub struct TestDatabase {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    name: String,
    admin_url: String,
    url: String,
    pub(crate) migrator: Migrator,
    /// Connections to the test database kept for the life-cycle calls, and how many are out.
    idle: Mutex<Connections>,
    returned: Condvar,
    next_tenant: AtomicU64,
    pub(crate) keep_on_failure: bool,
    /// Set when a tenant of a failing test was kept.
    pub(crate) failed: AtomicBool,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.inner.name)
            .field("keep_on_failure", &self.inner.keep_on_failure)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A builder for a database migrated by `migrator` (its shared set and its tenant set).
    pub fn builder(migrator: &Migrator) -> TestDatabaseBuilder {
        TestDatabaseBuilder {
            migrator: migrator.clone(),
            admin_url: None,
            spares: DEFAULT_SPARES,
            keep_on_failure: std::env::var(KEEP_ENV).is_ok_and(|v| !v.is_empty() && v != "0"),
            label: "db".to_owned(),
        }
    }

    /// A database with every default of [`TestDatabaseBuilder`].
    ///
    /// # Errors
    /// As [`TestDatabaseBuilder::create`].
    pub fn create(migrator: &Migrator) -> Result<Self> {
        Self::builder(migrator).create()
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The migrator the database was built with.
    pub fn migrator(&self) -> &Migrator {
        &self.inner.migrator
    }

    /// A new connection to the database.
    ///
    /// # Errors
    /// [`Error::Connection`] when it cannot be opened.
    pub fn connection(&self) -> Result<PgConnection> {
        Ok(PgConnection::establish(&self.inner.url)?)
    }

    /// A pool on the database with every default of
    /// [`diesel_workspace::pool::TenantPoolBuilder`].
    ///
    /// # Errors
    /// [`Error::Pool`] when it cannot open its connections.
    #[cfg(feature = "r2d2")]
    pub fn pool(&self) -> Result<diesel_workspace::pool::TenantPool> {
        diesel_workspace::pool::new(self.inner.url.clone())
    }

    /// A fresh tenant named `test_<n>`, claimed from the warm pool when it holds a current spare
    /// (provisioned in full otherwise), dropped when the returned guard is.
    ///
    /// # Errors
    /// The errors of [`Migrator::create_tenant`].
    pub fn tenant(&self) -> Result<TestTenant> {
        let n = self.inner.next_tenant.fetch_add(1, Ordering::Relaxed);
        self.tenant_named(&format!("test_{n}"))
    }

    /// A fresh tenant named `name`, as [`tenant`](Self::tenant).
    ///
    /// # Errors
    /// [`Error::InvalidTenantName`], [`Error::TenantExists`], and the errors of
    /// [`Migrator::create_tenant`].
    pub fn tenant_named(&self, name: &str) -> Result<TestTenant> {
        let id = TenantId::new(name)?;
        self.with_connection(|conn| self.inner.migrator.create_tenant(conn, &id))?;
        Ok(TestTenant::new(id, self.inner.clone()))
    }

    /// Runs `f` on one of the database's kept connections (opening one when none is idle).
    pub(crate) fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        self.inner.with_connection(f)
    }
}

impl Inner {
    pub(crate) fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        let idle = {
            let mut conns = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            while conns.idle.is_empty() && conns.out >= LIFE_CYCLE_CONNECTIONS {
                conns = self.returned.wait(conns).unwrap_or_else(|e| e.into_inner());
            }
            conns.out += 1;
            conns.idle.pop()
        };
        let conn = match idle {
            Some(conn) => Ok(conn),
            None => PgConnection::establish(&self.url).map_err(Error::from),
        };
        let (result, conn) = match conn {
            Ok(mut conn) => (f(&mut conn), Some(conn)),
            Err(e) => (Err(e), None),
        };
        let mut conns = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        conns.out -= 1;
        conns.idle.extend(conn);
        self.returned.notify_one();
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .idle
            .clear();
        let failed = std::thread::panicking() || self.failed.load(Ordering::Relaxed);
        if failed && self.keep_on_failure {
            eprintln!(
                "keeping test database {} after a failure: {}",
                self.name, self.url
            );
            return;
        }
        let dropped = PgConnection::establish(&self.admin_url)
            .map_err(|e| e.to_string())
            .and_then(|mut conn| {
                conn.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .map_err(|e| e.to_string())
            });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// `url` with its database name replaced by `database` (the query string kept).
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[start..].find('/') {
        Some(i) => &base[..start + i],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            replace_database("postgres://u@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://u@h", "t1"),
            "postgres://u@h/t1"
        );
        assert_eq!(
            replace_database("postgres://u@h/", "t1"),
            "postgres://u@h/t1"
        );
    }
}
