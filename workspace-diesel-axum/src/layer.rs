//! The routing layer: resolve, check the registry, hand the tenant to the route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use diesel::prelude::*;
use diesel_workspace::registry::{LifecycleState, Registry};
use diesel_workspace::{Migrator, TenantId};

use crate::access::{Access, AccessKind, Members};
use crate::bridge::DieselPool;
use crate::cache::RegistryCache;
use crate::gate::{Gate, OnRequest};
use crate::limit::{reserved_for_checks, TenantLimiter};
use crate::rejection::TenantRejection;
use crate::resolve::{Resolution, Resolver};
use crate::service::TenantLayer;

type RejectFn = dyn Fn(TenantRejection) -> Response + Send + Sync;

/// Request routing for one service: a [`Resolver`], an [`Access`] policy, the registry check
/// (with its [`RegistryCache`]), the per-tenant bulkhead and the pool that tenant routes run
/// their Diesel work on.
///
/// Its [`layer`](Self::layer) goes on the routes that need a tenant; routes that need none
/// (sign-up, health, static files) are declared by staying out of it (a router of their own,
/// merged). Under the layer, a request reaches its route only with a registered, `active`
/// tenant that its access policy admits, and a free slot in that tenant's share; otherwise it
/// gets the [`TenantRejection`]'s response (400 malformed, ambiguous or no tenant, 401 not
/// authenticated, 403 no member or suspended, 404 unknown, 410 archived, 429 the tenant's share
/// in flight, 503 provisioning, behind the [version gate](RoutingBuilder::expect_version) or
/// database unavailable), never a run against the shared schema.
///
/// In order: with [`Access::members`], 401 without a principal; the resolver; with
/// [`Access::members`], 403 for a non-member (registered tenant or not); the registry check; a
/// slot in the tenant's share. The database steps (membership
/// and registry on a miss of their caches) run on the [registry pool](RoutingBuilder::registry_pool)
/// and together wait at most [`wait`](RoutingBuilder::wait) for connections.
///
/// Cloning is cheap (one `Arc`).
pub struct Routing<P> {
    pub(crate) inner: Arc<Inner<P>>,
}

pub(crate) struct Inner<P> {
    resolver: Box<dyn Resolver>,
    access: Access,
    pub(crate) cache: Arc<RegistryCache>,
    pub(crate) pool: P,
    pub(crate) registry_pool: P,
    pub(crate) limiter: TenantLimiter,
    /// Tenant work's share of the main pool when the checks run on it too.
    pub(crate) work: Option<Arc<tokio::sync::Semaphore>>,
    reserved: usize,
    pub(crate) wait: Duration,
    reject: Option<Box<RejectFn>>,
    registry: Registry,
    registry_reads: AtomicU64,
    pub(crate) gate: Option<Gate>,
}

