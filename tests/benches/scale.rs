//! The scale benchmark: what a request and the fleet commands cost at 10, 1,000 and 10,000
//! tenants in one database.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench scale                 # full run
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench scale   # fewer requests
//! BENCH_SCALE_SIZES=10,1000,50000 cargo bench -p workspace-diesel-tests --bench scale
//! ```
//!
//! One scratch database for the run (`dwx_<pid>_<run>_bench_scale`, dropped at the end). The
//! fleet grows in steps (`BENCH_SCALE_SIZES`, default 10, 1,000, 10,000; 10 and 40 in the smoke
//! test): each step provisions the new tenants with `create_tenants` (the example schema: three
//! tables, five indexes; two workers), then measures, in this order:
//!
//! - **requests**, with 1 and with 4 threads on a `TenantPool` of 4 connections, under two
//!   recycling policies: `cap` (the default statement cap of 256) and `memory` (no statement cap,
//!   a `backend_memory_limit` of 128 MiB checked every 32 check-ins): a request
//!   is one checkout, a switch to a tenant drawn at random from the whole fleet, and three routed
//!   queries (a row by id, the last ten rows, a count). Per request: median and p99 latency; per
//!   case: how many new server connections the pool opened per 10,000 requests (the statement cap
//!   recycles connections), and the memory of each pooled backend afterwards (its own
//!   `pg_backend_memory_contexts`), the largest and the pool's sum;
//! - **`status`** (median of three calls) and **`migrate_all` with nothing pending**, per tenant;
//! - **an additive `migrate_all`** (`ALTER TABLE notes ADD COLUMN … DEFAULT`, one index) per
//!   tenant, then reverted (not measured), so the next step starts from the same schema;
//! - **provisioning** per tenant (the step's `create_tenants`).
//!
//! The ratios compare each size with the first, measured in the same run. Settings:
//! `BENCH_QUICK=1` (2,000 requests per case instead of 10,000), `BENCH_ITERS` (requests per
//! case), `BENCH_SCALE_SIZES`. Run without `--bench` (as `cargo test --benches` does), it only
//! smoke-tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::pool::TenantPool;
use diesel_workspace::{pool, switch, MigrateOptions, Migrator, TenantId};

use workspace_diesel_tests::bench::{env_usize, Mode, Settings};
use workspace_diesel_tests::ScratchDb;

const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/tenant");
const ADDITIVE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/additive");
const POOL_SIZE: u32 = 4;
/// The `memory` policy's `backend_memory_limit`: 128 MiB per backend.
const MEMORY_LIMIT: u64 = 128 << 20;

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

/// Counts the connections the pool opens.
#[derive(Debug, Default)]
struct Opened(Arc<AtomicUsize>);

