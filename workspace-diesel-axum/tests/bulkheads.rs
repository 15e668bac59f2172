//! Bulkheads and bounded waits over real HTTP: a noisy tenant holds at most its share, a
//! database outage is a prompt 503 with a fixed body, unknown names cost no query.

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace::TenantId;
use diesel_workspace_axum::{Access, DbError, Header, Routing, TenantDb};

use crate::support::{self, get as http_get, notes, serve};

/// The fixed bodies of a 503 about the database: no host, port or driver text.
const UNAVAILABLE: [&str; 2] = [
    r#"{"error":"database_unavailable","message":"the service is temporarily unavailable; try again"}"#,
    r#"{"error":"registry_unavailable","message":"the service is temporarily unavailable; try again"}"#,
];

async fn titles(db: TenantDb) -> Result<Json<Vec<String>>, DbError> {
    let titles = db
        .run(|conn| notes::table.select(notes::title).load(conn))
        .await?;
    Ok(Json(titles))
}

fn app(routing: &Routing<TenantPool>) -> Router {
    Router::new()
        .route("/notes", get(titles))
        .layer(routing.layer())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// 30 slow requests of acme (its table locked) while globex and initech are served.
/// Returns the statuses acme got and the latencies of the others (all asserted 200 unless
/// `others_may_fail`), and the most acme sessions seen waiting on the lock.
async fn flood(
    db_url: &str,
    routing: &Routing<TenantPool>,
    others_may_fail: bool,
) -> (Vec<u16>, Vec<Duration>, Vec<u16>, i64) {
    let addr = serve(app(routing)).await;
    let mut locker = PgConnection::establish(db_url).expect("connect");
    locker
        .batch_execute("BEGIN; LOCK TABLE acme.notes IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let noisy: Vec<_> = (0..30)
        .map(|_| {
            tokio::spawn(async move {
                let start = Instant::now();
                let (s, _) = http_get(addr, "/notes", &[("x-tenant", "acme")]).await;
                (s, start.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let watcher_url = db_url.to_owned();
    let watcher = tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&watcher_url).expect("connect");
        let mut most = 0;
        for _ in 0..20 {
            let waiting: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM pg_catalog.pg_stat_activity \
                  WHERE datname = current_database() AND wait_event_type = 'Lock')",
            ))
            .get_result(&mut conn)
            .expect("pg_stat_activity");
            most = most.max(waiting);
            std::thread::sleep(Duration::from_millis(50));
        }
        most
    });
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..40 {
                    let t = if (w + i) % 2 == 0 {
                        "globex"
                    } else {
                        "initech"
                    };
                    let start = Instant::now();
                    let (s, body) = http_get(addr, "/notes", &[("x-tenant", t)]).await;
                    let took = start.elapsed();
                    if s == 200 {
                        assert_eq!(body, format!(r#"["note of {t}"]"#));
                    }
                    seen.push((s, took));
                }
                seen
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut other_statuses = Vec::new();
    for w in workers {
        for (s, took) in w.await.expect("worker") {
            if !others_may_fail {
                assert_eq!(s, 200, "a neighbour was refused");
            }
            other_statuses.push(s);
            latencies.push(took);
        }
    }
    let most_waiting = watcher.await.expect("watcher");
    let mut acme = Vec::new();
    for n in noisy {
        let (s, took) = n.await.expect("noisy request");
        acme.push(s);
        assert!(
            took < Duration::from_secs(6),
            "an acme request took {took:?}"
        );
    }
    locker.batch_execute("ROLLBACK").expect("unlock");
    latencies.sort();
    (acme, latencies, other_statuses, most_waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_holds_only_its_share_and_the_others_keep_being_served() {
    let (db, _migrator) = support::provision("web_noisy", &["acme", "globex", "initech"]);
    let pool = diesel_workspace_axum::pool_builder()
        .max_size(8)
        .statement_timeout(Some(Duration::from_secs(2)))
        .build(db.url())
        .expect("pool");
    let wait = Duration::from_secs(1);
    let routing = Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .wait(wait)
        .build();
    assert_eq!(routing.tenant_limit(), 2, "a quarter of the pool");
    let _listener = routing.cache().listen(db.url()).expect("listen");
    let (acme, latencies, _, most_waiting) = flood(db.url(), &routing, false).await;
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "neighbours of a noisy tenant: {} requests, p50 {p50:?}, p99 {p99:?}, max {max:?}; \
         acme: {} × 429, {} × other ({acme:?}); at most {most_waiting} acme sessions on the lock",
        latencies.len(),
        acme.iter().filter(|s| **s == 429).count(),
        acme.iter().filter(|s| **s != 429).count(),
    );
    assert!(
        max < wait,
        "a neighbour waited {max:?}, past the bound {wait:?}"
    );
    assert!(
        most_waiting <= 2,
        "{most_waiting} acme requests held connections"
    );
    assert!(
        acme.iter().filter(|s| **s == 429).count() >= 20,
        "acme beyond its share: {acme:?}"
    );
    assert!(acme.iter().all(|s| [429, 500, 503].contains(s)), "{acme:?}");

    // Negative control: with no per-tenant limit the same flood takes every connection and
    // the neighbours are refused.
    let unlimited = Routing::builder(pool)
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .wait(wait)
        .tenant_limit(1000)
        .build();
    let _listener = unlimited.cache().listen(db.url()).expect("listen");
    let (_, latencies, others, most_waiting) = flood(db.url(), &unlimited, true).await;
    assert!(most_waiting > 2, "{most_waiting}");
    assert!(others.contains(&503), "{others:?}");
    // Even then nobody waits past the bound: the pool's wait ends in 503.
    let slowest = latencies[latencies.len() - 1];
    assert!(slowest < wait + Duration::from_millis(500), "{slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_a_prompt_503_with_a_fixed_body_and_service_resumes() {
    let server = workspace_diesel_tests::throwaway::Throwaway::start("outage");
    let url = server.url();
    support::provision_at(&url, &["acme", "globex"]);
    let mut conn = PgConnection::establish(&url).expect("connect");
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("trigger");
    drop(conn);
    let pool = diesel_workspace_axum::pool_builder()
        .max_size(4)
        .build(&url)
        .expect("pool");
    let wait = Duration::from_secs(1);
    let routing = Routing::builder(pool)
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .wait(wait)
        .cache_ttl(Duration::from_millis(200))
        .build();
    let _listener = routing.cache().listen(&url).expect("listen");
    let addr = serve(app(&routing)).await;
    for t in ["acme", "globex"] {
        let (s, body) = http_get(addr, "/notes", &[("x-tenant", t)]).await;
        assert_eq!((s, body), (200, format!(r#"["note of {t}"]"#)));
    }

    assert!(routing.cache().is_live());
    server.stop();
    let stopped = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut seen = 0;
    while stopped.elapsed() < Duration::from_secs(4) {
        // One request per tenant at a time: the per-tenant slot (1 of a pool of 4) is not
        // what is tested here.
        let load: Vec<_> = ["acme", "globex", "nobody"]
            .into_iter()
            .map(|t| {
                tokio::spawn(async move {
                    let start = Instant::now();
                    let (s, body) = http_get(addr, "/notes", &[("x-tenant", t)]).await;
                    (s, body, start.elapsed())
                })
            })
            .collect();
        for r in load {
            let (s, body, took) = r.await.expect("request");
            assert_eq!(s, 503, "{body}");
            assert!(UNAVAILABLE.contains(&body.as_str()), "{body}");
            slowest = slowest.max(took);
            seen += 1;
        }
    }
    eprintln!(
        "database down: {seen} requests, all 503, the slowest in {slowest:?} (bound {wait:?})"
    );
    assert!(slowest < wait + Duration::from_millis(500), "{slowest:?}");

    server.resume();
    let resumed = Instant::now();
    loop {
        let (s, body) = http_get(addr, "/notes", &[("x-tenant", "acme")]).await;
        if s == 200 {
            assert_eq!(body, r#"["note of acme"]"#);
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "not served again: {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("served again {:?} after the restart", resumed.elapsed());
    let (s, _) = http_get(addr, "/notes", &[("x-tenant", "globex")]).await;
    assert_eq!(s, 200);
    // The listener has reconnected and holds the names again.
    while !routing.cache().is_live() {
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "the listener did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unknown_names_cost_a_bounded_number_of_registry_queries() {
    let (db, migrator) = support::provision("web_unknown", &["acme", "globex"]);
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("trigger");
    let pool = diesel_workspace_axum::pool_builder()
        .max_size(4)
        .build(db.url())
        .expect("pool");
    let routing = Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .build();
    let _listener = routing.cache().listen(db.url()).expect("listen");
    assert!(routing.cache().is_live());
    let addr = serve(app(&routing)).await;
    let flood = |names: Vec<String>| async move {
        let chunks: Vec<Vec<String>> = names.chunks(names.len() / 8).map(|c| c.to_vec()).collect();
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                tokio::spawn(async move {
                    for name in chunk {
                        let (s, _) = http_get(addr, "/notes", &[("x-tenant", &name)]).await;
                        assert_eq!(s, 404, "{name}");
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("worker");
        }
    };
    let names: Vec<String> = (0..10_000).map(|i| format!("u{i:05}")).collect();
    let before = routing.registry_reads();
    flood(names).await;
    let reads = routing.registry_reads() - before;
    eprintln!("10,000 distinct unknown names: {reads} registry queries");
    assert!(reads <= 2, "{reads} registry queries");
    // Known tenants are served, and one registered meanwhile by another process is seen.
    assert_eq!(
        http_get(addr, "/notes", &[("x-tenant", "acme")]).await.0,
        200
    );
    migrator
        .create_tenant(&mut conn, &TenantId::new("late").unwrap())
        .expect("create");
    let created = Instant::now();
    while http_get(addr, "/notes", &[("x-tenant", "late")]).await.0 != 200 {
        assert!(
            created.elapsed() < Duration::from_secs(3),
            "`late` not seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without the notify trigger nothing keeps the names current: they are not held, and the
    // TTL answers (a change made elsewhere is seen within it).
    let (bare, _) = support::provision("web_untriggered", &["acme"]);
    let untriggered = Routing::builder(
        diesel_workspace_axum::pool_builder()
            .max_size(2)
            .build(bare.url())
            .expect("pool"),
    )
    .resolver(Header::behind_trusted_proxy("x-tenant"))
    .access(Access::public_tenant_routes())
    .cache_ttl(Duration::from_millis(300))
    .build();
    let _bare_listener = untriggered.cache().listen(bare.url()).expect("listen");
    assert!(!untriggered.cache().is_live());
    let bare_addr = serve(app(&untriggered)).await;
    assert_eq!(
        http_get(bare_addr, "/notes", &[("x-tenant", "acme")])
            .await
            .0,
        200
    );
    let mut bare_conn = PgConnection::establish(bare.url()).expect("connect");
    diesel_workspace::registry::set_lifecycle_state(
        &mut bare_conn,
        &TenantId::new("acme").unwrap(),
        diesel_workspace::registry::LifecycleState::Suspended,
    )
    .expect("suspend");
    let changed = Instant::now();
    while http_get(bare_addr, "/notes", &[("x-tenant", "acme")])
        .await
        .0
        != 403
    {
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "the change was not seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Negative control: without the listener every distinct name is a query.
    let ttl_only = Routing::builder(pool)
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .build();
    let addr = serve(app(&ttl_only)).await;
    for i in 0..200 {
        let name = format!("v{i:05}");
        assert_eq!(
            http_get(addr, "/notes", &[("x-tenant", &name)]).await.0,
            404
        );
    }
    assert_eq!(ttl_only.registry_reads(), 200);
}
