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
        "shared migrations: 0 applied, 2 pending (00000000000000, 20260101000001)\n\
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
        out.starts_with("shared migrations: 2 applied, 0 pending\n"),
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
