//! Running Diesel work on a pooled connection in a blocking task.

use std::future::Future;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use diesel::PgConnection;
use http::StatusCode;

use crate::rejection::{json_error, UNAVAILABLE_MESSAGE};

/// A pool of synchronous Diesel connections whose work runs off the async runtime's threads:
/// [`interact`](Self::interact) checks a connection out, waiting at most a given time, and calls
/// the closure in a blocking task.
///
/// Implemented for the library's r2d2 pool ([`TenantPool`](diesel_workspace::pool::TenantPool),
/// checked out with `get_timeout` and used inside `tokio::task::spawn_blocking`) and, with the
/// `deadpool` feature, for deadpool-diesel's `deadpool_diesel::postgres::Pool` (its `get`
/// under a timeout, then `interact`; build it with `diesel_workspace::pool::builder().deadpool(url)`
/// for the r2d2 pool's checks and session reset). The current tracing
/// span follows the closure into the blocking task.
///
/// The closure gets no tenant: [`TenantDb::run`](crate::TenantDb::run) wraps it in
/// [`switch`](diesel_workspace::switch) inside the blocking task, so the thread-local is set on
/// the thread that runs the queries and never held across an `.await`.
pub trait DieselPool: Clone + Send + Sync + 'static {
    /// Runs `f` on a pooled connection in a blocking task, waiting at most `wait` for the
    /// connection.
    ///
    /// # Errors
    /// [`DbError::Pool`] when no connection could be checked out within `wait` (the pool is
    /// exhausted, or the database does not answer); [`DbError::Panicked`] when `f` panicked.
    fn interact<R, F>(
        &self,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static;

    /// Runs `f`, `tenant`'s work, as [`interact`](Self::interact) does:
    /// [`TenantDb::run`](crate::TenantDb::run) calls this. Defaults to
    /// [`interact`](Self::interact); [`RolePools`] runs it logged in as the tenant's own role.
    ///
    /// # Errors
    /// As [`interact`](Self::interact).
    fn interact_as<R, F>(
        &self,
        tenant: &diesel_workspace::TenantId,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let _ = tenant;
        self.interact(wait, f)
    }

    /// The most connections the pool opens, when it says (sizes the default
    /// [per-tenant limit](crate::RoutingBuilder::tenant_limit)).
    fn max_size(&self) -> Option<usize> {
        None
    }
}

/// The enforcing roles mode in a web service: each request's tenant work runs on a connection
/// logged in as the tenant's own role ([`diesel_workspace::TenantRolePools`]), so the database
/// refuses a handler's query on another tenant's tables, DSL or raw SQL; the registry check and
/// the user resolver run on `shared`, a [`TenantPool`](diesel_workspace::pool::TenantPool) of
/// the application's own role.
///
/// ```no_run
/// use diesel_workspace::{pool, TenantRolePools, TenantRoles};
/// use diesel_workspace_axum::{Access, Header, RolePools, Routing};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://app@127.0.0.1/app";
/// let roles = TenantRoles::new("app_t_")?.login(true);
/// let pools = RolePools::new(pool::new(url)?, TenantRolePools::builder(url, roles).build());
/// let routing = Routing::builder(pools)
///     .resolver(Header::behind_trusted_proxy("x-tenant"))
///     .access(Access::public_tenant_routes())
///     .build();
/// # let _ = routing;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RolePools {
    shared: diesel_workspace::pool::TenantPool,
    tenants: std::sync::Arc<diesel_workspace::TenantRolePools>,
}

impl RolePools {
    /// Tenant work on `tenants`, everything else on `shared`.
    pub fn new(
        shared: diesel_workspace::pool::TenantPool,
        tenants: diesel_workspace::TenantRolePools,
    ) -> Self {
        Self {
            shared,
            tenants: std::sync::Arc::new(tenants),
        }
    }

    /// The pools of the tenant roles.
    pub fn tenants(&self) -> &diesel_workspace::TenantRolePools {
        &self.tenants
    }
}

impl DieselPool for RolePools {
    fn interact<R, F>(
        &self,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.interact(wait, f)
    }

    fn interact_as<R, F>(
        &self,
        tenant: &diesel_workspace::TenantId,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tenants, tenant) = (std::sync::Arc::clone(&self.tenants), tenant.clone());
        let span = tracing::Span::current();
        async move {
            let task = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let mut conn = tenants
                        .pool(&tenant)
                        .map_err(|e| DbError::Pool(e.to_string()))?
                        .get_timeout(wait)
                        .map_err(|e| DbError::Pool(e.to_string()))?;
                    Ok(f(&mut conn))
                })
            });
            match task.await {
                Ok(result) => result,
                Err(_) => Err(DbError::Panicked),
            }
        }
    }
}

impl DieselPool for diesel_workspace::pool::TenantPool {
    fn max_size(&self) -> Option<usize> {
        usize::try_from(diesel_workspace::pool::TenantPool::max_size(self)).ok()
    }

