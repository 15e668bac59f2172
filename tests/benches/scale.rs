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
//!   `pg_backend_memory_contexts`), the largest and the pool's sum;
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
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::affinity::AffinePool;
use diesel_workspace::pool::{ShardPool, TenantPool};
use diesel_workspace::{pool, switch, MigrateOptions, Migrator, TenantId};

use workspace_diesel_tests::bench::{env_usize, Mode, Settings};
use workspace_diesel_tests::cli::{copy_dir, repo_root, Workdir};
use workspace_diesel_tests::ScratchDb;

const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/tenant");
const ADDITIVE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/additive");
const POOL_SIZE: u32 = 4;
/// The `rare` policy's `memory_check_every`.
const RARE_CHECK: u32 = 1_024;
/// The measured requests of a case run in this many blocks, alternating with the baseline's.
const BLOCKS: usize = 10;
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

/// Where a request's connection comes from: a plain pool, or an affine pool by tenant.
#[derive(Clone)]
enum Pools {
    Plain(TenantPool),
    Affine(AffinePool),
}

impl Pools {
    fn get(&self, tenant: &TenantId) -> pool::TenantPooledConnection {
        match self {
            Pools::Plain(p) => p.get_for(tenant),
            Pools::Affine(p) => p.get_for(tenant),
        }
        .expect("checkout")
    }

    fn shards(&self) -> Vec<ShardPool> {
        match self {
            Pools::Plain(p) => p.shards().to_vec(),
            Pools::Affine(p) => p
                .shards()
                .iter()
                .flat_map(|t| t.shards().to_vec())
                .collect(),
        }
    }
}

