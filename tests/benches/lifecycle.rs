//! The life-cycle benchmark: provisioning, bulk provisioning, fleet migration (pending and
//! nothing pending) and warm-pool creation, each against a floor measured in the same run: the
//! same DDL sent as plain SQL over one connection (`BEGIN; CREATE SCHEMA …; SET LOCAL
//! search_path …; <up.sql>; COMMIT`), with no registry, ledger, central record or lock.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel --bench lifecycle               # full run (1,000 tenants)
//! BENCH_QUICK=1 cargo bench -p workspace-diesel --bench lifecycle # a short run (CI)
//! ```
//!
//! The benchmark creates its own database `dw_bench_lifecycle` (dropped `WITH (FORCE)` at the
//! end) and uses the example schema (`migrations_tenant/`, three tables and five indexes) plus
//! an additive migration (`notes.priority INTEGER NOT NULL DEFAULT 0` and an index on it,
//! `tests/migrations_additive/`). It prints a markdown table. Run without `--bench` (as
//! `cargo test --benches` does), it runs the quick sizes.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{MigrateOptions, Migrator, TenantId};

use workspace_diesel_tests::bench::median;
use workspace_diesel_tests::ScratchDb;

/// The example schema plus the additive migration.
const ADDITIVE: EmbeddedMigrations = embed_migrations!("migrations/additive");
/// The example schema's SQL, for the floor.
const CREATE_SQL: &str =
    include_str!("../migrations/additive/2026-01-01-000001_create_notes/up.sql");
/// The additive migration's `down.sql`, to run the floor again.
const ADDITIVE_DOWN: &str =
    include_str!("../migrations/additive/2026-03-01-000001_add_priority/down.sql");
/// The additive migration's SQL, for the floor.
const ADDITIVE_SQL: &str =
    include_str!("../migrations/additive/2026-03-01-000001_add_priority/up.sql");
/// The benchmark's own database.
const DB_NAME: &str = "bench_lifecycle";

/// The first `n` migrations of a source.
struct Prefix<S>(S, usize);

impl<S: MigrationSource<Pg>> MigrationSource<Pg> for Prefix<S> {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        let mut all = self.0.migrations()?;
        all.sort_by(|a, b| a.name().version().cmp(&b.name().version()));
        all.truncate(self.1);
        Ok(all)
    }
}

struct Sizes {
    provision: usize,
    bulk: usize,
    small_fleet: usize,
    idle_runs: usize,
    warm: usize,
    rounds: usize,
}

struct Row {
    case: String,
    ours: f64,
    floor: Option<f64>,
    unit: &'static str,
    target: &'static str,
}

fn main() {
    let full =
        std::env::args().any(|a| a == "--bench") && std::env::var_os("BENCH_QUICK").is_none();
    let sizes = if full {
        Sizes {
            provision: 60,
            bulk: 1000,
            small_fleet: 100,
            idle_runs: 15,
            warm: 60,
            rounds: 3,
        }
    } else {
        Sizes {
            provision: 10,
            bulk: 100,
            small_fleet: 20,
            idle_runs: 5,
            warm: 10,
            rounds: 2,
        }
    };
    let db = ScratchDb::create(DB_NAME);
    let rows = run(db.url(), &sizes);
    drop(db);

    println!();
    println!("| case | workspace-diesel | floor (plain SQL, one connection) | ratio | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for r in rows {
        let (floor, ratio) = match r.floor {
            Some(f) => (format!("{f:.3} {}", r.unit), format!("{:.2}×", r.ours / f)),
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {} | {:.3} {} | {} | {} | {} |",
            r.case, r.ours, r.unit, floor, ratio, r.target
        );
    }
    println!();
    println!(
        "({} CPUs; {:?})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        MigrateOptions::default()
    );
}

