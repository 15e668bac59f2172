//! The fleet-run benchmark: one additive migration over a fleet, run as a deploy runs it (a
//! selection, waves with a failure budget, the run recorded) against the plain `migrate_all`
//! (every tenant, one stage, no record), alternating which goes first, the median of the rounds.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench fleet               # full run (1,000 tenants)
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench fleet # a short run (100 tenants)
//! ```
//!
//! The benchmark creates its own database `dw_bench_fleet` (dropped at the end) and prints a
//! markdown table. Target: the deploy-style run at most 1.1× the plain one.

use std::time::{Duration, Instant};

use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{
    Budget, FailurePolicy, MigrateOptions, Migrator, Selection, TenantId, Wave,
};

use workspace_diesel_tests::bench::median;
use workspace_diesel_tests::ScratchDb;

/// The example schema plus the additive migration.
const ADDITIVE: EmbeddedMigrations = embed_migrations!("migrations/additive");

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

fn main() {
    let full =
        std::env::args().any(|a| a == "--bench") && std::env::var_os("BENCH_QUICK").is_none();
    let (fleet, rounds) = if full { (1000, 3) } else { (100, 2) };
    let db = ScratchDb::create("bench_fleet");
    let url = db.url().to_owned();
    let mut conn = PgConnection::establish(&url).expect("connect to the benchmark database");
    let before = Migrator::builder(Prefix(ADDITIVE, 1)).build().unwrap();
    let after = Migrator::builder(ADDITIVE).build().unwrap();
    before.run_shared(&mut conn).expect("registry migrations");
    let tenants: Vec<TenantId> = (0..fleet)
        .map(|i| TenantId::new(format!("t_{i:04}")).unwrap())
        .collect();
    before
        .create_tenants(&url, &tenants, &MigrateOptions::default())
        .expect("the fleet");

    let plain = MigrateOptions::default().record(false);
    let deploy = MigrateOptions::default()
        .on_failure(FailurePolicy::Continue)
        .waves([
            Wave::Tenants(vec![tenants[0].clone()]),
            Wave::Percent(10),
            Wave::Rest,
        ])
        .failure_budget(Budget::Count(0));
    let selection = Selection::all()
        .pattern("t_*")
        .unwrap()
        .except([TenantId::new("t_none").unwrap()]);
    let run_plain = || {
        let start = Instant::now();
        let report = after.migrate_all(&url, &plain).expect("plain migrate_all");
        assert_eq!(report.applied().count(), fleet);
        start.elapsed()
    };
    let run_deploy = || {
        let start = Instant::now();
        let report = after
            .migrate_selected(&url, &selection, &deploy)
            .expect("deploy-style run");
        assert_eq!(report.applied().count(), fleet);
        assert!(report.run.is_some());
        start.elapsed()
    };
    let revert = || {
        after
            .revert_last_all(&url, &plain)
            .expect("revert the additive migration");
    };
    let (mut plains, mut deploys) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            plains.push(run_plain());
            revert();
            deploys.push(run_deploy());
        } else {
            deploys.push(run_deploy());
            revert();
            plains.push(run_plain());
        }
        revert();
    }
    drop(conn);
    drop(db);
    let (p, d) = (median(&mut plains), median(&mut deploys));
    println!();
    println!("| case | time | per tenant | ratio | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    let row = |case: &str, t: Duration, ratio: String, target: &str| {
        println!(
            "| {case} | {:.0} ms | {:.3} ms | {ratio} | {target} |",
            ms(t),
            ms(t) / fleet as f64
        );
    };
    row(
        &format!("plain migrate_all, {fleet} tenants (median of {rounds})"),
        p,
        "1.00×".into(),
        "—",
    );
    row(
        &format!("selection + 3 waves + budget + run record, {fleet} tenants (median of {rounds})"),
        d,
        format!("{:.2}×", ms(d) / ms(p)),
        "≤ 1.1× plain",
    );
    println!();
    println!("({:?})", MigrateOptions::default());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
