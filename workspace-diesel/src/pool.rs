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
//! A [`TenantPool`] is a plain [`r2d2::Pool`]; its connections deref to [`PgConnection`], so
//! [tenant tables](crate::tenant_table), [`tenant_transaction`](crate::TenantConnectionExt) and
//! every Diesel query work on them. What differs from `r2d2::Pool<ConnectionManager<PgConnection>>`
//! is what happens to a connection between two users:
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
//!   reset batch instead, in one round trip, so **a checkout costs no extra round trip** compared
//!   with a stock Diesel pool. The batch restores every session default above and (unless
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
//!   more than [`statement_cap`](TenantPoolBuilder::statement_cap) prepared statements.
//! - **Each tenant keeps to a few backends.** The connections are split into shards (one
//!   connection each by default) and each tenant is hashed onto one: a checkout for a tenant
//!   ([`TenantPool::get_for`], or [`TenantPool::get`] under [`switch`](crate::switch)) takes its
//!   shard's connection, waiting up to [`affinity_wait`](TenantPoolBuilder::affinity_wait)
//!   (5 ms) before it takes any idle one. Each backend then serves `tenants / shards` tenants and
//!   keeps their catalog entries and statements warm: with thousands of tenants a request costs
//!   about what it costs with ten (the repository's `docs/scale.md` has the measurements).
//!
//! # Cost per checkout
//!
//! No extra round trip: the reset replaces the ping, though the server does a little more work
//! than for `SELECT 1`. The pool benchmark (`cargo bench -p workspace-diesel-tests --bench pool`)
//! measures it against a stock Diesel pool; its figures are in the repository's `BENCHMARKS.md`.
//!
//! # Bound on server memory
//!
//! Tenant tables render `"<tenant>"."<table>"`, so Diesel's statement cache (unbounded, with no
//! eviction) keeps one prepared statement per tenant and query shape on every connection: about
//! 10 KiB of backend plan-cache memory each (the pool benchmark measures it). Every backend also
//! keeps a catalog cache entry for each relation it has touched, prepared or not, raw SQL
//! included, and never frees it. [`backend_memory_limit`](TenantPoolBuilder::backend_memory_limit)
//! bounds both: the pool reads the backend's own memory (`pg_backend_memory_contexts`, on the
//! connection itself) every [`memory_check_every`](TenantPoolBuilder::memory_check_every)
//! check-ins and closes a connection over the limit; r2d2 then opens a fresh one. By default
//! the limit is 256 MiB per backend, read every 1,024 check-ins, and no statement cap applies.
//!
//! Reading that view needs a superuser or `pg_read_all_stats`. For a role without it the
//! default is the [`statement_cap`](TenantPoolBuilder::statement_cap) of 256 instead (decided
//! per connection when it opens): the pool counts the statements each connection has prepared
//! (a [`StatementCounter`] installed as the connection's [`Instrumentation`]) and closes one that
//! goes back with more, so the plans of the pool stay below about `max_size × (statement_cap +
//! statements prepared during one checkout) × 10 KiB` (25 MiB for 10 connections); the catalog
//! cache is then bounded in time only, by `max_lifetime` (30 minutes). The repository's pool
//! guide (`docs/pool.md`, "Server memory") has the measurements.
//!
//! # Limits
//!
//! - A transaction opened with raw SQL (`batch_execute("BEGIN")`) and left open is invisible to
//!   Diesel's transaction manager, so neither Diesel's pool nor this one detects it at check-in.
//!   Open transactions with [`Connection::transaction`] or
//!   [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction).
//! - Replacing a pooled connection's instrumentation with
//!   [`Connection::set_instrumentation`] removes the [`StatementCounter`]; such a connection is
//!   closed at check-in. Pass your instrumentation to
//!   [`TenantPoolBuilder::instrumentation`] instead.
//! - Statements prepared with raw `PREPARE` are not counted.
//! - Behind PgBouncer in transaction pooling mode, session settings and prepared statements do
//!   not stay with a client: declare it with
//!   [`pooler(Pooler::Transaction)`](TenantPoolBuilder::pooler) (a pool that does not is refused
//!   with [`Error::PoolerNotDeclared`]), and run raw SQL only
//!   inside [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction) there.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::{
    get_default_instrumentation, CacheSize, Instrumentation, InstrumentationEvent, SimpleConnection,
};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, ManageConnection};
use diesel::PgConnection;

use crate::error::{Error, Result};
use crate::pooler::{
    check_client, pid_check_expr, pid_check_failure, refused_option, undeclared, LiveBackend,
    Pooler, PoolerDetected,
};
use crate::sql::{escape_literal, quote_ident, work_path};
use crate::startup::{refuse_statement_pooling, startup_url};

/// One shard of a [`TenantPool`]: a plain r2d2 pool of the same connections.
pub type ShardPool = r2d2::Pool<TenantConnectionManager>;

/// A connection checked out of a [`TenantPool`]; it derefs to [`PgConnection`].
pub type TenantPooledConnection = r2d2::PooledConnection<TenantConnectionManager>;

/// The statement cap a connection gets when no [`statement_cap`](TenantPoolBuilder::statement_cap)
/// is set and its backend's memory is not bounded (the limit is off, or the role cannot read
/// the backend's memory): 256 prepared statements per connection.
pub const DEFAULT_STATEMENT_CAP: usize = 256;

/// The default [`backend_memory_limit`](TenantPoolBuilder::backend_memory_limit): 256 MiB per
/// backend, where the role can read its backend's memory.
pub const DEFAULT_BACKEND_MEMORY_LIMIT: u64 = 256 << 20;

/// The default [`memory_check_every`](TenantPoolBuilder::memory_check_every): the backend's
/// memory is measured at every 1,024th check-in of a connection.
pub const DEFAULT_MEMORY_CHECK_EVERY: u32 = 1_024;

/// The default [`affinity_wait`](TenantPoolBuilder::affinity_wait): a tenant waits up to 5 ms
/// for a connection of its own shard before it takes another shard's idle connection.
pub const DEFAULT_AFFINITY_WAIT: Duration = Duration::from_millis(5);

/// A connection pool for tenant routing; build one with [`new`] or [`builder`].
///
/// Its connections are split into shards ([`ShardPool`]s, one connection each by default), and
/// each tenant is hashed onto one: a checkout for a tenant ([`get`](Self::get) under
/// [`switch`](crate::switch), or [`get_for`](Self::get_for)) takes its shard's connection, so
/// each backend serves `tenants / shards` of the fleet and keeps their catalog entries and
/// prepared statements warm. When that connection is busy for longer than
/// [`affinity_wait`](TenantPoolBuilder::affinity_wait), the checkout takes any idle
/// connection, so a busy tenant still gets the whole pool. A checkout outside any tenant takes
/// the first idle connection. [`shards(1)`](TenantPoolBuilder::shards) makes it one plain r2d2
/// pool.
///
/// Cloning is cheap (the shards are shared).
#[derive(Clone)]
pub struct TenantPool {
    shards: Arc<[ShardPool]>,
    timeout: Duration,
    affinity_wait: Duration,
}

impl fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPool")
            .field("shards", &self.shards.len())
            .field("max_size", &self.max_size())
            .field("affinity_wait", &self.affinity_wait)
            .finish_non_exhaustive()
    }
}

