//! The snapshot benchmark: what `--snapshot` costs a fleet run. Two fleets of the same tenants
//! (each seeded with the same rows: 5 categories, 3 tags, 400 notes with a 200-byte body) are
//! migrated by `migrate_selected` with one destructive migration (`notes.body` dropped,
//! `tests/migrations/destructive/`), one without snapshots and one with, with 1 worker and with
//! 2; then a sample of the snapshotted tenants is restored.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench snapshots               # 100 tenants per fleet
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench snapshots # 20 tenants per fleet
//! ```
//!
//! It creates its own scratch database (dropped at the end) and prints a markdown table: each
//! run's wall-clock time, its time per tenant, the snapshot's cost per tenant (the difference to
//! the run without) and the ratio; then the snapshots' size and the median restore time. Run
//! without `--bench` (as `cargo test --benches` does), it runs 3 tenants per fleet.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{MigrateOptions, Migrator, Selection, TenantId};

use workspace_diesel_tests::bench::{median, Settings};
use workspace_diesel_tests::ScratchDb;

/// The example schema alone: the fleet's version before the run.
const BEFORE: EmbeddedMigrations = embed_migrations!("migrations/tenant");
/// The example schema, then `notes.body` dropped.
const AFTER: EmbeddedMigrations = embed_migrations!("migrations/destructive");

fn seed_sql(schema: &str) -> String {
    format!(
        "INSERT INTO \"{schema}\".categories (name) SELECT 'category ' || i FROM generate_series(1, 5) i; \
         INSERT INTO \"{schema}\".tags (label) SELECT 'tag ' || i FROM generate_series(1, 3) i; \
         INSERT INTO \"{schema}\".notes (category_id, tag_id, title, body) \
         SELECT 1 + i % 5, 1 + i % 3, 'note ' || i, repeat('text ', 40) FROM generate_series(1, 400) i; "
    )
}

fn main() {
    let settings = Settings::from_env((1, 3), (1, 20), (1, 100));
    let n = settings.iters;
    let db = ScratchDb::create("bench_snapshots");
    let before = Migrator::builder(BEFORE).build().expect("the example set");
    let after = Migrator::builder(AFTER)
        .build()
        .expect("the destructive set");
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    before.run_shared(&mut conn).expect("shared migrations");
    // (label, workers, snapshot): each fleet its own tenants, all alike.
    let runs = [
        ("plain1", 1, false),
        ("snap1", 1, true),
        ("plain2", 2, false),
        ("snap2", 2, true),
    ];
    for (label, ..) in runs {
        for i in 0..n {
            let t = TenantId::new(format!("{label}_{i:04}")).unwrap();
            before.create_tenant(&mut conn, &t).unwrap();
            conn.batch_execute(&format!("BEGIN; {}COMMIT", seed_sql(t.as_str())))
                .unwrap();
        }
    }
    conn.batch_execute("VACUUM ANALYZE").unwrap();
    let mut timed = Vec::new();
    for (label, workers, snapshot) in runs {
        let selection = Selection::all()
            .pattern(&format!("{label}_*"))
            .expect("a pattern");
        let mut opts = MigrateOptions::default().parallel(workers).record(false);
        if snapshot {
            opts = opts.snapshot(Duration::from_secs(3600));
        }
        let started = Instant::now();
        let report = after
            .migrate_selected(db.url(), &selection, &opts)
            .expect("the run");
        let elapsed = started.elapsed();
        assert_eq!(
            report.applied().count(),
            n,
            "{label}: every tenant migrated"
        );
        timed.push((label, workers, snapshot, elapsed));
    }
    let snapshots = after.snapshots(&mut conn, None).unwrap();
    assert_eq!(
        snapshots.len(),
        2 * n,
        "one snapshot per tenant of the runs with it"
    );
    let mut sizes: Vec<f64> = snapshots.iter().map(|s| s.size_bytes as f64).collect();
    let size = median(&mut sizes);
    let sample = n.min(10);
    let mut restores: Vec<Duration> = snapshots
        .iter()
        .take(sample)
        .map(|s| {
            let started = Instant::now();
            after.restore_snapshot(&mut conn, &s.name).unwrap();
            started.elapsed()
        })
        .collect();
    let restore = median(&mut restores);
    drop(conn);
    drop(db);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!(
        "snapshot benchmark ({}): {n} tenants per fleet run (5 + 3 + 400 rows each), one \
         destructive migration",
        settings.mode
    );
    println!();
    println!(
        "| run | workers | wall-clock s | ms per tenant | snapshot cost, ms per tenant | vs without |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (label, workers, snapshot, elapsed) in &timed {
        let per = ms(*elapsed) / n as f64;
        let plain = timed
            .iter()
            .find(|(_, w, s, _)| w == workers && !s)
            .map(|(.., e)| ms(*e) / n as f64)
            .unwrap_or(per);
        let run = if *snapshot {
            "with --snapshot"
        } else {
            "without"
        };
        println!(
            "| {run} ({label}) | {workers} | {:.2} | {per:.1} | {:.1} | {:.2}× |",
            elapsed.as_secs_f64(),
            per - plain,
            per / plain
        );
    }
    println!();
    println!(
        "snapshot size: median {:.1} KiB per tenant; restore: median {:.1} ms per tenant \
         ({sample} restored)",
        size / 1024.0,
        ms(restore)
    );
}
