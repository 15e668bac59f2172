//! `migrate_tenant`, `migrate_all`, `revert_tenant`.

use super::*;

#[test]
fn migrate_tenant_applies_pending_migrations_to_one_tenant() {
    let db = test_db!("migrate_tenant_applies_pending_migrations_to_one_tenant");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);
    assert_eq!(
        w.run(&db, &["migrate_tenant", "acme"]).ok(),
        "tenant `acme`: applied 20260201000000\n"
    );
    assert!(has_x(&db, "acme"));
    assert!(!has_x(&db, "globex"));
    assert_eq!(
        w.run(&db, &["m:t", "acme"]).ok(),
        "tenant `acme` is up to date\n"
    );
    assert_eq!(
        w.run(&db, &["m:t", "globex"]).ok(),
        "tenant `globex`: applied 20260201000000\n"
    );
    assert!(has_x(&db, "globex"));
}

#[test]
fn migrate_tenant_rejects_bad_input() {
    let db = test_db!("migrate_tenant_rejects_bad_input");
    let w = Workdir::new();
    w.run(&db, &["m:t", "nope"])
        .fails_with("tenant `nope` does not exist");
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["m:t", "Acme"])
        .fails_with("invalid tenant name `Acme`");
    w.run(&db, &["m:t", "nope"])
        .fails_with("tenant `nope` does not exist");
    assert_eq!(
        w.run(&db, &["m:t", "acme", "--all"]).code,
        2,
        "a usage error"
    );

    // A failing migration: one error line naming the tenant, the version and PostgreSQL's
    // message; nothing of it is kept.
    w.add_migration(
        false,
        "2026-02-01-000000_broken",
        "ALTER TABLE notes ADD COLUMN x INT; ALTER TABLE nope ADD COLUMN y INT;",
        "",
    );
    let line = w
        .run(&db, &["m:t", "acme"])
        .fails_with("migration failed for tenant `acme`")
        .to_owned();
    assert!(line.contains("20260201000000"), "{line}");
    assert!(line.contains("\"nope\" does not exist"), "{line}");
    assert!(!has_x(&db, "acme"));
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"));
}

#[test]
fn migrate_all_migrates_the_fleet() {
    let db = test_db!("migrate_all_migrates_the_fleet");
    let w = Workdir::new();
    for t in ["acme", "globex", "initech"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    // Nothing pending: no tenant is touched, only the summary is printed.
    let out = w.run(&db, &["migrate_all"]).ok().to_owned();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("migrated 3 tenants in "), "{out}");
    assert!(
        out.ends_with(": 0 applied, 3 up to date, 0 failed, 0 skipped\n"),
        "{out}"
    );
    add_column_migration(&w);
    let out = w
        .run(&db, &["migrate_all", "--parallel", "2"])
        .ok()
        .to_owned();
    let progress: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), 3, "{out}");
    for t in ["acme", "globex", "initech"] {
        assert!(
            progress
                .iter()
                .any(|l| l.contains(&format!("] {t}: applied 20260201000000 (0 failed"))),
            "{out}"
        );
        assert!(has_x(&db, t));
    }
    let mut lines = out.lines().rev();
    assert_eq!(
        lines.next(),
        Some("  recorded as run 1 (see runs; undo with revert_run 1)"),
        "{out}"
    );
    let last = lines.next().unwrap();
    assert!(last.starts_with("migrated 3 tenants in "), "{out}");
    assert!(
        last.ends_with(": 3 applied, 0 up to date, 0 failed, 0 skipped"),
        "{out}"
    );

    // `migrate_tenant --all` is the same command.
    let out = w.run(&db, &["m:t", "--all"]).ok().to_owned();
    assert!(
        out.ends_with(": 0 applied, 3 up to date, 0 failed, 0 skipped\n"),
        "{out}"
    );
}