/// How many connections a [`TenantPool`] holds and how many of them are idle, over all its
/// shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolState {
    /// The connections the pool holds, in use or idle.
    pub connections: u32,
    /// The connections idle in the pool.
    pub idle_connections: u32,
}

/// How long one wait on a shard lasts before the other shards are looked at again.
const WAIT_SLICE: Duration = Duration::from_millis(2);

impl TenantPool {
    /// Checks a connection out: of the active tenant's shard under [`switch`](crate::switch)
    /// (see [`get_for`](Self::get_for)), otherwise the first idle one; waits up to the
    /// [`connection_timeout`](TenantPoolBuilder::connection_timeout).
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within the connection timeout.
    pub fn get(&self) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        self.get_timeout(self.timeout)
    }

    /// As [`get`](Self::get), waiting up to `timeout`.
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within `timeout`.
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        let home = crate::context::with_current(|t| t.map(|t| self.shard_of(t)));
        self.checkout(home, timeout)
    }

    /// Checks a connection out of `tenant`'s shard; when its connection stays busy for
    /// [`affinity_wait`](TenantPoolBuilder::affinity_wait), any idle connection. It does not make
    /// `tenant` active: [`switch`](crate::switch) does.
    ///
    /// ```no_run
    /// # use diesel_workspace::{pool, switch, TenantId};
    /// let pool = pool::new("postgres://localhost/app")?;
    /// let acme = TenantId::new("acme")?;
    /// let mut conn = pool.get_for(&acme)?;
    /// # let _ = &mut conn;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within the connection timeout.
    pub fn get_for(
        &self,
        tenant: &crate::tenant::TenantId,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        self.checkout(Some(self.shard_of(tenant)), self.timeout)
    }

    /// As [`get_for`](Self::get_for), waiting up to `timeout`.
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within `timeout`.
    pub fn get_for_timeout(
        &self,
        tenant: &crate::tenant::TenantId,
        timeout: Duration,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        self.checkout(Some(self.shard_of(tenant)), timeout)
    }

    /// An idle connection, without waiting (the active tenant's shard first).
    pub fn try_get(&self) -> Option<TenantPooledConnection> {
        let n = self.shards.len();
        let home = crate::context::with_current(|t| t.map(|t| self.shard_of(t))).unwrap_or(0);
        (0..n).find_map(|k| self.shards[(home + k) % n].try_get())
    }

    /// The most connections the pool opens, over all its shards.
    pub fn max_size(&self) -> u32 {
        self.shards.iter().map(ShardPool::max_size).sum()
    }

    /// The connections held and idle, over all the shards.
    pub fn state(&self) -> PoolState {
        self.shards.iter().fold(
            PoolState {
                connections: 0,
                idle_connections: 0,
            },
            |sum, shard| {
                let s = shard.state();
                PoolState {
                    connections: sum.connections + s.connections,
                    idle_connections: sum.idle_connections + s.idle_connections,
                }
            },
        )
    }

    /// The shards, in hashing order.
    pub fn shards(&self) -> &[ShardPool] {
        &self.shards
    }

    /// The index of the shard that serves `tenant`: a hash of its name (SipHash with fixed keys),
    /// the same for the life of the process and across processes of one build.
    pub fn shard_of(&self, tenant: &crate::tenant::TenantId) -> usize {
        shard_index(tenant.as_str(), self.shards.len())
    }

    fn checkout(
        &self,
        home: Option<usize>,
        timeout: Duration,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        let n = self.shards.len();
        if n == 1 {
            return self.shards[0].get_timeout(timeout);
        }
        let start = std::time::Instant::now();
        let own = home.unwrap_or(0);
        if let Some(conn) = self.shards[own].try_get() {
            return Ok(conn);
        }
        if home.is_some() && !self.affinity_wait.is_zero() {
            if let Ok(conn) = self.shards[own].get_timeout(self.affinity_wait.min(timeout)) {
                return Ok(conn);
            }
        }
        loop {
            if let Some(conn) = (1..n).find_map(|k| self.shards[(own + k) % n].try_get()) {
                return Ok(conn);
            }
            let left = timeout.saturating_sub(start.elapsed());
            match self.shards[own].get_timeout(left.min(WAIT_SLICE).max(Duration::from_millis(1))) {
                Ok(conn) => return Ok(conn),
                Err(e) if left <= WAIT_SLICE => return Err(e),
                Err(_) => {}
            }
        }
    }
}

