//! Per-request cost of the routing layer (with the members-only access policy, the per-tenant
//! limit and the bounded wait on) + `TenantDb` extractor + blocking bridge, against a
//! hand-written axum handler that hard-codes the tenant's schema: same pool, same query, same
//! server, one run, requests over loopback from a Rust client (reqwest, keep-alive, one request
//! in flight); the same query through the tenant table in `switch` without the layer; a route
//! without database work with and without the layer; the layer with the version gate of rolling
//! deploys on (every tenant current, so every request is served). Plus the registry cache's hit
//! cost, with and without the gate.
//!
//! `cargo bench -p workspace-diesel-axum --bench web` (`BENCH_QUICK=1` for a short run; without
//! `--bench` it only smoke-tests each case).

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use diesel_workspace::{registry::LifecycleState, TenantId};
use diesel_workspace_axum::RegistryCache;

/// Rounds and requests per side per round: a smoke test without `--bench` (as `cargo test
/// --benches` runs it), a short run with `BENCH_QUICK=1`, else the full run; `BENCH_ROUNDS` and
/// `BENCH_ITERS` override them.
struct Settings {
    mode: &'static str,
    rounds: usize,
    iters: usize,
}

impl Settings {
    fn from_env() -> Self {
        let bench = std::env::args().any(|a| a == "--bench");
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let (mode, rounds, iters) = match (bench, quick) {
            (false, _) => ("smoke test (no --bench)", 2, 20),
            (true, true) => ("quick (BENCH_QUICK=1)", 5, 400),
            (true, false) => ("full", 15, 2_000),
        };
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
                .max(1)
        };
        Self {
            mode,
            rounds: var("BENCH_ROUNDS", rounds),
            iters: var("BENCH_ITERS", iters),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let settings = Settings::from_env();
    let (db, migrator, mut conn, pool) = common::fixture("bench_web");
    let runtime = common::runtime();
    let routing = common::routing(&pool).build();
    // The same routing with the version gate on: each tenant's version held beside its state.
    let gated = common::routing(&pool).expect_migrations(&migrator).build();
    assert!(gated.expected_version().is_some());
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("trigger");
    let _listener = routing.cache().listen(db.url()).expect("listen");
    let _gated_listener = gated.cache().listen(db.url()).expect("listen");
    let app = common::app(&routing, &pool).merge(
        Router::new()
            .route("/gated", get(common::routed))
            .layer(gated.layer()),
    );

    let (routed_lat, fixed_lat, switched_lat, layer_nodb, plain_nodb, gated_lat) = runtime
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let routed_url = format!("http://{addr}/routed");
            let fixed_url = format!("http://{addr}/fixed");
            let switched_url = format!("http://{addr}/switched");
            let layer_nodb_url = format!("http://{addr}/routed-nodb");
            let plain_nodb_url = format!("http://{addr}/nodb");
            let gated_url = format!("http://{addr}/gated");
            let one = |url: &str, tenant: bool| {
                let mut req = client.get(url);
                if tenant {
                    req = req.header("x-tenant", "acme").header("x-user", "1");
                }
                async move {
                    let start = Instant::now();
                    let resp = req.send().await.expect("request");
                    assert_eq!(resp.status(), 200);
                    let body = resp.text().await.expect("body");
                    let elapsed = start.elapsed();
                    assert_eq!(body, common::BODY);
                    elapsed
                }
            };
            // Warm-up: connections, prepared statements, the registry cache.
            for _ in 0..200.min(settings.iters * 2) {
                one(&routed_url, true).await;
                one(&fixed_url, false).await;
                one(&switched_url, false).await;
                one(&layer_nodb_url, true).await;
                one(&plain_nodb_url, false).await;
                one(&gated_url, true).await;
            }
            let mut routed_lat = Vec::new();
            let mut fixed_lat = Vec::new();
            let mut switched_lat = Vec::new();
            let mut layer_nodb = Vec::new();
            let mut plain_nodb = Vec::new();
            let mut gated_lat = Vec::new();
            // Interleaved blocks, rotating which side goes first, so drifts in machine load hit
            // every side alike.
            for round in 0..settings.rounds {
                for k in 0..6 {
                    let side = (round + k) % 6;
                    for _ in 0..settings.iters {
                        match side {
                            0 => routed_lat.push(one(&routed_url, true).await),
                            1 => fixed_lat.push(one(&fixed_url, false).await),
                            2 => switched_lat.push(one(&switched_url, false).await),
                            3 => layer_nodb.push(one(&layer_nodb_url, true).await),
                            4 => plain_nodb.push(one(&plain_nodb_url, false).await),
                            _ => gated_lat.push(one(&gated_url, true).await),
                        }
                    }
                }
            }
            (
                routed_lat,
                fixed_lat,
                switched_lat,
                layer_nodb,
                plain_nodb,
                gated_lat,
            )
        });

    // The registry check on a cache hit, without HTTP.
    let acme = TenantId::new("acme").unwrap();
    let cache = RegistryCache::new(10_000, Duration::from_secs(3600));
    for i in 0..1000 {
        cache.insert(
            TenantId::new(format!("t{i}")).unwrap(),
            Some(LifecycleState::Active),
            cache.generation(),
        );
    }
    cache.insert(
        acme.clone(),
        Some(LifecycleState::Active),
        cache.generation(),
    );
    let n = settings.iters * 500;
    let start = Instant::now();
    for _ in 0..n {
        black_box(cache.get(black_box(&acme)));
    }
    let get_ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
    let check_ns = runtime.block_on(async {
        routing.check(acme.clone()).await.expect("active"); // fills the cache
        let start = Instant::now();
        for _ in 0..n {
            black_box(
                routing
                    .check(black_box(acme.clone()))
                    .await
                    .expect("active"),
            );
        }
        start.elapsed().as_secs_f64() * 1e9 / n as f64
    });
    let gated_check_ns = runtime.block_on(async {
        gated.check(acme.clone()).await.expect("current");
        let start = Instant::now();
        for _ in 0..n {
            black_box(gated.check(black_box(acme.clone())).await.expect("current"));
        }
        start.elapsed().as_secs_f64() * 1e9 / n as f64
    });

    let mut r = routed_lat;
    let mut f = fixed_lat;
    let mut w = switched_lat;
    let mut ln = layer_nodb;
    let mut pn = plain_nodb;
    let mut g = gated_lat;
    g.sort();
    r.sort();
    f.sort();
    w.sort();
    ln.sort();
    pn.sort();
    println!(
        "web routing benchmark ({}): {} rounds × {} requests per side, one in flight, 2 server threads",
        settings.mode, settings.rounds, settings.iters
    );
    println!();
    println!("| request | median µs | p99 µs |");
    println!("| --- | ---: | ---: |");
    println!(
        "| hand-written handler, schema hard-coded (`acme.notes`), `spawn_blocking` + `pool.get()` | {:.1} | {:.1} |",
        us(percentile(&f, 0.5)),
        us(percentile(&f, 0.99))
    );
    println!(
        "| the same handler with the tenant table in `switch` (no layer) | {:.1} | {:.1} |",
        us(percentile(&w, 0.5)),
        us(percentile(&w, 0.99))
    );
    println!(
        "| `TenantLayer` (header resolver, members-only policy, registry from memory, per-tenant limit, bounded wait) + `TenantDb::run` | {:.1} | {:.1} |",
        us(percentile(&r, 0.5)),
        us(percentile(&r, 0.99))
    );
    let median_ratio = percentile(&r, 0.5).as_secs_f64() / percentile(&f, 0.5).as_secs_f64();
    let p99_ratio = percentile(&r, 0.99).as_secs_f64() / percentile(&f, 0.99).as_secs_f64();
    println!(
        "| ratio, layer vs hand-written (target ≤ 1.05× median, ≤ 1.10× p99) | {median_ratio:.3}× | {p99_ratio:.3}× |"
    );
    println!(
        "| the same `TenantLayer` with the version gate on (`expect_migrations`, tenant current) + `TenantDb::run` | {:.1} | {:.1} |",
        us(percentile(&g, 0.5)),
        us(percentile(&g, 0.99))
    );
    println!(
        "| ratio, gate on vs gate off | {:.3}× | {:.3}× |",
        percentile(&g, 0.5).as_secs_f64() / percentile(&r, 0.5).as_secs_f64(),
        percentile(&g, 0.99).as_secs_f64() / percentile(&r, 0.99).as_secs_f64()
    );
    println!(
        "| ratio, layer vs the same handler in `switch` | {:.3}× | {:.3}× |",
        percentile(&r, 0.5).as_secs_f64() / percentile(&w, 0.5).as_secs_f64(),
        percentile(&r, 0.99).as_secs_f64() / percentile(&w, 0.99).as_secs_f64()
    );
    println!();
    println!("| request without database work | median µs | p99 µs |");
    println!("| --- | ---: | ---: |");
    println!(
        "| plain route | {:.1} | {:.1} |",
        us(percentile(&pn, 0.5)),
        us(percentile(&pn, 0.99))
    );
    println!(
        "| the same under `TenantLayer` (everything on), `Tenant` extractor | {:.1} | {:.1} |",
        us(percentile(&ln, 0.5)),
        us(percentile(&ln, 0.99))
    );
    println!(
        "| ratio | {:.3}× | {:.3}× |",
        percentile(&ln, 0.5).as_secs_f64() / percentile(&pn, 0.5).as_secs_f64(),
        percentile(&ln, 0.99).as_secs_f64() / percentile(&pn, 0.99).as_secs_f64()
    );
    println!();
    println!("| registry cache hit | ns per call |");
    println!("| --- | ---: |");
    println!("| `RegistryCache::get` (1,001 tenants cached) | {get_ns:.0} |");
    println!(
        "| `Routing::check` on a hit (lookup + state check + `TenantId` clone) | {check_ns:.0} |"
    );
    println!("| the same with the version gate on (+ version comparison) | {gated_check_ns:.0} |");
    drop(pool);
    drop(routing);
    drop(gated);
}
