//! Test support for [`diesel_workspace`], in the spirit of `#[sqlx::test]`.
//!
//! - [`TestDatabase`]: a fresh database per test, created on the server of `DATABASE_URL`, with
//!   the registry and the application's shared migrations run, a warm pool of spare tenant
//!   schemas filled, and dropped (`WITH (FORCE)`) when the last handle goes, unless the test
//!   failed and asked to keep it ([`TestDatabaseBuilder::keep_on_failure`], or the
//!   `WORKSPACE_DIESEL_TEST_KEEP` variable).
//! - [`TestTenant`]: a fresh tenant per test, claimed from that warm pool (a rename and three
//!   registry rows: about a millisecond, against tens of milliseconds to provision one), dropped
//!   when the test ends. Many tests may share one database, each with a tenant of its own.
//!
//! Tenants are created with real commits, not inside a transaction rolled back at the end: the
//! life-cycle calls commit transactions of their own, and inside an outer transaction (Diesel's
//! `begin_test_transaction`) they refuse with
//! [`Error::OuterTransaction`](diesel_workspace::Error::OuterTransaction).
//!
//! ```no_run
//! use diesel::prelude::*;
//! use diesel_migrations::{embed_migrations, EmbeddedMigrations};
//! use diesel_workspace::{Migrator, TenantConnectionExt};
//! use diesel_workspace_test::TestDatabase;
//!
//! const SHARED: EmbeddedMigrations = embed_migrations!("../migrations_shared");
//! const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
//!
//! # fn main() -> diesel_workspace::Result<()> {
//! let migrator = Migrator::builder(TENANT).shared(SHARED).build()?;
//! let db = TestDatabase::builder(&migrator).spares(2).create()?;
//! let tenant = db.tenant()?;
//! let mut conn = db.connection()?;
//! tenant.switch(|| {
//!     conn.tenant_transaction(|c| {
//!         diesel::sql_query("INSERT INTO notes (title) VALUES ('hello')").execute(c)
//!     })
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! Async tests run their futures under the tenant with [`TestTenant::scope`]; pooled tests take a
//! [`TenantPool`](diesel_workspace::pool::TenantPool) from [`TestDatabase::pool`].

#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod database;
mod tenant;

pub use crate::database::{TestDatabase, TestDatabaseBuilder, ADMIN_URL_ENV, KEEP_ENV, PREFIX};
pub use crate::tenant::TestTenant;
