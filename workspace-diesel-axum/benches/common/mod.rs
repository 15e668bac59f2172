//! What the web benches share: the scratch database with two tenants and their notes, the
//! routing with the members-only access policy, and the routes each bench calls (through the
//! layer, hand-written with the schema hard-coded, in `switch` without the layer, and without
//! database work with and without the layer).

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::pool::TenantPool;
use diesel_workspace::{Migrator, TenantId};
use diesel_workspace_axum::{Access, DbError, Header, Routing, RoutingBuilder, Tenant, TenantDb};
use workspace_diesel_tests::db::ScratchDb;

const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

/// The same table with the schema written into the declaration: the hand-written baseline.
mod fixed {
    diesel::table! {
        acme.notes (id) {
            id -> Int4,
            title -> Text,
        }
    }
}

/// The body every route answers with.
pub const BODY: &str = "acme note";

/// The routed handler: the tenant table's query through `TenantDb`.
pub async fn routed(db: TenantDb) -> Result<String, DbError> {
    db.run(|conn| {
        notes::table
            .filter(notes::id.eq(1))
            .select(notes::title)
            .first::<String>(conn)
    })
    .await
}

async fn hand_written(pool: TenantPool) -> Result<String, DbError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(|e| DbError::Pool(e.to_string()))?;
        fixed::notes::table
            .filter(fixed::notes::id.eq(1))
            .select(fixed::notes::title)
            .first::<String>(&mut conn)
            .map_err(DbError::from)
    })
    .await
    .map_err(|_| DbError::Panicked)?
}

/// The tenant table's query in `switch` on a plain pool, without the layer: the library's share
/// of the difference (its SQL names the active tenant's schema and is built per execution).
async fn switched(pool: TenantPool) -> Result<String, DbError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = pool.get().map_err(|e| DbError::Pool(e.to_string()))?;
        let acme = TenantId::new("acme").expect("valid");
        diesel_workspace::switch(&acme, || {
            notes::table
                .filter(notes::id.eq(1))
                .select(notes::title)
                .first::<String>(&mut conn)
        })
        .map_err(DbError::from)
    })
    .await
    .map_err(|_| DbError::Panicked)?
}

/// A scratch database named after `name` with the shared migrations, tenants `acme` and
/// `globex` with one note each, and `public.users` (user 1 a member of `acme`); the migrator,
/// a connection to it and a pool of 4.
pub fn fixture(name: &str) -> (ScratchDb, Migrator, PgConnection, TenantPool) {
    let db = ScratchDb::create(name);
    let migrator = Migrator::builder(TENANT)
        .build()
        .expect("the tenant migrations");
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    migrator.run_shared(&mut conn).expect("shared migrations");
    for t in ["acme", "globex"] {
        migrator
            .create_tenant(&mut conn, &TenantId::new(t).unwrap())
            .expect("create tenant");
    }
    conn.batch_execute(
        "INSERT INTO acme.notes (title) VALUES ('acme note'); \
         INSERT INTO globex.notes (title) VALUES ('globex note'); \
         CREATE TABLE public.users (id BIGINT PRIMARY KEY, workspace_id BIGINT NOT NULL \
             REFERENCES public.workspaces (id)); \
         INSERT INTO public.users SELECT 1, id FROM public.workspaces WHERE schema_name = 'acme'",
    )
    .expect("notes and users");
    let pool = diesel_workspace::pool::builder()
        .max_size(4)
        .build(db.url())
        .expect("pool");
    (db, migrator, conn, pool)
}

/// The routing the benches measure: the tenant from the `x-tenant` header, members only (the
/// user id from `x-user` stands in for an authentication middleware's extension), the registry
/// cache kept an hour; finished by the caller (e.g. with the version gate).
pub fn routing(pool: &TenantPool) -> RoutingBuilder<TenantPool> {
    Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(
            Access::members(|parts| parts.headers.get("x-user")?.to_str().ok()?.parse().ok())
                .members_table("public", "users", "id", "workspace_id"),
        )
        .cache_ttl(Duration::from_secs(3600))
}

/// The routes both benches call: `/routed` and `/routed-nodb` (no database work) behind the
/// layer of `routing`; `/nodb`, `/fixed` (hand-written) and `/switched` without it.
pub fn app(routing: &Routing<TenantPool>, pool: &TenantPool) -> Router {
    let (baseline_pool, switched_pool) = (pool.clone(), pool.clone());
    Router::new()
        .route("/routed", get(routed))
        .route("/routed-nodb", get(|Tenant(_): Tenant| async { BODY }))
        .layer(routing.layer())
        .route("/nodb", get(|| async { BODY }))
        .route("/fixed", get(move || hand_written(baseline_pool.clone())))
        .route("/switched", get(move || switched(switched_pool.clone())))
}

/// The runtime the benches serve and call from: two worker threads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