/// The shard of the tenant named `name` among `shards`.
pub(crate) fn shard_index(name: &str, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// The default [`application_name`](TenantPoolBuilder::application_name).
pub const DEFAULT_APPLICATION_NAME: &str = "workspace-diesel";

/// The default
/// [`idle_in_transaction_session_timeout`](TenantPoolBuilder::idle_in_transaction_session_timeout):
/// 10 minutes.
pub const DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// The error type of the pool's connection manager (Diesel's r2d2 error).
pub type ManagerError = diesel::r2d2::Error;

type InstrumentationFactory = Arc<dyn Fn() -> Option<Box<dyn Instrumentation>> + Send + Sync>;

/// Builds a pool with every default (see [`TenantPoolBuilder`]) and opens its connections.
///
/// ```no_run
/// let pool = diesel_workspace::pool::new("postgres://localhost/app")?;
/// let conn = pool.get()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Pool`] when the pool could not open its first connections within
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

/// Configures and builds a [`TenantPool`].
///
/// Session settings (applied once per physical connection, and restored on every checkout):
///
/// | setter | default |
/// | --- | --- |
/// | [`shared_schema`](Self::shared_schema) | `public` |
/// | [`application_name`](Self::application_name) | `workspace-diesel` |
/// | [`statement_timeout`](Self::statement_timeout) | `None`: the server's setting |
/// | [`lock_timeout`](Self::lock_timeout) | `None`: the server's setting |
/// | [`idle_in_transaction_session_timeout`](Self::idle_in_transaction_session_timeout) | 10 minutes |
/// | [`session_cleanup`](Self::session_cleanup) | `true` |
///
/// Pool settings: [`backend_memory_limit`](Self::backend_memory_limit) (256 MiB where the role
/// can read its backend's memory), [`memory_check_every`](Self::memory_check_every) (1,024),
/// [`statement_cap`](Self::statement_cap) (none under the memory limit, else 256),
/// [`shards`](Self::shards) (`max_size`), [`affinity_wait`](Self::affinity_wait) (5 ms),
/// [`instrumentation`](Self::instrumentation) (Diesel's default instrumentation), and r2d2's
/// [`max_size`](Self::max_size) (10), [`min_idle`](Self::min_idle) (`None`: `max_size`),
/// [`max_lifetime`](Self::max_lifetime) (30 minutes), [`idle_timeout`](Self::idle_timeout)
/// (10 minutes), [`connection_timeout`](Self::connection_timeout) (30 seconds); anything else
/// r2d2 offers through [`r2d2`](Self::r2d2).
pub struct TenantPoolBuilder {
    shared_schema: String,
    application_name: String,
    statement_timeout: Option<Duration>,
    lock_timeout: Option<Duration>,
    idle_in_transaction_session_timeout: Option<Duration>,
    session_cleanup: bool,
    statement_cap: Option<usize>,
    backend_memory_limit: Option<u64>,
    memory_limit_set: bool,
    memory_check_every: u32,
    instrumentation: InstrumentationFactory,
    pooler: Pooler,
    refuse_hijack_hazards: bool,
    shards: Option<u32>,
    affinity_wait: Duration,
    max_size: u32,
    min_idle: Option<u32>,
    max_lifetime: Option<Duration>,
    idle_timeout: Option<Duration>,
    connection_timeout: Duration,
    configure: Vec<R2d2Configure>,
}

type R2d2Configure = Arc<
    dyn Fn(r2d2::Builder<TenantConnectionManager>) -> r2d2::Builder<TenantConnectionManager>
        + Send
        + Sync,
>;

impl fmt::Debug for TenantPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPoolBuilder")
            .field("shared_schema", &self.shared_schema)
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field(
                "idle_in_transaction_session_timeout",
                &self.idle_in_transaction_session_timeout,
            )
            .field("session_cleanup", &self.session_cleanup)
            .field("statement_cap", &self.statement_cap)
            .field("backend_memory_limit", &self.backend_memory_limit)
            .field("memory_check_every", &self.memory_check_every)
            .field("pooler", &self.pooler)
            .field("refuse_hijack_hazards", &self.refuse_hijack_hazards)
            .field("shards", &self.shards)
            .field("affinity_wait", &self.affinity_wait)
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for TenantPoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TenantPoolBuilder {
    /// A builder with every default.
    pub fn new() -> Self {
        Self {
            shared_schema: "public".to_owned(),
            application_name: DEFAULT_APPLICATION_NAME.to_owned(),
            statement_timeout: None,
            lock_timeout: None,
            idle_in_transaction_session_timeout: Some(DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT),
            session_cleanup: true,
            statement_cap: None,
            backend_memory_limit: Some(DEFAULT_BACKEND_MEMORY_LIMIT),
            memory_limit_set: false,
            memory_check_every: DEFAULT_MEMORY_CHECK_EVERY,
            instrumentation: Arc::new(get_default_instrumentation),
            pooler: Pooler::Direct,
            refuse_hijack_hazards: false,
            shards: None,
            affinity_wait: DEFAULT_AFFINITY_WAIT,
            max_size: 10,
            min_idle: None,
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            connection_timeout: Duration::from_secs(30),
            configure: Vec::new(),
        }
    }

    /// The schema that is alone on every connection's session `search_path`: the schema of the
    /// shared tables and extensions, which holds no tenant table.
    ///
    /// Defaults to `public`. Use the schema of your [`Registry`](crate::registry::Registry) if it is not
    /// `public`.
    pub fn shared_schema(mut self, schema: impl Into<String>) -> Self {
        self.shared_schema = schema.into();
        self
    }

    /// The `application_name` of every connection (shown in `pg_stat_activity` and the server's
    /// logs).
    ///
    /// Defaults to `workspace-diesel`. As PostgreSQL does, characters other than printable ASCII
    /// are replaced with `?`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The session's `statement_timeout`: statements running longer are cancelled.
    ///
    /// Defaults to `None`: the server's (or role's, or database's) setting is kept. Durations are
    /// rounded up to whole milliseconds; `Some(Duration::ZERO)` disables the timeout.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The session's `lock_timeout`: waiting longer for a lock fails the statement.
    ///
    /// Defaults to `None`: the server's setting is kept. Rounded up to whole milliseconds.
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The session's `idle_in_transaction_session_timeout`: the server closes a connection that
    /// sits idle inside a transaction for longer, releasing its locks.
    ///
    /// Defaults to 10 minutes. `None` keeps the server's setting. Rounded up to whole
    /// milliseconds.
    pub fn idle_in_transaction_session_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_in_transaction_session_timeout = timeout;
        self
    }

    /// Whether every checkout also clears the session state that the defaults do not cover:
    /// temporary tables (`DISCARD TEMP`: a temporary table shadows every schema on the
    /// `search_path`), the role (`SET SESSION AUTHORIZATION DEFAULT; RESET ROLE`), cursors kept
    /// with `WITH HOLD` (`CLOSE ALL`), listeners (`UNLISTEN *`) and session advisory locks
    /// (`pg_advisory_unlock_all()`).
    ///
    /// Defaults to `true`. It stays in the same round trip, but the server does more work per
    /// checkout than for Diesel's `SELECT 1` (about 26 µs more per checkout, measured on
    /// loopback; see the [module documentation](self)). With `false`, only the
    /// session defaults are restored, at little more than the cost of the ping; do that only
    /// when the application never creates temporary tables, never changes its role, and never
    /// holds cursors, listeners or session advisory locks across a checkout.
    pub fn session_cleanup(mut self, enabled: bool) -> Self {
        self.session_cleanup = enabled;
        self
    }

    /// The most prepared statements a connection may hold when it goes back to the pool; a
    /// connection holding more is closed at check-in, and r2d2 opens a fresh one.
    ///
    /// Defaults to none where the [`backend_memory_limit`](Self::backend_memory_limit) bounds
    /// the backend (the default when the role can read its backend's memory: the memory bound
    /// covers the statements, and closing a connection every few hundred tenants would start
    /// backends cold), and to 256 ([`DEFAULT_STATEMENT_CAP`], about 2.5 MiB of server memory per
    /// connection) where it does not. Diesel prepares one statement per query shape and
    /// tenant; a cap set here applies in every case.
    pub fn statement_cap(mut self, cap: usize) -> Self {
        self.statement_cap = Some(cap);
        self
    }

    /// The most memory, in bytes, a connection's backend may hold when it goes back to the
    /// pool; a backend measured above it is closed at check-in, and r2d2 opens a fresh one.
    ///
    /// This bounds what the statement cap does not: the catalog cache a backend keeps for every
    /// tenant it has touched (about 25 KiB per tenant and table set, whether statements are
    /// prepared or not, raw SQL included), the plans, and anything else the session allocates.
    /// The backend's memory is the sum of `pg_backend_memory_contexts` read on the connection
    /// itself, at every [`memory_check_every`](Self::memory_check_every)-th check-in (one query,
    /// about a millisecond with a large cache), and once when the connection opens.
    ///
    /// Defaults to 256 MiB ([`DEFAULT_BACKEND_MEMORY_LIMIT`]) where the role can read the view,
    /// with no statement cap; where it cannot, the default is no measurement and the statement
    /// cap of 256 (one query at each new connection decides). Reading the view needs a
    /// superuser or a role with `pg_read_all_stats` (`GRANT pg_read_all_stats TO app`): with a
    /// limit set here and without that right, opening a connection fails with PostgreSQL's
    /// `permission denied` error, and the pool does not start. `None` turns the measurement off
    /// (the statement cap then defaults to 256). Between
    /// two measurements a backend may grow by what `memory_check_every - 1` checkouts add, so
    /// leave room for that. In [pooler mode](Self::pooler) the server connections are the
    /// pooler's, and nothing is measured (set the pooler's `server_lifetime`).
    ///
    /// ```no_run
    /// let pool = diesel_workspace::pool::builder()
    ///     .backend_memory_limit(Some(64 << 20))
    ///     .memory_check_every(16)
    ///     .build("postgres://localhost/app")?;
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn backend_memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.backend_memory_limit = bytes;
        self.memory_limit_set = true;
        self
    }

    /// How often the [`backend_memory_limit`](Self::backend_memory_limit) is checked: at every
    /// `n`-th check-in of a connection (1 checks at every check-in; 0 is taken as 1).
    ///
    /// Defaults to 1,024 ([`DEFAULT_MEMORY_CHECK_EVERY`]). The read walks every memory context
    /// of the backend: on a backend that holds thousands of tenants' plans and catalog entries
    /// it is the slowest check-in of all (tens of milliseconds), and read at every 32nd
    /// check-in it made the 99th percentile of request latency (measured by the scale
    /// benchmark). Checking more often bounds the growth between two reads more tightly.
    pub fn memory_check_every(mut self, n: u32) -> Self {
        self.memory_check_every = n.max(1);
        self
    }

    /// Makes each new connection's [`Instrumentation`] the one `make` returns; the pool's
    /// [`StatementCounter`] forwards every event to it.
    ///
    /// Defaults to Diesel's default instrumentation
    /// ([`diesel::connection::set_default_instrumentation`]), the one a connection opened
    /// without the pool would get.
    ///
    /// ```
    /// use diesel::connection::{Instrumentation, InstrumentationEvent};
    ///
    /// let builder = diesel_workspace::pool::builder().instrumentation(|| {
    ///     Some(Box::new(|event: InstrumentationEvent<'_>| {
    ///         if let InstrumentationEvent::StartQuery { query, .. } = event {
    ///             println!("{query}");
    ///         }
    ///     }) as Box<dyn Instrumentation>)
    /// });
    /// # let _ = builder;
    /// ```
    pub fn instrumentation(
        mut self,
        make: impl Fn() -> Option<Box<dyn Instrumentation>> + Send + Sync + 'static,
    ) -> Self {
        self.instrumentation = Arc::new(make);
        self
    }

    /// What sits between the pool and PostgreSQL; set [`Pooler::Transaction`] behind PgBouncer
    /// (or any pooler) in transaction pooling mode.
    ///
    /// Defaults to [`Pooler::Direct`]: session defaults, Diesel's statement cache and the
    /// per-checkout reset, with a check that refuses a transaction pooler with
    /// [`Error::PoolerNotDeclared`] (at
    /// [`build`](Self::build), at every new connection and in every checkout's reset, in the
    /// same round trip).
    ///
    /// With [`Pooler::Transaction`]:
    ///
    /// - Diesel's statement cache is off on every connection
    ///   ([`CacheSize::Disabled`]): each query is sent as an unnamed statement, parsed and planned
    ///   on every execution (see the crate documentation for the cost), so no client runs
    ///   another client's prepared statement. [`statement_cap`](Self::statement_cap) has nothing
    ///   to bound.
    /// - No session setting is relied on. The timeouts are set with `SET LOCAL` at the start of
    ///   every [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction), in the
    ///   same round trip as its `BEGIN`; a statement outside a tenant transaction runs with the
    ///   server's (role's, database's) settings, so set them there too
    ///   (`ALTER ROLE app SET statement_timeout = '30s'`). `application_name` is set once per
    ///   connection: PgBouncer tracks it per client. The session `search_path` is left alone:
    ///   **raw SQL that names tenant tables is safe only inside `tenant_transaction`**; outside
    ///   it, an unqualified name resolves through whatever `search_path` the server connection
    ///   has.
    /// - The checkout check is Diesel's `SELECT 1` ping: a session reset would run on whichever
    ///   server connection answers.
    ///
    /// ```no_run
    /// use diesel_workspace::{pool, pooler::Pooler};
    ///
    /// let pool = pool::builder()
    ///     .pooler(Pooler::Transaction)
    ///     .build("postgres://app@127.0.0.1:6432/app")?;
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    /// The most connections the pool opens, over all its shards.
    ///
    /// Defaults to 10.
    ///
    /// # Panics
    /// When `max_size` is 0.
    pub fn max_size(mut self, max_size: u32) -> Self {
        assert!(max_size > 0, "max_size must be positive");
        self.max_size = max_size;
        self
    }

    /// How many shards the connections are split into; each tenant is hashed onto one, and
    /// its checkouts take that shard's connections first (see [`TenantPool`]). At most
    /// `max_size`; `max_size / shards` connections each (the first shards get the remainder).
    ///
    /// Defaults to `max_size`: one connection per shard, so each backend serves the smallest
    /// share of the tenants. `1` makes the pool one plain r2d2 pool, every connection open to
    /// every tenant.
    ///
    /// ```
    /// let builder = diesel_workspace::pool::builder().max_size(8).shards(4);
    /// # let _ = builder;
    /// ```
    ///
    /// # Panics
    /// When `shards` is 0.
    pub fn shards(mut self, shards: u32) -> Self {
        assert!(shards > 0, "a pool needs at least one shard");
        self.shards = Some(shards);
        self
    }

    /// How long a checkout for a tenant waits for a connection of its own shard before it takes
    /// an idle connection of another shard (which then serves one more tenant, cold).
    ///
    /// Defaults to 5 ms ([`DEFAULT_AFFINITY_WAIT`]). `Duration::ZERO` takes another shard's idle
    /// connection at once; a long wait keeps each tenant on its shard at the price of queueing
    /// behind that shard's connections.
    pub fn affinity_wait(mut self, wait: Duration) -> Self {
        self.affinity_wait = wait;
        self
    }

    /// The number of idle connections the pool keeps open, over all its shards.
    ///
    /// Defaults to `None`: `max_size`.
    pub fn min_idle(mut self, min_idle: Option<u32>) -> Self {
        self.min_idle = min_idle;
        self
    }

    /// How long a connection lives before it is closed at check-in (whatever its statement
    /// count).
    ///
    /// Defaults to 30 minutes. `None` keeps connections forever.
    pub fn max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// How long a connection may sit idle in the pool before it is closed.
    ///
    /// Defaults to 10 minutes.
    pub fn idle_timeout(mut self, idle_timeout: Option<Duration>) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// How long [`TenantPool::get`] (and [`build`](Self::build)) wait for a connection.
    ///
    /// Defaults to 30 seconds.
    ///
    /// # Panics
    /// When `timeout` is zero.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "connection_timeout must be positive");
        self.connection_timeout = timeout;
        self
    }

    /// Applies any other r2d2 setting (error and event handlers, thread pool) to the
    /// [`r2d2::Builder`] of every shard (`configure` runs once per shard).
    ///
    /// `test_on_check_out` and the connection customizer are set by [`build`](Self::build) after
    /// `configure` runs: the per-checkout reset and the session defaults cannot be switched off.
    ///
    /// ```
    /// let builder = diesel_workspace::pool::builder()
    ///     .r2d2(|b| b.error_handler(Box::new(r2d2::LoggingErrorHandler)));
    /// # let _ = builder;
    /// ```
    pub fn r2d2(
        mut self,
        configure: impl Fn(r2d2::Builder<TenantConnectionManager>) -> r2d2::Builder<TenantConnectionManager>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.configure.push(Arc::new(configure));
        self
    }

    /// Makes [`build`](Self::build) refuse to start when the database lets another role
    /// hijack SQL resolving names through a `search_path` ([`Hazard::enables_hijack`](crate::Hazard::enables_hijack)):
    /// a role other than the owner with `CREATE` on the shared schema or on a schema holding a
    /// Diesel ledger, or a function or operator overloading a `pg_catalog` name. Two catalog
    /// queries on one connection, once. [`build_unchecked`](Self::build_unchecked) does not
    /// check. Defaults to `false`.
    pub fn refuse_hijack_hazards(mut self, refuse: bool) -> Self {
        self.refuse_hijack_hazards = refuse;
        self
    }
    /// Builds the pool, waits until it has opened its initial connections (`min_idle`), and
    /// detects the engine on one of them ([`Dialect`](crate::citus::Dialect): one query).
    ///
    /// Not in pooler mode ([`Pooler::Direct`], the default), it first opens two connections
    /// side by side and checks that they are served by two backends.
    ///
    /// # Errors
    /// - [`Error::PoolerNotDeclared`] when the pool is not in
    ///   pooler mode and the check shows a transaction pooler;
    /// - [`Error::Pool`] when the connections could not be opened within the
    ///   connection timeout;
    /// - [`Error::UnsupportedEngine`] on an engine the crate
    ///   cannot run on (CockroachDB, YugabyteDB);
    /// - with [`refuse_hijack_hazards`](Self::refuse_hijack_hazards),
    ///   [`Error::HijackHazards`] when the database has them.
    pub fn build(self, database_url: impl Into<String>) -> Result<TenantPool> {
        let refuse = self
            .refuse_hijack_hazards
            .then(|| self.shared_schema.clone());
        let (shards, manager, settings) = self.into_parts(database_url.into());
        if manager.pooler.is_transaction() {
            // A statement pooler is refused at once, not after the connection timeout.
            drop(manager.connect().map_err(probe_error)?);
        } else {
            manager.probe()?;
        }
        let shards = shards
            .into_iter()
            .map(|b| b.build(manager.clone()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let pool = settings.pool(shards);
        ready(&mut *pool.get()?, refuse.as_deref())?;
        Ok(pool)
    }

    #[cfg(feature = "deadpool")]
    /// What [`build`](Self::build) checks before the pool is built (the backend probe in the
    /// default mode, a statement pooler in pooler mode), and the manager it builds the pool on.
    pub(crate) fn checked_manager(
        self,
        database_url: String,
    ) -> Result<(TenantConnectionManager, Option<String>)> {
        let refuse = self
            .refuse_hijack_hazards
            .then(|| self.shared_schema.clone());
        let (_, manager, _) = self.into_parts(database_url);
        if manager.pooler.is_transaction() {
            drop(manager.connect().map_err(probe_error)?);
        } else {
            manager.probe()?;
        }
        Ok((manager, refuse))
    }

    /// Builds the pool without waiting for any connection; they are opened in the background.
    /// (The two-connection check of [`build`](Self::build) is skipped; the checks at every new
    /// connection and every checkout remain.)
    pub fn build_unchecked(self, database_url: impl Into<String>) -> TenantPool {
        let (shards, manager, settings) = self.into_parts(database_url.into());
        settings.pool(
            shards
                .into_iter()
                .map(|b| b.build_unchecked(manager.clone()))
                .collect(),
        )
    }

    /// The r2d2 builder of each shard, the manager they share (cloned), and what the
    /// [`TenantPool`] itself keeps.
    fn into_parts(
        self,
        database_url: String,
    ) -> (
        Vec<r2d2::Builder<TenantConnectionManager>>,
        TenantConnectionManager,
        PoolSettings,
    ) {
        let session = Arc::new(SessionDefaults::new(&self));
        let database_url = match self.pooler {
            Pooler::Direct => startup_url(&database_url),
            _ => database_url,
        };
        let manager = TenantConnectionManager {
            inner: ConnectionManager::new(database_url.clone()),
            database_url,
            session: Arc::clone(&session),
            statement_cap: self.statement_cap,
            backend_memory_limit: self.backend_memory_limit,
            memory_limit_set: self.memory_limit_set,
            memory_check_every: self.memory_check_every,
            instrumentation: self.instrumentation,
            pooler: self.pooler,
            detected: Arc::new(Mutex::new(None)),
        };
        let count = self.shards.unwrap_or(self.max_size).min(self.max_size);
        // One thread pool for every shard's background work (r2d2 starts three per pool).
        let threads = Arc::new(
            scheduled_thread_pool::ScheduledThreadPool::builder()
                .num_threads(3)
                .thread_name_pattern("r2d2-worker-{}")
                .build(),
        );
        let share = |total: u32, i: u32| total / count + u32::from(i < total % count);
        let shards = (0..count)
            .map(|i| {
                let mut b = r2d2::Pool::builder()
                    .max_size(share(self.max_size, i))
                    .min_idle(self.min_idle.map(|m| share(m, i)))
                    .max_lifetime(self.max_lifetime)
                    .idle_timeout(self.idle_timeout)
                    .connection_timeout(self.connection_timeout)
                    .thread_pool(Arc::clone(&threads));
                for configure in &self.configure {
                    b = configure(b);
                }
                b.test_on_check_out(true)
                    .connection_customizer(Box::new(SessionCustomizer {
                        session: Arc::clone(&session),
                    }))
            })
            .collect();
        let settings = PoolSettings {
            timeout: self.connection_timeout,
            affinity_wait: self.affinity_wait,
        };
        (shards, manager, settings)
    }
}

/// What a [`TenantPool`] keeps besides its shards.
struct PoolSettings {
    timeout: Duration,
    affinity_wait: Duration,
}

impl PoolSettings {
    fn pool(self, shards: Vec<ShardPool>) -> TenantPool {
        TenantPool {
            shards: shards.into(),
            timeout: self.timeout,
            affinity_wait: self.affinity_wait,
        }
    }
}

/// The SQL that sets the session defaults, and the SQL that restores them on checkout.
#[derive(Debug)]
struct SessionDefaults {
    /// Sent once per physical connection.
    acquire: String,
    /// Sent on every checkout, in place of Diesel's ping. Not in pooler mode, it starts with
    /// `SELECT ` and the backend check is folded into that first statement (see `checked_reset`).
    reset: String,
    /// In pooler mode: the `SET LOCAL` statements every tenant transaction starts with.
    local: Option<Arc<str>>,
}

impl SessionDefaults {
    fn new(b: &TenantPoolBuilder) -> Self {
        let timeout = |set: &str, name: &str, value: Option<Duration>| match value {
            Some(d) => Some(format!("{set} {name} TO {}", millis(d))),
            None if set == "SET" => Some(format!("RESET {name}")),
            None => None,
        };
        let application_name = format!(
            "SET application_name TO {}",
            escape_literal(&b.application_name)
        );
        let timeouts = |set: &str| {
            [
                timeout(set, "statement_timeout", b.statement_timeout),
                timeout(set, "lock_timeout", b.lock_timeout),
                timeout(
                    set,
                    "idle_in_transaction_session_timeout",
                    b.idle_in_transaction_session_timeout,
                ),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
        };
        if b.pooler.is_transaction() {
            // PgBouncer tracks `application_name` per client; nothing else may be session state.
            // What another client left on the server connection is made harmless for the
            // transaction: its cursors here, its role in the check that ends the `BEGIN` batch
            // (`connection::begin_sql`).
            let mut local = vec!["CLOSE ALL".to_owned()];
            local.extend(timeouts("SET LOCAL"));
            let local = local.join("; ");
            return Self {
                acquire: application_name,
                reset: "SELECT 1".to_owned(),
                local: Some(Arc::from(local)),
            };
        }
        let mut acquire = vec![
            format!(
                "SET search_path TO {}",
                work_path(&quote_ident(&b.shared_schema))
            ),
            application_name,
        ];
        acquire.extend(timeouts("SET"));
        let acquire = acquire.join("; ");
        let reset = if b.session_cleanup {
            format!(
                "SELECT pg_catalog.pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; \
                 SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; DISCARD TEMP; {acquire}"
            )
        } else {
            format!("SELECT 0; {acquire}")
        };
        Self {
            acquire,
            reset,
            local: None,
        }
    }

    /// The reset batch of a connection served by backend `pid`, its first statement also checking
    /// that the backend is still that one (the same round trip, and before anything else runs).
    fn checked_reset(&self, pid: i32) -> String {
        let rest = self.reset.strip_prefix("SELECT ").unwrap_or(&self.reset);
        format!("SELECT {}, {rest}", pid_check_expr(pid))
    }
}

/// The checks [`TenantPoolBuilder::build`] makes on one of the pool's connections: the engine
/// ([`Dialect`](crate::Dialect)), and with `refuse_shared` (the shared schema of a pool built to
/// refuse them) the hijack hazards.
pub(crate) fn ready(conn: &mut PgConnection, refuse_shared: Option<&str>) -> Result<()> {
    crate::dialect::Dialect::detect_supported(conn)?;
    if let Some(shared) = refuse_shared {
        let hazards = crate::sql::own(conn, |conn| crate::audit::hijack_hazards(conn, shared))?;
        if !hazards.is_empty() {
            return Err(Error::HijackHazards(hazards));
        }
    }
    Ok(())
}

/// A duration as PostgreSQL milliseconds: rounded up, at most `i32::MAX`.
fn millis(d: Duration) -> u128 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128)
}

