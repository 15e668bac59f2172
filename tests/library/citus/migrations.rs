//! Tenant migrations on Citus: sent statement by statement inside the tenant's one transaction,
//! so index and constraint DDL reaches the workers; failures name their version, SQLSTATE and
//! the logical table; killed migrators converge on a rerun.

use diesel::connection::SimpleConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, FileBasedMigrations};
use diesel_workspace::{Error, FailurePolicy, MigrateOptions, MigrationFailure, TenantId};
use workspace_diesel_tests::citus::{check_on, shard_tables_on};
use workspace_diesel_tests::citus_db;

use crate::fleet::{central_rows, ledger_rows, migrator_for, step_tables, Prefix, FLEET};

const CITUS_ADDITIVE: EmbeddedMigrations = embed_migrations!("migrations/citus_additive");

fn ids(prefix: &str, n: usize) -> Vec<TenantId> {
    (0..n)
        .map(|i| TenantId::new(format!("{prefix}{i}")).unwrap())
        .collect()
}

#[test]
fn migrate_all_creates_an_index_and_a_foreign_key_inside_each_tenant() {
    let db = citus_db!("migrate_all_creates_an_index_and_a_foreign_key_inside_each_tenant");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(CITUS_ADDITIVE, 1));
    let after = migrator_for(&mut conn, CITUS_ADDITIVE);
    let tenants = ids("m", 4);
    for t in &tenants {
        before.create_tenant(&mut conn, t).unwrap();
    }
    let report = after
        .migrate_all(db.url(), &MigrateOptions::default().parallel(2))
        .unwrap();
    assert_eq!(report.applied().count(), 4);
    for t in &tenants {
        let worker = db.assert_distributed(t.as_str()).clone();
        // The index and the constraint exist on the worker's shard of `notes`.
        let mut w = db.conn_on(&worker);
        let shard = shard_tables_on(&mut w, t.as_str())
            .into_iter()
            .find(|s| s.starts_with("notes_"))
            .unwrap();
        assert!(check_on(
            &mut w,
            &format!(
                "EXISTS (SELECT 1 FROM pg_catalog.pg_indexes WHERE schemaname = '{t}' \
                 AND tablename = '{shard}' AND indexname LIKE 'notes_label_id_idx%')"
            )
        ));
        assert!(check_on(
            &mut w,
            &format!(
                "EXISTS (SELECT 1 FROM pg_catalog.pg_constraint \
                 WHERE conrelid = '{t}.{shard}'::regclass AND contype = 'f' \
                 AND conname LIKE 'notes_label_id_fkey%')"
            )
        ));
        // ON DELETE CASCADE fires inside the distributed tenant.
        conn.batch_execute(&format!(
            "INSERT INTO {t}.labels (id, name) VALUES (1, 'l'); \
             INSERT INTO {t}.notes (title, label_id) VALUES ('x', 1); \
             DELETE FROM {t}.labels WHERE id = 1"
        ))
        .unwrap();
        assert!(db.check(&format!("NOT EXISTS (SELECT 1 FROM {t}.notes)")));
    }
    // Nothing pending afterwards.
    let report = after
        .migrate_all(db.url(), &MigrateOptions::default())
        .unwrap();
    assert_eq!(report.applied().count(), 0);
}

#[test]
fn a_failing_statement_names_its_version_sqlstate_and_logical_table() {
    let db = citus_db!("a_failing_statement_names_its_version_sqlstate_and_logical_table");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("2026-01-01-000001_create_notes");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(
        base.join("up.sql"),
        "CREATE TABLE notes (id INT PRIMARY KEY, title TEXT NOT NULL);\n\
         INSERT INTO notes VALUES (1, 'one');",
    )
    .unwrap();
    std::fs::write(base.join("down.sql"), "DROP TABLE notes;").unwrap();
    let mut conn = db.conn();
    let before = migrator_for(
        &mut conn,
        FileBasedMigrations::from_path(dir.path()).unwrap(),
    );
    let acme = TenantId::new("acme").unwrap();
    before.create_tenant(&mut conn, &acme).unwrap();
    let broken = dir.path().join("2026-05-01-000001_broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("up.sql"),
        "-- a new table, then a duplicate key\n\
         CREATE TABLE extra (id INT PRIMARY KEY);\n\
         CREATE INDEX notes_title_idx ON notes (title);\n\
         INSERT INTO notes VALUES (1, 'again');",
    )
    .unwrap();
    std::fs::write(broken.join("down.sql"), "DROP TABLE extra;").unwrap();
    let after = migrator_for(
        &mut conn,
        FileBasedMigrations::from_path(dir.path()).unwrap(),
    );
    let e = after.migrate_tenant(&mut conn, &acme).unwrap_err();
    let Error::TenantMigration { tenant, source } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(tenant, &acme);
    let failure: &MigrationFailure = source;
    assert_eq!(failure.version(), Some("20260501000001"));
    assert_eq!(failure.sqlstate(), Some("23505"));
    assert!(
        failure.message().contains("\"notes_pkey\""),
        "{}",
        failure.message()
    );
    assert!(
        !failure.message().contains("1020"),
        "no shard names: {}",
        failure.message()
    );
    assert!(!failure.message().contains("DO"), "{}", failure.message());
    // Rolled back as a whole: no table `extra`, no index, still distributed.
    db.assert_distributed("acme");
    assert!(db.check("pg_catalog.to_regclass('acme.extra') IS NULL"));
    assert!(db.check("pg_catalog.to_regclass('acme.notes_title_idx') IS NULL"));
}

