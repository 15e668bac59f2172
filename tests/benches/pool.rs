//! The pool benchmark: what a checkout of a `TenantPool` costs against a stock Diesel r2d2 pool,
//! and how much server memory a cached tenant statement holds.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench pool              # full run
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench pool  # a few seconds
//! ```
//!
//! The benchmark creates its own database `dw_bench_pool` (dropped `WITH (FORCE)` at the end) and
//! provisions 16 tenants (one note each) plus `STATEMENT_TENANTS` empty ones. Each checkout case
//! is one checkout followed by one tenant query (`notes` by id, tenants in turn) on a pool of one
//! connection, single-threaded:
//!
//! - `stock ping`: `Pool<ConnectionManager<PgConnection>>` with `test_on_check_out(true)`
//!   (Diesel's `SELECT 1` on every checkout), the usual Diesel setup;
//! - `tenant reset`: `diesel_workspace::pool` (the reset batch on every checkout);
//! - `tenant, no cleanup`: the same with `session_cleanup(false)` (session defaults only);
//! - `stock, no check`: the stock pool with `test_on_check_out(false)`, no round trip at checkout
//!   (the floor).
//!
//! The cases run in alternating blocks (the order rotates every round) and the median block is
//! reported, because the machine is shared and noisy. The memory case touches `STATEMENT_TENANTS`
//! tenants on one pooled connection and reads the backend's plan-cache memory from
//! `pg_backend_memory_contexts` (PostgreSQL 14+) before and after.
//!
//! Settings (environment): `BENCH_QUICK=1` for few iterations; `BENCH_ROUNDS` and `BENCH_ITERS`
//! to override. Run without `--bench` (as `cargo test --benches` does), it only smoke-tests.

use std::hint::black_box;
use std::time::Instant;

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::BigInt;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{pool, switch, Migrator, TenantId};

use workspace_diesel_tests::bench::{median, Settings};
use workspace_diesel_tests::ScratchDb;

const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/tenant");
const DB_NAME: &str = "bench_pool";
const TENANTS: usize = 16;
/// Tenants touched by the memory case (16 in the smoke test).
const STATEMENT_TENANTS: usize = 256;

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

fn provision(conn: &mut PgConnection, n: usize, prefix: &str) -> Vec<TenantId> {
    let migrator = Migrator::builder(TENANT_MIGRATIONS).build().unwrap();
    migrator.run_shared(conn).expect("shared migrations");
    (0..n)
        .map(|k| {
            let id = TenantId::new(format!("{prefix}{k}")).expect("valid tenant id");
            migrator.create_tenant(conn, &id).expect("create tenant");
            id
        })
        .collect()
}

fn read(conn: &mut PgConnection, t: &TenantId) -> String {
    switch(t, || {
        notes::table
            .filter(notes::id.eq(1))
            .select(notes::title)
            .first::<String>(conn)
    })
    .expect("tenant query")
}

/// Plan-cache memory of the connection's backend, in bytes.
fn plan_cache_bytes(conn: &mut PgConnection) -> i64 {
    diesel::select(diesel::dsl::sql::<BigInt>(
        "(SELECT coalesce(sum(total_bytes), 0)::int8 FROM pg_catalog.pg_backend_memory_contexts \
          WHERE name IN ('CachedPlanSource', 'CachedPlanQuery', 'CachedPlan'))",
    ))
    .get_result(conn)
    .expect("read pg_backend_memory_contexts")
}

fn prepared(conn: &mut PgConnection) -> i64 {
    diesel::select(diesel::dsl::sql::<BigInt>(
        "(SELECT count(*) FROM pg_catalog.pg_prepared_statements)",
    ))
    .get_result(conn)
    .expect("count prepared statements")
}

