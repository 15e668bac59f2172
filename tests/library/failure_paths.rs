//! The migration engine's failure paths: fast-path failures (a lock timeout, a lost
//! connection), versions committed before a failure, an unreadable `down.sql`, what
//! `create_tenant` retries, a spare's claim (one transaction, nothing left by a kill), the warm
//! pool's lock and stale spares, and a session `search_path` that cannot be restored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::{InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel_migrations::FileBasedMigrations;
use diesel_workspace::{
    Error, FailurePolicy, MigrateOptions, MigrationFailure, Migrator, TenantId, TenantOutcome,
};

use crate::test_db;

/// A migration directory written at run time: `(directory name, up.sql, down.sql or none, runs
/// in a transaction)` each.
fn migration_dir(name: &str, migrations: &[(&str, &str, Option<&str>, bool)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dw_guards_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (m, up, down, in_tx) in migrations {
        let path = dir.join(m);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("up.sql"), up).unwrap();
        if let Some(down) = down {
            std::fs::write(path.join("down.sql"), down).unwrap();
        }
        if !in_tx {
            std::fs::write(path.join("metadata.toml"), "run_in_transaction = false\n").unwrap();
        }
    }
    dir
}

/// A migrator for the first `n` migrations of `dir` (shared migrations run).
fn migrator_from(conn: &mut PgConnection, dir: &PathBuf, n: usize) -> Migrator {
    crate::fleet::migrator_for(
        conn,
        crate::fleet::Prefix(FileBasedMigrations::from_path(dir).unwrap(), n),
    )
}

/// Counts the statements (batches included) `conn` sends that contain `needle`.
fn count_sent(conn: &mut PgConnection, needle: &'static str) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            if query.to_string().contains(needle) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    n
}

fn failure(err: &Error) -> &MigrationFailure {
    match err {
        Error::TenantMigration { source, .. } => source,
        e => panic!("expected a tenant migration error, got {e:?}"),
    }
}

#[test]
fn a_lock_timeout_in_the_fast_path_is_not_waited_for_again() {
    let db = test_db!("a_lock_timeout_in_the_fast_path_is_not_waited_for_again");
    let mut conn = db.conn();
    let before =
        crate::fleet::migrator_for(&mut conn, crate::fleet::Prefix(crate::fleet::ADDITIVE, 1));
    let busy = TenantId::new("busy").unwrap();
    before.create_tenant(&mut conn, &busy).unwrap();
    let after = crate::fleet::migrator_for(&mut conn, crate::fleet::ADDITIVE);
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE busy.notes IN ACCESS SHARE MODE")
        .unwrap();
    let checked = count_sent(&mut conn, "$wd_check$");
    let opts = MigrateOptions::default()
        .parallel(1)
        .lock_timeout(Duration::from_millis(100))
        .retries(1);
    let Err(Error::FleetMigration { report }) = after.migrate_all_with(&mut conn, db.url(), &opts)
    else {
        panic!("the locked tenant must fail");
    };
    let (_, sqlstate, message) = report.failed().next().unwrap();
    assert_eq!(sqlstate, Some("55P03"), "{message}");
    assert_eq!(
        checked.load(Ordering::SeqCst),
        0,
        "the fast path's lock timeout goes to the retries, not to the checked path"
    );
    holder.batch_execute("COMMIT").unwrap();
}

#[test]
fn a_lost_connection_in_the_fast_path_is_reported_as_it_is() {
    let dir = migration_dir(
        "lost_fast",
        &[
            (
                "2026-01-01-000001_a",
                "CREATE TABLE a (id int)",
                Some("DROP TABLE a"),
                true,
            ),
            (
                "2026-01-01-000002_kill",
                "SELECT pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid())",
                None,
                true,
            ),
        ],
    );
    let db = test_db!("a_lost_connection_in_the_fast_path_is_reported_as_it_is");
    let mut conn = db.conn();
    let before = migrator_from(&mut conn, &dir, 1);
    let acme = TenantId::new("acme").unwrap();
    before.create_tenant(&mut conn, &acme).unwrap();
    let after = migrator_from(&mut conn, &dir, 2);
    let mut worker = db.conn();
    let checked = count_sent(&mut worker, "$wd_check$");
    let opts = MigrateOptions::default().parallel(1).retries(0);
    let Err(Error::FleetMigration { report }) =
        after.migrate_all_with(&mut worker, db.url(), &opts)
    else {
        panic!("the tenant whose backend died must fail");
    };
    let (_, _, message) = report.failed().next().unwrap();
    // libpq's words for the lost connection (over SSL: "SSL connection has been closed
    // unexpectedly"), not a later statement's "no connection to the server".
    assert!(
        message.contains("terminating connection") || message.contains("closed unexpectedly"),
        "the first error is reported: {message}"
    );
    assert_eq!(
        checked.load(Ordering::SeqCst),
        0,
        "nothing sent on a dead connection"
    );
}

