//! The cross-tenant read benchmark: the same count over every tenant, as a fan-out
//! (`fanout::fan_out`, a tenant transaction per tenant on a pool of 4, 4 at a time) and as one
//! query on the reporting view (`reporting`, a `UNION ALL` over every tenant), and what the view
//! costs as the fleet grows: its planning time, its rebuild (what each create, drop or rename pays
//! at commit).
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench across               # 500, 1,000 and 5,000 tenants
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench across # 500 and 1,000
//! BENCH_ACROSS_SIZES=5000 cargo bench -p workspace-diesel-tests --bench across # other sizes
//! BENCH_ACROSS_SIZES=5000 BENCH_ACROSS_ROUNDS=1 cargo bench -p workspace-diesel-tests --bench across
//! ```
//!
//! `BENCH_ACROSS_ROUNDS` sets the rounds (default 7, 3 without `--bench`): at 5,000 tenants one
//! read of the view takes minutes where the server's lock table lets it run at all
//! (`max_locks_per_transaction` raised; on default settings it fails and is reported).
//!
//! One table per tenant (`tests/migrations/scale`), 3 rows each. Medians of the rounds. Run
//! without `--bench` (as `cargo test --benches` does), it measures 20 and 50 tenants.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_workspace::fanout::fan_out;
use diesel_workspace::{reporting, MigrateOptions, Migrator, TenantId};

use workspace_diesel_tests::bench::{median, Mode};
use workspace_diesel_tests::{ScratchDb, SCALE_MIGRATIONS};

#[derive(QueryableByName, Debug)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Times `f` `rounds` times; the median.
fn time(rounds: usize, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    median(&mut samples)
}

/// The planning time EXPLAIN reports for `sql`, in ms (median of `rounds`).
fn planning(conn: &mut PgConnection, sql: &str, rounds: usize) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let lines = diesel::sql_query(format!("EXPLAIN (SUMMARY) {sql}"))
                .load::<Line>(conn)
                .unwrap();
            lines
                .iter()
                .find_map(|l| l.line.trim().strip_prefix("Planning Time: "))
                .and_then(|v| v.trim_end_matches(" ms").parse().ok())
                .expect("a planning time")
        })
        .collect();
    median(&mut samples)
}

fn main() {
    let mode = Mode::from_env();
    let sizes: Vec<usize> = match std::env::var("BENCH_ACROSS_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("a size"))
            .collect(),
        Err(_) => match mode {
            Mode::Smoke => vec![20, 50],
            Mode::Quick => vec![500, 1_000],
            Mode::Full => vec![500, 1_000, 5_000],
        },
    };
    let rounds = match std::env::var("BENCH_ACROSS_ROUNDS") {
        Ok(n) => n.trim().parse().expect("a number of rounds"),
        Err(_) if mode == Mode::Smoke => 3,
        Err(_) => 7,
    };
    println!("cross-tenant read benchmark, {mode}\n");
    println!("| tenants | fan-out, count per tenant (parallel 4) | one query on the view | view planning time | view rebuild (per create/drop/rename) |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for size in sizes {
        let db = ScratchDb::create(&format!("bench_across_{size}"));
        let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
        let mut conn = PgConnection::establish(db.url()).unwrap();
        migrator.run_shared(&mut conn).unwrap();
        let tenants: Vec<TenantId> = (0..size)
            .map(|i| TenantId::new(format!("t{i:05}")).unwrap())
            .collect();
        migrator
            .create_tenants(db.url(), &tenants, &MigrateOptions::default().parallel(2))
            .unwrap_or_else(|e| panic!("{e}"));
        let inserts: String = tenants
            .iter()
            .map(|t| format!("INSERT INTO \"{t}\".items (title) VALUES ('a'), ('b'), ('c');"))
            .collect();
        conn.batch_execute(&inserts).unwrap();
        conn.batch_execute(
            "DROP ROLE IF EXISTS bench_across_reader; CREATE ROLE bench_across_reader",
        )
        .unwrap();
        reporting::install(&mut conn, "reporting", "bench_across_reader").unwrap();
        reporting::add_view(&mut conn, "reporting", "items", &["id", "title"]).unwrap();
        let expected = 3 * size as i64;

        let pool = diesel_workspace::pool::builder()
            .max_size(4)
            .build(db.url())
            .unwrap();
        let fan = time(rounds, || {
            let counts = fan_out(&pool, &tenants, 4, |c| {
                diesel::sql_query("SELECT count(*) AS n FROM items").load::<Count>(c)
            });
            let total: i64 = counts.complete().unwrap().iter().map(|(_, c)| c.n).sum();
            assert_eq!(total, expected);
        });
        let view_sql = "SELECT count(*) AS n FROM reporting.items";
        let rebuild = time(rounds.min(3), || reporting::refresh(&mut conn).unwrap());
        // One read of the view locks every tenant's table and index: past the server's lock
        // table (`max_locks_per_transaction` x connections) it fails, which is reported.
        match diesel::sql_query(view_sql).get_result::<Count>(&mut conn) {
            Ok(first) => {
                assert_eq!(first.n, expected);
                let view = time(rounds, || {
                    let n = diesel::sql_query(view_sql).get_result::<Count>(&mut conn);
                    assert_eq!(n.unwrap().n, expected);
                });
                let plan = planning(&mut conn, view_sql, rounds);
                println!(
                    "| {size} | {} | {} | {plan:.2} ms | {} |",
                    ms(fan),
                    ms(view),
                    ms(rebuild)
                );
            }
            Err(e) => println!(
                "| {size} | {} | fails: {e} | fails | {} |",
                ms(fan),
                ms(rebuild)
            ),
        }
        drop(pool);
        drop(conn);
        if let Ok(mut admin) = PgConnection::establish(&workspace_diesel_tests::admin_url()) {
            // Two statements: `DROP DATABASE` cannot share a transaction with another.
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                db.name()
            ));
            let _ = admin.batch_execute("DROP ROLE IF EXISTS bench_across_reader");
        }
    }
}