/// The r2d2 connection customizer of a [`TenantPool`]: sets the fail-closed session defaults once
/// per physical connection, in one batch.
///
/// [`TenantPoolBuilder::build`] installs it; it is public so that its type can be named.
pub struct SessionCustomizer {
    session: Arc<SessionDefaults>,
}

impl fmt::Debug for SessionCustomizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCustomizer")
            .field("sql", &self.session.acquire)
            .finish()
    }
}

impl CustomizeConnection<PgConnection, ManagerError> for SessionCustomizer {
    fn on_acquire(&self, conn: &mut PgConnection) -> std::result::Result<(), ManagerError> {
        conn.batch_execute(&self.session.acquire)
            .map_err(ManagerError::QueryError)
    }
}

/// The r2d2 connection manager of a [`TenantPool`]: Diesel's
/// [`ConnectionManager<PgConnection>`], with a session reset instead of the checkout ping and a
/// statement cap at check-in.
///
/// - `connect` opens the connection as Diesel's manager does and installs a [`StatementCounter`]
///   as its instrumentation. Not in pooler mode, it reads in one query how many statements the
///   connection already holds and which backend serves it, and refuses a backend that another
///   open connection of the process already has. In pooler mode, it turns Diesel's statement
///   cache off.
/// - `is_valid` (every checkout) sends the reset batch described in the [module
///   documentation](self) instead of `SELECT 1`, led by a check that the backend is the one the
///   connection was opened on: one round trip either way. In pooler mode it is `SELECT 1`.
/// - `has_broken` (every check-in) is Diesel's rule (the thread is panicking, or a transaction is
///   open or broken), or the connection holds more than the statement cap, or its counter is gone,
///   or (with a [`backend_memory_limit`](TenantPoolBuilder::backend_memory_limit), at every
///   `memory_check_every`-th check-in) its backend holds more memory than the limit.
///
/// Once it has seen a transaction pooler it was not told about, every later `connect` and
/// `is_valid` fails with the same [`PoolerDetected`] error.
///
/// Build it (and the pool) with [`TenantPoolBuilder`].
pub struct TenantConnectionManager {
    inner: ConnectionManager<PgConnection>,
    database_url: String,
    session: Arc<SessionDefaults>,
    statement_cap: Option<usize>,
    backend_memory_limit: Option<u64>,
    memory_limit_set: bool,
    memory_check_every: u32,
    instrumentation: InstrumentationFactory,
    pooler: Pooler,
    detected: Arc<Mutex<Option<PoolerDetected>>>,
}

