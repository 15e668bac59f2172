//! Running Diesel work on a pooled connection in a blocking task.

use std::future::Future;

use axum::response::{IntoResponse, Response};
use diesel::PgConnection;
use http::StatusCode;

use crate::rejection::json_error;

/// A pool of synchronous Diesel connections whose work runs off the async runtime's threads:
/// [`interact`](Self::interact) checks a connection out and calls the closure in a blocking task.
///
/// Implemented for the library's r2d2 pool ([`TenantPool`](diesel_workspace::pool::TenantPool),
/// checked out and used inside `tokio::task::spawn_blocking`) and, with the `deadpool` feature,
/// for deadpool-diesel's `deadpool_diesel::postgres::Pool` (its `interact`). The current tracing
/// span follows the closure into the blocking task.
///
/// The closure gets no tenant: [`TenantDb::run`](crate::TenantDb::run) wraps it in
/// [`switch`](diesel_workspace::switch) inside the blocking task, so the thread-local is set on
/// the thread that runs the queries and never held across an `.await`.
pub trait DieselPool: Clone + Send + Sync + 'static {
    /// Runs `f` on a pooled connection in a blocking task.
    ///
    /// # Errors
    /// [`DbError::Pool`] when no connection could be checked out; [`DbError::Panicked`] when `f`
    /// panicked.
    fn interact<R, F>(&self, f: F) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static;

    /// Runs `f`, `tenant`'s work, on a pooled connection in a blocking task:
    /// [`TenantDb::run`](crate::TenantDb::run) calls this. Defaults to
    /// [`interact`](Self::interact); [`RolePools`] runs it on the tenant's own login role.
    ///
    /// # Errors
    /// As [`interact`](Self::interact).
    fn interact_as<R, F>(
        &self,
        tenant: &diesel_workspace::TenantId,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let _ = tenant;
        self.interact(f)
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
/// use diesel_workspace_axum::{Header, RolePools, Routing};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://app@127.0.0.1/app";
/// let roles = TenantRoles::new("app_t_")?.login(true);
/// let pools = RolePools::new(pool::new(url)?, TenantRolePools::builder(url, roles).build());
/// let routing = Routing::builder(pools).resolver(Header::new("x-tenant")).build();
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
    fn interact<R, F>(&self, f: F) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.shared.interact(f)
    }

    fn interact_as<R, F>(
        &self,
        tenant: &diesel_workspace::TenantId,
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
                        .get(&tenant)
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
    fn interact<R, F>(&self, f: F) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let pool = self.clone();
        let span = tracing::Span::current();
        async move {
            let task = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    let mut conn = pool.get().map_err(|e| DbError::Pool(e.to_string()))?;
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
    fn interact<R, F>(&self, f: F) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let pool = self.clone();
        let span = tracing::Span::current();
        async move {
            let conn = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
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

/// Why Diesel work run through [`DieselPool`] failed. As a response: `Pool` is 503, the others
/// 500, with a JSON body `{"error": "<code>", "message": "<text>"}` that names no SQL.
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
        let (status, code) = match &self {
            Self::Pool(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Self::Panicked => (StatusCode::INTERNAL_SERVER_ERROR, "database_task_panicked"),
            Self::Query(_) | Self::Library(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "database_error")
            }
        };
        tracing::error!(error = %self, source = ?std::error::Error::source(&self), "database work failed");
        json_error(status, code, &self.to_string())
    }
}
