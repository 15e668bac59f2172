//! The scale benchmark: what a request and the fleet commands cost at 10, 1,000 and 10,000
//! tenants in one database.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench scale                 # full run
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench scale   # fewer requests
//! BENCH_SCALE_SIZES=10,1000,50000 cargo bench -p workspace-diesel-tests --bench scale
//! BENCH_QUICK=1 BENCH_SCALE_SIZES=10,10000 BENCH_SCALE_ADDITIVE=0 \
//!     cargo bench -p workspace-diesel-tests --bench scale          # the ratios only
//! ```
//!
//! Two scratch databases for the run (`dwx_<pid>_<run>_bench_scale_base` and
//! `…_bench_scale`, dropped at the end). The first size of `BENCH_SCALE_SIZES` (default 10, then
//! 1,000 and 10,000; 10 and 40 in the smoke test) is the baseline, in a database of its own; the
//! other database grows to each larger size in turn. Tenants are provisioned with
//! `create_tenants` (the example schema: three tables, five indexes; two workers). At each larger
//! size:
//!
//! - **requests**, with 1 and with 4 threads, on a pool of 4 connections, under six policies:
//!   `default` (`pool::builder().max_size(4)` and nothing else: four shards of one connection,
//!   each tenant checked out with `get_for`, the default memory bound of 256 MiB read every
//!   1,024 check-ins, no statement cap), `cap` (the default pool before it was sharded: one
//!   plain r2d2 pool, the statement cap of 256, no memory bound), `memory` (one plain pool, no
//!   statement cap,
//!   a `backend_memory_limit` of 128 MiB checked every 32 check-ins), `affine` (an
//!   `AffinePool` of 4 shards of one connection: each tenant always served by the same backend;
//!   no statement cap, a `backend_memory_limit` of `BENCH_AFFINE_LIMIT_MIB`, default 256 MiB,
//!   checked every 32 check-ins), `rare` (the same, checked every 1,024 check-ins) and `spill`
//!   (as `affine`, taking another shard's idle connection rather than waiting). A
//!   request is one checkout, a switch to a tenant drawn at random from the whole fleet, and
//!   three routed queries (a row by id, the last ten rows, a count). Both pools (baseline and
//!   this size) are warmed first with every tenant once and a tenth of the measured requests;
//!   then the measured requests run in 10 blocks that alternate with the baseline's, so both
//!   see the same machine load. Per case: median and p99 of both and their ratios, how many new
//!   server connections the large pool opened per 10,000 requests (a statement cap or a memory
//!   limit recycles connections), and the memory of each of its backends afterwards (its own
//!   `pg_backend_memory_contexts`), the largest and the pool's sum; and where the slowest 1% of
//!   each side's requests spent their time: each request is timed in three phases (checkout,
//!   switch and queries, check-in) and marked cold when its connection prepared a statement (a
//!   tenant its backend had not served: a spill to another shard, or a recycled backend), so the
//!   table says how many of the slowest were cold, waited at checkout (the affinity wait) or at
//!   check-in (the pool's memory read), and how many of all requests checked in slowly;
//! - **`status`** (median of three calls) and **`migrate_all` with nothing pending**, per tenant;
//! - **an additive `migrate_all`** (`ALTER TABLE notes ADD COLUMN … DEFAULT`, one index) per
//!   tenant, then reverted (not measured), so the next step starts from the same schema
//!   (`BENCH_SCALE_ADDITIVE=0` skips it);
//! - **provisioning** per tenant (the step's `create_tenants`);
//! - with `BENCH_SCALE_COMMANDS=1`, **every fleet command once**, timed, in the library
//!   (`status`, `status_with_drift`, `list_tenants`, `catalog_size`, `audit`, `migrate_all`
//!   with nothing pending) and in the CLI (`status`, `status --format json`, `list_tenants`,
//!   `pending`, `migrate_all`; the binary is built first, in the bench's profile), each
//!   checked to succeed: `BENCH_SCALE_SIZES=10,50000 BENCH_SCALE_POLICIES=none
//!   BENCH_SCALE_ADDITIVE=0 BENCH_SCALE_COMMANDS=1` is the 50,000-tenant run.
//!
//! Settings: `BENCH_QUICK=1` (2,000 requests per case instead of 10,000), `BENCH_ITERS`
//! (requests per case), `BENCH_SCALE_SIZES`, `BENCH_SCALE_POLICIES` (a comma-separated subset of
//! `default,cap,memory,affine,rare,spill`; default `default,cap,rare`), `BENCH_AFFINE_LIMIT_MIB`,
//! `BENCH_SCALE_ADDITIVE`. Run without
//! `--bench` (as `cargo test --benches` does), it only smoke-tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{Migrator, TenantId};

use workspace_diesel_tests::bench::{env_usize, Mode, Settings};
use workspace_diesel_tests::ScratchDb;

#[path = "scale/fleet.rs"]
mod fleet;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/requests.rs"]
mod requests;

use fleet::{command_rows, fleet_row, provision, tenant_ids};
use report::{RequestRow, Tail};
use requests::{backend_memory, build_pool, percentile, run_requests, Sample};

