//! The routing layer: resolve, check the registry, hand the tenant to the route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use diesel::prelude::*;
use diesel_workspace::registry::{LifecycleState, Registry};
use diesel_workspace::{Migrator, TenantId};
use tracing::Instrument;

use crate::bridge::DieselPool;
use crate::cache::RegistryCache;
use crate::extract::{TenantDb, TenantMarker};
use crate::rejection::TenantRejection;
use crate::resolve::{Resolution, Resolver};

type RejectFn = dyn Fn(TenantRejection) -> Response + Send + Sync;

/// Request routing for one service: a [`Resolver`], the registry check (with its
/// [`RegistryCache`]) and the pool that tenant routes run their Diesel work on.
///
/// Its [`layer`](Self::layer) goes on the routes that need a tenant; routes that need none
/// (sign-up, health, static files) are declared by staying out of it (a router of their own,
/// merged). Under the layer, a request reaches its route only with a registered, `active`
/// tenant; otherwise it gets the [`TenantRejection`]'s response (400 malformed or no tenant,
/// 404 unknown, 403 suspended, 410 archived, 503 provisioning or registry unavailable),
/// never a run against the shared schema.
///
/// Cloning is cheap (one `Arc`).
pub struct Routing<P> {
    inner: Arc<Inner<P>>,
}

struct Inner<P> {
    resolver: Box<dyn Resolver>,
    cache: Arc<RegistryCache>,
    pool: P,
    reject: Option<Box<RejectFn>>,
    registry: Registry,
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
    resolver: Option<Box<dyn Resolver>>,
    capacity: usize,
    ttl: Duration,
    reject: Option<Box<RejectFn>>,
    registry: Registry,
}

impl<P> std::fmt::Debug for RoutingBuilder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingBuilder")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<P: DieselPool> RoutingBuilder<P> {
    /// How the tenant is found in a request. Required.
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Box::new(resolver));
        self
    }

    /// The registry the check reads (and [`Routing::set_lifecycle_state`] changes): the
    /// migrator's ([`Migrator::registry`]). Defaults to the built-in `public.workspaces`.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
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
    /// When no resolver was set (a programming error).
    pub fn build(self) -> Routing<P> {
        Routing {
            inner: Arc::new(Inner {
                resolver: self
                    .resolver
                    .expect("RoutingBuilder::build: set a resolver first"),
                cache: Arc::new(RegistryCache::new(self.capacity, self.ttl)),
                pool: self.pool,
                reject: self.reject,
                registry: self.registry,
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
            resolver: None,
            capacity: 10_000,
            ttl: Duration::from_secs(5),
            reject: None,
            registry: Registry::default(),
        }
    }

    /// The tower layer for routes that need a tenant.
    pub fn layer(&self) -> TenantLayer<P> {
        TenantLayer {
            routing: self.clone(),
        }
    }

    /// The registry cache (to [`listen`](RegistryCache::listen), or to invalidate by hand).
    pub fn cache(&self) -> &Arc<RegistryCache> {
        &self.inner.cache
    }

    /// The pool.
    pub fn pool(&self) -> &P {
        &self.inner.pool
    }

    /// Resolves a request to an active, registered tenant, or says why not: what the layer does
    /// before calling the route.
    pub async fn resolve(&self, parts: &http::request::Parts) -> Result<TenantId, TenantRejection> {
        match self.inner.resolver.resolve(parts).await {
            Resolution::Tenant(id) => self.check(id).await,
            Resolution::NoMatch => Err(TenantRejection::Required),
            Resolution::Reject(r) => Err(r),
        }
    }

    /// The registry check: `tenant` must be registered and `active`. Served from the cache
    /// when it can; a miss reads the registry ([`RoutingBuilder::registry`]) on the pool.
    pub async fn check(&self, tenant: TenantId) -> Result<TenantId, TenantRejection> {
        let cache = &self.inner.cache;
        let status = match cache.get(&tenant) {
            Some(status) => status,
            None => {
                let generation = cache.generation();
                let id = tenant.clone();
                let registry = self.inner.registry.clone();
                let read = self
                    .inner
                    .pool
                    .interact(move |conn| registry.lifecycle_state(conn, &id))
                    .await;
                let status = match read {
                    Ok(Ok(status)) => status,
                    Ok(Err(e)) => return Err(TenantRejection::Unavailable(error_chain(&e))),
                    Err(e) => return Err(TenantRejection::Unavailable(e.to_string())),
                };
                cache.insert(tenant.clone(), status, generation);
                status
            }
        };
        match status {
            Some(LifecycleState::Active) => Ok(tenant),
            Some(LifecycleState::Suspended) => Err(TenantRejection::Suspended(tenant)),
            Some(LifecycleState::Archived) => Err(TenantRejection::Archived(tenant)),
            Some(LifecycleState::Provisioning) => Err(TenantRejection::Provisioning(tenant)),
            None => Err(TenantRejection::Unknown(tenant)),
        }
    }

    fn reject(&self, rejection: TenantRejection) -> Response {
        tracing::info!(code = rejection.code(), %rejection, "request refused");
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

/// The tower layer of a [`Routing`] (see [`Routing::layer`]).
pub struct TenantLayer<P> {
    routing: Routing<P>,
}

impl<P> Clone for TenantLayer<P> {
    fn clone(&self) -> Self {
        Self {
            routing: self.routing.clone(),
        }
    }
}

impl<P> std::fmt::Debug for TenantLayer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLayer").finish_non_exhaustive()
    }
}

impl<S, P: DieselPool> tower_layer::Layer<S> for TenantLayer<P> {
    type Service = TenantService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            routing: self.routing.clone(),
        }
    }
}

/// The service [`TenantLayer`] wraps around routes.
///
/// For each request it opens a `request` span (`method`, `path`, `tenant`), resolves and checks
/// the tenant, records it on the span, and calls the route with the tenant in the request's
/// extensions (read by the [`Tenant`](crate::Tenant) and [`TenantDb`] extractors).
pub struct TenantService<S, P> {
    inner: S,
    routing: Routing<P>,
}

impl<S: Clone, P> Clone for TenantService<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            routing: self.routing.clone(),
        }
    }
}

impl<S, P> std::fmt::Debug for TenantService<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantService").finish_non_exhaustive()
    }
}

impl<S, P> tower_service::Service<Request> for TenantService<S, P>
where
    S: tower_service::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    P: DieselPool,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone that was polled ready serves this request (tower's idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let routing = self.routing.clone();
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = req.uri().path(),
            tenant = tracing::field::Empty,
        );
        Box::pin(
            async move {
                let (mut parts, body) = req.into_parts();
                match routing.resolve(&parts).await {
                    Ok(tenant) => {
                        tracing::Span::current().record("tenant", tenant.as_str());
                        parts.extensions.insert(TenantMarker(tenant.clone()));
                        parts.extensions.insert(TenantDb {
                            tenant,
                            pool: routing.inner.pool.clone(),
                        });
                        inner.call(Request::from_parts(parts, body)).await
                    }
                    Err(rejection) => {
                        if let Some(tenant) = rejection.tenant() {
                            tracing::Span::current().record("tenant", tenant.as_str());
                        }
                        Ok(routing.reject(rejection))
                    }
                }
            }
            .instrument(span),
        )
    }
}
