//! How does the pool open, check out and check in a connection: the r2d2
//! [`TenantConnectionManager`] (the backend probe and registration, the reset in place of the
//! ping, the statement cap and the backend memory limit at check-in), the
//! [`SessionCustomizer`], and the read of a backend's memory.

use std::fmt;
use std::sync::{Arc, Mutex};

use diesel::connection::{CacheSize, Instrumentation, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, ManageConnection};
use diesel::PgConnection;

use super::counter::StatementCounter;
use super::session::SessionDefaults;
use crate::error::{Error, Result};
use crate::pooler::{
    check_client, pid_check_failure, refused_option, undeclared, LiveBackend, Pooler,
    PoolerDetected,
};
use crate::startup::refuse_statement_pooling;

/// The statement cap a connection gets when no [`statement_cap`](super::TenantPoolBuilder::statement_cap)
/// is set and its backend's memory is not bounded (the limit is off, or the role cannot read
/// the backend's memory): 256 prepared statements per connection.
pub const DEFAULT_STATEMENT_CAP: usize = 256;

/// The error type of the pool's connection manager (Diesel's r2d2 error).
pub type ManagerError = diesel::r2d2::Error;

pub(super) type InstrumentationFactory =
    Arc<dyn Fn() -> Option<Box<dyn Instrumentation>> + Send + Sync>;

/// The r2d2 connection customizer of a [`TenantPool`](super::TenantPool): sets the fail-closed session defaults once
/// per physical connection, in one batch.
///
/// [`TenantPoolBuilder::build`](super::TenantPoolBuilder::build) installs it; it is public so that its type can be named.
pub struct SessionCustomizer {
    pub(super) session: Arc<SessionDefaults>,
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

/// The r2d2 connection manager of a [`TenantPool`](super::TenantPool): Diesel's
/// [`ConnectionManager<PgConnection>`], with a session reset instead of the checkout ping and a
/// statement cap at check-in.
///
/// - `connect` opens the connection as Diesel's manager does and installs a [`StatementCounter`](super::StatementCounter)
///   as its instrumentation. Not in pooler mode, it reads in one query how many statements the
///   connection already holds and which backend serves it, and refuses a backend that another
///   open connection of the process already has. In pooler mode, it turns Diesel's statement
///   cache off.
/// - `is_valid` (every checkout) sends the reset batch described in the [module
///   documentation](super) instead of `SELECT 1`, led by a check that the backend is the one the
///   connection was opened on: one round trip either way. In pooler mode it is `SELECT 1`.
/// - `has_broken` (every check-in) is Diesel's rule (the thread is panicking, or a transaction is
///   open or broken), or the connection holds more than the statement cap, or its counter is gone,
///   or (with a [`backend_memory_limit`](super::TenantPoolBuilder::backend_memory_limit), at every
///   `memory_check_every`-th check-in) its backend holds more memory than the limit.
///
/// Once it has seen a transaction pooler it was not told about, every later `connect` and
/// `is_valid` fails with the same [`PoolerDetected`] error.
///
/// Build it (and the pool) with [`TenantPoolBuilder`](super::TenantPoolBuilder).
pub struct TenantConnectionManager {
    pub(super) inner: ConnectionManager<PgConnection>,
    pub(super) database_url: String,
    pub(super) session: Arc<SessionDefaults>,
    pub(super) statement_cap: Option<usize>,
    pub(super) backend_memory_limit: Option<u64>,
    pub(super) memory_limit_set: bool,
    pub(super) memory_check_every: u32,
    pub(super) instrumentation: InstrumentationFactory,
    pub(super) pooler: Pooler,
    pub(super) detected: Arc<Mutex<Option<PoolerDetected>>>,
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
/// [`TenantPoolBuilder::backend_memory_limit`](super::TenantPoolBuilder::backend_memory_limit) measures.
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
    /// [`TenantPoolBuilder::statement_cap`](super::TenantPoolBuilder::statement_cap); otherwise each connection gets none or
    /// [`DEFAULT_STATEMENT_CAP`](super::DEFAULT_STATEMENT_CAP) when it opens, by whether its backend's memory is bounded.
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

    /// Makes a newly opened connection the pool's: installs the [`StatementCounter`](super::StatementCounter), and
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