#[test]
fn versions_committed_before_a_failure_are_reported() {
    let dir = migration_dir(
        "committed",
        &[
            (
                "2026-01-01-000001_a",
                "CREATE TABLE a (x int)",
                Some("DROP TABLE a"),
                true,
            ),
            (
                "2026-01-01-000002_b",
                "CREATE TABLE b (x int)",
                Some("DROP TABLE b"),
                true,
            ),
            (
                "2026-01-01-000003_index",
                "CREATE INDEX CONCURRENTLY missing_x ON no_such_table (x)",
                Some("DROP INDEX CONCURRENTLY IF EXISTS missing_x"),
                false,
            ),
        ],
    );
    let db = test_db!("versions_committed_before_a_failure_are_reported");
    let mut conn = db.conn();
    let before = migrator_from(&mut conn, &dir, 1);
    let (acme, globex) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    before.create_tenant(&mut conn, &acme).unwrap();
    before.create_tenant(&mut conn, &globex).unwrap();
    let after = migrator_from(&mut conn, &dir, 3);

    let err = after.migrate_tenant(&mut conn, &acme).unwrap_err();
    let f = failure(&err);
    assert_eq!(f.version(), Some("20260101000003"));
    assert_eq!(f.committed(), ["20260101000002"]);

    let Err(Error::FleetMigration { report }) = after.migrate_all(
        db.url(),
        &MigrateOptions::default()
            .parallel(1)
            .on_failure(FailurePolicy::Continue),
    ) else {
        panic!("globex must fail");
    };
    match report.outcome(&globex) {
        Some(TenantOutcome::Failed { message, .. }) => assert!(
            message.ends_with("(committed before the failure: 20260101000002)"),
            "{message}"
        ),
        o => panic!("unexpected outcome {o:?}"),
    }
    let status = after.status(&mut conn).unwrap();
    assert!(status.iter().all(|s| s.pending == ["20260101000003"]));
}

#[test]
fn an_unreadable_down_sql_is_an_error_not_a_missing_one() {
    let dir = migration_dir(
        "unreadable_down",
        &[("2026-01-01-000001_a", "CREATE TABLE a (x int)", None, true)],
    );
    // A directory where the file should be: it exists, but cannot be read.
    std::fs::create_dir_all(dir.join("2026-01-01-000001_a/down.sql")).unwrap();
    assert!(matches!(
        Migrator::builder(FileBasedMigrations::from_path(&dir).unwrap()).build(),
        Err(Error::MigrationSource(_))
    ));

    let missing = migration_dir(
        "missing_down",
        &[("2026-01-01-000001_a", "CREATE TABLE a (x int)", None, true)],
    );
    let migrator = Migrator::builder(FileBasedMigrations::from_path(&missing).unwrap())
        .build()
        .unwrap();
    assert_eq!(migrator.tenant_versions(), ["20260101000001"]);
}

#[test]
fn create_tenant_retries_only_what_a_migration_can_fail() {
    let db = test_db!("create_tenant_retries_only_what_a_migration_can_fail");
    db.provision(&["acme"]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    let sent = count_sent(&mut conn, "wd_claim");
    let acme = TenantId::new("acme").unwrap();
    assert!(matches!(
        migrator.create_tenant(&mut conn, &acme),
        Err(Error::TenantExists(_))
    ));
    assert_eq!(
        sent.load(Ordering::SeqCst),
        0,
        "a registered tenant is refused by its row, with no provisioning transaction"
    );

    conn.batch_execute("CREATE SCHEMA orphan").unwrap();
    let orphan = TenantId::new("orphan").unwrap();
    assert!(matches!(
        migrator.create_tenant(&mut conn, &orphan),
        Err(Error::TenantExists(_))
    ));
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "an existing schema is not retried"
    );

    // A failing migration still gets the wrapped attempt that names it.
    let failing = Migrator::builder(crate::lifecycle::FAILING)
        .build()
        .unwrap();
    let globex = TenantId::new("globex").unwrap();
    let err = failing.create_tenant(&mut conn, &globex).unwrap_err();
    assert!(failure(&err).version().is_some(), "{err:?}");
    assert_eq!(sent.load(Ordering::SeqCst), 3);
}

