//! An r2d2 connection pool built for tenant routing (feature `r2d2`, on by default).
//!
//! ```no_run
//! use diesel::prelude::*;
//! use diesel_workspace::prelude::*;
//! use diesel_workspace::{pool, switch, TenantId};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = pool::new("postgres://localhost/app")?;
//! // or: pool::builder().max_size(8).statement_cap(256).build("postgres://localhost/app")?;
//!
//! let acme = TenantId::new("acme")?;
//! let mut conn = pool.get_for(&acme)?; // acme's shard: a backend that has served acme before
//! let n: i64 = switch(&acme, || {
//!     conn.tenant_transaction(|conn| {
//!         diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
//!             "(SELECT count(*) FROM notes)",
//!         ))
//!         .get_result(conn)
//!     })
//! })?;
//! # let _ = n;
//! # Ok(())
//! # }
//! ```
//!
//! A [`TenantPool`] is a set of plain [`r2d2::Pool`]s; its connections deref to
//! [`PgConnection`](diesel::PgConnection), so [tenant tables](crate::tenant_table),
//! [`tenant_transaction`](crate::TenantConnectionExt) and every Diesel query work on them. What
//! differs from `r2d2::Pool<ConnectionManager<PgConnection>>` is what happens to a connection
//! between two users:
//!
//! - **Fail-closed session defaults, once per physical connection.** When the pool opens a
//!   connection, its `search_path` is set to the shared schema alone (default `public`). Tenant
//!   tables never live there, so an unqualified tenant table does not resolve outside a tenant
//!   transaction (PostgreSQL answers `relation "notes" does not exist`) while extension functions
//!   and types installed in the shared schema stay usable. `application_name` and the timeouts
//!   are set in the same batch. A tenant's `search_path` is never set at session
//!   level: tenant tables render their schema into the SQL, and
//!   [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction) uses a
//!   transaction-local `search_path`.
//! - **A reset on every checkout instead of a ping.** r2d2 checks a connection when it is checked
//!   out (`test_on_check_out`, always on here); Diesel's check is `SELECT 1`. This pool sends one
//!   reset batch instead, in one round trip, so a checkout costs no extra round trip. The batch
//!   restores every session default above and (unless
//!   [`session_cleanup`](TenantPoolBuilder::session_cleanup) is off) clears the session state
//!   that could carry one user's context into the next checkout: `DISCARD TEMP` (a temporary
//!   table would shadow every schema on the path), `SET SESSION AUTHORIZATION DEFAULT`,
//!   `RESET ROLE`, `CLOSE ALL`, `UNLISTEN *`, `pg_advisory_unlock_all()`. It keeps the prepared
//!   statements: `DISCARD ALL` and `DEALLOCATE ALL` are not used because Diesel's statement
//!   cache would still believe its statements exist.
//! - **Dirty or bloated connections are discarded at check-in.** As with Diesel's manager, a
//!   connection is closed instead of returned when the thread is panicking or the connection
//!   holds an open or broken transaction. It is also closed when its backend holds more memory
//!   than the [`backend_memory_limit`](TenantPoolBuilder::backend_memory_limit) (256 MiB by
//!   default, read every 1,024 check-ins), or, where that memory cannot be read or a cap is set,
//!   more than [`statement_cap`](TenantPoolBuilder::statement_cap) prepared statements (counted
//!   by a [`StatementCounter`] installed as the connection's
//!   [`Instrumentation`](diesel::connection::Instrumentation)).
//! - **Each tenant keeps to a few backends.** The connections are split into shards (one
//!   connection each by default) and each tenant is hashed onto one: a checkout for a tenant
//!   ([`TenantPool::get_for`], or [`TenantPool::get`] under [`switch`](crate::switch)) takes its
//!   shard's connection, waiting up to [`affinity_wait`](TenantPoolBuilder::affinity_wait)
//!   (5 ms) before it takes any idle one. Each backend then serves `tenants / shards` tenants and
//!   keeps their catalog entries and statements warm.
//!
//! The cost of a checkout against a stock Diesel pool, the server memory a backend holds per
//! tenant and what the limits bound it to are measured in the repository's
//! [pool guide](https://github.com/workspace-diesel/workspace-diesel/blob/main/docs/pool.md).
//!
//! # Limits
//!
//! - A transaction opened with raw SQL (`batch_execute("BEGIN")`) and left open is invisible to
//!   Diesel's transaction manager, so neither Diesel's pool nor this one detects it at check-in.
//!   Open transactions with [`Connection::transaction`](diesel::Connection::transaction) or
//!   [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction).
//! - Replacing a pooled connection's instrumentation with
//!   [`Connection::set_instrumentation`](diesel::Connection::set_instrumentation) removes the
//!   [`StatementCounter`]; such a connection is closed at check-in. Pass your instrumentation to
//!   [`TenantPoolBuilder::instrumentation`] instead.
//! - Statements prepared with raw `PREPARE` are not counted.
//! - Behind PgBouncer in transaction pooling mode, session settings and prepared statements do
//!   not stay with a client: declare it with
//!   [`pooler(Pooler::Transaction)`](TenantPoolBuilder::pooler) (a pool that does not is refused
//!   with [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared)), and run raw SQL only
//!   inside [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction) there.

mod build;
mod builder;
mod counter;
mod manager;
mod session;
mod shards;

#[cfg(feature = "deadpool")]
pub(crate) use self::build::ready;
pub use self::builder::{
    TenantPoolBuilder, DEFAULT_AFFINITY_WAIT, DEFAULT_BACKEND_MEMORY_LIMIT,
    DEFAULT_MEMORY_CHECK_EVERY,
};
pub(crate) use self::counter::{begin_check_pid, transaction_settings};
pub use self::counter::{cached_statements, StatementCounter};
#[cfg(feature = "deadpool")]
pub(crate) use self::manager::probe_error;
pub use self::manager::{
    backend_memory, ManagerError, SessionCustomizer, TenantConnectionManager, DEFAULT_STATEMENT_CAP,
};
pub use self::session::{DEFAULT_APPLICATION_NAME, DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT};
pub use self::shards::{PoolState, ShardPool, TenantPool, TenantPooledConnection};

use crate::error::Result;

/// Builds a pool with every default (see [`TenantPoolBuilder`]) and opens its connections.
///
/// ```no_run
/// let pool = diesel_workspace::pool::new("postgres://localhost/app")?;
/// let conn = pool.get()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Pool`](crate::Error::Pool) when the pool could not open its first connections within
/// the connection timeout (30 seconds).
pub fn new(database_url: impl Into<String>) -> Result<TenantPool> {
    builder().build(database_url)
}

/// A [`TenantPoolBuilder`] with every default.
///
/// ```no_run
/// use std::time::Duration;
///
/// let pool = diesel_workspace::pool::builder()
///     .max_size(8)
///     .statement_cap(256)
///     .statement_timeout(Some(Duration::from_secs(30)))
///     .build("postgres://localhost/app")?;
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub fn builder() -> TenantPoolBuilder {
    TenantPoolBuilder::new()
}
