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

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use tower_service::Service;

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
            assert_eq!(&body[..], common::BODY.as_bytes());
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
    let (db, _migrator, mut conn, pool) = common::fixture("bench_web_instr");
    let runtime = common::runtime();
    let routing = common::routing(&pool).build();
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("trigger");
    let _listener = routing.cache().listen(db.url()).expect("listen");
    let mut app = common::app(&routing, &pool);
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