#[test]
fn migrate_all_reports_failures_and_exits_non_zero() {
    let db = test_db!("migrate_all_reports_failures_and_exits_non_zero");
    let w = Workdir::new();
    for t in ["acme", "globex", "initech"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    add_column_migration(&w);
    // `acme` already has the column: its migration fails (duplicate column, 42701).
    db.conn()
        .batch_execute("ALTER TABLE acme.notes ADD COLUMN x INT")
        .unwrap();

    // Stop (the default): with one worker, the tenants after `acme` are skipped.
    let run = w.run(&db, &["migrate_all", "--parallel", "1"]);
    run.fails_with("migration failed for 1 of 3 tenants: `acme`");
    assert!(
        run.stdout
            .contains("[1/3] acme: FAILED: migration 20260201000000 failed with sqlstate 42701"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("0 applied, 0 up to date, 1 failed, 2 skipped"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("  failed: acme: migration 20260201000000"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("skipped after the first failure"),
        "{run:#?}"
    );
    assert!(!has_x(&db, "globex"));

    // --continue-on-error: the others are migrated, the exit code still says something failed.
    let run = w.run(
        &db,
        &["m:t", "--all", "--continue-on-error", "--parallel", "2"],
    );
    run.fails_with("migration failed for 1 of 3 tenants: `acme`");
    assert!(
        run.stdout
            .contains("2 applied, 0 up to date, 1 failed, 0 skipped"),
        "{run:#?}"
    );
    assert!(has_x(&db, "globex") && has_x(&db, "initech"));
    // The failed tenant kept nothing of its run.
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"));
}

#[test]
fn revert_tenant_reverts_the_last_migration() {
    let db = test_db!("revert_tenant_reverts_the_last_migration");
    let w = Workdir::new();
    add_column_migration(&w);
    for t in ["acme", "globex"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    assert_eq!(
        w.run(&db, &["revert_tenant", "acme"]).ok(),
        "tenant `acme`: reverted 20260201000000\n"
    );
    assert!(!has_x(&db, "acme"));
    assert!(has_x(&db, "globex"));
    w.run(&db, &["revert_tenant", "nope"])
        .fails_with("tenant `nope` does not exist");
    w.run(&db, &["revert_tenant", "No"])
        .fails_with("invalid tenant name `No`");

    let out = w.run(&db, &["revert_tenant", "--all"]).ok().to_owned();
    assert!(out.contains("acme: reverted 20260101000001"), "{out}");
    assert!(out.contains("globex: reverted 20260201000000"), "{out}");
    assert!(
        out.ends_with(": 2 reverted, 0 up to date, 0 failed, 0 skipped\n"),
        "{out}"
    );
    assert!(db.check("pg_catalog.to_regclass('acme.notes') IS NULL"));
}

#[test]
fn migrate_all_fails_for_a_tenant_whose_schema_was_dropped() {
    let db = test_db!("migrate_all_fails_for_a_tenant_whose_schema_was_dropped");
    let w = Workdir::new();
    for t in ["acme", "globex"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    // The schema goes, the registry row stays: nothing is pending, and still it is a failure.
    db.conn().batch_execute("DROP SCHEMA acme CASCADE").unwrap();
    let run = w.run(&db, &["migrate_all"]);
    run.fails_with("migration failed for 1 of 2 tenants: `acme`");
    assert!(
        run.stdout
            .contains("[1/1] acme: FAILED: the schema of tenant `acme` does not exist"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("0 applied, 1 up to date, 1 failed, 0 skipped"),
        "{run:#?}"
    );
    assert!(db.check("pg_catalog.to_regnamespace('acme') IS NULL"));

    // Control: once the tenant is dropped, the fleet is up to date and the exit code is 0.
    w.run(&db, &["drop_tenant", "acme", "--yes"]).ok();
    let out = w.run(&db, &["migrate_all"]).ok().to_owned();
    assert!(
        out.ends_with(": 0 applied, 1 up to date, 0 failed, 0 skipped\n"),
        "{out}"
    );
}
