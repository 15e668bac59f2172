//! The [`TenantPool`](crate::pool::TenantPool)'s connection hygiene on a deadpool-diesel pool
//! (feature `deadpool`): [`TenantPoolBuilder::deadpool`].

use std::sync::Arc;

use deadpool_diesel::postgres::{Hook, HookError, Manager, Pool, PoolBuilder};
use deadpool_diesel::{ManagerConfig, RecyclingMethod, Runtime};
use diesel::connection::SimpleConnection;
use diesel::r2d2::ManageConnection;
use diesel::PgConnection;

use crate::error::Result;
use crate::pool::{probe_error, ready, ManagerError, TenantPoolBuilder};

impl TenantPoolBuilder {
    /// A deadpool-diesel pool builder (`deadpool_diesel::postgres::PoolBuilder`, tokio runtime)
    /// whose connections get what a [`TenantPool`](crate::pool::TenantPool)'s get, from this
    /// builder's settings:
    ///
    /// - **when a connection is created** (deadpool's `post_create` hook): the checks of the
    ///   default mode (the startup setting read back, the backend registered; any pooler
    ///   refused with [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared)) or, in
    ///   pooler mode, the statement cache turned off and a statement pooler refused; the
    ///   statement counter; the session defaults;
    /// - **on every reuse** (deadpool's recycling, `RecyclingMethod::CustomFunction`): the
    ///   statement cap and the counter checked, then the session reset in one round trip (in
    ///   place of deadpool's `SELECT 1`), led by the backend check: temporary tables, role,
    ///   cursors, listeners and session advisory locks left by the previous user are gone
    ///   before the next one gets the connection;
    /// - in pooler mode, [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction)
    ///   on these connections puts role and cursors back and sets the timeouts in its `BEGIN`,
    ///   as on the r2d2 pool.
    ///
    /// Before returning, it makes the checks [`build`](Self::build) makes (two connections side
    /// by side in the default mode, one in pooler mode, the engine, and with
    /// [`refuse_hijack_hazards`](Self::refuse_hijack_hazards) the hazards). The r2d2 settings
    /// (`max_size`, timeouts of the pool itself, `r2d2(..)`) do not apply: set deadpool's on the
    /// returned builder, and build and use the pool inside a tokio runtime (deadpool-diesel runs
    /// each connection's work on tokio's blocking threads). deadpool creates a connection on
    /// first use, so a pool sized for
    /// `max_size` never holds more, and a connection over the statement cap is closed at its
    /// next reuse.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool: deadpool_diesel::postgres::Pool = diesel_workspace::pool::builder()
    ///     .statement_cap(256)
    ///     .deadpool("postgres://localhost/app")?
    ///     .max_size(8)
    ///     .build()?;
    /// let conn = pool.get().await?;
    /// # let _ = conn;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`build`](Self::build): [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared),
    /// [`Error::StatementPooling`](crate::Error::StatementPooling),
    /// [`Error::Connection`](crate::Error::Connection) or
    /// [`Error::Query`](crate::Error::Query) when the first connections fail,
    /// [`Error::UnsupportedEngine`](crate::Error::UnsupportedEngine),
    /// [`Error::HijackHazards`](crate::Error::HijackHazards).
    pub fn deadpool(self, database_url: impl Into<String>) -> Result<PoolBuilder> {
        let (manager, refuse) = self.checked_manager(database_url.into())?;
        {
            let mut conn = manager.connect().map_err(probe_error)?;
            conn.batch_execute(manager.acquire_sql())?;
            ready(&mut conn, refuse.as_deref())?;
        }
        let manager = Arc::new(manager);
        let recycle = Arc::clone(&manager);
        let config = ManagerConfig {
            recycling_method: RecyclingMethod::CustomFunction(Box::new(
                move |conn: &mut PgConnection| {
                    if recycle.has_broken(conn) {
                        return Err(deadpool_diesel::Error::BrokenTransactionManger);
                    }
                    recycle.is_valid(conn).map_err(manager_error)
                },
            )),
        };
        let url = manager.database_url().to_owned();
        Ok(
            Pool::builder(Manager::from_config(url, Runtime::Tokio1, config))
                .runtime(Runtime::Tokio1)
                .post_create(Hook::async_fn(move |obj, _| {
                    let manager = Arc::clone(&manager);
                    Box::pin(async move {
                        obj.interact(move |conn| {
                            manager.prepare(conn).map_err(manager_error)?;
                            conn.batch_execute(manager.acquire_sql())
                                .map_err(deadpool_diesel::Error::Ping)
                        })
                        .await
                        .map_err(|e| HookError::Message(e.to_string().into()))?
                        .map_err(HookError::Backend)
                    })
                })),
        )
    }
}

fn manager_error(e: ManagerError) -> deadpool_diesel::Error {
    match e {
        ManagerError::ConnectionError(c) => deadpool_diesel::Error::Connection(c),
        ManagerError::QueryError(q) => deadpool_diesel::Error::Ping(q),
    }
}
