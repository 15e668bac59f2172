//! What can a pool be configured with, and what are the defaults: the [`TenantPoolBuilder`](super::TenantPoolBuilder)
//! and its settings (the session's, the pool's, r2d2's).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{get_default_instrumentation, Instrumentation};

use super::manager::{InstrumentationFactory, TenantConnectionManager};
use super::session::{DEFAULT_APPLICATION_NAME, DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT};
use crate::pooler::Pooler;

/// The default [`backend_memory_limit`](super::TenantPoolBuilder::backend_memory_limit): 256 MiB per
/// backend, where the role can read its backend's memory.
pub const DEFAULT_BACKEND_MEMORY_LIMIT: u64 = 256 << 20;

/// The default [`memory_check_every`](super::TenantPoolBuilder::memory_check_every): the backend's
/// memory is measured at every 1,024th check-in of a connection.
pub const DEFAULT_MEMORY_CHECK_EVERY: u32 = 1_024;

/// The default [`affinity_wait`](super::TenantPoolBuilder::affinity_wait): a tenant waits up to 5 ms
/// for a connection of its own shard before it takes another shard's idle connection.
pub const DEFAULT_AFFINITY_WAIT: Duration = Duration::from_millis(5);

/// Configures and builds a [`TenantPool`](super::TenantPool).
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
    pub(super) shared_schema: String,
    pub(super) application_name: String,
    pub(super) statement_timeout: Option<Duration>,
    pub(super) lock_timeout: Option<Duration>,
    pub(super) idle_in_transaction_session_timeout: Option<Duration>,
    pub(super) session_cleanup: bool,
    pub(super) statement_cap: Option<usize>,
    pub(super) backend_memory_limit: Option<u64>,
    pub(super) memory_limit_set: bool,
    pub(super) memory_check_every: u32,
    pub(super) instrumentation: InstrumentationFactory,
    pub(super) pooler: Pooler,
    pub(super) refuse_hijack_hazards: bool,
    pub(super) shards: Option<u32>,
    pub(super) affinity_wait: Duration,
    pub(super) max_size: u32,
    pub(super) min_idle: Option<u32>,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) connection_timeout: Duration,
    pub(super) configure: Vec<R2d2Configure>,
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
    /// checkout than for Diesel's `SELECT 1` (the repository's
    /// [benchmarks](https://github.com/workspace-diesel/workspace-diesel/blob/main/BENCHMARKS.md#pool-cost-per-checkout)
    /// measure it). With `false`, only the session defaults are restored, at little more than the cost of the ping; do that only
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
    /// backends cold), and to 256 ([`DEFAULT_STATEMENT_CAP`](super::DEFAULT_STATEMENT_CAP), about 2.5 MiB of server memory per
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
    /// [`StatementCounter`](super::StatementCounter) forwards every event to it.
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
    /// [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared) (at
    /// [`build`](Self::build), at every new connection and in every checkout's reset, in the
    /// same round trip).
    ///
    /// With [`Pooler::Transaction`]:
    ///
    /// - Diesel's statement cache is off on every connection
    ///   ([`CacheSize::Disabled`](diesel::connection::CacheSize::Disabled)): each query is sent as an unnamed statement, parsed and planned
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
    /// its checkouts take that shard's connections first (see [`TenantPool`](super::TenantPool)). At most
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

    /// How long [`TenantPool::get`](super::TenantPool::get) (and [`build`](Self::build)) wait for a connection.
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
}