impl<P> Clone for Routing<P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<P> std::fmt::Debug for Routing<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Routing`] (see [`Routing::builder`]).
pub struct RoutingBuilder<P> {
    pool: P,
    registry_pool: Option<P>,
    resolver: Option<Box<dyn Resolver>>,
    access: Option<Access>,
    capacity: usize,
    ttl: Duration,
    wait: Duration,
    tenant_limit: Option<usize>,
    reject: Option<Box<RejectFn>>,
    registry: Registry,
    pub(crate) expected: Option<String>,
    pub(crate) on_request: Option<(Migrator, Duration)>,
}

impl<P> std::fmt::Debug for RoutingBuilder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingBuilder")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("access", &self.access)
            .field("wait", &self.wait)
            .field("tenant_limit", &self.tenant_limit)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// The default of [`RoutingBuilder::wait`]: 3 seconds.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3);

impl<P: DieselPool> RoutingBuilder<P> {
    /// How the tenant is found in a request. Required.
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Box::new(resolver));
        self
    }

    /// The registry the check reads (its cache's listener too, and
    /// [`Routing::set_lifecycle_state`] changes it): the migrator's ([`Migrator::registry`]).
    /// Defaults to the built-in `public.workspaces`.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Who may enter the tenant routes: [`Access::members`] or, visibly,
    /// [`Access::public_tenant_routes`]. Required: there is no default.
    pub fn access(mut self, access: Access) -> Self {
        self.access = Some(access);
        self
    }

    /// The longest a request waits for a database connection before it is answered 503
    /// `database_unavailable` (pool exhausted, database down), and for a slot in its tenant's
    /// share before it is answered 429 `tenant_busy`. Each [`TenantDb::run`](crate::TenantDb::run) waits at most this
    /// long for its connection. Defaults to [`DEFAULT_WAIT`] (3 seconds).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The most requests of one tenant in flight under the layer (at least 1); more wait up to
    /// [`wait`](Self::wait) for a slot, then get 429 `tenant_busy`. Defaults to a quarter of the
    /// pool's [`max_size`](DieselPool::max_size) (at least 1; 4 when the pool does not say), so
    /// one tenant's slow requests leave most connections to the others.
    pub fn tenant_limit(mut self, limit: usize) -> Self {
        self.tenant_limit = Some(limit);
        self
    }

    /// A pool of its own for the registry check and the membership check (a small one: they
    /// are cache misses), so they never wait behind tenant work for a connection. Defaults to
    /// the main pool, of which tenant work ([`TenantDb::run`](crate::TenantDb::run)) then holds
    /// at most all but [`Routing::reserved_for_checks`] connections at once, so the checks do
    /// not wait behind it there either. With [`RegistryCache::listen`], the registry check
    /// needs no connection at all.
    pub fn registry_pool(mut self, pool: P) -> Self {
        self.registry_pool = Some(pool);
        self
    }

    /// The most tenants the registry cache holds. Defaults to 10,000.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How long a tenant's state is cached. Defaults to 5 seconds; it bounds how long a change
    /// made by another process goes unseen when no [`RegistryCache::listen`] runs.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Replaces the default JSON response of a refused request (e.g. an HTML page for a
    /// suspended tenant).
    pub fn rejection_response(
        mut self,
        respond: impl Fn(TenantRejection) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.reject = Some(Box::new(respond));
        self
    }

    /// The routing.
    ///
    /// # Panics
    /// When no resolver or no access policy was set (a programming error).
    pub fn build(self) -> Routing<P> {
        let limit = self
            .tenant_limit
            .unwrap_or_else(|| self.pool.max_size().map_or(4, |max| (max / 4).max(1)));
        // Checks on the main pool: tenant work leaves them a few connections.
        let reserved = match (&self.registry_pool, self.pool.max_size()) {
            (None, Some(max)) => reserved_for_checks(max),
            _ => 0,
        };
        let work = (reserved > 0).then(|| {
            let max = self.pool.max_size().unwrap_or(reserved);
            Arc::new(tokio::sync::Semaphore::new(max - reserved))
        });
        Routing {
            inner: Arc::new(Inner {
                resolver: self
                    .resolver
                    .expect("RoutingBuilder::build: set a resolver first"),
                access: self.access.expect(
                    "RoutingBuilder::build: set an access policy (Access::members, or Access::public_tenant_routes)",
                ),
                cache: Arc::new(
                    RegistryCache::new(self.capacity, self.ttl).for_registry(self.registry.clone()),
                ),
                registry_pool: self.registry_pool.unwrap_or_else(|| self.pool.clone()),
                pool: self.pool,
                limiter: TenantLimiter::new(limit),
                work,
                reserved,
                wait: self.wait,
                reject: self.reject,
                registry: self.registry,
                registry_reads: AtomicU64::new(0),
                gate: self.expected.map(|expected| Gate {
                    expected,
                    on_request: self
                        .on_request
                        .map(|(migrator, wait)| OnRequest::new(migrator, wait)),
                }),
            }),
        }
    }
}

impl<P: DieselPool> Routing<P> {
    /// A builder for routing on `pool` (a [`TenantPool`](diesel_workspace::pool::TenantPool) or,
    /// with the `deadpool` feature, a deadpool-diesel pool).
    pub fn builder(pool: P) -> RoutingBuilder<P> {
        RoutingBuilder {
            pool,
            registry_pool: None,
            resolver: None,
            access: None,
            capacity: 10_000,
            ttl: Duration::from_secs(5),
            wait: DEFAULT_WAIT,
            tenant_limit: None,
            reject: None,
            registry: Registry::default(),
            expected: None,
            on_request: None,
        }
    }

    /// The tower layer for routes that need a tenant.
    pub fn layer(&self) -> TenantLayer<P> {
        TenantLayer::new(self.clone())
    }

    /// The registry cache (to [`listen`](RegistryCache::listen), or to invalidate by hand).
    pub fn cache(&self) -> &Arc<RegistryCache> {
        &self.inner.cache
    }

    /// The pool.
    pub fn pool(&self) -> &P {
        &self.inner.pool
    }

    /// The most requests of one tenant in flight (see [`RoutingBuilder::tenant_limit`]).
    pub fn tenant_limit(&self) -> usize {
        self.inner.limiter.per_tenant()
    }

    /// How many of the main pool's connections tenant work leaves to the registry and
    /// membership checks: with no [`registry_pool`](RoutingBuilder::registry_pool), an eighth
    /// of the pool's [`max_size`](DieselPool::max_size), at least 1; 0 with a registry pool of
    /// its own, a pool of one connection, or a pool that does not say its size
    /// ([`RolePools`](crate::RolePools) runs tenant work on pools of their own).
    pub fn reserved_for_checks(&self) -> usize {
        self.inner.reserved
    }

    /// How many times the registry check has read the registry on the pool (cache misses).
    pub fn registry_reads(&self) -> u64 {
        self.inner.registry_reads.load(Ordering::Relaxed)
    }

    /// Resolves a request to an active, registered tenant its access policy admits, or says
    /// why not: what the layer does before taking a slot and calling the route.
    pub async fn resolve(&self, parts: &http::request::Parts) -> Result<TenantId, TenantRejection> {
        let deadline = Instant::now() + self.inner.wait;
        // Members only: nobody is asked anything, not even the resolver, before there is a user.
        let user = match &self.inner.access.kind {
            AccessKind::Members(members) => Some(
                members
                    .principal(parts)
                    .ok_or(TenantRejection::Unauthenticated)?,
            ),
            AccessKind::Public => None,
        };
        let tenant = match self.resolution(parts, deadline).await {
            Resolution::Tenant(id) => id,
            Resolution::NoMatch => return Err(TenantRejection::Required),
            Resolution::Reject(r) => return Err(r),
        };
        if let (AccessKind::Members(members), Some(user)) = (&self.inner.access.kind, user) {
            if !self.is_member(members, user, &tenant, deadline).await? {
                return Err(TenantRejection::Forbidden(tenant));
            }
        }
        self.check_by(tenant, deadline).await
    }

    /// The resolver's answer, within the same bound: a resolver that asks the database
    /// ([`UserWorkspace`](crate::UserWorkspace)) and gets no answer by `deadline` is 503.
    async fn resolution(&self, parts: &http::request::Parts, deadline: Instant) -> Resolution {
        let mut resolving = self.inner.resolver.resolve(parts);
        // Most resolvers answer at once: no timer for them.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(resolving.as_mut(), cx))
        })
        .await;
        if let std::task::Poll::Ready(resolution) = first {
            return resolution;
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, resolving).await {
            Ok(resolution) => resolution,
            Err(_) => Resolution::Reject(TenantRejection::Unavailable(format!(
                "the resolver did not answer within {:?}",
                self.inner.wait
            ))),
        }
    }

    async fn is_member(
        &self,
        members: &Arc<Members>,
        user: i64,
        tenant: &TenantId,
        deadline: Instant,
    ) -> Result<bool, TenantRejection> {
        if let Some(member) = members.cached(user, tenant) {
            return Ok(member);
        }
        let (m, id) = (members.clone(), tenant.clone());
        let read = self
            .inner
            .registry_pool
            .interact(
                deadline.saturating_duration_since(Instant::now()),
                move |conn| Members::read(&m.sql, conn, user, &id),
            )
            .await;
        let member = match read {
            Ok(Ok(member)) => member,
            Ok(Err(e)) => return Err(TenantRejection::Unavailable(error_chain(&e))),
            Err(e) => return Err(TenantRejection::Unavailable(e.to_string())),
        };
        members.remember(user, tenant.clone(), member);
        Ok(member)
    }

    /// The registry check: `tenant` must be registered and `active` (and, with the
    /// [version gate](RoutingBuilder::expect_version), not behind). Served from the cache
    /// when it can; a miss reads the registry ([`RoutingBuilder::registry`]) on the registry pool.
    pub async fn check(&self, tenant: TenantId) -> Result<TenantId, TenantRejection> {
        self.check_by(tenant, Instant::now() + self.inner.wait)
            .await
    }

    async fn check_by(
        &self,
        tenant: TenantId,
        deadline: Instant,
    ) -> Result<TenantId, TenantRejection> {
        let cache = &self.inner.cache;
        let gate = self.inner.gate.as_ref();
        // The state, and whether the version gate holds the tenant back: under the cache's lock,
        // no copy of the record.
        let seen = |record: Option<&diesel_workspace::registry::TenantRecord>| {
            record.map(|r| (r.state, gate.is_some_and(|g| g.is_behind(r))))
        };
        let status = match cache.lookup(&tenant, seen) {
            Some(status) => status,
            None => {
                let generation = cache.generation();
                let id = tenant.clone();
                self.inner.registry_reads.fetch_add(1, Ordering::Relaxed);
                let registry = self.inner.registry.clone();
                let read = self
                    .inner
                    .registry_pool
                    .interact(
                        deadline.saturating_duration_since(Instant::now()),
                        move |conn| registry.tenant_record(conn, &id),
                    )
                    .await;
                let record = match read {
                    Ok(Ok(record)) => record,
                    Ok(Err(e)) => return Err(TenantRejection::Unavailable(error_chain(&e))),
                    Err(e) => return Err(TenantRejection::Unavailable(e.to_string())),
                };
                let status = seen(record.as_ref());
                cache.insert_record(tenant.clone(), record, generation);
                status
            }
        };
        match status {
            Some((LifecycleState::Active, false)) => Ok(tenant),
            Some((LifecycleState::Active, true)) => self.behind(tenant, deadline).await,
            Some((LifecycleState::Suspended, _)) => Err(TenantRejection::Suspended(tenant)),
            Some((LifecycleState::Archived, _)) => Err(TenantRejection::Archived(tenant)),
            Some((LifecycleState::Provisioning, _)) => Err(TenantRejection::Provisioning(tenant)),
            Some((LifecycleState::Restoring, _)) => Err(TenantRejection::Restoring(tenant)),
            None => Err(TenantRejection::Unknown(tenant)),
        }
    }

    pub(crate) fn reject(&self, rejection: TenantRejection) -> Response {
        if matches!(rejection, TenantRejection::Unavailable(_)) {
            tracing::error!(code = rejection.code(), %rejection, "request refused");
        } else {
            tracing::info!(code = rejection.code(), %rejection, "request refused");
        }
        match &self.inner.reject {
            Some(respond) => respond(rejection),
            None => rejection.into_response(),
        }
    }

    /// Changes `tenant`'s state in the registry ([`Registry::set_lifecycle_state`]) and forgets
    /// it in this process's cache at once. Blocking: call it from a blocking task.
    ///
    /// # Errors
    /// As [`Registry::set_lifecycle_state`].
    pub fn set_lifecycle_state(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        status: LifecycleState,
    ) -> diesel_workspace::Result<LifecycleState> {
        let before = self
            .inner
            .registry
            .set_lifecycle_state(conn, tenant, status);
        self.inner.cache.invalidate(tenant);
        before
    }

    /// Creates `tenant` ([`Migrator::create_tenant`]) and forgets any cached "unknown" for it.
    /// Blocking.
    ///
    /// # Errors
    /// As [`Migrator::create_tenant`].
    pub fn create_tenant(
        &self,
        migrator: &Migrator,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> diesel_workspace::Result<()> {
        let created = migrator.create_tenant(conn, tenant);
        self.inner.cache.invalidate(tenant);
        created
    }

    /// Drops `tenant` ([`Migrator::drop_tenant`]) and forgets it in this process's cache at
    /// once. Blocking.
    ///
    /// # Errors
    /// As [`Migrator::drop_tenant`].
    pub fn drop_tenant(
        &self,
        migrator: &Migrator,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> diesel_workspace::Result<()> {
        let dropped = migrator.drop_tenant(conn, tenant);
        self.inner.cache.invalidate(tenant);
        dropped
    }

    /// Renames `from` to `to` ([`Migrator::rename_tenant`]) and forgets both names in this
    /// process's cache at once. Blocking.
    ///
    /// # Errors
    /// As [`Migrator::rename_tenant`].
    pub fn rename_tenant(
        &self,
        migrator: &Migrator,
        conn: &mut PgConnection,
        from: &TenantId,
        to: &TenantId,
    ) -> diesel_workspace::Result<()> {
        let renamed = migrator.rename_tenant(conn, from, to);
        self.inner.cache.invalidate(from);
        self.inner.cache.invalidate(to);
        renamed
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