/// Each shard gets a clone: the same settings, and one pooler latch for all of them.
impl Clone for TenantConnectionManager {
    fn clone(&self) -> Self {
        Self {
            inner: ConnectionManager::new(self.database_url.clone()),
            database_url: self.database_url.clone(),
            session: Arc::clone(&self.session),
            statement_cap: self.statement_cap,
            backend_memory_limit: self.backend_memory_limit,
            memory_limit_set: self.memory_limit_set,
            memory_check_every: self.memory_check_every,
            instrumentation: Arc::clone(&self.instrumentation),
            pooler: self.pooler,
            detected: Arc::clone(&self.detected),
        }
    }
}

impl fmt::Debug for TenantConnectionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantConnectionManager")
            .field("reset_sql", &self.session.reset)
            .field("statement_cap", &self.statement_cap)
            .field("backend_memory_limit", &self.backend_memory_limit)
            .field("memory_check_every", &self.memory_check_every)
            .field("pooler", &self.pooler)
            .finish_non_exhaustive()
    }
}

#[derive(QueryableByName)]
struct ConnectRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    held: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    started: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    client: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    memory: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    readable: bool,
}

/// Whether the session's role may read its backend's memory: the view, and the function behind
/// it (`pg_read_all_data` grants the one without the other).
const MEMORY_READABLE: &str =
    "(pg_catalog.has_table_privilege('pg_catalog.pg_backend_memory_contexts', 'SELECT') AND \
     pg_catalog.has_function_privilege('pg_catalog.pg_get_backend_memory_contexts()', 'EXECUTE'))";

