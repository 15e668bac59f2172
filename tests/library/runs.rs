//! Fleet runs in waves with a failure budget, the record of every run, and reverting a run as
//! a whole (the tenants that moved on since left alone; a revert killed mid-way and rerun
//! converges, each version reverted once).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{
    Budget, Error, FailurePolicy, MigrateOptions, MigrationReport, TenantId, TenantOutcome, Wave,
};

use crate::fleet::{ledger_rows, migrator_for, Prefix, ADDITIVE, FLEET};

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn names(n: usize) -> Vec<TenantId> {
    (0..n).map(|i| id(&format!("t_{i:03}"))).collect()
}

/// Each tenant's ledger versions.
fn ledgers(conn: &mut PgConnection, tenants: &[TenantId]) -> Vec<(String, Vec<String>)> {
    let rows = ledger_rows(conn, tenants);
    tenants
        .iter()
        .map(|t| {
            let versions = rows
                .iter()
                .filter(|(n, _)| n == t.as_str())
                .map(|(_, v)| v.clone())
                .collect();
            (t.to_string(), versions)
        })
        .collect()
}

fn failed_report(result: diesel_workspace::Result<MigrationReport>) -> MigrationReport {
    match result {
        Err(Error::FleetMigration { report }) => report,
        other => panic!("expected a fleet failure, got {other:?}"),
    }
}

#[test]
fn waves_stop_when_the_failure_budget_is_spent() {
    let db = crate::test_db!("waves_stop_when_the_failure_budget_is_spent");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    let all = names(100);
    before
        .create_tenants(db.url(), &all, &MigrateOptions::default().parallel(2))
        .unwrap();
    // The release adds `notes.priority`: these three have it already, so it fails there.
    let failing = [id("t_005"), id("t_020"), id("t_030")];
    for t in &failing {
        conn.batch_execute(&format!(
            "ALTER TABLE {}.notes ADD COLUMN priority INTEGER",
            t.quoted()
        ))
        .unwrap();
    }
    let after = migrator_for(&mut conn, ADDITIVE);
    let waves = [
        Wave::Tenants(vec![id("t_000")]),
        Wave::Percent(10),
        Wave::Percent(25),
        Wave::Rest,
    ];
    let opts = |budget| {
        MigrateOptions::default()
            .parallel(2)
            .on_failure(FailurePolicy::Continue)
            .waves(waves.clone())
            .failure_budget(Budget::Count(budget))
    };
    // Budget 2: the third failure comes in the third wave (t_011..t_035); the rest never starts.
    let report = failed_report(after.migrate_all(db.url(), &opts(2)));
    assert!(report.stopped.is_some(), "{report:?}");
    let failed: BTreeSet<&TenantId> = report.failed().map(|(t, _, _)| t).collect();
    assert_eq!(failed, failing.iter().collect());
    for (t, outcome) in &report.tenants {
        let n: usize = t.as_str()[2..].parse().unwrap();
        match outcome {
            TenantOutcome::Applied(_) => assert!(n <= 35, "{t} ran"),
            TenantOutcome::Failed { sqlstate, .. } => {
                assert_eq!(sqlstate.as_deref(), Some("42701"), "{t}")
            }
            TenantOutcome::Skipped => assert!(n > 35, "{t} not started"),
            TenantOutcome::UpToDate => panic!("{t} had work"),
        }
    }
    assert_eq!(report.applied().count(), 33);
    assert_eq!(report.skipped().count(), 64);
    let untouched = ledgers(&mut conn, &all[36..]);
    assert!(untouched.iter().all(|(_, v)| v.len() == 1), "{untouched:?}");
    // The record says the same.
    let run = report.run.expect("recorded");
    let record = after.run_tenants(&mut conn, run).unwrap();
    assert_eq!(
        record.iter().filter(|t| t.outcome == "not_started").count(),
        64
    );
    assert_eq!(
        after.runs(&mut conn).unwrap()[0].outcome.as_deref(),
        Some("stopped")
    );

    // Budget 5: every wave starts; only the three fail.
    let report = failed_report(after.migrate_all(db.url(), &opts(5)));
    assert!(report.stopped.is_none(), "{report:?}");
    assert_eq!(report.failed().count(), 3);
    assert_eq!(report.skipped().count(), 0);
    assert_eq!(report.applied().count(), 64);
    let done = ledgers(&mut conn, &all);
    for (t, versions) in done {
        let expected = if failing.iter().any(|f| f.as_str() == t) {
            1
        } else {
            2
        };
        assert_eq!(versions.len(), expected, "{t}");
    }
}

