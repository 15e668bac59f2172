//! `list_tenants`, `status`.

use super::*;

#[test]
fn list_tenants_shows_each_tenants_state() {
    let db = test_db!("list_tenants_shows_each_tenants_state");
    let w = Workdir::new();
    assert_eq!(w.run(&db, &["list_tenants"]).ok(), "no tenants\n");
    w.run(&db, &["c:t:s", "globex"]).ok();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert_eq!(
        w.run(&db, &["list_tenants"]).ok(),
        "TENANT  APPLIED  PENDING  STATE\n\
         acme          1        0  up to date\n\
         globex        1        0  up to date\n"
    );
    add_column_migration(&w);
    w.run(&db, &["m:t", "acme"]).ok();
    assert_eq!(
        w.run(&db, &["list_tenants"]).ok(),
        "TENANT  APPLIED  PENDING  STATE\n\
         acme          2        0  up to date\n\
         globex        1        1  1 pending (20260201000000)\n"
    );
}

#[test]
fn status_summarises_shared_and_tenant_migrations() {
    let db = test_db!("status_summarises_shared_and_tenant_migrations");
    let w = Workdir::new();
    assert_eq!(
        w.run(&db, &["status"]).ok(),
        "shared migrations: 0 applied, 3 pending (00000000000000, 00000000000001, 20260101000001)\n\
         tenant migrations: 1 migration, latest 20260101000001\n\
         tenants: 0 (0 up to date, 0 with pending migrations, 0 drifted)\n"
    );
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);
    // A ledger that disagrees with the central record is drift.
    db.conn()
        .batch_execute("DELETE FROM acme.__diesel_schema_migrations")
        .unwrap();
    db.conn()
        .batch_execute("CREATE TABLE public.notes (id int)")
        .unwrap();
    let run = w.run(&db, &["status"]);
    let out = run.ok().to_owned();
    // Hazards go to stderr: the tests connect as a superuser, and a shared table shadows `notes`.
    assert_eq!(
        run.stderr,
        "warning: the application connects as `postgres`, a superuser: privileges do not contain its mistakes\n\
         warning: shared table `notes` has the name of a tenant table: unqualified names in raw SQL, triggers and functions may reach it\n"
    );
    assert!(
        out.starts_with("shared migrations: 3 applied, 0 pending\n"),
        "{out}"
    );
    assert!(
        out.contains("tenant migrations: 2 migrations, latest 20260201000000\n"),
        "{out}"
    );
    assert!(
        out.contains("tenants: 2 (0 up to date, 2 with pending migrations, 1 drifted)\n"),
        "{out}"
    );
    assert!(
        out.contains("  acme: 1 pending (20260201000000); drift: "),
        "{out}"
    );
    assert!(
        out.contains("  globex: 1 pending (20260201000000)\n"),
        "{out}"
    );
}

#[test]
fn status_reports_a_migration_not_written_yet() {
    let db = test_db!("status_reports_a_migration_not_written_yet");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    let out = w.run(&db, &["m:m:t", "add_x"]).ok().to_owned();
    let dir = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("Creating migrations_tenant/")
        .unwrap();
    let dir = dir.strip_suffix("/up.sql").unwrap();
    let run = w.run(&db, &["status"]);
    let status = run.ok().to_owned();
    assert!(
        status.contains(&format!(
            "tenant migrations: 1 migration, latest 20260101000001\n  not written yet (empty up.sql, not counted): {dir}\n"
        )),
        "{status}"
    );
    assert!(
        status.contains("tenants: 1 (1 up to date, 0 with pending migrations, 0 drifted)\n"),
        "{status}"
    );
    assert!(
        run.stderr.contains(&format!(
            "warning: tenant migration `{dir}` has no SQL statement in its up.sql yet: not counted until it is written\n"
        )),
        "{run:#?}"
    );
    let list = w.run(&db, &["list_tenants"]);
    assert!(
        list.ok().contains("acme          1        0  up to date"),
        "{list:#?}"
    );
    // Commands that would run it still refuse it.
    w.run(&db, &["m:t", "acme"])
        .fails_with("has no SQL statement in its up.sql");
    // Written, it counts.
    fs::write(
        w.path().join("migrations_tenant").join(dir).join("up.sql"),
        "-- adds x\nALTER TABLE notes ADD COLUMN x INT;",
    )
    .unwrap();
    let status = w.run(&db, &["status"]).ok().to_owned();
    assert!(!status.contains("not written yet"), "{status}");
    assert!(
        status.contains("tenants: 1 (0 up to date, 1 with pending migrations, 0 drifted)\n"),
        "{status}"
    );
}

#[test]
fn read_only_commands_work_without_the_migrations_directory() {
    let db = test_db!("read_only_commands_work_without_the_migrations_directory");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    db.conn()
        .batch_execute("DELETE FROM globex.__diesel_schema_migrations")
        .unwrap();
    fs::remove_dir_all(w.path().join("migrations_tenant")).unwrap();
    let warning = "warning: the tenant migrations directory `migrations_tenant` does not exist: pending migrations are unknown (see --migration-dir)";
    let run = w.run(&db, &["list_tenants"]);
    let list = run.ok().to_owned();
    assert_eq!(run.stderr.lines().next(), Some(warning), "{run:#?}");
    assert!(
        list.starts_with(
            "TENANT  APPLIED  PENDING  STATE\nacme          1        ?  pending unknown\n"
        ),
        "{list}"
    );
    assert!(
        list.contains("globex        1        ?  pending unknown; drift: "),
        "{list}"
    );
    let run = w.run(&db, &["status"]);
    let status = run.ok().to_owned();
    assert_eq!(run.stderr.lines().next(), Some(warning), "{run:#?}");
    assert!(
        status.contains("tenant migrations: unknown (no directory `migrations_tenant`)\n"),
        "{status}"
    );
    assert!(
        status.contains("tenants: 2 (pending migrations unknown, 1 drifted)\n  globex: pending unknown; drift: "),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(w.run(&db, &["--format", "json", "list_tenants"]).ok()).unwrap();
    assert_eq!(json["tenants"][0]["pending"], serde_json::Value::Null);
    assert_eq!(json["tenants"][0]["state"], "unknown");
    assert_eq!(json["tenants"][1]["state"], "drifted");
    // Commands that change tenants still need it.
    w.run(&db, &["m:t", "acme"])
        .fails_with("the tenant migrations directory `migrations_tenant` does not exist");
}
