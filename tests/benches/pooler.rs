//! The pooler benchmark: routed tenant queries behind a real PgBouncer (transaction pooling, a
//! child process on a free loopback port, 2 server connections) in pooler mode, against stock
//! Diesel with its statement cache off through the same PgBouncer, and against the default mode on
//! a direct connection.
//!
//! ```text
//! cargo bench -p workspace-diesel-tests --bench pooler              # full run
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench pooler  # a few seconds
//! ```
//!
//! Cases (single thread; `notes` by id; the routed cases take the 16 tenants in turn):
//!
//! - `stock, cache off, PgBouncer`: a plain `PgConnection` through PgBouncer with
//!   `CacheSize::Disabled`, the table declared with `table!` and a fixed schema (the floor);
//! - `pooler mode, PgBouncer`: one connection checked out of a `TenantPool` in
//!   `Pooler::Transaction` mode, through the same PgBouncer;
//! - `default mode, direct`: one connection checked out of a default `TenantPool` on the server
//!   itself (statement cache on);
//! - the same three with a checkout per query (`stock` then being Diesel's own r2d2 pool with its
//!   `SELECT 1` ping, direct), to show what the per-checkout reset costs in each mode.
//!
//! The cases run in alternating blocks (the order rotates every round); the median block is
//! reported. Settings: `BENCH_QUICK=1`, `BENCH_ROUNDS`, `BENCH_ITERS`. Without `--bench` (as
//! `cargo test --benches` runs it) it only smoke-tests.

use std::hint::black_box;
use std::time::{Duration, Instant};

