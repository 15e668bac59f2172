//! The version gate of rolling deploys over real HTTP: a tenant behind the migration set the
//! service was built with is refused (503 `tenant_migrating`, `Retry-After`) before its handler
//! runs, served once a fleet run has migrated it (its version pushed by `NOTIFY`), and, when the
//! service opts in, migrated on its first request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::EmbeddedMigrations;
use diesel_workspace::pool::TenantPool;
use diesel_workspace::{MigrateOptions, Migrator, Selection, TenantId};
use diesel_workspace_axum::{Access, DbError, Header, Routing, Tenant, TenantDb};

use workspace_diesel_tests::Prefix;

use crate::support::{serve, ScratchDb};

/// The example schema (v1), then `notes.priority` (v2).
const ADDITIVE: EmbeddedMigrations = workspace_diesel_tests::ADDITIVE_MIGRATIONS;
const V1: &str = "20260101000001";
const V2: &str = "20260301000001";

/// The v2 binary's table: it reads `priority`, which a v1 schema lacks.
mod v2 {
    diesel_workspace::tenant_table! {
        notes (id) {
            id -> Int4,
            title -> Text,
            priority -> Int4,
        }
    }
}

fn id(s: &str) -> TenantId {
    TenantId::new(s).expect("valid tenant name")
}

fn names(n: usize) -> Vec<TenantId> {
    (0..n).map(|i| id(&format!("t{i:03}"))).collect()
}

/// A database with `n` tenants on v1, the first `on_v2` of them migrated to v2, and the notify
/// triggers installed. Returns the v2 migrator.
fn fleet(label: &str, n: usize, on_v2: usize) -> (ScratchDb, Migrator) {
    let db = ScratchDb::create(label);
    let v1 = Migrator::builder(Prefix(ADDITIVE, 1)).build().unwrap();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    v1.run_shared(&mut conn).unwrap();
    diesel_workspace_axum::install_notify_trigger(&mut conn).unwrap();
    let opts = MigrateOptions::default();
    v1.create_tenants(db.url(), &names(n), &opts).unwrap();
    let v2 = Migrator::builder(ADDITIVE).build().unwrap();
    assert_eq!(v2.tenant_versions().last().map(String::as_str), Some(V2));
    let first = Selection::all().tenants(names(on_v2));
    let report = v2.migrate_selected(db.url(), &first, &opts).unwrap();
    assert_eq!(report.applied().count(), on_v2);
    (db, v2)
}

type Calls = Arc<Mutex<HashMap<String, usize>>>;

/// The v2 service's route, counting its calls per tenant.
fn app(routing: &Routing<TenantPool>, calls: Calls) -> Router {
    Router::new()
        .route(
            "/priorities",
            get(move |Tenant(t): Tenant, db: TenantDb| {
                *calls.lock().unwrap().entry(t.to_string()).or_default() += 1;
                async move {
                    let p: Vec<i32> = db
                        .run(|conn| v2::notes::table.select(v2::notes::priority).load(conn))
                        .await?;
                    Ok::<_, DbError>(Json(p))
                }
            }),
        )
        .layer(routing.layer())
}

fn pool(url: &str) -> TenantPool {
    diesel_workspace::pool::builder()
        .max_size(8)
        .build(url)
        .unwrap()
}

fn builder(url: &str) -> diesel_workspace_axum::RoutingBuilder<TenantPool> {
    Routing::builder(pool(url))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        // Nothing expires by age: only the notifications change what the cache holds.
        .cache_ttl(Duration::from_secs(3600))
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn ask(client: &reqwest::Client, addr: SocketAddr, tenant: &TenantId) -> Answer {
    let resp = client
        .get(format!("http://{addr}/priorities"))
        .header("x-tenant", tenant.as_str())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status,
        retry_after,
        body: resp.text().await.expect("body"),
    }
}

