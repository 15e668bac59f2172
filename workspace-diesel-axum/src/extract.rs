//! Extractors: the request's tenant, and Diesel work in that tenant.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use diesel::PgConnection;
use diesel_workspace::{switch, TenantFuture, TenantId};
use http::request::Parts;
use http::StatusCode;

use crate::bridge::{DbError, DieselPool};
use crate::rejection::json_error;

/// The request's tenant: registered and `active`, as checked by the
/// [`TenantLayer`](crate::TenantLayer).
///
/// ```
/// use diesel_workspace_axum::Tenant;
///
/// async fn whoami(Tenant(tenant): Tenant) -> String {
///     tenant.to_string()
/// }
/// # let _ = whoami;
/// ```
///
/// Used on a route outside the layer, it fails with 500 `tenant_layer_missing` (a
/// configuration mistake, never a fall-through to the shared schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub TenantId);

impl Tenant {
    /// Wraps `future` so that it runs with this tenant active on every poll
    /// ([`TenantFuture`]): for diesel-async (`AsyncPgConnection`) queries on tenant tables.
    pub fn scope<F: Future>(&self, future: F) -> TenantFuture<F> {
        TenantFuture::new(self.0.clone(), future)
    }
}

/// The rejection of [`Tenant`] and [`TenantDb`] on a route outside the
/// [`TenantLayer`](crate::TenantLayer): 500 `tenant_layer_missing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLayerMissing;

impl IntoResponse for TenantLayerMissing {
    fn into_response(self) -> Response {
        tracing::error!("a tenant extractor was used on a route outside the tenant layer");
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tenant_layer_missing",
            "this route reads a tenant but is not under the tenant layer",
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = TenantLayerMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantMarker>()
            .map(|m| Tenant(m.0.clone()))
            .ok_or(TenantLayerMissing)
    }
}

/// The tenant alone, inserted by the layer whatever the pool type (read by [`Tenant`]).
#[derive(Debug, Clone)]
pub(crate) struct TenantMarker(pub(crate) TenantId);

/// The request's tenant and the routing's pool: runs Diesel work on a pooled connection in a
/// blocking task, with the tenant active there.
///
/// `P` is the pool given to [`Routing::builder`](crate::Routing::builder): the library's r2d2
/// [`TenantPool`](diesel_workspace::pool::TenantPool) (the default) or, with the `deadpool`
/// feature, `deadpool_diesel::postgres::Pool`.
///
/// ```
/// use diesel::prelude::*;
/// use diesel_workspace_axum::{DbError, TenantDb};
///
/// diesel_workspace::tenant_table! {
///     notes (id) {
///         id -> Int4,
///         title -> Text,
///     }
/// }
///
/// async fn titles(db: TenantDb) -> Result<axum::Json<Vec<String>>, DbError> {
///     let titles = db.run(|conn| notes::table.select(notes::title).load(conn)).await?;
///     Ok(axum::Json(titles))
/// }
/// # let _ = titles;
/// ```
#[derive(Debug, Clone)]
pub struct TenantDb<P = crate::DefaultPool> {
    pub(crate) tenant: TenantId,
    pub(crate) pool: P,
    pub(crate) wait: std::time::Duration,
    /// The tenant-work bulkhead of a pool shared with the checks
    /// ([`Routing::reserved_for_checks`](crate::Routing::reserved_for_checks)).
    pub(crate) work: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl<P: DieselPool> TenantDb<P> {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The pool.
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// Runs `f` on a pooled connection in a blocking task, inside
    /// [`switch`](diesel_workspace::switch)`(tenant, ..)`: the thread-local is set in that task,
    /// on the thread running the queries, and ends with `f`. The `request` span follows.
    ///
    /// When the registry and membership checks share this pool (no
    /// [`registry_pool`](crate::RoutingBuilder::registry_pool)), tenant work holds at most the
    /// pool's size less [`Routing::reserved_for_checks`](crate::Routing::reserved_for_checks)
    /// connections at once; the wait for that share counts in the same bound.
    ///
    /// # Errors
    /// `f`'s error converted into [`DbError`], or the pool's (see [`DieselPool::interact`]):
    /// [`DbError::Pool`] when no connection came within the routing's
    /// [`wait`](crate::RoutingBuilder::wait).
    pub async fn run<R, E, F>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: Into<DbError> + Send + 'static,
    {
        let tenant = self.tenant.clone();
        let deadline = std::time::Instant::now() + self.wait;
        let share = match &self.work {
            None => None,
            Some(work) => Some(
                crate::limit::acquire_until(work, deadline)
                    .await
                    .ok_or_else(|| {
                        DbError::Pool(format!(
                            "tenant work held its share of the pool for {:?}",
                            self.wait
                        ))
                    })?,
            ),
        };
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        self.pool
            .interact_as(&self.tenant, wait, move |conn| {
                // Held until the work ends, even when the request is dropped meanwhile.
                let _share = share;
                switch(&tenant, || f(conn))
            })
            .await?
            .map_err(Into::into)
    }
}

impl<S: Send + Sync, P: DieselPool> FromRequestParts<S> for TenantDb<P> {
    type Rejection = TenantLayerMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantDb<P>>()
            .cloned()
            .ok_or(TenantLayerMissing)
    }
}
