//! The version gate of rolling deploys: the tenant migration version a service was built for,
//! the verdict on a tenant's recorded version, and the opt-in migration on request (one at a
//! time per tenant in this process, under the engine's per-tenant lock, within a bounded wait).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel_workspace::registry::TenantRecord;
use diesel_workspace::{Migrator, TenantId, TenantOutcome};
use tokio::sync::watch;
use tracing::Instrument;

use crate::bridge::DieselPool;
use crate::cache::RegistryCache;
use crate::layer::{Routing, RoutingBuilder};
use crate::rejection::{TenantRejection, MIGRATING_RETRY_AFTER};

/// The version a service expects of its tenants, and what it does for one behind it.
pub(crate) struct Gate {
    /// The latest version of the tenant migration set the service was built with.
    pub(crate) expected: String,
    /// Migrate a tenant behind on its first request (opt-in).
    pub(crate) on_request: Option<OnRequest>,
}

impl Gate {
    /// Whether `record`'s tenant is behind: its latest applied version is older than the one
    /// expected, or none is recorded. A tenant ahead (a newer schema, from a newer release
    /// rolling out) is served: deploys are additive, so an older binary's queries still work.
    pub(crate) fn is_behind(&self, record: &TenantRecord) -> bool {
        record.is_behind(&self.expected)
    }
}

/// Migrating on request: the migrator, the bounded wait and the migrations in flight.
pub(crate) struct OnRequest {
    migrator: Migrator,
    wait: Duration,
    flights: Arc<Mutex<HashMap<TenantId, Flight>>>,
    started: AtomicU64,
}

/// A tenant's migration on request: running (its end is sent on the channel: `true` when it
/// succeeded), or failed at a time (not tried again before [`MIGRATING_RETRY_AFTER`]).
enum Flight {
    Running(watch::Receiver<Option<bool>>),
    Failed(Instant),
}

impl OnRequest {
    pub(crate) fn new(migrator: Migrator, wait: Duration) -> Self {
        Self {
            migrator,
            wait,
            flights: Arc::new(Mutex::new(HashMap::new())),
            started: AtomicU64::new(0),
        }
    }

    /// How many migrations on request this process has started.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Brings `tenant` up to date ([`Migrator::migrate_tenant`], on a connection of `pool`
    /// waited for at most `conn_wait`) and waits at most the bounded wait for it: `true` when it
    /// is up to date within it. Concurrent calls for one tenant share one migration; a
    /// migration that outlives the wait goes on in the background, and on success the tenant is
    /// forgotten in `cache`, so its next request reads its new version.
    pub(crate) async fn migrate<P: DieselPool>(
        &self,
        pool: &P,
        conn_wait: Duration,
        cache: &Arc<RegistryCache>,
        tenant: &TenantId,
    ) -> bool {
        let mut done = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(tenant) {
                Some(Flight::Running(rx)) => rx.clone(),
                Some(Flight::Failed(at)) if at.elapsed() < MIGRATING_RETRY_AFTER => return false,
                _ => {
                    let (tx, rx) = watch::channel(None);
                    flights.insert(tenant.clone(), Flight::Running(rx.clone()));
                    self.started.fetch_add(1, Ordering::Relaxed);
                    self.spawn(pool.clone(), conn_wait, cache.clone(), tenant.clone(), tx);
                    rx
                }
            }
        };
        let ended = tokio::time::timeout(self.wait, done.wait_for(Option::is_some)).await;
        match ended {
            Ok(Ok(ended)) => ended.unwrap_or(false),
            // The migration goes on; this request is answered 503 now.
            Ok(Err(_)) | Err(_) => false,
        }
    }

    fn spawn<P: DieselPool>(
        &self,
        pool: P,
        conn_wait: Duration,
        cache: Arc<RegistryCache>,
        tenant: TenantId,
        tx: watch::Sender<Option<bool>>,
    ) {
        let migrator = self.migrator.clone();
        let flights = self.flights.clone();
        let span = tracing::info_span!("migrate_on_request", tenant = tenant.as_str());
        let task = async move {
            let id = tenant.clone();
            let result = pool
                .interact(conn_wait, move |conn| migrator.migrate_tenant(conn, &id))
                .await;
            let ok = match result {
                Ok(Ok(TenantOutcome::Applied(versions))) => {
                    tracing::info!(?versions, "tenant migrated on request");
                    true
                }
                Ok(Ok(TenantOutcome::UpToDate)) => true,
                Ok(Ok(other)) => {
                    tracing::error!(outcome = ?other, "migrating a tenant on request did not apply");
                    false
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "migrating a tenant on request failed");
                    false
                }
                Err(e) => {
                    tracing::error!(error = %e, "migrating a tenant on request found no connection");
                    false
                }
            };
            if ok {
                cache.invalidate(&tenant);
            }
            {
                let mut flights = flights.lock().unwrap_or_else(|e| e.into_inner());
                if ok {
                    flights.remove(&tenant);
                } else {
                    flights.insert(tenant, Flight::Failed(Instant::now()));
                }
            }
            let _ = tx.send(Some(ok));
        };
        tokio::spawn(task.instrument(span));
    }
}

