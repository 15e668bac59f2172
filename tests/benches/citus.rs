//! The scale-out benchmark, on the Citus cluster of `../shared/citus` (coordinator on
//! 127.0.0.1:9700, two workers), in a database of its own on every node:
//!
//! 1. a routed query (`tenant_table!` under `switch`) against stock Diesel with the schema
//!    hard-coded in `table!` (`acme.notes`), same connection, interleaved blocks;
//! 2. provisioning one tenant (`create_tenant`: a distributed schema, every table distributed,
//!    checked) against the same DDL sent by hand (`BEGIN; SET LOCAL
//!    citus.enable_schema_based_sharding = on; CREATE SCHEMA …; SET LOCAL search_path …;` the
//!    ledger, each statement of `up.sql`, `COMMIT`);
//! 3. migrate-all with an additive migration (a table, a column, an index, a foreign key) per
//!    tenant, one worker, against the same statements sent by hand per tenant on one connection.
//!
//! ```text
//! bash ../shared/citus/cluster.sh setup        # once
//! cargo bench -p workspace-diesel-tests --bench citus               # full run
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench citus # a short run
//! ```
//!
//! Without a cluster it says so and exits (fails under `WORKSPACE_DIESEL_REQUIRE_CITUS=1`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{statements::split_statements, switch, MigrateOptions, Migrator, TenantId};

use workspace_diesel_tests::bench::{median, Settings};
use workspace_diesel_tests::citus::CitusDb;
use workspace_diesel_tests::schema::notes;

/// The example schema plus the additive migration.
const ADDITIVE: EmbeddedMigrations = embed_migrations!("migrations/citus_additive");
const CREATE_SQL: &str =
    include_str!("../migrations/citus_additive/2026-01-01-000001_create_notes/up.sql");
const ADDITIVE_SQL: &str =
    include_str!("../migrations/citus_additive/2026-04-01-000001_add_labels/up.sql");
const LEDGER_SQL: &str = "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (\
     version VARCHAR(50) PRIMARY KEY NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)";

mod stock {
    diesel::table! {
        acme.notes (id) {
            id -> Int4,
            title -> Text,
        }
    }
}

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn by_hand(conn: &mut PgConnection, prelude: &str, sql: &str) {
    conn.batch_execute(prelude).expect("begin by hand");
    for s in split_statements(sql).expect("split") {
        conn.batch_execute(s.sql()).expect("a statement by hand");
    }
    conn.batch_execute("COMMIT").expect("commit by hand");
}

fn provision_by_hand(conn: &mut PgConnection, schema: &str) {
    by_hand(
        conn,
        &format!(
            "BEGIN; SET LOCAL citus.enable_schema_based_sharding = on; CREATE SCHEMA {schema}; \
             SET LOCAL search_path TO {schema}; {LEDGER_SQL}"
        ),
        CREATE_SQL,
    );
}

