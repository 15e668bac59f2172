//! Guards of the life-cycle calls: a placeholder migration is refused, single-tenant calls never
//! run tenant DDL in a schema that is not a registered tenant, calls that send their own
//! transactions refuse to run inside the caller's, and a spare whose schema is gone is skipped.
//! Also the review fixes of the migration code: fast-path failures, committed versions in
//! failures, unreadable `down.sql`, what `create_tenant` retries, the warm pool's lock, and a
//! session `search_path` that cannot be restored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel::sql_types::BigInt;
use diesel_migrations::FileBasedMigrations;
use diesel_workspace::{
    Error, FailurePolicy, MigrateOptions, MigrationFailure, Migrator, TenantId, TenantOutcome,
};

use crate::test_db;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

/// A copy of `migrations_tenant/` plus a migration whose `up.sql` holds only a comment (what a
/// freshly generated migration looks like).
fn migrations_with_placeholder(name: &str) -> PathBuf {
    migrations_with_extra(
        name,
        "-- Your SQL goes here\n/* nothing yet */ ;\n",
        "-- This file should undo anything in `up.sql`\n",
    )
}

/// A copy of `migrations_tenant/` plus one migration with the given `up.sql` and `down.sql`.
fn migrations_with_extra(name: &str, up: &str, down: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dw_guards_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations_tenant"));
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let to = dir.join(entry.file_name());
        std::fs::create_dir_all(&to).unwrap();
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
        }
    }
    let placeholder = dir.join("2026-06-01-000000_todo");
    std::fs::create_dir_all(&placeholder).unwrap();
    std::fs::write(placeholder.join("up.sql"), up).unwrap();
    std::fs::write(placeholder.join("down.sql"), down).unwrap();
    dir
}

#[test]
fn an_empty_down_sql_makes_a_migration_irreversible_not_unreadable() {
    let db = test_db!("an_empty_down_sql_makes_a_migration_irreversible_not_unreadable");
    db.provision(&[]);
    let dir = migrations_with_extra("empty_down", "ALTER TABLE notes ADD COLUMN x INT;", "");
    let migrator = Migrator::builder(FileBasedMigrations::from_path(&dir).unwrap())
        .build()
        .unwrap();
    let mut conn = db.conn();
    let acme = TenantId::new("acme").unwrap();
    migrator.create_tenant(&mut conn, &acme).unwrap();
    assert!(migrator.revert_last(&mut conn, &acme).is_err());
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM information_schema.columns \
             WHERE table_schema = 'acme' AND table_name = 'notes' AND column_name = 'x'"
        ),
        1
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_placeholder_migration_is_refused_not_recorded() {
    let db = test_db!("a_placeholder_migration_is_refused_not_recorded");
    db.provision(&[]);
    let dir = migrations_with_placeholder("placeholder");
    let err = Migrator::builder(FileBasedMigrations::from_path(&dir).unwrap())
        .build()
        .unwrap_err();
    let mut conn = db.conn();
    let cause = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(matches!(err, Error::MigrationSource(_)), "{err:?}");
    assert!(cause.contains("has no SQL statement"), "{cause}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_catalog.pg_namespace WHERE nspname = 'acme'"
        ),
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.workspace_migrations"
        ),
        0
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn single_tenant_calls_refuse_schemas_that_are_not_tenants() {
    let db = test_db!("single_tenant_calls_refuse_schemas_that_are_not_tenants");
    db.provision(&["acme"]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    conn.batch_execute("CREATE SCHEMA app; CREATE TABLE app.customers (id int)")
        .unwrap();
    let app = TenantId::new("app").unwrap();
    let err = migrator.migrate_tenant(&mut conn, &app).unwrap_err();
    assert!(
        matches!(err, Error::TenantNotFound(ref t) if t == &app),
        "{err:?}"
    );
    let err = migrator.revert_last(&mut conn, &app).unwrap_err();
    assert!(matches!(err, Error::TenantNotFound(_)), "{err:?}");
    // Nothing was created in `app`.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE schemaname = 'app'"
        ),
        1
    );
    // A spare is not a tenant either.
    migrator.fill_spares(&mut conn, 1).unwrap();
    let spare = migrator.spares(&mut conn).unwrap().remove(0);
    assert!(migrator.migrate_tenant(&mut conn, &spare).is_err());
    // The registered tenant is served as before.
    migrator
        .migrate_tenant(&mut conn, &TenantId::new("acme").unwrap())
        .unwrap();
}

#[test]
fn calls_with_their_own_transactions_refuse_an_outer_one() {
    let db = test_db!("calls_with_their_own_transactions_refuse_an_outer_one");
    db.provision(&["acme"]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    let acme = TenantId::new("acme").unwrap();
    let results: Vec<Result<(), Error>> = vec![
        conn.transaction(|c| migrator.fill_spares(c, 1).map(drop)),
        conn.transaction(|c| migrator.drain_spares(c).map(drop)),
        conn.transaction(|c| migrator.create_tenant(c, &TenantId::new("globex").unwrap())),
        conn.transaction(|c| migrator.migrate_tenant(c, &acme).map(drop)),
        conn.transaction(|c| migrator.revert_last(c, &acme).map(drop)),
    ];
    for r in results {
        assert!(matches!(r, Err(Error::OuterTransaction)), "{r:?}");
        let message = r.unwrap_err().to_string();
        assert!(
            message.contains("cannot run inside an outer transaction"),
            "{message}"
        );
    }
    assert_eq!(migrator.spares(&mut conn).unwrap(), []);
    assert_eq!(migrator.list_tenants(&mut conn).unwrap(), [acme]);
}

#[test]
fn create_tenant_in_a_test_transaction_names_the_outer_transaction() {
    let db = test_db!("create_in_test_transaction");
    db.provision(&[]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    conn.begin_test_transaction().unwrap();
    let err = migrator
        .create_tenant(&mut conn, &TenantId::new("acme").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::OuterTransaction), "{err:?}");
    drop(conn);
    // Nothing was created: the registry and the catalog know no `acme`.
    let mut conn = db.conn();
    assert_eq!(migrator.list_tenants(&mut conn).unwrap(), []);
    assert!(!migrator
        .is_registered(&mut conn, &TenantId::new("acme").unwrap())
        .unwrap());
}

#[test]
fn a_spare_whose_schema_is_gone_is_skipped() {
    let db = test_db!("a_spare_whose_schema_is_gone_is_skipped");
    db.provision(&[]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.fill_spares(&mut conn, 2).unwrap();
    let spares = migrator.spares(&mut conn).unwrap();
    // The oldest spare, the one a claim would take first, loses its schema.
    conn.batch_execute(&format!("DROP SCHEMA {} CASCADE", spares[0].quoted()))
        .unwrap();
    let acme = TenantId::new("acme").unwrap();
    migrator.create_tenant(&mut conn, &acme).unwrap();
    assert_eq!(migrator.spares(&mut conn).unwrap(), [spares[0].clone()]);
    let globex = TenantId::new("globex").unwrap();
    migrator.create_tenant(&mut conn, &globex).unwrap();
    assert_eq!(migrator.list_tenants(&mut conn).unwrap(), [acme, globex]);
}

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
        "a registered tenant is refused by its provisioning row, before any claim"
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