/// The sum of the backend's memory contexts, in bytes (`pg_backend_memory_contexts`).
const BACKEND_MEMORY: &str =
    "(SELECT pg_catalog.sum(total_bytes)::int8 FROM pg_catalog.pg_backend_memory_contexts)";

#[derive(QueryableByName)]
struct MemoryRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    memory: Option<i64>,
}

/// The memory the connection's own backend holds, in bytes: the sum of
/// `pg_backend_memory_contexts` (catalog caches, plans, prepared statements, everything the
/// session allocated), read on the connection itself in one query. What
/// [`TenantPoolBuilder::backend_memory_limit`] measures.
///
/// ```no_run
/// let pool = diesel_workspace::pool::new("postgres://localhost/app")?;
/// let mut conn = pool.get()?;
/// let bytes = diesel_workspace::pool::backend_memory(&mut conn)?;
/// println!("{} MiB", bytes >> 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// PostgreSQL's `permission denied` unless the role is a superuser or has
/// `pg_read_all_stats`; any error of the connection.
pub fn backend_memory(conn: &mut PgConnection) -> QueryResult<u64> {
    let row: MemoryRow =
        diesel::sql_query(format!("SELECT {BACKEND_MEMORY} AS memory")).get_result(conn)?;
    Ok(row.memory.and_then(|m| u64::try_from(m).ok()).unwrap_or(0))
}

