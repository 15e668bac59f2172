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

/// The rows of `public.revert_log`: `(tenant, version)` per committed `down.sql`.
fn revert_log(db: &TestDb) -> Vec<(String, String)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        tenant: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    diesel::sql_query("SELECT tenant, version FROM public.revert_log ORDER BY 1, 2")
        .load::<Row>(&mut db.conn())
        .unwrap()
        .into_iter()
        .map(|r| (r.tenant, r.version))
        .collect()
}

/// Two migrations whose `down.sql` sleeps 0.2 s and logs itself in `public.revert_log` (in the
/// same transaction as the revert, so a log row means a committed revert).
fn add_slow_down_migrations(w: &Workdir) {
    for (dir, column) in [
        ("2026-02-01-000000_add_a", "a"),
        ("2026-02-02-000000_add_b", "b"),
    ] {
        w.add_migration(
            false,
            dir,
            &format!("ALTER TABLE notes ADD COLUMN {column} INT;"),
            &format!(
                "SELECT pg_sleep(0.2);\n\
                 INSERT INTO public.revert_log VALUES (current_schema(), '{column}');\n\
                 ALTER TABLE notes DROP COLUMN {column};"
            ),
        );
    }
}

/// `revert_run` SIGKILLed mid-way (two workers, each tenant's reverts sleeping in `down.sql`),
/// then rerun: it converges, every version of the run reverted exactly once (the log a `down.sql`
/// writes in its own transaction, and each ledger), and a further rerun reverts nothing.
#[test]
fn killed_revert_run_rerun_reverts_each_version_once() {
    let db = test_db!("killed_revert_run_rerun_reverts_each_version_once");
    let w = Workdir::new();
    let tenants: Vec<String> = (0..10).map(|i| format!("k_{i:02}")).collect();
    w.run(&db, &["setup"]).ok();
    db.conn()
        .batch_execute(
            "CREATE TABLE public.revert_log (tenant TEXT NOT NULL, version TEXT NOT NULL)",
        )
        .unwrap();
    for t in &tenants {
        w.run(&db, &["c:t:s", t]).ok();
    }
    let base = ledger(&db, &tenants[0]);
    add_slow_down_migrations(&w);
    let run: serde_json::Value =
        serde_json::from_str(w.run(&db, &["--format", "json", "migrate_all"]).ok()).unwrap();
    let id = run["run"]
        .as_i64()
        .expect("the run is recorded")
        .to_string();
    for t in &tenants {
        assert_eq!(ledger(&db, t).len(), base.len() + 2, "{t}");
    }

    let mut child = w
        .cmd(&db)
        .args(["revert_run", &id, "--parallel", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once some reverts have committed, well before all 20 have.
    let deadline = Instant::now() + Duration::from_secs(60);
    while revert_log(&db).len() < 4 {
        assert!(Instant::now() < deadline, "the revert never got going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the revert ended early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for_quiet(&db);
    let logged = revert_log(&db);
    assert!(logged.len() < 20, "the kill came too late: {logged:?}");
    // Whatever the server finished for the killed client: each ledger agrees with the log.
    for t in &tenants {
        let reverted = logged.iter().filter(|(n, _)| n == t).count();
        assert_eq!(ledger(&db, t).len(), base.len() + 2 - reverted, "{t}");
    }

    let rerun: serde_json::Value =
        serde_json::from_str(w.run(&db, &["--format", "json", "revert_run", &id]).ok()).unwrap();
    assert_eq!(rerun["ok"], true);
    let mut expected: Vec<(String, String)> = tenants
        .iter()
        .flat_map(|t| [(t.clone(), "a".to_owned()), (t.clone(), "b".to_owned())])
        .collect();
    expected.sort();
    assert_eq!(
        revert_log(&db),
        expected,
        "each version reverted exactly once"
    );
    for t in &tenants {
        assert_eq!(ledger(&db, t), base, "{t} back where it was");
    }
    // A further rerun reverts nothing.
    w.run(&db, &["revert_run", &id]).ok();
    assert_eq!(revert_log(&db), expected);
}

/// A migrate run SIGKILLed mid-way did not finish: its record holds no versions, so
/// `revert_run` refuses it and changes nothing (reverting what the tenants hold now could undo
/// what another run did); the tenants are reverted with `revert_tenant --version`.
#[test]
fn a_killed_migrate_run_is_not_revertible() {
    let db = test_db!("a_killed_migrate_run_is_not_revertible");
    let w = Workdir::new();
    let tenants: Vec<String> = (0..8).map(|i| format!("m_{i:02}")).collect();
    for t in &tenants {
        w.run(&db, &["c:t:s", t]).ok();
    }
    let base = ledger(&db, &tenants[0]);
    w.add_migration(
        false,
        "2026-02-01-000000_slow",
        "SELECT pg_sleep(0.3); ALTER TABLE notes ADD COLUMN s INT;",
        "ALTER TABLE notes DROP COLUMN s;",
    );
    let mut child = w
        .cmd(&db)
        .args(["migrate_all", "--parallel", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger(&db, &tenants[1]).len() == base.len() {
        assert!(Instant::now() < deadline, "the run never got going");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for_quiet(&db);
    let runs: serde_json::Value =
        serde_json::from_str(w.run(&db, &["--format", "json", "runs"]).ok()).unwrap();
    let killed = &runs["runs"][0];
    assert_eq!(killed["kind"], "migrate", "{runs}");
    assert_eq!(killed["outcome"], serde_json::Value::Null, "{runs}");
    let id = killed["id"].as_i64().unwrap().to_string();
    let before: Vec<Vec<String>> = tenants.iter().map(|t| ledger(&db, t)).collect();
    assert!(before.iter().any(|l| l.len() > base.len()));
    assert!(before.iter().any(|l| l.len() == base.len()));
    w.run(&db, &["revert_run", &id]).fails_with(&format!(
        "fleet run {id} cannot be reverted: it did not finish"
    ));
    let after: Vec<Vec<String>> = tenants.iter().map(|t| ledger(&db, t)).collect();
    assert_eq!(after, before, "a refused revert changed nothing");
}