impl<P: DieselPool> RoutingBuilder<P> {
    /// The version gate of rolling deploys: a tenant whose latest applied tenant migration
    /// (in the central record) is older than `version`, or who has none, is answered 503
    /// `tenant_migrating` with `Retry-After` ([`TenantRejection::Migrating`]) and its route does
    /// not run: this binary's queries never meet the schema of the release before. A tenant
    /// ahead of `version` (migrated by a newer release rolling out) is served, since deploys
    /// add to a schema before they take away (an older binary's queries still work on it).
    ///
    /// The check costs no query: each tenant's version is held in the [`RegistryCache`] with
    /// its state, read in the same statement, and with [`RegistryCache::listen`] pushed by the
    /// `NOTIFY` of the central record's trigger ([`install_notify_trigger`]), so a tenant a
    /// fleet run migrated is served within the listener's tick (50 ms) of its commit. Without
    /// the listener, the cache's TTL bounds how long a migrated tenant is still refused.
    ///
    /// `version` is as Diesel writes it to its ledger (`2026-03-01-000001_add_priority` is
    /// `20260301000001`); [`expect_migrations`](Self::expect_migrations) takes it from the
    /// migrator of the set the binary embeds. Off by default.
    ///
    /// [`install_notify_trigger`]: crate::install_notify_trigger
    pub fn expect_version(mut self, version: impl Into<String>) -> Self {
        self.expected = Some(version.into());
        self
    }

    /// [`expect_version`](Self::expect_version) with the latest version of `migrator`'s tenant
    /// set ([`Migrator::tenant_versions`]): the set this binary was built with. An empty set
    /// expects nothing.
    ///
    /// ```no_run
    /// use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// use diesel_workspace_axum::{Access, Header, Routing};
    ///
    /// const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let migrator = Migrator::builder(TENANT_MIGRATIONS).build()?;
    /// let pool = diesel_workspace_axum::pool_builder().build("postgres://localhost/app")?;
    /// let routing = Routing::builder(pool)
    ///     .resolver(Header::behind_trusted_proxy("x-tenant"))
    ///     .access(Access::public_tenant_routes())
    ///     .expect_migrations(&migrator)
    ///     .build();
    /// # let _ = routing;
    /// # Ok(())
    /// # }
    /// ```
    pub fn expect_migrations(mut self, migrator: &Migrator) -> Self {
        self.expected = migrator.tenant_versions().last().cloned();
        self
    }

    /// Opts in to migrating a tenant on request: the first request for a tenant behind the
    /// [version gate](Self::expect_version) migrates it ([`Migrator::migrate_tenant`]: the
    /// engine's per-tenant lock, its ledger read after the lock, so several processes migrate it
    /// once) on a connection of the [registry pool](Self::registry_pool), and is served when that
    /// ends within `wait`; beyond `wait` it is answered 503 `tenant_migrating` while the
    /// migration goes on. Concurrent requests for the same tenant share one migration. A failed
    /// migration is logged, answered 503, and not tried again for
    /// [`MIGRATING_RETRY_AFTER`](crate::MIGRATING_RETRY_AFTER).
    ///
    /// The gate's version becomes the latest of `migrator`'s tenant set (as
    /// [`expect_migrations`](Self::expect_migrations)). Off by default: migrating takes locks
    /// on the tenant's tables in the middle of serving, which a deploy may rather do in a fleet
    /// run.
    pub fn migrate_on_request(mut self, migrator: Migrator, wait: Duration) -> Self {
        self = self.expect_migrations(&migrator);
        self.on_request = Some((migrator, wait));
        self
    }
}

impl<P: DieselPool> Routing<P> {
    /// The tenant migration version the [version gate](RoutingBuilder::expect_version)
    /// expects, when it is on.
    pub fn expected_version(&self) -> Option<&str> {
        self.inner.gate.as_ref().map(|g| g.expected.as_str())
    }

    /// How many migrations [on request](RoutingBuilder::migrate_on_request) this routing has
    /// started (concurrent requests for one tenant share one).
    pub fn migrations_on_request(&self) -> u64 {
        self.inner
            .gate
            .as_ref()
            .and_then(|g| g.on_request.as_ref())
            .map_or(0, OnRequest::started)
    }

    /// An active tenant behind the version gate: migrated on request when the service opted in
    /// and that ends within its wait, refused otherwise.
    pub(crate) async fn behind(
        &self,
        tenant: TenantId,
        deadline: Instant,
    ) -> Result<TenantId, TenantRejection> {
        let on_request = self.inner.gate.as_ref().and_then(|g| g.on_request.as_ref());
        let Some(on_request) = on_request else {
            return Err(TenantRejection::Migrating(tenant));
        };
        let inner = &self.inner;
        let conn_wait = deadline.saturating_duration_since(Instant::now());
        if on_request
            .migrate(&inner.registry_pool, conn_wait, &inner.cache, &tenant)
            .await
        {
            Ok(tenant)
        } else {
            Err(TenantRejection::Migrating(tenant))
        }
    }
}