fn run(url: &str, sizes: &Sizes) -> Vec<Row> {
    let mut conn = PgConnection::establish(url).expect("connect to the benchmark database");
    let before = Migrator::builder(Prefix(ADDITIVE, 1)).build().unwrap();
    let after = Migrator::builder(ADDITIVE).build().unwrap();
    before.run_shared(&mut conn).expect("registry migrations");
    let mut rows = Vec::new();
    let opts = MigrateOptions::default();

    // 1. Provision one tenant: create_tenant vs the same DDL in one batch, interleaved.
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for i in 0..sizes.provision {
        let t = TenantId::new(format!("p{i:04}")).unwrap();
        let start = Instant::now();
        before.create_tenant(&mut conn, &t).expect("create_tenant");
        ours.push(start.elapsed());
        let start = Instant::now();
        floor_create(&mut conn, &format!("fp{i:04}"));
        floor.push(start.elapsed());
    }
    rows.push(Row {
        case: "provision one tenant (median)".into(),
        ours: ms(median(&mut ours)),
        floor: Some(ms(median(&mut floor))),
        unit: "ms",
        target: "≤ 1.2× floor",
    });
    drop_all(&mut conn, "fp");
    for t in &ids("p", sizes.provision) {
        before.drop_tenant(&mut conn, t).expect("drop a tenant");
    }

    // 2. Migrate-all, additive migration, small fleet; then with nothing pending.
    let small = ids("s", sizes.small_fleet);
    before
        .create_tenants(url, &small, &opts)
        .expect("provision the small fleet");
    for i in 0..sizes.small_fleet {
        floor_create(&mut conn, &format!("fs{i:04}"));
    }
    rows.extend(migrate_rows(
        &after,
        url,
        &mut conn,
        &opts,
        "fs",
        sizes.small_fleet,
        sizes.small_fleet,
        sizes.idle_runs,
        sizes.rounds,
    ));
    drop_all(&mut conn, "fs");
    for t in &small {
        after.drop_tenant(&mut conn, t).expect("drop a tenant");
    }

    // 3. Bulk provisioning: create_tenants (parallel workers) vs the same DDL, one connection.
    let start = Instant::now();
    for i in 0..sizes.bulk {
        floor_create(&mut conn, &format!("fb{i:04}"));
    }
    let floor_bulk = start.elapsed();
    let bulk = ids("b", sizes.bulk);
    let report = before
        .create_tenants(url, &bulk, &opts)
        .expect("bulk provisioning");
    rows.push(Row {
        case: format!("bulk-provision {} tenants (per tenant)", sizes.bulk),
        ours: ms(report.elapsed) / sizes.bulk as f64,
        floor: Some(ms(floor_bulk) / sizes.bulk as f64),
        unit: "ms",
        target: "≤ 1.2× floor",
    });
    let serial = ids("q", sizes.bulk / 4);
    let report = before
        .create_tenants(url, &serial, &opts.clone().parallel(1))
        .expect("bulk provisioning, one worker");
    rows.push(Row {
        case: format!(
            "bulk-provision {} tenants, parallel = 1 (per tenant)",
            serial.len()
        ),
        ours: ms(report.elapsed) / serial.len() as f64,
        floor: Some(ms(floor_bulk) / sizes.bulk as f64),
        unit: "ms",
        target: "—",
    });
    for t in &serial {
        before.drop_tenant(&mut conn, t).expect("drop a tenant");
    }

    // 4. Migrate-all over the bulk fleet.
    rows.extend(migrate_rows(
        &after,
        url,
        &mut conn,
        &opts,
        "fb",
        sizes.bulk,
        sizes.bulk,
        sizes.idle_runs,
        sizes.rounds,
    ));
    drop_all(&mut conn, "fb");

    // 5. Create from the warm pool vs a plain rename of a ready schema.
    after
        .fill_spares(&mut conn, sizes.warm)
        .expect("fill the warm pool");
    for i in 0..sizes.warm {
        floor_create(&mut conn, &format!("fw{i:04}"));
    }
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for i in 0..sizes.warm {
        let t = TenantId::new(format!("w{i:04}")).unwrap();
        let start = Instant::now();
        after.create_tenant(&mut conn, &t).expect("warm create");
        ours.push(start.elapsed());
        let start = Instant::now();
        conn.batch_execute(&format!(
            "BEGIN; ALTER SCHEMA fw{i:04} RENAME TO fwr{i:04}; COMMIT"
        ))
        .unwrap();
        floor.push(start.elapsed());
    }
    assert!(
        after.spares(&mut conn).unwrap().is_empty(),
        "every create claimed a spare"
    );
    rows.push(Row {
        case: "create tenant from the warm pool (median; floor: ALTER SCHEMA RENAME)".into(),
        ours: ms(median(&mut ours)),
        floor: Some(ms(median(&mut floor))),
        unit: "ms",
        target: "≤ 3 ms",
    });
    rows
}

