//! Request routing for web services on [workspace-diesel](diesel_workspace): every request is
//! resolved to its tenant, checked against the registry, and its Diesel work runs with that
//! tenant active.
//!
//! - [`Resolver`]s find the tenant's name in a request: [`Subdomain`], [`Header`],
//!   [`PathPrefix`], [`UserWorkspace`] (the logged-in user's workspace), and [`Header`] behind a
//!   trusted proxy only; they compose with [`Resolver::or`] (two sources must agree),
//!   [`Resolver::or_first`] and [`Resolver::agreeing_with`].
//! - An [`Access`] policy is required: [`Access::members`] (401 without an authenticated
//!   principal, 403 for a principal who is no member of the tenant) or the visibly named
//!   [`Access::public_tenant_routes`].
//! - [`Routing`] checks the name against the registry through a bounded [`RegistryCache`] with a
//!   time-to-live (invalidated at once in-process; with [`RegistryCache::listen`], every name is
//!   answered from memory and kept current by `LISTEN`/`NOTIFY`); only `active` tenants are
//!   served, everything else gets a [`TenantRejection`] response.
//! - A version gate for rolling deploys ([`RoutingBuilder::expect_migrations`]): a tenant whose
//!   recorded migration version is behind the set the binary was built with gets 503
//!   `tenant_migrating` with `Retry-After`, its route never runs; the version is held in the
//!   cache beside the state (no query per request) and pushed by `NOTIFY` when a migration
//!   commits. Opt-in [`RoutingBuilder::migrate_on_request`] migrates such a tenant on its first
//!   request, once, within a bounded wait.
//! - Bulkheads and bounded waits: at most a share of the pool per tenant in flight (429
//!   beyond), at most [`RoutingBuilder::wait`] for a connection (503 with a fixed body beyond),
//!   a [`pool_builder`] with a default `statement_timeout`, and an optional registry pool of its
//!   own.
//! - [`Routing::layer`] is the tower layer for tenant routes; the [`Tenant`] and [`TenantDb`]
//!   extractors hand the tenant to the handler, and [`TenantDb::run`] runs Diesel work on a
//!   pooled connection in a blocking task with the tenant active there.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use diesel::prelude::*;
//! use diesel_workspace_axum::{Access, DbError, Routing, Subdomain, Tenant, TenantDb};
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
//! /// Put into the request by the service's authentication middleware.
//! #[derive(Clone, Copy)]
//! struct UserId(i64);
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = diesel_workspace_axum::pool_builder().build(std::env::var("DATABASE_URL")?)?;
//! let routing = Routing::builder(pool)
//!     .resolver(Subdomain::new(["example.com"]).reserved(["www", "api"]))
//!     // members of the tenant only: `public.memberships (user_id, workspace_id)`
//!     .access(Access::members(|parts| parts.extensions.get::<UserId>().map(|u| u.0)))
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

mod access;
mod bridge;
mod cache;
mod extract;
mod gate;
mod layer;
mod limit;
mod observe;
mod rejection;
mod resolve;
mod service;
mod user;

pub use crate::access::{bearer_token, Access};
pub use crate::bridge::{pool_builder, DbError, DieselPool, RolePools, DEFAULT_STATEMENT_TIMEOUT};
pub use crate::cache::{
    install_notify_trigger, install_notify_trigger_for, Listener, RegistryCache, NOTIFY_CHANNEL,
};
pub use crate::extract::{Tenant, TenantDb, TenantLayerMissing};
pub use crate::layer::{Routing, RoutingBuilder, DEFAULT_WAIT};
pub use crate::rejection::{TenantRejection, ECHO_LIMIT, MIGRATING_RETRY_AFTER};
pub use crate::resolve::{
    Agreeing, Either, FirstMatch, Header, PathPrefix, Resolution, ResolveFuture, Resolver,
    Subdomain,
};
pub use crate::service::{TenantLayer, TenantService};
pub use crate::user::UserWorkspace;

/// The default pool of [`TenantDb`]: the library's r2d2 pool.
pub type DefaultPool = diesel_workspace::pool::TenantPool;