fn request(pool: &Pools, tenant: &TenantId) {
    let mut conn = pool.get(tenant);
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

/// Per-request latencies of `requests` requests over `threads` threads, each to a tenant drawn
/// at random (`sweep`: instead, every tenant once, in a shuffled order, split over the threads).
fn run_requests(
    pool: &Pools,
    ids: &[TenantId],
    threads: usize,
    requests: usize,
    sweep: bool,
) -> Vec<Duration> {
    let order: Vec<usize> = if sweep {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        let mut draw = Draw(0x2545_F491_4F6C_DD1D);
        for i in (1..order.len()).rev() {
            order.swap(i, draw.below(i + 1));
        }
        order
    } else {
        Vec::new()
    };
    let order = &order;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || {
                    let mut draw = Draw(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1));
                    let picks: Vec<usize> = if sweep {
                        order.iter().copied().skip(k).step_by(threads).collect()
                    } else {
                        (0..requests / threads)
                            .map(|_| draw.below(ids.len()))
                            .collect()
                    };
                    picks
                        .into_iter()
                        .map(|i| {
                            let start = Instant::now();
                            request(pool, &ids[i]);
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

/// The memory of each pooled connection's backend, in bytes (each shard's connections all
/// checked out at once).
fn backend_memory(pool: &Pools) -> Vec<i64> {
    let mut out = Vec::new();
    for shard in pool.shards() {
        let mut held: Vec<_> = (0..shard.max_size())
            .map(|_| shard.get().expect("checkout"))
            .collect();
        out.extend(held.iter_mut().map(|conn| {
            diesel::select(diesel::dsl::sql::<BigInt>(
                "(SELECT sum(total_bytes)::int8 FROM pg_catalog.pg_backend_memory_contexts)",
            ))
            .get_result::<i64>(&mut **conn)
            .expect("read pg_backend_memory_contexts")
        }));
    }
    out
}

struct RequestRow {
    policy: &'static str,
    tenants: usize,
    threads: usize,
    base_p50: f64,
    base_p99: f64,
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
    additive: Option<f64>,
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

/// The pool of one policy on `url`, counting the connections it opens in `opened`.
fn build_pool(policy: &str, url: &str, opened: &Arc<AtomicUsize>, affine_limit: u64) -> Pools {
    let make = || {
        let opened = opened.clone();
        let builder =
            pool::builder().r2d2(move |b| b.event_handler(Box::new(Opened(opened.clone()))));
        match policy {
            "default" => builder.max_size(POOL_SIZE),
            // No statement cap: the backend's memory bounds each connection instead.
            "memory" => builder
                .max_size(POOL_SIZE)
                .shards(1)
                .statement_cap(usize::MAX)
                .backend_memory_limit(Some(MEMORY_LIMIT))
                .memory_check_every(32),
            "affine" | "spill" => builder
                .max_size(1)
                .statement_cap(usize::MAX)
                .backend_memory_limit(Some(affine_limit))
                .memory_check_every(32),
            // The memory read walks every memory context of a large backend: rarely.
            "rare" => builder
                .max_size(1)
                .statement_cap(usize::MAX)
                .backend_memory_limit(Some(affine_limit))
                .memory_check_every(RARE_CHECK),
            // The default pool before it was sharded.
            _ => builder
                .max_size(POOL_SIZE)
                .shards(1)
                .statement_cap(256)
                .backend_memory_limit(None),
        }
    };
    match policy {
        "affine" | "spill" | "rare" => Pools::Affine(
            AffinePool::build(POOL_SIZE as usize, url, make)
                .expect("affine pool")
                .spill(policy == "spill"),
        ),
        _ => Pools::Plain(make().build(url).expect("tenant pool")),
    }
}

/// `status` (median of three), `migrate_all` with nothing pending and (unless
/// `BENCH_SCALE_ADDITIVE=0`) an additive `migrate_all`, reverted after, per tenant.
fn fleet_row(
    url: &str,
    admin: &mut PgConnection,
    migrators: (&Migrator, &Migrator),
    size: usize,
    provision: f64,
) -> FleetRow {
    let (migrator, additive) = migrators;
    let opts = MigrateOptions::default().parallel(2);
    let mut status = (0..3)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(migrator.status(admin).expect("status").len(), size);
            start.elapsed()
        })
        .collect::<Vec<_>>();
    status.sort();
    let start = Instant::now();
    let idle = migrator.migrate_all(url, &opts).expect("migrate_all");
    let idle_migrate = per_tenant_ms(start.elapsed(), size);
    assert_eq!(idle.up_to_date().count(), size);
    let additive_ms = (std::env::var("BENCH_SCALE_ADDITIVE").as_deref() != Ok("0")).then(|| {
        let start = Instant::now();
        let applied = additive.migrate_all(url, &opts).expect("additive");
        let ms = per_tenant_ms(start.elapsed(), size);
        assert_eq!(applied.applied().count(), size);
        let reverted = additive.revert_last_all(url, &opts).expect("revert");
        assert!(reverted.is_success(), "{}", reverted.failure_summary());
        ms
    });
    FleetRow {
        tenants: size,
        status: per_tenant_ms(status[1], size),
        idle_migrate,
        additive: additive_ms,
        provision,
    }
}

/// One command of the fleet, timed: its name, the size, the time.
struct CommandRow {
    command: String,
    tenants: usize,
    took: Duration,
}

/// Every fleet command once on the `size` tenants of `url`, in the library and in the CLI, each
/// checked to succeed.
fn command_rows(
    url: &str,
    admin: &mut PgConnection,
    migrator: &Migrator,
    size: usize,
) -> Vec<CommandRow> {
    let mut rows = Vec::new();
    let mut time = |command: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        rows.push(CommandRow {
            command: command.to_owned(),
            tenants: size,
            took: start.elapsed(),
        });
    };
    time("library status", &mut || {
        assert_eq!(migrator.status(admin).expect("status").len(), size);
    });
    time("library status_with_drift", &mut || {
        let drifted = migrator.status_with_drift(admin).expect("drift");
        assert_eq!(drifted.len(), size);
        assert!(drifted.iter().all(|s| s.drift.is_none()));
    });
    time("library list_tenants", &mut || {
        assert_eq!(migrator.list_tenants(admin).expect("list").len(), size);
    });
    time("library catalog_size", &mut || {
        let catalog = migrator.catalog_size(admin).expect("catalog size");
        assert!(catalog.schemas >= size as i64, "{catalog:?}");
    });
    time("library audit", &mut || {
        migrator.audit(admin).expect("audit");
    });
    time("library migrate_all (nothing pending)", &mut || {
        let report = migrator
            .migrate_all(url, &MigrateOptions::default().parallel(2))
            .expect("migrate_all");
        assert_eq!(report.up_to_date().count(), size);
    });
    // The CLI on the benchmark's own tenant migrations.
    let w = Workdir::new();
    let tenant_dir = w.path().join("migrations_tenant");
    std::fs::remove_dir_all(&tenant_dir).expect("remove the example migrations");
    copy_dir(&repo_root().join("tests/migrations/tenant"), &tenant_dir);
    // The shared migrations of the CLI's directory are applied once, untimed.
    let setup = w.run_url(url, &["migrate_all"]);
    assert_eq!(setup.code, 0, "migrate_all: {}", setup.stderr);
    for args in [
        &["status"][..],
        &["status", "--format", "json"],
        &["list_tenants"],
        &["pending"],
        &["migrate_all"],
    ] {
        time(&format!("CLI {}", args.join(" ")), &mut || {
            let run = w.run_url(url, args);
            assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        });
    }
    rows
}

/// Creates the tenants `ids[from..]` in `url`; returns the cost per tenant.
fn provision(migrator: &Migrator, url: &str, ids: &[TenantId]) -> f64 {
    let start = Instant::now();
    let report = migrator
        .create_tenants(url, ids, &MigrateOptions::default().parallel(2))
        .expect("create tenants");
    assert!(report.is_success(), "{}", report.failure_summary());
    per_tenant_ms(start.elapsed(), ids.len())
}

fn tenant_ids(range: std::ops::Range<usize>) -> Vec<TenantId> {
    range
        .map(|k| TenantId::new(format!("t{k:06}")).unwrap())
        .collect()
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
            let (mut base_lat, mut lat) = (Vec::new(), Vec::new());
            for _ in 0..BLOCKS {
                base_lat.extend(run_requests(
                    &base_pool,
                    &base_ids,
                    threads,
                    requests / BLOCKS,
                    false,
                ));
                lat.extend(run_requests(&pool, &ids, threads, requests / BLOCKS, false));
            }
            let opened_now = opened.load(Ordering::Relaxed) - before;
            base_lat.sort();
            lat.sort();
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
    println!(
        "  {:>7} {:>7} {:>7} {:>11} {:>11} {:>10} {:>10} {:>7} {:>7} {:>15} {:>12} {:>10}",
        "policy",
        "tenants",
        "threads",
        "base p50 us",
        "base p99 us",
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
        println!(
            "  {:>7} {:>7} {:>7} {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>7.2} {:>7.2} {:>15.0} {:>12.1} {:>10.1}",
            r.policy,
            r.tenants,
            r.threads,
            r.base_p50,
            r.base_p99,
            r.p50,
            r.p99,
            r.p50 / r.base_p50,
            r.p99 / r.base_p99,
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
            "  {:>7} {:>18.4} {:>22.4} {:>20} {:>20.3}",
            f.tenants,
            f.status,
            f.idle_migrate,
            f.additive.map_or("-".to_owned(), |a| format!("{a:.3}")),
            f.provision
        );
    }
    if !commands.is_empty() {
        println!(
            "  {:<40} {:>7} {:>12} {:>12}",
            "command", "tenants", "ms", "ms/tenant"
        );
        for c in &commands {
            let ms = c.took.as_secs_f64() * 1e3;
            println!(
                "  {:<40} {:>7} {:>12.1} {:>12.4}",
                c.command,
                c.tenants,
                ms,
                ms / c.tenants as f64
            );
        }
    }
}