/// Migrate-all with one additive migration pending on `pending` tenants (out of `fleet`), then
/// with nothing pending; floors: the same DDL over schemas `<floor_prefix>NNNN`, one connection.
#[allow(clippy::too_many_arguments)]
fn migrate_rows(
    after: &Migrator,
    url: &str,
    conn: &mut PgConnection,
    opts: &MigrateOptions,
    floor_prefix: &str,
    pending: usize,
    fleet: usize,
    idle_runs: usize,
    rounds: usize,
) -> Vec<Row> {
    // Rounds of apply (both sides, alternating which goes first) then revert (down.sql on both
    // sides, not timed); the medians of the rounds are reported, as the machine is shared.
    let floor_apply = |conn: &mut PgConnection| {
        let start = Instant::now();
        for i in 0..pending {
            conn.batch_execute(&format!(
                "BEGIN; SET LOCAL search_path TO {floor_prefix}{i:04}; {ADDITIVE_SQL}; COMMIT"
            ))
            .expect("floor migration");
        }
        start.elapsed()
    };
    let ours_apply = || {
        let start = Instant::now();
        let report = after.migrate_all(url, opts).expect("migrate_all");
        assert_eq!(report.applied().count(), pending);
        start.elapsed()
    };
    let mut floors = Vec::new();
    let mut ourses = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            for i in 0..pending {
                conn.batch_execute(&format!(
                    "BEGIN; SET LOCAL search_path TO {floor_prefix}{i:04}; {ADDITIVE_DOWN}; COMMIT"
                ))
                .expect("floor revert");
            }
            after
                .revert_last_all(url, opts)
                .expect("revert the additive migration");
        }
        if round % 2 == 0 {
            floors.push(floor_apply(conn));
            ourses.push(ours_apply());
        } else {
            ourses.push(ours_apply());
            floors.push(floor_apply(conn));
        }
    }
    let floor = median(&mut floors);
    let ours = median(&mut ourses);
    let mut idle = Vec::new();
    let mut idle_open = Vec::new();
    for _ in 0..idle_runs {
        let start = Instant::now();
        let report = after
            .migrate_all(url, opts)
            .expect("migrate_all, nothing pending");
        idle.push(start.elapsed());
        assert_eq!(report.up_to_date().count(), fleet);
        let start = Instant::now();
        let report = after
            .migrate_all_with(conn, url, opts)
            .expect("migrate_all_with, nothing pending");
        idle_open.push(start.elapsed());
        assert_eq!(report.up_to_date().count(), fleet);
    }
    vec![
        Row {
            case: format!(
                "migrate-all, additive migration, {pending} tenants (per tenant, median of {rounds} rounds)"
            ),
            ours: ms(ours) / pending as f64,
            floor: Some(ms(floor) / pending as f64),
            unit: "ms",
            target: "≤ 1.2× floor",
        },
        Row {
            case: format!(
                "migrate-all, nothing pending, {fleet} tenants (per tenant, median of {idle_runs}, \
                 connection included)"
            ),
            ours: ms(median(&mut idle)) / fleet as f64,
            floor: None,
            unit: "ms",
            target: "≤ 0.05 ms",
        },
        Row {
            case: format!(
                "migrate-all, nothing pending, {fleet} tenants (per tenant, median of {idle_runs}, \
                 `migrate_all_with` an open connection)"
            ),
            ours: ms(median(&mut idle_open)) / fleet as f64,
            floor: None,
            unit: "ms",
            target: "≤ 0.05 ms",
        },
    ]
}

/// The floor of provisioning: the same DDL in one batch, no bookkeeping.
fn floor_create(conn: &mut PgConnection, schema: &str) {
    conn.batch_execute(&format!(
        "BEGIN; CREATE SCHEMA {schema}; SET LOCAL search_path TO {schema}; {CREATE_SQL}; COMMIT"
    ))
    .expect("floor provisioning");
}

fn drop_all(conn: &mut PgConnection, prefix: &str) {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let names: Vec<Name> = diesel::sql_query(format!(
        "SELECT nspname::text AS name FROM pg_namespace WHERE nspname LIKE '{prefix}%'"
    ))
    .load(conn)
    .unwrap();
    for n in names {
        conn.batch_execute(&format!("DROP SCHEMA {} CASCADE", n.name))
            .unwrap();
    }
}

fn ids(prefix: &str, n: usize) -> Vec<TenantId> {
    (0..n)
        .map(|i| TenantId::new(format!("{prefix}{i:04}")).unwrap())
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