/// The exact 503 of a tenant behind: fixed body (no versions, no tenant), `Retry-After`.
fn assert_migrating(a: &Answer, tenant: &TenantId) {
    assert_eq!(a.status, 503, "{tenant}: {}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("5"), "{tenant}");
    assert_eq!(
        a.body,
        r#"{"error":"tenant_migrating","message":"this workspace is being upgraded to a new version; try again shortly"}"#
    );
}

fn calls_of(calls: &Calls, tenant: &TenantId) -> usize {
    calls
        .lock()
        .unwrap()
        .get(tenant.as_str())
        .copied()
        .unwrap_or(0)
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

/// `tenant`'s own ledger, and how many rows the central record holds for `version`.
fn ledger(conn: &mut PgConnection, tenant: &TenantId, version: &str) -> (Vec<String>, i64) {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let own: Vec<Version> = diesel::sql_query(format!(
        "SELECT version::text AS version FROM {tenant}.__diesel_schema_migrations ORDER BY 1"
    ))
    .load(conn)
    .unwrap();
    let central: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM public.workspace_migrations WHERE schema_name = $1 AND version = $2",
    )
    .bind::<Text, _>(tenant.as_str())
    .bind::<Text, _>(version)
    .get_result(conn)
    .unwrap();
    (own.into_iter().map(|v| v.version).collect(), central.n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_tenants_refused_until_the_fleet_run_then_served() {
    let (db, v2) = fleet("web_gate_fleet", 100, 50);
    let tenants = names(100);
    let routing = builder(db.url()).expect_migrations(&v2).build();
    assert_eq!(routing.expected_version(), Some(V2));
    let _listener = routing.cache().listen(db.url()).unwrap();
    assert!(routing.cache().is_live());
    let calls = Calls::default();
    let addr = serve(app(&routing, calls.clone())).await;
    let client = reqwest::Client::new();

    for (i, t) in tenants.iter().enumerate() {
        let a = ask(&client, addr, t).await;
        if i < 50 {
            assert_eq!((a.status, a.body.as_str()), (200, "[]"), "{t}");
            assert_eq!(a.retry_after, None);
        } else {
            assert_migrating(&a, t);
        }
    }
    // Not one handler ran for a tenant behind; each tenant on v2 ran once.
    for (i, t) in tenants.iter().enumerate() {
        assert_eq!(calls_of(&calls, t), usize::from(i < 50), "{t}");
    }
    // Every answer came from memory: no registry query per request.
    assert_eq!(routing.registry_reads(), 0);

    // The fleet run of the deploy: the rest reach v2, and the service learns it by NOTIFY.
    let report = v2
        .migrate_all(db.url(), &MigrateOptions::default())
        .unwrap();
    assert_eq!(report.applied().count(), 50);
    let finished = Instant::now();
    let deadline = finished + Duration::from_secs(10);
    let mut waiting: Vec<&TenantId> = tenants[50..].iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for t in waiting {
            let a = ask(&client, addr, t).await;
            match a.status {
                200 => assert_eq!(a.body, "[]"),
                _ => {
                    assert_migrating(&a, t);
                    still.push(t);
                }
            }
        }
        waiting = still;
        assert!(
            Instant::now() < deadline,
            "{} tenants still refused 10 s after the fleet run",
            waiting.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let served_after = finished.elapsed();
    eprintln!("all 100 tenants served {served_after:?} after the fleet run ended");
    // The listener ticks every 50 ms and reads the tenants named in one statement.
    assert!(
        served_after < Duration::from_secs(3),
        "took {served_after:?}"
    );
    for t in &tenants {
        let a = ask(&client, addr, t).await;
        assert_eq!((a.status, a.body.as_str()), (200, "[]"), "{t}");
    }
    assert_eq!(routing.registry_reads(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gate_the_behind_tenant_reaches_its_handler() {
    let (db, v2) = fleet("web_gate_control", 4, 2);
    let (current, behind) = (id("t000"), id("t003"));
    let client = reqwest::Client::new();

    // The control: the same service without the gate runs the v2 handler on the v1 schema.
    let open = builder(db.url()).build();
    let _open_listener = open.cache().listen(db.url()).unwrap();
    let open_calls = Calls::default();
    let open_addr = serve(app(&open, open_calls.clone())).await;
    let a = ask(&client, open_addr, &behind).await;
    assert_eq!(calls_of(&open_calls, &behind), 1, "the handler ran");
    assert_eq!(a.status, 500, "v2's query on the v1 schema: {}", a.body);
    assert_eq!(ask(&client, open_addr, &current).await.status, 200);

    // Gated, on the per-name path (no listener): one registry read per name, as without the
    // gate, carries the version too.
    let gated = builder(db.url()).expect_migrations(&v2).build();
    let calls = Calls::default();
    let addr = serve(app(&gated, calls.clone())).await;
    for _ in 0..3 {
        assert_migrating(&ask(&client, addr, &behind).await, &behind);
        assert_eq!(ask(&client, addr, &current).await.status, 200);
    }
    assert_eq!(calls_of(&calls, &behind), 0);
    assert_eq!(calls_of(&calls, &current), 3);
    assert_eq!(gated.registry_reads(), 2);

    // A tenant ahead of the binary (a newer release migrated it) is served.
    let older = builder(db.url()).expect_version(V1).build();
    let older_calls = Calls::default();
    let older_addr = serve(app(&older, older_calls.clone())).await;
    assert_eq!(ask(&client, older_addr, &current).await.status, 200);
    assert_eq!(calls_of(&older_calls, &current), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_request_migrates_once_within_the_wait() {
    let (db, v2) = fleet("web_gate_on_request", 3, 0);
    let (first, slow) = (id("t000"), id("t001"));
    let mut conn = PgConnection::establish(db.url()).unwrap();
    assert_eq!(ledger(&mut conn, &first, V2), (vec![V1.to_owned()], 0));

    let routing = builder(db.url())
        .migrate_on_request(v2.clone(), Duration::from_secs(30))
        .build();
    assert_eq!(routing.expected_version(), Some(V2));
    let _listener = routing.cache().listen(db.url()).unwrap();
    let calls = Calls::default();
    let addr = serve(app(&routing, calls.clone())).await;
    let client = reqwest::Client::new();

    // Sixteen first requests at once: one migration, every request served after it.
    let asks: Vec<_> = (0..16)
        .map(|_| {
            let (client, t) = (client.clone(), first.clone());
            tokio::spawn(async move { ask(&client, addr, &t).await })
        })
        .collect();
    for a in asks {
        let a = a.await.unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "[]"));
    }
    assert_eq!(routing.migrations_on_request(), 1);
    assert_eq!(calls_of(&calls, &first), 16);
    assert_eq!(
        ledger(&mut conn, &first, V2),
        (vec![V1.to_owned(), V2.to_owned()], 1)
    );
    // Up to date now: no second migration.
    assert_eq!(ask(&client, addr, &first).await.status, 200);
    assert_eq!(routing.migrations_on_request(), 1);

    // A migration that outlives the wait: the request is refused, the migration goes on.
    let hurried = builder(db.url())
        .migrate_on_request(v2, Duration::from_millis(300))
        .build();
    let _hurried_listener = hurried.cache().listen(db.url()).unwrap();
    let hurried_calls = Calls::default();
    let hurried_addr = serve(app(&hurried, hurried_calls.clone())).await;
    let mut holder = PgConnection::establish(db.url()).unwrap();
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {slow}.notes IN ACCESS SHARE MODE"
        ))
        .unwrap();
    let started = Instant::now();
    let a = ask(&client, hurried_addr, &slow).await;
    assert_migrating(&a, &slow);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(calls_of(&hurried_calls, &slow), 0);
    assert_eq!(
        ledger(&mut conn, &slow, V2).1,
        0,
        "still waiting for the lock"
    );
    holder.batch_execute("COMMIT").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = ask(&client, hurried_addr, &slow).await;
        if a.status == 200 {
            break;
        }
        assert_migrating(&a, &slow);
        assert!(
            Instant::now() < deadline,
            "never served after the lock went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hurried.migrations_on_request(), 1);
    assert_eq!(
        ledger(&mut conn, &slow, V2),
        (vec![V1.to_owned(), V2.to_owned()], 1)
    );
    // The third tenant, never asked for, is still on v1.
    assert_eq!(ledger(&mut conn, &id("t002"), V2), (vec![V1.to_owned()], 0));
}