#[test]
fn killed_migrators_converge_on_a_rerun() {
    let db = citus_db!("killed_migrators_converge_on_a_rerun");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(FLEET, 1));
    let after = migrator_for(&mut conn, FLEET);
    let versions = after.tenant_versions().to_vec();
    let mut all = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut killed_runs = 0;
    for trial in 0..6 {
        let mut conn = db.conn();
        let tenants = ids(&format!("k{trial}_"), 3);
        for t in &tenants {
            before.create_tenant(&mut conn, t).unwrap();
        }
        all.extend(tenants.iter().cloned());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_millis(20 + seed % 300);
        let url = db.url().to_owned();
        let result = std::thread::scope(|s| {
            let run = s.spawn(|| {
                after.migrate_all(
                    &url,
                    &MigrateOptions::default()
                        .parallel(2)
                        .on_failure(FailurePolicy::Continue),
                )
            });
            std::thread::sleep(delay);
            db.conn()
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND application_name NOT LIKE 'Citus%' AND backend_type = 'client backend'",
                )
                .unwrap();
            run.join().unwrap()
        });
        if result.is_err() {
            killed_runs += 1;
        }
        let mut conn = db.conn();
        let central = central_rows(&mut conn);
        for t in &all {
            let ledger: Vec<String> = ledger_rows(&mut conn, std::slice::from_ref(t))
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            assert_eq!(ledger, versions[..ledger.len()], "{t}: ledger is a prefix");
            let expected: Vec<String> = (1..=ledger.len()).map(|i| format!("step_{i}")).collect();
            assert_eq!(
                step_tables(&mut conn, t),
                expected,
                "{t}: tables match the ledger"
            );
            let c: Vec<String> = central
                .iter()
                .filter(|(s, _)| s == t.as_str())
                .map(|(_, v)| v.clone())
                .collect();
            assert_eq!(c, ledger, "{t}: central record matches the ledger");
            db.assert_distributed(t.as_str());
        }
    }
    assert!(killed_runs > 0, "at least one run was interrupted");
    after
        .migrate_all(db.url(), &MigrateOptions::default())
        .expect("the rerun succeeds");
    let mut conn = db.conn();
    for t in &all {
        assert_eq!(step_tables(&mut conn, t).len(), 5, "{t}");
        db.assert_distributed(t.as_str());
    }
    assert_eq!(central_rows(&mut conn).len(), all.len() * 5);
}

#[test]
fn a_snapshot_commits_or_rolls_back_with_its_migration() {
    let db = citus_db!("a_snapshot_commits_or_rolls_back_with_its_migration");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(CITUS_ADDITIVE, 1));
    let after = migrator_for(&mut conn, CITUS_ADDITIVE);
    let acme = TenantId::new("acme").unwrap();
    before.create_tenant(&mut conn, &acme).unwrap();
    let snapshot = MigrateOptions::default().snapshot(std::time::Duration::from_secs(60));
    // A table in the way: the migration fails after the snapshot's statements ran.
    conn.batch_execute("CREATE TABLE acme.labels (x int)")
        .unwrap();
    let err = after
        .migrate_tenant_with(&mut conn, &acme, &snapshot)
        .unwrap_err();
    assert!(matches!(err, Error::TenantMigration { .. }), "{err:?}");
    let no_snapshot = "NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname LIKE '\\_snap\\_%')";
    assert!(check_on(
        &mut conn,
        &format!("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1 AND {no_snapshot}")
    ));
    for worker in db.workers() {
        assert!(check_on(&mut db.conn_on(worker), no_snapshot));
    }
    assert!(after.snapshots(&mut conn, None).unwrap().is_empty());
    // Without the table in the way, both commit: the migration and its snapshot.
    conn.batch_execute("DROP TABLE acme.labels").unwrap();
    after
        .migrate_tenant_with(&mut conn, &acme, &snapshot)
        .unwrap();
    assert!(check_on(
        &mut conn,
        "to_regclass('acme.labels') IS NOT NULL"
    ));
    let snaps = after.snapshots(&mut conn, None).unwrap();
    assert_eq!(snaps.len(), 1);
    db.assert_distributed(&snaps[0].name);
    db.assert_distributed("acme");
}
