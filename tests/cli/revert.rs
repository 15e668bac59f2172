//! `revert_tenant --version`: killed while it waits behind a reader's lock, then rerun with the
//! same version, exactly one migration is reverted, whatever the server did with the killed run.

use std::time::{Duration, Instant};

use super::*;

const V_ADD_X: &str = "20260201000000";

fn ledger(db: &TestDb, tenant: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    diesel::sql_query(format!(
        "SELECT version::text AS version FROM \"{tenant}\".__diesel_schema_migrations ORDER BY 1"
    ))
    .load::<V>(&mut db.conn())
    .unwrap()
    .into_iter()
    .map(|v| v.version)
    .collect()
}

/// Waits until no other backend of the database is running a statement (the killed client's
/// batch has finished one way or the other), for at most 10 s.
fn wait_for_quiet(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.check(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() \
         AND pid <> pg_catalog.pg_backend_pid() AND state <> 'idle')",
    ) {
        assert!(Instant::now() < deadline, "a backend is still busy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_revert_rerun_with_its_version_reverts_exactly_one() {
    let db = test_db!("killed_revert_rerun_with_its_version_reverts_exactly_one");
    let w = Workdir::new();
    add_column_migration(&w);
    w.run(&db, &["create_tenant_schema", "acme"]).ok();
    let before = ledger(&db, "acme");
    assert_eq!(before.last().map(String::as_str), Some(V_ADD_X));

    // A reader holds acme.notes; the revert queues behind it, and is killed there.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; SELECT pg_catalog.count(*) FROM acme.notes")
        .unwrap();
    let mut child = w
        .cmd(&db)
        .args([
            "revert_tenant",
            "acme",
            "--version",
            V_ADD_X,
            "--lock-timeout",
            "5",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    // The reader finishes: the killed run's batch may now go through on the server.
    holder.batch_execute("COMMIT").unwrap();
    wait_for_quiet(&db);

    let rerun = w.run(
        &db,
        &[
            "revert_tenant",
            "acme",
            "--version",
            V_ADD_X,
            "--lock-timeout",
            "1",
        ],
    );
    let out = rerun.ok();
    assert!(
        out.contains(&format!("reverted {V_ADD_X}"))
            || out.contains(&format!("{V_ADD_X} is not applied")),
        "{out}"
    );
    let after = ledger(&db, "acme");
    assert_eq!(
        after,
        before[..before.len() - 1],
        "exactly one migration reverted"
    );
    assert!(!has_x(&db, "acme"));

    // Once more: still a no-op.
    let again = w.run(&db, &["revert_tenant", "acme", "--version", V_ADD_X]);
    assert!(
        again.ok().contains(&format!("{V_ADD_X} is not applied")),
        "{again:?}"
    );
    assert_eq!(ledger(&db, "acme"), after);
    // A version that is applied but not the last is refused.
    let first = after.last().unwrap().clone();
    w.add_migration(
        false,
        "2026-06-01-000000_add_y",
        "ALTER TABLE notes ADD COLUMN y INT;",
        "ALTER TABLE notes DROP COLUMN y;",
    );
    w.run(&db, &["migrate_tenant", "acme"]).ok();
    w.run(&db, &["revert_tenant", "acme", "--version", &first])
        .fails_with("not the last applied migration");
}