fn refused(detected: PoolerDetected) -> ManagerError {
    ManagerError::QueryError(detected.into())
}

impl TenantConnectionManager {
    /// The most prepared statements a connection may hold when it is checked in, when set with
    /// [`TenantPoolBuilder::statement_cap`]; otherwise each connection gets none or
    /// [`DEFAULT_STATEMENT_CAP`] when it opens, by whether its backend's memory is bounded.
    pub fn statement_cap(&self) -> Option<usize> {
        self.statement_cap
    }

    /// The pooler this manager was built for.
    pub fn pooler(&self) -> Pooler {
        self.pooler
    }

    /// The transaction pooler this manager found, if any (it then refuses every connection).
    pub fn detected(&self) -> Option<PoolerDetected> {
        *self.detected.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn latch(&self, detected: PoolerDetected) -> ManagerError {
        let mut slot = self.detected.lock().unwrap_or_else(|p| p.into_inner());
        refused(*slot.get_or_insert(detected))
    }

    /// Makes a newly opened connection the pool's: installs the [`StatementCounter`], and
    /// either turns the statement cache off and refuses a statement pooler (pooler mode) or reads
    /// the backend and the startup setting and registers the backend.
    pub(crate) fn prepare(&self, conn: &mut PgConnection) -> std::result::Result<(), ManagerError> {
        let mut counter = StatementCounter {
            cached: 0,
            inner: (self.instrumentation)(),
            backend: None,
            reset: Arc::from(self.session.reset.as_str()),
            local: self.session.local.clone(),
            check_begin: self.pooler == Pooler::Session,
            checkins: 0,
            cap: self.statement_cap.unwrap_or(DEFAULT_STATEMENT_CAP),
            memory_limit: None,
        };
        if self.pooler.is_transaction() {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
            refuse_statement_pooling(conn)?;
            conn.set_instrumentation(counter);
            return Ok(());
        }
        // Diesel may prepare statements while connecting, before the counter exists: start from
        // the server's count (which includes this query's own statement). The same query names
        // the backend and reads back the startup setting of a direct connection.
        // With a memory bound, the same query reads the backend's memory once: a role that cannot
        // read it is refused here, when the pool opens, not at some later check-in.
        // The default limit applies where the role can read the view (the same query says);
        // a limit set on the builder is read here, so a role that cannot is refused.
        let memory = match self.backend_memory_limit {
            Some(_) if self.memory_limit_set => BACKEND_MEMORY,
            _ => "NULL::int8",
        };
        let row: ConnectRow = diesel::sql_query(format!(
            "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements) AS held, \
             {}, {}, {memory} AS memory, {MEMORY_READABLE} AS readable",
            crate::pooler::BACKEND_COLUMNS,
            crate::startup::CLIENT_COLUMN,
        ))
        .get_result(conn)?;
        if let (Some(limit), Some(held)) = (self.backend_memory_limit, row.memory) {
            if u64::try_from(held).unwrap_or(0) > limit {
                return Err(ManagerError::QueryError(
                    diesel::result::Error::QueryBuilderError(
                        format!(
                            "a new backend already holds {held} bytes, over the pool's \
                         backend_memory_limit of {limit}"
                        )
                        .into(),
                    ),
                ));
            }
        }
        if self.pooler == Pooler::Direct {
            if let Err(detected) = check_client(row.client.as_deref()) {
                // A statement pooler is named as such; anything else is latched.
                let e = undeclared(conn, detected);
                self.latch(detected);
                return Err(ManagerError::QueryError(e));
            }
        }
        let backend = crate::pooler::Backend::new(row.pid, row.started);
        let live = LiveBackend::register(backend).map_err(|d| self.latch(d))?;
        counter.memory_limit = self
            .backend_memory_limit
            .filter(|_| self.memory_limit_set || row.readable);
        if counter.memory_limit.is_some() {
            counter.cap = self.statement_cap.unwrap_or(usize::MAX);
        }
        counter.cached = usize::try_from(row.held).unwrap_or(usize::MAX);
        counter.reset = Arc::from(self.session.checked_reset(row.pid));
        counter.backend = Some(live);
        conn.set_instrumentation(counter);
        Ok(())
    }

    /// The URL connections are opened with (with the startup setting in the default mode).
    #[cfg(feature = "deadpool")]
    pub(crate) fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The session defaults, sent once per physical connection.
    #[cfg(feature = "deadpool")]
    pub(crate) fn acquire_sql(&self) -> &str {
        &self.session.acquire
    }

    /// Opens two connections side by side: on a direct connection they have two backends.
    pub(crate) fn probe(&self) -> Result<()> {
        let first = self.connect().map_err(probe_error)?;
        let second = self.connect().map_err(probe_error)?;
        drop((first, second));
        Ok(())
    }
}

pub(crate) fn probe_error(e: ManagerError) -> Error {
    match e {
        ManagerError::QueryError(q) => Error::from(q),
        ManagerError::ConnectionError(c) => Error::Connection(c),
    }
}

impl ManageConnection for TenantConnectionManager {
    type Connection = PgConnection;
    type Error = ManagerError;

