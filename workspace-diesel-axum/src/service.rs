//! The tower layer and service of a [`Routing`]: the per-request path from resolving the tenant
//! to calling the route.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tracing::Instrument;

use crate::bridge::DieselPool;
use crate::extract::{TenantDb, TenantMarker};
use crate::layer::Routing;
use crate::observe::served;
use crate::rejection::TenantRejection;

/// The tower layer of a [`Routing`] (see [`Routing::layer`]).
pub struct TenantLayer<P> {
    routing: Routing<P>,
}

impl<P> TenantLayer<P> {
    pub(crate) fn new(routing: Routing<P>) -> Self {
        Self { routing }
    }
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
/// extensions (read by the [`Tenant`](crate::Tenant) and [`TenantDb`] extractors). Each served
/// request, refusals included, ends with an info event `finished processing request` with
/// `status` and `latency` (tower-http's conventions), and, with the `metrics` feature, counts in
/// the request metrics (docs/metrics.md).
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
        let began = std::time::Instant::now();
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = req.uri().path(),
            tenant = tracing::field::Empty,
        );
        Box::pin(
            async move {
                let (mut parts, body) = req.into_parts();
                let admitted = match routing.resolve(&parts).await {
                    Ok(tenant) => {
                        let inner = &routing.inner;
                        match inner.limiter.acquire(&tenant, inner.wait).await {
                            Some(slot) => Ok((tenant, slot)),
                            None => Err(TenantRejection::Busy(tenant)),
                        }
                    }
                    Err(rejection) => Err(rejection),
                };
                match admitted {
                    Ok((tenant, slot)) => {
                        tracing::Span::current().record("tenant", tenant.as_str());
                        let name = tenant.clone();
                        parts.extensions.insert(TenantMarker(tenant.clone()));
                        parts.extensions.insert(TenantDb {
                            tenant,
                            pool: routing.inner.pool.clone(),
                            wait: routing.inner.wait,
                            work: routing.inner.work.clone(),
                        });
                        let response = inner.call(Request::from_parts(parts, body)).await;
                        drop(slot);
                        if let Ok(response) = &response {
                            served(Some(name.as_str()), response.status(), began.elapsed());
                        }
                        response
                    }
                    Err(rejection) => {
                        let tenant = rejection.tenant().cloned();
                        if let Some(tenant) = &tenant {
                            tracing::Span::current().record("tenant", tenant.as_str());
                        }
                        let response = routing.reject(rejection);
                        served(
                            tenant.as_ref().map(|t| t.as_str()),
                            response.status(),
                            began.elapsed(),
                        );
                        Ok(response)
                    }
                }
            }
            .instrument(span),
        )
    }
}