const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/tenant");
const ADDITIVE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/additive");
const POOL_SIZE: u32 = 4;
/// The measured requests of a case run in this many blocks, alternating with the baseline's.
const BLOCKS: usize = 10;

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
    let requests = env_usize("BENCH_ITERS").unwrap_or(s.iters).max(BLOCKS * 4);
    let warm = (requests / 10).max(4);
    let policies =
        std::env::var("BENCH_SCALE_POLICIES").unwrap_or_else(|_| "default,cap,rare".into());
    let cases: Vec<(&'static str, usize)> = ["default", "cap", "memory", "affine", "rare", "spill"]
        .into_iter()
        .filter(|p| policies.split(',').any(|q| q.trim() == *p))
        .flat_map(|p| [(p, 1), (p, 4)])
        .collect();
    let affine_limit = env_usize("BENCH_AFFINE_LIMIT_MIB").unwrap_or(256) as u64 * (1 << 20);
    let migrator = Migrator::builder(TENANT_MIGRATIONS).build().unwrap();
    let additive = Migrator::builder(ADDITIVE_MIGRATIONS).build().unwrap();
    let sizes = sizes(s.mode);

    // The baseline fleet, in a database of its own, measured again beside every larger size.
    let base_db = ScratchDb::create("bench_scale_base");
    let mut base_admin = PgConnection::establish(base_db.url()).expect("connect");
    migrator
        .run_shared(&mut base_admin)
        .expect("shared migrations");
    let base_ids = tenant_ids(0..sizes[0]);
    let base_provision = provision(&migrator, base_db.url(), &base_ids);
    let mut fleet_rows = vec![fleet_row(
        base_db.url(),
        &mut base_admin,
        (&migrator, &additive),
        sizes[0],
        base_provision,
    )];

    let db = ScratchDb::create("bench_scale");
    let mut admin = PgConnection::establish(db.url()).expect("connect to the benchmark database");
    migrator.run_shared(&mut admin).expect("shared migrations");
    let mut ids: Vec<TenantId> = Vec::new();
    let mut request_rows = Vec::new();
    let mut commands = Vec::new();
    let run_commands = std::env::var("BENCH_SCALE_COMMANDS").as_deref() == Ok("1");
    for &size in &sizes[1..] {
        let new = tenant_ids(ids.len()..size);
        let provision = provision(&migrator, db.url(), &new);
        ids.extend(new);

        for &(policy, threads) in &cases {
            let base_opened = Arc::new(AtomicUsize::new(0));
            let opened = Arc::new(AtomicUsize::new(0));
            let base_pool = build_pool(policy, base_db.url(), &base_opened, affine_limit);
            let pool = build_pool(policy, db.url(), &opened, affine_limit);
            // Warm: every tenant once, then a tenth of the measured requests.
            for (p, fleet) in [(&base_pool, &base_ids), (&pool, &ids)] {
                run_requests(p, fleet, threads, 0, true);
                run_requests(p, fleet, threads, warm, false);
            }
            // Interleaved blocks: the baseline and this size see the same machine load.
            let before = opened.load(Ordering::Relaxed);
            let (mut base_samples, mut samples) = (Vec::new(), Vec::new());
            for _ in 0..BLOCKS {
                base_samples.extend(run_requests(
                    &base_pool,
                    &base_ids,
                    threads,
                    requests / BLOCKS,
                    false,
                ));
                samples.extend(run_requests(&pool, &ids, threads, requests / BLOCKS, false));
            }
            let opened_now = opened.load(Ordering::Relaxed) - before;
            let total = |s: &[Sample]| {
                let mut d: Vec<_> = s.iter().map(|s| s.total).collect();
                d.sort();
                d
            };
            let (base_lat, lat) = (total(&base_samples), total(&samples));
            let memory = backend_memory(&pool);
            request_rows.push(RequestRow {
                policy,
                tenants: size,
                threads,
                base_p50: percentile(&base_lat, 0.50),
                base_p99: percentile(&base_lat, 0.99),
                p50: percentile(&lat, 0.50),
                p99: percentile(&lat, 0.99),
                opened_per_10k: opened_now as f64 * 10_000.0 / lat.len() as f64,
                max_backend: memory.iter().copied().max().unwrap_or(0),
                pool_sum: memory.iter().sum(),
                tails: [Tail::of(&base_samples), Tail::of(&samples)],
            });
        }
        fleet_rows.push(fleet_row(
            db.url(),
            &mut admin,
            (&migrator, &additive),
            size,
            provision,
        ));
        if run_commands {
            commands.extend(command_rows(db.url(), &mut admin, &migrator, size));
        }
    }

    println!(
        "scale benchmark, {} ({requests} requests per case and fleet, in {BLOCKS} interleaved \
         blocks; pool of {POOL_SIZE}; request = checkout + switch to a random tenant + 3 queries; \
         baseline: {} tenants)",
        s.mode, sizes[0]
    );
    report::print(&request_rows, &fleet_rows, &commands);
}