    fn connect(&self) -> std::result::Result<PgConnection, ManagerError> {
        if let Some(detected) = self.detected() {
            return Err(refused(detected));
        }
        let mut conn = self.inner.connect().map_err(|e| match &e {
            ManagerError::ConnectionError(c) => match refused_option(c) {
                Some(detected) if self.pooler == Pooler::Direct => self.latch(detected),
                _ => e,
            },
            ManagerError::QueryError(_) => e,
        })?;
        self.prepare(&mut conn)?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut PgConnection) -> std::result::Result<(), ManagerError> {
        if let Some(detected) = self.detected() {
            return Err(refused(detected));
        }
        let (reset, pid) = match conn.instrumentation().downcast_ref::<StatementCounter>() {
            Some(counter) => (
                Arc::clone(&counter.reset),
                counter.backend.as_ref().map(|b| b.backend().pid),
            ),
            // The counter is gone (replaced instrumentation): the connection cannot be checked.
            None => {
                return Err(ManagerError::QueryError(
                    diesel::result::Error::BrokenTransactionManager,
                ))
            }
        };
        conn.batch_execute(&reset).map_err(|e| {
            match pid.and_then(|was| pid_check_failure(was, &e)) {
                Some(detected) => self.latch(detected),
                None => ManagerError::QueryError(e),
            }
        })
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        if self.inner.has_broken(conn) {
            discarded(if std::thread::panicking() {
                "the thread is panicking"
            } else {
                "a transaction is open or broken"
            });
            return true;
        }
        let counted = conn
            .instrumentation()
            .downcast_ref::<StatementCounter>()
            .map(|c| (c.cached, c.cap));
        match counted {
            Some((n, cap)) if n > cap => {
                // The span is entered only on this rare path: a check-in under the cap costs
                // nothing here.
                let _span = tracing::debug_span!(
                    "pool.cap_recycle",
                    tenant = crate::context::with_current(|t| t.map(|t| t.as_str().to_owned())),
                    statements = n,
                    cap,
                )
                .entered();
                tracing::debug!("connection over the statement cap closed at check-in");
                true
            }
            Some(_) => self.over_memory(conn),
            None => {
                discarded("its statement counter was replaced");
                true
            }
        }
    }
}

impl TenantConnectionManager {
    /// At every `memory_check_every`-th check-in of a connection with a memory bound, whether its
    /// backend holds more than the bound (or could not be measured: the connection is closed).
    fn over_memory(&self, conn: &mut PgConnection) -> bool {
        if self.pooler.is_transaction() {
            return false;
        }
        let due = match conn.instrumentation().downcast_mut::<StatementCounter>() {
            Some(counter) => counter.memory_limit.filter(|_| {
                counter.checkins = counter.checkins.wrapping_add(1);
                counter.checkins % self.memory_check_every == 0
            }),
            None => None,
        };
        let Some(limit) = due else {
            return false;
        };
        match backend_memory(conn) {
            Ok(bytes) if bytes <= limit => false,
            Ok(bytes) => {
                let _span = tracing::debug_span!(
                    "pool.memory_recycle",
                    tenant = crate::context::with_current(|t| t.map(|t| t.as_str().to_owned())),
                    bytes,
                    limit,
                )
                .entered();
                tracing::debug!("connection over the backend memory limit closed at check-in");
                true
            }
            Err(_) => {
                discarded("its backend memory could not be read");
                true
            }
        }
    }
}

/// Records why a connection is closed at check-in, in a `pool.discard` span.
fn discarded(reason: &'static str) {
    let _span = tracing::debug_span!(
        "pool.discard",
        tenant = crate::context::with_current(|t| t.map(|t| t.as_str().to_owned())),
        reason,
    )
    .entered();
    tracing::debug!("connection closed at check-in");
}

/// The [`Instrumentation`] a [`TenantPool`] installs on each connection: it counts the prepared
/// statements Diesel caches on the connection and forwards every event to the instrumentation
/// configured with [`TenantPoolBuilder::instrumentation`]. It also carries what the pool knows
/// about the connection (its backend, its checkout reset, its pooler-mode transaction settings).
///
/// Reach it on a checked-out connection with [`cached_statements`], or with
/// `conn.instrumentation().downcast_mut::<StatementCounter>()`.
pub struct StatementCounter {
    cached: usize,
    inner: Option<Box<dyn Instrumentation>>,
    backend: Option<LiveBackend>,
    reset: Arc<str>,
    local: Option<Arc<str>>,
    check_begin: bool,
    checkins: u32,
    /// This connection's statement cap (none: `usize::MAX`).
    cap: usize,
    /// This connection's backend memory limit, when its backend's memory is measured.
    memory_limit: Option<u64>,
}

impl fmt::Debug for StatementCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementCounter")
            .field("cached", &self.cached)
            .field("forwards", &self.inner.is_some())
            .field(
                "backend_pid",
                &self.backend.as_ref().map(|b| b.backend().pid),
            )
            .finish()
    }
}

impl StatementCounter {
    /// The number of prepared statements the connection holds (those Diesel prepared while
    /// connecting, plus every statement Diesel cached since).
    pub fn cached_statements(&self) -> usize {
        self.cached
    }

    /// The instrumentation events are forwarded to, if any.
    pub fn inner_mut(&mut self) -> Option<&mut dyn Instrumentation> {
        self.inner.as_deref_mut()
    }
}

impl Instrumentation for StatementCounter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::CacheQuery { .. } = event {
            self.cached += 1;
        }
        if let Some(inner) = self.inner.as_deref_mut() {
            inner.on_connection_event(event);
        }
    }
}

/// In pooler mode, the statements a tenant transaction on this pooled connection starts with
/// (every cursor closed, the pool's timeouts as `SET LOCAL`); `None` otherwise. Its presence also
/// makes the transaction put the role back (see `connection::begin_sql`).
pub(crate) fn transaction_settings(conn: &mut PgConnection) -> Option<Arc<str>> {
    conn.instrumentation()
        .downcast_ref::<StatementCounter>()
        .and_then(|c| c.local.clone())
        .filter(|l| !l.is_empty())
}

/// The backend pid a pooled connection of a pool declared for a session pooler
/// ([`Pooler::Session`]) was opened on, for the check in a tenant transaction's `BEGIN`; `None`
/// otherwise (a direct connection's startup setting settled it when it opened).
pub(crate) fn begin_check_pid(conn: &mut PgConnection) -> Option<i32> {
    conn.instrumentation()
        .downcast_ref::<StatementCounter>()
        .filter(|c| c.check_begin)
        .and_then(|c| c.backend.as_ref().map(|b| b.backend().pid))
}

/// The number of prepared statements a pooled connection holds, as counted by its
/// [`StatementCounter`]; `None` for a connection that did not come from a [`TenantPool`].
///
/// ```no_run
/// let pool = diesel_workspace::pool::new("postgres://localhost/app")?;
/// let mut conn = pool.get()?;
/// let held = diesel_workspace::pool::cached_statements(&mut conn);
/// assert!(held.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn cached_statements(conn: &mut PgConnection) -> Option<usize> {
    conn.instrumentation()
        .downcast_ref::<StatementCounter>()
        .map(StatementCounter::cached_statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_clamp() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX as u128);
    }

    #[test]
    fn session_sql() {
        let b = builder()
            .shared_schema("app\"x")
            .statement_timeout(Some(Duration::from_secs(5)));
        let s = SessionDefaults::new(&b);
        assert_eq!(
            s.acquire,
            "SET search_path TO \"app\"\"x\", pg_temp; SET application_name TO E'workspace-diesel'; \
             SET statement_timeout TO 5000; RESET lock_timeout; \
             SET idle_in_transaction_session_timeout TO 600000"
        );
        assert!(s.reset.ends_with(&s.acquire));
        assert!(!s.reset.contains("DISCARD ALL") && !s.reset.contains("DEALLOCATE"));
        let checked = s.checked_reset(42);
        assert!(checked.starts_with("SELECT CASE WHEN pg_catalog.pg_backend_pid() = 42 THEN 0"));
        assert!(checked.contains(" END, pg_catalog.pg_advisory_unlock_all(); CLOSE ALL;"));
        let s = SessionDefaults::new(&builder().session_cleanup(false));
        assert_eq!(s.reset, format!("SELECT 0; {}", s.acquire));
        assert!(s
            .checked_reset(7)
            .ends_with(&format!(" END, 0; {}", s.acquire)));
        let s = SessionDefaults::new(&builder().pooler(Pooler::Transaction));
        assert_eq!(s.acquire, "SET application_name TO E'workspace-diesel'");
        assert_eq!(s.reset, "SELECT 1");
        assert_eq!(
            s.local.as_deref(),
            Some("CLOSE ALL; SET LOCAL idle_in_transaction_session_timeout TO 600000")
        );
    }
}
