//! How does a builder become a pool: the checks before (the backend probe, a statement pooler),
//! the shards and the manager they share, and the checks on the pool's first connection (the
//! engine, the hijack hazards).

use std::sync::{Arc, Mutex};

use diesel::r2d2::{ConnectionManager, ManageConnection};
use diesel::PgConnection;

use super::builder::TenantPoolBuilder;
use super::manager::{probe_error, SessionCustomizer, TenantConnectionManager};
use super::session::{SessionDefaults, SessionSettings};
use super::shards::{PoolSettings, TenantPool};
use crate::error::{Error, Result};
use crate::pooler::Pooler;
use crate::startup::startup_url;

impl TenantPoolBuilder {
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

    /// The settings the session SQL is written from.
    pub(super) fn session_settings(&self) -> SessionSettings<'_> {
        SessionSettings {
            shared_schema: &self.shared_schema,
            application_name: &self.application_name,
            statement_timeout: self.statement_timeout,
            lock_timeout: self.lock_timeout,
            idle_in_transaction_session_timeout: self.idle_in_transaction_session_timeout,
            session_cleanup: self.session_cleanup,
            pooler: self.pooler,
        }
    }

    /// The r2d2 builder of each shard, the manager they share (cloned), and what the
    /// [`TenantPool`](super::TenantPool) itself keeps.
    fn into_parts(
        self,
        database_url: String,
    ) -> (
        Vec<r2d2::Builder<TenantConnectionManager>>,
        TenantConnectionManager,
        PoolSettings,
    ) {
        let session = Arc::new(SessionDefaults::new(&self.session_settings()));
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

/// The checks [`TenantPoolBuilder::build`](super::TenantPoolBuilder::build) makes on one of the pool's connections: the engine
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