fn main() {
    let s = Settings::from_env((1, 20), (3, 500), (11, 4000));
    let statement_tenants = if s.mode == workspace_diesel_tests::bench::Mode::Smoke {
        TENANTS
    } else {
        STATEMENT_TENANTS
    };
    let db = ScratchDb::create(DB_NAME);
    let mut admin = PgConnection::establish(db.url()).expect("connect to the benchmark database");
    let ids = provision(&mut admin, TENANTS, "t");
    for t in &ids {
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(notes::title.eq(t.as_str()))
                .execute(&mut admin)
        })
        .expect("seed");
    }

    let stock_ping = Pool::builder()
        .max_size(1)
        .test_on_check_out(true)
        .build(ConnectionManager::<PgConnection>::new(db.url().to_owned()))
        .expect("stock pool");
    let stock_free = Pool::builder()
        .max_size(1)
        .test_on_check_out(false)
        .build(ConnectionManager::<PgConnection>::new(db.url().to_owned()))
        .expect("stock pool");
    let tenant = pool::builder()
        .max_size(1)
        .statement_cap(usize::MAX)
        .build(db.url().to_owned())
        .expect("tenant pool");
    let tenant_lean = pool::builder()
        .max_size(1)
        .statement_cap(usize::MAX)
        .session_cleanup(false)
        .build(db.url().to_owned())
        .expect("tenant pool without cleanup");

    // Warm every statement cache.
    for t in &ids {
        black_box(read(&mut stock_ping.get().unwrap(), t));
        black_box(read(&mut stock_free.get().unwrap(), t));
        black_box(read(&mut tenant.get().unwrap(), t));
        black_box(read(&mut tenant_lean.get().unwrap(), t));
    }

    type Case<'a> = (&'a str, Box<dyn Fn(&TenantId) -> String + 'a>);
    let cases: Vec<Case<'_>> = vec![
        (
            "stock ping",
            Box::new(|t| read(&mut stock_ping.get().unwrap(), t)),
        ),
        (
            "tenant reset",
            Box::new(|t| read(&mut tenant.get().unwrap(), t)),
        ),
        (
            "tenant, no cleanup",
            Box::new(|t| read(&mut tenant_lean.get().unwrap(), t)),
        ),
        (
            "stock, no check",
            Box::new(|t| read(&mut stock_free.get().unwrap(), t)),
        ),
    ];
    let mut blocks = vec![Vec::new(); cases.len()];
    for round in 0..s.rounds {
        for k in 0..cases.len() {
            let c = (k + round) % cases.len();
            let start = Instant::now();
            for i in 0..s.iters {
                black_box((cases[c].1)(&ids[i % TENANTS]));
            }
            blocks[c].push(start.elapsed().as_secs_f64() * 1e6 / s.iters as f64);
        }
    }
    println!(
        "pool benchmark, {} ({} rounds x {} checkouts; one tenant query per checkout)",
        s.mode, s.rounds, s.iters
    );
    let base = median(&mut blocks[0].clone());
    for (c, (name, _)) in cases.iter().enumerate() {
        let m = median(&mut blocks[c].clone());
        println!(
            "  {name:<20} {m:8.1} us per checkout + query   ratio to stock ping {:.2}",
            m / base
        );
    }

    // Server memory per cached tenant statement.
    let more = provision(&mut admin, statement_tenants, "m");
    let mut conn = tenant.get().unwrap();
    let (bytes0, stmts0) = (plan_cache_bytes(&mut conn), prepared(&mut conn));
    for t in &more {
        let n: i64 = switch(t, || notes::table.count().get_result(&mut conn)).expect("count");
        black_box(n);
    }
    let (bytes1, stmts1) = (plan_cache_bytes(&mut conn), prepared(&mut conn));
    let added = (stmts1 - stmts0).max(1);
    println!(
        "  plan cache: {added} statements (one per tenant) added {:.1} KiB to the backend, \
         {:.1} KiB each",
        (bytes1 - bytes0) as f64 / 1024.0,
        (bytes1 - bytes0) as f64 / 1024.0 / added as f64
    );
}