/// Waits until no other backend of the database is running a statement.
fn wait_for_quiet(db: &workspace_diesel_tests::TestDb) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.check(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() \
         AND pid <> pg_catalog.pg_backend_pid() AND state <> 'idle')",
    ) {
        assert!(Instant::now() < deadline, "a backend is still busy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_run_is_recorded_and_reverted_as_a_whole() {
    let db = crate::test_db!("a_run_is_recorded_and_reverted_as_a_whole");
    let mut conn = db.conn();
    let v1 = migrator_for(&mut conn, Prefix(FLEET, 1));
    let all = names(100);
    v1.create_tenants(db.url(), &all, &MigrateOptions::default().parallel(2))
        .unwrap();
    let step = |n: usize| {
        ledgers(&mut db.conn(), &all[..1])[0]
            .1
            .clone()
            .get(n)
            .cloned()
    };
    let step_1 = step(0).unwrap();
    // Step 2 creates `step_2`: t_042 has one already, so the run fails there.
    conn.batch_execute("CREATE TABLE t_042.step_2 (id INTEGER)")
        .unwrap();
    let v2 = migrator_for(&mut conn, Prefix(FLEET, 2));
    let opts = MigrateOptions::default()
        .parallel(2)
        .on_failure(FailurePolicy::Continue);
    let report = failed_report(v2.migrate_all(db.url(), &opts));
    let run = report.run.expect("the run is recorded");
    let header = v2.runs(&mut conn).unwrap().remove(0);
    assert_eq!(header.id, run);
    assert_eq!(header.kind, "migrate");
    assert_eq!(header.selection, "all");
    assert_eq!(header.outcome.as_deref(), Some("failed"));
    assert_eq!(
        (header.tenants, header.changed, header.failed),
        (100, 99, 1)
    );
    let record = v2.run_tenants(&mut conn, run).unwrap();
    let broken = record.iter().find(|t| t.tenant == "t_042").unwrap();
    assert_eq!(broken.outcome, "failed");
    assert_eq!(broken.sqlstate.as_deref(), Some("42P07"));
    let step_2 = record[0].versions[0].clone();
    assert!(record
        .iter()
        .filter(|t| t.tenant != "t_042")
        .all(|t| t.before == [step_1.clone()]
            && t.versions == [step_2.clone()]
            && t.duration_ms.is_some()));

    // Five tenants move on by hand.
    let v3 = migrator_for(&mut conn, Prefix(FLEET, 3));
    for t in &all[..5] {
        v3.migrate_tenant(&mut conn, t).unwrap();
    }

    // The revert is killed while it waits behind a reader of t_050 (one worker, in name
    // order: t_049 is back by then).
    let mut reader = db.conn();
    reader
        .batch_execute("BEGIN; LOCK TABLE t_050.step_2 IN ACCESS SHARE MODE")
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_diesel_tests::cli::binary())
        .current_dir(cwd.path())
        .env("DATABASE_URL", db.url())
        .env_remove("RUST_LOG")
        .args([
            "revert_run",
            &run.to_string(),
            "--parallel",
            "1",
            "--lock-timeout",
            "60",
        ])
        .args([
            "--migrations-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/fleet"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledgers(&mut conn, &all[49..50])[0].1.len() != 1 {
        assert!(Instant::now() < deadline, "the revert never reached t_049");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the revert ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.batch_execute("ROLLBACK").unwrap();
    wait_for_quiet(&db);
    let back_before_rerun = ledgers(&mut conn, &all)
        .iter()
        .filter(|(t, v)| t != "t_042" && v.len() == 1)
        .count();
    // Killed mid-way: some tenants back, not all (a tenant retried after a lock timeout may come
    // back after t_049, so the count is not pinned to the name order).
    assert!(
        (1..94).contains(&back_before_rerun),
        "{back_before_rerun} back"
    );

    // The rerun converges: each of the 94 back once, the five and the failed one left alone.
    let report = v2.revert_run(db.url(), run, &opts).expect("the revert");
    assert_eq!(report.applied().count(), 94 - back_before_rerun);
    assert!(report.applied().all(|(_, v)| v == [step_2.clone()]));
    assert_eq!(report.up_to_date().count(), back_before_rerun);
    let mut held: Vec<(String, String)> = report
        .held
        .iter()
        .map(|(t, why)| (t.to_string(), why.clone()))
        .collect();
    held.sort();
    let mut expected: Vec<(String, String)> = (0..5)
        .map(|i| (format!("t_{i:03}"), format!("moved on since run {run}")))
        .collect();
    expected.push(("t_042".into(), format!("failed in run {run}")));
    expected.sort();
    assert_eq!(held, expected);
    for (t, versions) in ledgers(&mut conn, &all) {
        let n: usize = t[2..].parse().unwrap();
        let want = if n < 5 { 3 } else { 1 };
        assert_eq!(versions.len(), want, "{t}: {versions:?}");
    }
    // The revert is a run of its own; a rerun is a no-op.
    assert_eq!(v2.runs(&mut conn).unwrap()[0].reverts, Some(run));
    let again = v2.revert_run(db.url(), run, &opts).unwrap();
    assert_eq!(again.applied().count(), 0);
    assert_eq!(again.up_to_date().count(), 94);
    assert_eq!(again.held.len(), 6);
    // A revert cannot be reverted, nor can a run that does not exist.
    let revert_id = again.run.unwrap();
    assert!(matches!(
        v2.revert_run(db.url(), revert_id, &opts),
        Err(Error::RunNotRevertible { .. })
    ));
    assert!(matches!(
        v2.revert_run(db.url(), 999_999, &opts),
        Err(Error::RunNotFound(999_999))
    ));
}