#[test]
fn a_spare_claim_is_one_transaction_and_a_kill_leaves_no_half_tenant() {
    let db = test_db!("a_spare_claim_is_one_transaction_and_a_kill_leaves_no_half_tenant");
    db.provision(&[]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    assert_eq!(migrator.fill_spares(&mut conn, 2).unwrap(), 2);
    migrator.dialect(&mut conn).unwrap();
    // One statement sent: the claim's batch (`BEGIN` to `COMMIT`), no `provisioning` row first.
    let sent = count_sent(&mut conn, "");
    migrator
        .create_tenant(&mut conn, &TenantId::new("acme").unwrap())
        .unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 1, "one round trip");
    let mut conn = db.conn();
    assert_eq!(migrator.spares(&mut conn).unwrap().len(), 1);
    // The name taken: refused, and the spare is not used up.
    assert!(matches!(
        migrator.create_tenant(&mut conn, &TenantId::new("acme").unwrap()),
        Err(Error::TenantExists(_))
    ));
    let spare = migrator.spares(&mut conn).unwrap().remove(0);

    // A claim killed after its rename and registry row, waiting on the central record.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE public.workspace_migrations IN SHARE MODE")
        .unwrap();
    let url = db.url().to_owned();
    let claiming = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        crate::support::example_migrator()
            .create_tenant(&mut conn, &TenantId::new("victim").unwrap())
    });
    let waiting = "FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND query LIKE '%wd_take%'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while !db.check(&format!("EXISTS (SELECT 1 {waiting})")) {
        assert!(Instant::now() < deadline, "the claim never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(db.check(&format!(
        "(SELECT bool_and(pg_terminate_backend(pid)) {waiting})"
    )));
    assert!(claiming.join().unwrap().is_err());
    holder.batch_execute("ROLLBACK").unwrap();
    assert!(!migrator
        .is_registered(&mut conn, &TenantId::new("victim").unwrap())
        .unwrap());
    assert!(!db.schema_exists("victim"), "no half tenant");
    assert_eq!(
        migrator.spares(&mut conn).unwrap(),
        std::slice::from_ref(&spare)
    );
    assert!(db.schema_exists(spare.as_str()), "the spare is kept");
    // Negative control: the same claim, not killed, takes that spare.
    migrator
        .create_tenant(&mut conn, &TenantId::new("victim").unwrap())
        .unwrap();
    assert!(migrator.spares(&mut conn).unwrap().is_empty());
    assert!(db.schema_exists("victim") && !db.schema_exists(spare.as_str()));
}

#[test]
fn concurrent_fill_spares_do_not_overfill() {
    let db = test_db!("concurrent_fill_spares_do_not_overfill");
    db.provision(&[]);
    let migrator = db.migrator();
    let created: Vec<usize> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut conn = db.conn();
                    migrator.fill_spares(&mut conn, 3).unwrap()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(created.iter().sum::<usize>(), 3, "{created:?}");
    assert_eq!(migrator.spares(&mut db.conn()).unwrap().len(), 3);
}

#[test]
fn a_stale_spare_claimed_meanwhile_is_skipped() {
    let db = test_db!("a_stale_spare_claimed_meanwhile_is_skipped");
    let mut conn = db.conn();
    let before =
        crate::fleet::migrator_for(&mut conn, crate::fleet::Prefix(crate::fleet::ADDITIVE, 1));
    before.fill_spares(&mut conn, 2).unwrap();
    let spares = before.spares(&mut conn).unwrap();
    // What a claim between the stale-spares query and the spare's migration leaves: the
    // spare's schema is gone under its name.
    conn.batch_execute(&format!(
        "ALTER SCHEMA {} RENAME TO claimed",
        spares[0].quoted()
    ))
    .unwrap();
    let after = crate::fleet::migrator_for(&mut conn, crate::fleet::ADDITIVE);
    assert_eq!(
        after.fill_spares(&mut conn, 2).unwrap(),
        1,
        "one replaces the claimed spare"
    );
    let current = after
        .spares(&mut conn)
        .unwrap()
        .into_iter()
        .filter(|s| s != &spares[0])
        .count();
    assert_eq!(current, 2);
}

#[test]
fn a_search_path_that_cannot_be_restored_marks_the_connection_broken() {
    let dir = migration_dir(
        "restore",
        &[
            (
                "2026-01-01-000001_a",
                "CREATE TABLE a (x int)",
                Some("DROP TABLE a"),
                true,
            ),
            (
                "2026-01-01-000002_kill",
                "SELECT pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid())",
                None,
                false,
            ),
        ],
    );
    let db = test_db!("a_search_path_that_cannot_be_restored_marks_the_connection_broken");
    let mut conn = db.conn();
    let before = migrator_from(&mut conn, &dir, 1);
    let acme = TenantId::new("acme").unwrap();
    before.create_tenant(&mut conn, &acme).unwrap();
    let after = migrator_from(&mut conn, &dir, 2);
    let mut victim = db.conn();
    let err = after.migrate_tenant(&mut victim, &acme).unwrap_err();
    let f = failure(&err);
    assert!(
        f.message().contains("the connection must not be reused"),
        "{}",
        f.message()
    );
    assert!(victim.is_broken(), "a pool discards it (has_broken)");
}