fn main() {
    let s = Settings::from_env((1, 20), (5, 300), (11, 2000));
    let sizes = match s.mode {
        workspace_diesel_tests::bench::Mode::Smoke => (2, 2),
        workspace_diesel_tests::bench::Mode::Quick => (6, 6),
        workspace_diesel_tests::bench::Mode::Full => (20, 20),
    };
    let Some(db) = CitusDb::create("benches::citus") else {
        return;
    };
    eprintln!("Citus benchmark ({}), database {}", s.mode, db.name());
    let mut conn = db.conn();
    let before = Migrator::builder(Prefix(ADDITIVE, 1))
        .build()
        .expect("migrations");
    let after = Migrator::builder(ADDITIVE).build().expect("migrations");
    before.run_shared(&mut conn).expect("shared migrations");

    // 1. Routed query vs the schema hard-coded.
    let acme = TenantId::new("acme").unwrap();
    before.create_tenant(&mut conn, &acme).expect("create acme");
    let values: Vec<_> = (0..100).map(|i| notes::title.eq(format!("n{i}"))).collect();
    switch(&acme, || {
        diesel::insert_into(notes::table)
            .values(&values)
            .execute(&mut conn)
    })
    .expect("notes");
    let mut conn = db.conn();
    let mut raw = Vec::new();
    let mut routed = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..s.rounds {
        let start = Instant::now();
        for i in 0..s.iters {
            let t: String = stock::notes::table
                .filter(stock::notes::id.eq(1 + (i % 100) as i32))
                .select(stock::notes::title)
                .first(&mut conn)
                .expect("stock query");
            black_box(t);
        }
        let r = start.elapsed().as_secs_f64() * 1e6 / s.iters as f64;
        let start = Instant::now();
        switch(&acme, || {
            for i in 0..s.iters {
                let t: String = notes::table
                    .filter(notes::id.eq(1 + (i % 100) as i32))
                    .select(notes::title)
                    .first(&mut conn)
                    .expect("routed query");
                black_box(t);
            }
        });
        let w = start.elapsed().as_secs_f64() * 1e6 / s.iters as f64;
        raw.push(r);
        routed.push(w);
        ratios.push(w / r);
    }
    let (raw_us, routed_us, ratio) = (median(&mut raw), median(&mut routed), median(&mut ratios));

    // 2. Provisioning one tenant, interleaved with the same DDL by hand.
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for i in 0..sizes.0 {
        let t = TenantId::new(format!("p{i:03}")).unwrap();
        let start = Instant::now();
        before.create_tenant(&mut conn, &t).expect("create_tenant");
        ours.push(start.elapsed());
        let start = Instant::now();
        provision_by_hand(&mut conn, &format!("fp{i:03}"));
        floor.push(start.elapsed());
    }
    let (prov_ours, prov_floor) = (ms(median(&mut ours)), ms(median(&mut floor)));

    // 3. Additive migrate-all per tenant (one worker) vs by hand on one connection.
    let fleet: Vec<TenantId> = (0..sizes.1)
        .map(|i| TenantId::new(format!("m{i:03}")).unwrap())
        .collect();
    for t in &fleet {
        before
            .create_tenant(&mut conn, t)
            .expect("create a fleet tenant");
    }
    let hand: Vec<String> = (0..sizes.1).map(|i| format!("fm{i:03}")).collect();
    for h in &hand {
        provision_by_hand(&mut conn, h);
    }
    let report = after
        .migrate_all(db.url(), &MigrateOptions::default().parallel(1))
        .expect("migrate_all");
    // Every tenant made by `before` is migrated: the fleet above, acme and the provisioned ones.
    let migrated = report.applied().count();
    assert_eq!(migrated, sizes.1 + sizes.0 + 1);
    let mig_ours = ms(report.elapsed) / migrated as f64;
    let start = Instant::now();
    for h in &hand {
        by_hand(
            &mut conn,
            &format!("BEGIN; SET LOCAL search_path TO {h}"),
            ADDITIVE_SQL,
        );
    }
    let mig_floor = ms(start.elapsed()) / sizes.1 as f64;

    println!();
    println!(
        "Citus: coordinator + {} workers, {} rounds × {} queries, {} tenants provisioned, {} migrated (by hand: {})",
        db.workers().len(),
        s.rounds,
        s.iters,
        sizes.0,
        migrated,
        sizes.1
    );
    println!();
    println!("| case | workspace-diesel | by hand | ratio | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| `SELECT title FROM notes WHERE id = $1` (routed vs `acme.notes` hard-coded) | {routed_us:.1} µs | {raw_us:.1} µs | {ratio:.3}× | ≤ 1.05× |"
    );
    println!(
        "| provision one tenant (median of {}) | {prov_ours:.2} ms | {prov_floor:.2} ms | {:.2}× | ≤ 1.2× |",
        sizes.0,
        prov_ours / prov_floor
    );
    println!(
        "| migrate-all, additive (table, column, index, foreign key), per tenant, 1 worker | {mig_ours:.2} ms | {mig_floor:.2} ms | {:.2}× | ≤ 1.2× |",
        mig_ours / mig_floor
    );
}
