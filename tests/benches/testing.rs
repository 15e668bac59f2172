//! The test-support benchmark: what a test pays for its own tenant with
//! `workspace-diesel-test` (`TestDatabase::tenant`, claimed from the warm pool) and for giving it
//! back (the guard's drop), against provisioning the tenant in full (an empty warm pool), and
//! what a test database costs (`CREATE DATABASE`, the shared migrations, the warm pool filled).
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench testing               # full: 200 tenants per case
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench testing # quick: 50
//! ```
//!
//! Prints a markdown table of medians and 90th percentiles. Run without `--bench` (as
//! `cargo test --benches` does), it measures 10 tenants per case.

use std::time::{Duration, Instant};

use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::Migrator;
use diesel_workspace_test::TestDatabase;

use workspace_diesel_tests::bench::{median, Mode, Settings};

const SHARED: EmbeddedMigrations = embed_migrations!("../migrations_shared");
const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

/// Times `n` tenants taken from `db` and then `n` drops; returns (create, drop) samples.
fn tenants(db: &TestDatabase, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut created = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        held.push(db.tenant().expect("a test tenant"));
        created.push(start.elapsed());
    }
    let mut dropped = Vec::with_capacity(n);
    for tenant in held {
        let start = Instant::now();
        drop(tenant);
        dropped.push(start.elapsed());
    }
    (created, dropped)
}

fn main() {
    let settings = Settings::from_env((1, 10), (1, 50), (1, 200));
    let n = settings.iters;
    workspace_diesel_tests::db::admin_url();
    if std::env::var("DATABASE_URL").is_err() {
        std::env::set_var("DATABASE_URL", workspace_diesel_tests::db::LOCAL_SERVER);
    }
    let migrator = Migrator::builder(TENANT).shared(SHARED).build().unwrap();

    let mut database = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let db = TestDatabase::builder(&migrator)
            .label("bench_db")
            .spares(0)
            .create()
            .unwrap();
        database.push(start.elapsed());
        drop(db);
    }

    let start = Instant::now();
    let warm = TestDatabase::builder(&migrator)
        .label("bench_warm")
        .spares(n)
        .create()
        .unwrap();
    let fill = start.elapsed();
    // One connection opened and one tenant taken and given back before measuring.
    drop(warm.tenant_named("warm_up").unwrap());
    let spares_left = n - 1;
    let (mut claim, mut claim_drop) = tenants(&warm, spares_left);
    drop(warm);

    let cold = TestDatabase::builder(&migrator)
        .label("bench_cold")
        .spares(0)
        .create()
        .unwrap();
    drop(cold.tenant_named("warm_up").unwrap());
    let (mut full, mut full_drop) = tenants(&cold, n.min(60));
    drop(cold);

    println!(
        "test support benchmark, {} ({n} tenants per case)\n",
        settings.mode
    );
    println!("| case | median | p90 | target |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| new tenant for a test, from the warm pool (`TestDatabase::tenant`, {} samples) | {} | {} | ≤ 5 ms median |",
        claim.len(),
        ms(median(&mut claim)),
        ms(p90(&mut claim)),
    );
    println!(
        "| its drop (the guard: `drop_tenant`) | {} | {} | — |",
        ms(median(&mut claim_drop)),
        ms(p90(&mut claim_drop)),
    );
    println!(
        "| new tenant provisioned in full (empty warm pool, {} samples) | {} | {} | — |",
        full.len(),
        ms(median(&mut full)),
        ms(p90(&mut full)),
    );
    println!(
        "| its drop | {} | {} | — |",
        ms(median(&mut full_drop)),
        ms(p90(&mut full_drop)),
    );
    println!(
        "| new test database (create, registry and shared migrations, no spares; median of 3) | {} | — | — |",
        ms(median(&mut database)),
    );
    println!(
        "| filling its warm pool with {n} spares (per spare) | {} | — | — |",
        ms(fill / n as u32),
    );
    let claim_median = median(&mut claim);
    if settings.mode != Mode::Smoke && claim_median > Duration::from_millis(5) {
        println!(
            "\nmissed: a test tenant's median {} is over 5 ms",
            ms(claim_median)
        );
    }
}
