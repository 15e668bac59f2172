//! Request routing for web services on [workspace-diesel](diesel_workspace): every request is
//! resolved to its tenant, checked against the registry, and its Diesel work runs with that
//! tenant active.
//!
//! - [`Resolver`]s find the tenant's name in a request: [`Subdomain`], [`Header`],
//!   [`PathPrefix`], [`UserWorkspace`] (the logged-in user's workspace); they compose with
//!   [`Resolver::or`] (first match wins) and [`Resolver::agreeing_with`].
//! - [`Routing`] checks the name against the registry through a bounded [`RegistryCache`] with a
//!   time-to-live (invalidated at once in-process, and across processes by
//!   [`RegistryCache::listen`]); only `active` tenants are served, everything else gets a
//!   [`TenantRejection`] response.
//! - [`Routing::layer`] is the tower layer for tenant routes; the [`Tenant`] and [`TenantDb`]
//!   extractors hand the tenant to the handler, and [`TenantDb::run`] runs Diesel work on a
//!   pooled connection in a blocking task with the tenant active there.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use diesel::prelude::*;
//! use diesel_workspace_axum::{DbError, Header, Resolver, Routing, Subdomain, Tenant, TenantDb};
//!
//! diesel_workspace::tenant_table! {
//!     notes (id) {
//!         id -> Int4,
//!         title -> Text,
//!     }
//! }
//!
//! async fn list(db: TenantDb) -> Result<String, DbError> {
//!     let titles: Vec<String> =
//!         db.run(|conn| notes::table.select(notes::title).load(conn)).await?;
//!     Ok(titles.join("\n"))
//! }
//!
//! async fn whoami(Tenant(tenant): Tenant) -> String {
//!     tenant.to_string()
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = diesel_workspace::pool::new(std::env::var("DATABASE_URL")?)?;
//! let routing = Routing::builder(pool)
//!     .resolver(Subdomain::new(["localhost"]).or(Header::new("x-tenant")))
//!     .build();
//! let app: Router = Router::new()
//!     .route("/notes", get(list))
//!     .route("/whoami", get(whoami))
//!     .layer(routing.layer())
//!     .merge(Router::new().route("/health", get(|| async { "ok" }))); // no tenant needed
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod bridge;
mod cache;
mod extract;
mod layer;
mod rejection;
mod resolve;

pub use crate::bridge::{DbError, DieselPool, RolePools};
pub use crate::cache::{install_notify_trigger, Listener, RegistryCache, NOTIFY_CHANNEL};
pub use crate::extract::{Tenant, TenantDb, TenantLayerMissing};
pub use crate::layer::{Routing, RoutingBuilder, TenantLayer, TenantService};
pub use crate::rejection::TenantRejection;
pub use crate::resolve::{
    Agreeing, FirstMatch, Header, PathPrefix, Resolution, ResolveFuture, Resolver, Subdomain,
    UserWorkspace,
};

/// The default pool of [`TenantDb`]: the library's r2d2 pool.
pub type DefaultPool = diesel_workspace::pool::TenantPool;
