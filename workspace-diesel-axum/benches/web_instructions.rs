//! The web bench's routes called in-process through the axum router, without HTTP: for counting
//! the instructions each route costs per request with valgrind's callgrind, which stays stable
//! on a loaded machine where wall-clock figures do not.
//!
//! `cargo bench -p workspace-diesel-axum --bench web_instructions --no-run`, then run the printed
//! executable under `valgrind --tool=callgrind` twice per route, with `WEB_REQUESTS=0` and
//! `WEB_REQUESTS=1000` and the route (`fixed`, `switched`, `routed`, `nodb`, `routed-nodb`) as
//! the argument: the difference of the two totals over 1,000 is the route's cost per request
//! (the setup and the 50 warm-up requests cancel out). Without a route it calls each once
//! (what `cargo test --benches` runs).

use workspace_diesel_tests::db;

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::pool::TenantPool;
use diesel_workspace::{Migrator, TenantId};
use diesel_workspace_axum::{Access, DbError, Header, Routing, Tenant, TenantDb};
use tower_service::Service;

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

async fn routed(db: TenantDb) -> Result<String, DbError> {
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

/// Calls `path` `n` times after 50 warm-up calls, the tenant headers sent when `tenant`.
async fn call(app: &mut Router, path: &str, tenant: bool, n: usize) -> Duration {
    let mut one = || {
        let mut request = http::Request::builder().uri(path);
        if tenant {
            request = request.header("x-tenant", "acme").header("x-user", "1");
        }
        let response = app.call(request.body(axum::body::Body::empty()).expect("request"));
        async move {
            let response = response.await.expect("infallible");
            assert_eq!(response.status(), 200);
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            assert_eq!(&body[..], b"acme note");
        }
    };
    for _ in 0..50 {
        one().await;
    }
    let start = Instant::now();
    for _ in 0..n {
        one().await;
    }
    start.elapsed()
}

fn main() {
    let route = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let n: usize = std::env::var("WEB_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let db = db::ScratchDb::create("bench_web_instr");
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let routing = Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(
            Access::members(|parts| parts.headers.get("x-user")?.to_str().ok()?.parse().ok())
                .members_table("public", "users", "id", "workspace_id"),
        )
        .cache_ttl(Duration::from_secs(3600))
        .build();
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("trigger");
    let _listener = routing.cache().listen(db.url()).expect("listen");
    let (baseline_pool, switched_pool) = (pool.clone(), pool.clone());
    let mut app = Router::new()
        .route("/routed", get(routed))
        .route(
            "/routed-nodb",
            get(|Tenant(_): Tenant| async { "acme note" }),
        )
        .layer(routing.layer())
        .route("/nodb", get(|| async { "acme note" }))
        .route("/fixed", get(move || hand_written(baseline_pool.clone())))
        .route("/switched", get(move || switched(switched_pool.clone())));
    let routes = ["fixed", "switched", "routed", "nodb", "routed-nodb"];
    let (chosen, n): (Vec<&str>, usize) = match &route {
        Some(r) => {
            let r = routes
                .iter()
                .find(|known| *known == r)
                .unwrap_or_else(|| panic!("unknown route {r}; one of {routes:?}"));
            (vec![r], n)
        }
        None => (routes.to_vec(), 1),
    };
    runtime.block_on(async {
        for r in chosen {
            let tenant = r.starts_with("routed");
            let took = call(&mut app, &format!("/{r}"), tenant, n).await;
            println!(
                "{r}: {n} requests, {:.1} µs each (wall clock)",
                took.as_secs_f64() * 1e6 / n.max(1) as f64
            );
        }
    });
    drop(routing);
    drop(pool);
}