use diesel::connection::{CacheSize, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel_workspace::{pool, pooler::Pooler, switch, TenantId};

use workspace_diesel_tests::bench::{median, Settings};
use workspace_diesel_tests::pgbouncer::{Config, PgBouncer};
use workspace_diesel_tests::{ScratchDb, TENANT_MIGRATIONS};

const TENANTS: usize = 16;

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

mod fixed {
    diesel::table! {
        b0.notes (id) {
            id -> Int4,
            title -> Text,
        }
    }
}

fn routed(conn: &mut PgConnection, t: &TenantId) -> String {
    switch(t, || {
        notes::table
            .filter(notes::id.eq(1))
            .select(notes::title)
            .first::<String>(conn)
    })
    .expect("routed query")
}

fn stock(conn: &mut PgConnection) -> String {
    fixed::notes::table
        .filter(fixed::notes::id.eq(1))
        .select(fixed::notes::title)
        .first::<String>(conn)
        .expect("stock query")
}

type Case<'a> = (&'static str, Box<dyn FnMut(usize) + 'a>);

fn main() {
    let s = Settings::from_env((2, 20), (5, 500), (11, 3_000));
    let db = ScratchDb::create("bench_pooler");
    let mut admin = PgConnection::establish(db.url()).expect("connect");
    let migrator = diesel_workspace::Migrator::builder(TENANT_MIGRATIONS)
        .build()
        .expect("migrator");
    migrator.run_shared(&mut admin).expect("shared migrations");
    let ids: Vec<TenantId> = (0..TENANTS)
        .map(|k| {
            let id = TenantId::new(format!("b{k}")).expect("tenant id");
            migrator
                .create_tenant(&mut admin, &id)
                .expect("create tenant");
            admin
                .batch_execute(&format!(
                    "INSERT INTO {}.notes (title) VALUES ('{id}')",
                    id.quoted()
                ))
                .expect("seed");
            id
        })
        .collect();
    let bouncer = PgBouncer::start(Config::transaction(2));
    let through = bouncer.url(db.url());

    let mut stock_conn = PgConnection::establish(&through).expect("through PgBouncer");
    stock_conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    let pooler_pool = pool::builder()
        .pooler(Pooler::Transaction)
        .max_size(1)
        .build(through.clone())
        .expect("pooler-mode pool");
    let direct_pool = pool::builder()
        .max_size(1)
        .build(db.url())
        .expect("default pool");
    let stock_pool: Pool<ConnectionManager<PgConnection>> = Pool::builder()
        .max_size(1)
        .test_on_check_out(true)
        .build(ConnectionManager::new(db.url()))
        .expect("stock pool");

    let mut pooler_held = pooler_pool.get().expect("checkout");
    let mut direct_held = direct_pool.get().expect("checkout");
    let ids_ref = &ids;
    let mut cases: Vec<Case<'_>> = vec![
        (
            "stock Diesel, cache off, PgBouncer",
            Box::new(|_| {
                black_box(stock(&mut stock_conn));
            }),
        ),
        (
            "pooler mode, PgBouncer",
            Box::new(|i| {
                black_box(routed(&mut pooler_held, &ids_ref[i % TENANTS]));
            }),
        ),
        (
            "default mode, direct",
            Box::new(|i| {
                black_box(routed(&mut direct_held, &ids_ref[i % TENANTS]));
            }),
        ),
    ];
    let per_query = measure(&s, &mut cases);
    drop(cases);
    drop((pooler_held, direct_held));

    let mut checkout_cases: Vec<Case<'_>> = vec![
        (
            "stock Diesel r2d2 pool (ping), direct",
            Box::new(|_| {
                let mut c = stock_pool.get().expect("checkout");
                black_box(stock(&mut c));
            }),
        ),
        (
            "pooler mode, PgBouncer",
            Box::new(|i| {
                let mut c = pooler_pool.get().expect("checkout");
                black_box(routed(&mut c, &ids_ref[i % TENANTS]));
            }),
        ),
        (
            "default mode, direct",
            Box::new(|i| {
                let mut c = direct_pool.get().expect("checkout");
                black_box(routed(&mut c, &ids_ref[i % TENANTS]));
            }),
        ),
    ];
    let per_checkout = measure(&s, &mut checkout_cases);
    drop(checkout_cases);

    // The backend check the default mode adds to its checkout reset: one more statement in the
    // same batch (the same round trip), measured on its own against the batch without it.
    let mut plain = PgConnection::establish(db.url()).expect("connect");
    let pid: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
        "pg_catalog.pg_backend_pid()",
    ))
    .get_result(&mut plain)
    .expect("pid");
    // The default reset (session_cleanup on) as the pool sends it, without and with the check
    // folded into its first statement.
    let tail = "CLOSE ALL; UNLISTEN *; SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; \
                DISCARD TEMP; SET search_path TO \"public\"; SET application_name TO E'bench'; \
                RESET statement_timeout; RESET lock_timeout; \
                SET idle_in_transaction_session_timeout TO 600000";
    let reset = format!("SELECT pg_catalog.pg_advisory_unlock_all(); {tail}");
    let reset = reset.as_str();
    let checked = format!(
        "SELECT CASE WHEN pg_catalog.pg_backend_pid() = {pid} THEN 0 \
         ELSE pg_catalog.concat('changed ', pg_catalog.pg_backend_pid())::pg_catalog.int4 END, \
         pg_catalog.pg_advisory_unlock_all(); {tail}"
    );
    let plain = std::cell::RefCell::new(plain);
    let mut check_cases: Vec<Case<'_>> = vec![
        (
            "checkout reset (default)",
            Box::new(|_| plain.borrow_mut().batch_execute(reset).expect("reset")),
        ),
        (
            "the same with the backend check folded in",
            Box::new(|_| plain.borrow_mut().batch_execute(&checked).expect("reset")),
        ),
    ];
    let per_check = measure(&s, &mut check_cases);
    drop(check_cases);

    println!(
        "\npooler benchmark ({}; {} rounds × {} iterations, median block; PgBouncer {}, transaction pooling, 2 server connections)\n",
        s.mode,
        s.rounds,
        s.iters,
        pgbouncer_version()
    );
    println!("| case | per query | vs stock, cache off, PgBouncer | vs default mode, direct |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, d) in &per_query {
        println!(
            "| {name} | {} | {:.2}× | {:.2}× |",
            fmt(*d),
            ratio(*d, per_query[0].1),
            ratio(*d, per_query[2].1)
        );
    }
    println!(
        "\n| checkout + query | per checkout | vs stock pool, direct | vs default mode, direct |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (name, d) in &per_checkout {
        println!(
            "| {name} | {} | {:.2}× | {:.2}× |",
            fmt(*d),
            ratio(*d, per_checkout[0].1),
            ratio(*d, per_checkout[2].1)
        );
    }
    println!("\n| reset batch, direct | per batch | ratio |");
    println!("| --- | ---: | ---: |");
    for (name, d) in &per_check {
        println!(
            "| {name} | {} | {:.2}× |",
            fmt(*d),
            ratio(*d, per_check[0].1)
        );
    }
    println!(
        "\ntarget: pooler mode ≤ 1.05× stock Diesel with the cache off through the same PgBouncer: {:.2}×",
        ratio(per_query[1].1, per_query[0].1)
    );
    drop((pooler_pool, direct_pool, stock_pool, stock_conn, admin));
}

fn measure(s: &Settings, cases: &mut [Case<'_>]) -> Vec<(&'static str, Duration)> {
    let n = cases.len();
    let mut samples = vec![Vec::with_capacity(s.rounds); n];
    for (_, f) in cases.iter_mut() {
        for i in 0..s.iters.min(50) {
            f(i); // warm up
        }
    }
    for round in 0..s.rounds {
        for k in 0..n {
            let c = (k + round) % n;
            let f = &mut cases[c].1;
            let start = Instant::now();
            for i in 0..s.iters {
                f(i);
            }
            samples[c].push(start.elapsed() / s.iters as u32);
        }
    }
    cases
        .iter()
        .zip(samples.iter_mut())
        .map(|((name, _), v)| (*name, median(v)))
        .collect()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn fmt(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn pgbouncer_version() -> String {
    std::process::Command::new(workspace_diesel_tests::pgbouncer::binary())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.lines()
                .next()
                .map(|l| l.trim_start_matches("PgBouncer ").to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}