    fn interact<R, F>(
        &self,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let pool = self.clone();
        let span = tracing::Span::current();
        async move {
            let task = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let mut conn = pool
                        .get_timeout(wait)
                        .map_err(|e| DbError::Pool(e.to_string()))?;
                    Ok(f(&mut conn))
                })
            });
            match task.await {
                Ok(result) => result,
                Err(_) => Err(DbError::Panicked),
            }
        }
    }

    /// Checks the connection out of `tenant`'s shard
    /// ([`TenantPool::get_for_timeout`](diesel_workspace::pool::TenantPool::get_for_timeout)),
    /// so each backend keeps serving the same share of the tenants.
    fn interact_as<R, F>(
        &self,
        tenant: &diesel_workspace::TenantId,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (pool, tenant) = (self.clone(), tenant.clone());
        let span = tracing::Span::current();
        async move {
            let task = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let mut conn = pool
                        .get_for_timeout(&tenant, wait)
                        .map_err(|e| DbError::Pool(e.to_string()))?;
                    Ok(f(&mut conn))
                })
            });
            match task.await {
                Ok(result) => result,
                Err(_) => Err(DbError::Panicked),
            }
        }
    }
}

#[cfg(feature = "deadpool")]
impl DieselPool for deadpool_diesel::postgres::Pool {
    fn max_size(&self) -> Option<usize> {
        Some(self.status().max_size)
    }

    fn interact<R, F>(
        &self,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let pool = self.clone();
        let span = tracing::Span::current();
        async move {
            let conn = match tokio::time::timeout(wait, pool.get()).await {
                Ok(got) => got.map_err(|e| DbError::Pool(e.to_string()))?,
                Err(_) => return Err(DbError::Pool(format!("no connection within {wait:?}"))),
            };
            conn.interact(move |conn| span.in_scope(|| f(conn)))
                .await
                .map_err(|e| match e {
                    deadpool_diesel::InteractError::Panic(_) => DbError::Panicked,
                    deadpool_diesel::InteractError::Cancelled => {
                        DbError::Pool("the blocking task was cancelled".into())
                    }
                })
        }
    }
}

/// Why Diesel work run through [`DieselPool`] failed. As a response: `Pool` and a lost
/// connection are 503 `database_unavailable`, the others 500, with a JSON body
/// `{"error": "<code>", "message": "<text>"}` of fixed text: the detail (hosts, ports, SQL)
/// goes to the log only.
#[derive(Debug)]
#[non_exhaustive]
pub enum DbError {
    /// No connection could be checked out.
    Pool(String),
    /// The closure panicked (the connection was not returned to the pool).
    Panicked,
    /// A query failed.
    Query(diesel::result::Error),
    /// The library refused the work (e.g. a tenant table used outside a switch).
    Library(diesel_workspace::Error),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pool(why) => write!(f, "no database connection: {why}"),
            Self::Panicked => f.write_str("the database task panicked"),
            Self::Query(_) => f.write_str("database query failed"),
            Self::Library(_) => f.write_str("database work refused"),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Query(e) => Some(e),
            Self::Library(e) => Some(e),
            Self::Pool(_) | Self::Panicked => None,
        }
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Query(e)
    }
}

impl From<diesel_workspace::Error> for DbError {
    fn from(e: diesel_workspace::Error) -> Self {
        Self::Library(e)
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        use diesel::result::{DatabaseErrorKind, Error as Diesel};
        let lost = matches!(
            &self,
            Self::Query(Diesel::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _
            ))
        );
        let (status, code, message) = match &self {
            Self::Pool(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                UNAVAILABLE_MESSAGE,
            ),
            _ if lost => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                UNAVAILABLE_MESSAGE,
            ),
            Self::Panicked => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "database_task_panicked",
                "the database task panicked",
            ),
            Self::Query(_) | Self::Library(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "database_error",
                "database query failed",
            ),
        };
        tracing::error!(error = %self, source = ?std::error::Error::source(&self), "database work failed");
        json_error(status, code, message)
    }
}

/// The default `statement_timeout` of [`pool_builder`]: 15 seconds.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);

/// The library's [pool builder](diesel_workspace::pool::builder) with the defaults of a web
/// service: a `statement_timeout` of [`DEFAULT_STATEMENT_TIMEOUT`] on every connection (a
/// query stuck behind a lock gives its connection back) and a `connection_timeout` of
/// [`DEFAULT_WAIT`](crate::DEFAULT_WAIT). Every setting can still be changed.
///
/// ```no_run
/// let pool = diesel_workspace_axum::pool_builder()
///     .max_size(16)
///     .build(std::env::var("DATABASE_URL")?)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pool_builder() -> diesel_workspace::pool::TenantPoolBuilder {
    diesel_workspace::pool::builder()
        .statement_timeout(Some(DEFAULT_STATEMENT_TIMEOUT))
        .connection_timeout(crate::layer::DEFAULT_WAIT)
}