impl r2d2::HandleEvent for Opened {
    fn handle_acquire(&self, _: r2d2::event::AcquireEvent) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A small deterministic generator (xorshift), one per thread.
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn request(pool: &TenantPool, tenant: &TenantId) {
    let mut conn = pool.get().expect("checkout");
    switch(tenant, || -> QueryResult<()> {
        notes::table
            .filter(notes::id.eq(1))
            .select(notes::title)
            .first::<String>(&mut conn)
            .optional()?;
        notes::table
            .order(notes::id.desc())
            .limit(10)
            .select(notes::title)
            .load::<String>(&mut conn)?;
        notes::table.count().get_result::<i64>(&mut conn)?;
        Ok(())
    })
    .expect("tenant queries");
}

/// Per-request latencies of `requests` requests over `threads` threads.
fn run_requests(
    pool: &TenantPool,
    ids: &[TenantId],
    threads: usize,
    requests: usize,
) -> Vec<Duration> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || {
                    let mut draw = Draw(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1));
                    (0..requests / threads)
                        .map(|_| {
                            let t = &ids[draw.below(ids.len())];
                            let start = Instant::now();
                            request(pool, t);
                            start.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a request thread"))
            .collect()
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// The memory of each pooled connection's backend, in bytes (all checked out at once).
fn backend_memory(pool: &TenantPool) -> Vec<i64> {
    let mut held: Vec<_> = (0..POOL_SIZE)
        .map(|_| pool.get().expect("checkout"))
        .collect();
    held.iter_mut()
        .map(|conn| {
            diesel::select(diesel::dsl::sql::<BigInt>(
                "(SELECT sum(total_bytes)::int8 FROM pg_catalog.pg_backend_memory_contexts)",
            ))
            .get_result::<i64>(&mut **conn)
            .expect("read pg_backend_memory_contexts")
        })
        .collect()
}

struct RequestRow {
    policy: &'static str,
    tenants: usize,
    threads: usize,
    p50: f64,
    p99: f64,
    opened_per_10k: f64,
    max_backend: i64,
    pool_sum: i64,
}

struct FleetRow {
    tenants: usize,
    status: f64,
    idle_migrate: f64,
    additive: f64,
    provision: f64,
}

fn per_tenant_ms(d: Duration, tenants: usize) -> f64 {
    d.as_secs_f64() * 1e3 / tenants as f64
}

fn sizes(mode: Mode) -> Vec<usize> {
    if let Ok(list) = std::env::var("BENCH_SCALE_SIZES") {
        let parsed: Vec<usize> = list
            .split(',')
            .map(|s| s.trim().parse().expect("BENCH_SCALE_SIZES: numbers"))
            .collect();
        assert!(parsed.windows(2).all(|w| w[0] < w[1]), "sizes grow");
        return parsed;
    }
    match mode {
        Mode::Smoke => vec![10, 40],
        Mode::Quick | Mode::Full => vec![10, 1_000, 10_000],
    }
}

fn main() {
    let s = Settings::from_env((1, 40), (1, 2_000), (1, 10_000));
    let requests = env_usize("BENCH_ITERS").unwrap_or(s.iters).max(4);
    let warm = (requests / 10).max(4);
    let db = ScratchDb::create("bench_scale");
    let mut admin = PgConnection::establish(db.url()).expect("connect to the benchmark database");
    let migrator = Migrator::builder(TENANT_MIGRATIONS).build().unwrap();
    let additive = Migrator::builder(ADDITIVE_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut admin).expect("shared migrations");
    let opts = MigrateOptions::default().parallel(2);

    let mut ids: Vec<TenantId> = Vec::new();
    let mut request_rows = Vec::new();
    let mut fleet_rows = Vec::new();
    for size in sizes(s.mode) {
        let new: Vec<TenantId> = (ids.len()..size)
            .map(|k| TenantId::new(format!("t{k:06}")).unwrap())
            .collect();
        let start = Instant::now();
        let report = migrator
            .create_tenants(db.url(), &new, &opts)
            .expect("create tenants");
        assert!(report.is_success(), "{}", report.failure_summary());
        let provision = per_tenant_ms(start.elapsed(), new.len());
        ids.extend(new);

        for (policy, threads) in [("cap", 1), ("cap", 4), ("memory", 1), ("memory", 4)] {
            let opened = Arc::new(AtomicUsize::new(0));
            let counter = Opened(opened.clone());
            let builder = pool::builder()
                .max_size(POOL_SIZE)
                .r2d2(move |b| b.event_handler(Box::new(counter)));
            // `memory`: no statement cap, the backend's memory bounds each connection instead.
            let builder = match policy {
                "memory" => builder
                    .statement_cap(usize::MAX)
                    .backend_memory_limit(Some(MEMORY_LIMIT)),
                _ => builder,
            };
            let pool = builder.build(db.url()).expect("tenant pool");
            run_requests(&pool, &ids, threads, warm);
            let before = opened.load(Ordering::Relaxed);
            let mut lat = run_requests(&pool, &ids, threads, requests);
            let opened_now = opened.load(Ordering::Relaxed) - before;
            lat.sort();
            let memory = backend_memory(&pool);
            request_rows.push(RequestRow {
                policy,
                tenants: size,
                threads,
                p50: percentile(&lat, 0.50),
                p99: percentile(&lat, 0.99),
                opened_per_10k: opened_now as f64 * 10_000.0 / lat.len() as f64,
                max_backend: memory.iter().copied().max().unwrap_or(0),
                pool_sum: memory.iter().sum(),
            });
        }

        let mut status = (0..3)
            .map(|_| {
                let start = Instant::now();
                assert_eq!(migrator.status(&mut admin).expect("status").len(), size);
                start.elapsed()
            })
            .collect::<Vec<_>>();
        status.sort();
        let start = Instant::now();
        let idle = migrator.migrate_all(db.url(), &opts).expect("migrate_all");
        let idle_migrate = per_tenant_ms(start.elapsed(), size);
        assert_eq!(idle.up_to_date().count(), size);
        let start = Instant::now();
        let applied = additive.migrate_all(db.url(), &opts).expect("additive");
        let additive_ms = per_tenant_ms(start.elapsed(), size);
        assert_eq!(applied.applied().count(), size);
        let reverted = additive.revert_last_all(db.url(), &opts).expect("revert");
        assert!(reverted.is_success(), "{}", reverted.failure_summary());
        fleet_rows.push(FleetRow {
            tenants: size,
            status: per_tenant_ms(status[1], size),
            idle_migrate,
            additive: additive_ms,
            provision,
        });
    }

    println!(
        "scale benchmark, {} ({requests} requests per case; pool of {POOL_SIZE}; \
         request = checkout + switch to a random tenant + 3 queries)",
        s.mode
    );
    println!(
        "  {:>7} {:>7} {:>7} {:>10} {:>10} {:>9} {:>9} {:>15} {:>12} {:>10}",
        "policy",
        "tenants",
        "threads",
        "p50 us",
        "p99 us",
        "p50 x",
        "p99 x",
        "reconnects/10k",
        "backend MiB",
        "pool MiB"
    );
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    for r in &request_rows {
        let base = request_rows
            .iter()
            .find(|b| b.threads == r.threads && b.policy == r.policy)
            .expect("the first size");
        println!(
            "  {:>7} {:>7} {:>7} {:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>15.0} {:>12.1} {:>10.1}",
            r.policy,
            r.tenants,
            r.threads,
            r.p50,
            r.p99,
            r.p50 / base.p50,
            r.p99 / base.p99,
            r.opened_per_10k,
            mib(r.max_backend),
            mib(r.pool_sum)
        );
    }
    println!(
        "  {:>7} {:>18} {:>22} {:>20} {:>20}",
        "tenants",
        "status ms/tenant",
        "idle migrate ms/tenant",
        "additive ms/tenant",
        "create ms/tenant"
    );
    for f in &fleet_rows {
        println!(
            "  {:>7} {:>18.4} {:>22.4} {:>20.3} {:>20.3}",
            f.tenants, f.status, f.idle_migrate, f.additive, f.provision
        );
    }
}
