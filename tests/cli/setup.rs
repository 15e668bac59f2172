//! `setup`, `pending`, `redo_tenant`.

use diesel::connection::SimpleConnection as _;
use support::ScratchDb;

use super::*;

#[test]
fn setup_creates_a_missing_database_then_runs_the_shared_migrations() {
    let db = test_db!("setup_creates_a_missing_database_then_runs_the_shared_migrations");
    let w = Workdir::new();
    // A database this run owns (the guard drops it at the end), dropped first so `setup` makes it.
    let scratch = ScratchDb::create("cli_setup");
    PgConnection::establish(&support::admin_url())
        .unwrap()
        .batch_execute(&format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            scratch.name()
        ))
        .unwrap();
    fs::remove_dir_all(w.path().join("migrations_shared")).unwrap();
    let run = Run::from(
        w.cmd(&db)
            .env("DATABASE_URL", scratch.url())
            .arg("setup")
            .output()
            .unwrap(),
    );
    assert_eq!(
        run.ok(),
        format!(
            "created database `{}`\n\
             created directory migrations_shared\n\
             created config file workspace-diesel.toml\n\
             shared: applied 00000000000000, 00000000000001\n",
            scratch.name()
        )
    );
    assert!(w.path().join("migrations_shared").is_dir());
    let mut conn = PgConnection::establish(scratch.url()).unwrap();
    let registry: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "pg_catalog.to_regclass('public.workspaces') IS NOT NULL",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert!(registry);
    drop(conn);
    // A second run finds everything in place.
    let again = Run::from(
        w.cmd(&db)
            .env("DATABASE_URL", scratch.url())
            .args(["--format", "json", "s:u"])
            .output()
            .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_str(again.ok()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "format": 1, "command": "setup", "ok": true, "database": scratch.name(),
            "created_database": false, "created_directories": [], "shared_applied": [],
        })
    );
}

#[test]
fn setup_on_an_existing_database_and_a_dead_server() {
    let db = test_db!("setup_on_an_existing_database_and_a_dead_server");
    let w = Workdir::new();
    assert_eq!(
        w.run(&db, &["setup"]).ok(),
        "database `".to_owned()
            + db.url().rsplit('/').next().unwrap()
            + "` exists\ncreated config file workspace-diesel.toml\n\
               shared: applied 00000000000000, 00000000000001, 20260101000001\n"
    );
    assert!(db.registry_exists());
    assert_eq!(
        w.run(&db, &["setup"]).ok().lines().last(),
        Some("shared migrations are up to date")
    );
    let run = Run::from(
        w.cmd(&db)
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
            .arg("setup")
            .output()
            .unwrap(),
    );
    run.fails_with("could not connect to the database");
    let run = Run::from(
        w.cmd(&db)
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432")
            .arg("setup")
            .output()
            .unwrap(),
    );
    run.fails_with("the database URL names no database");
}

#[test]
fn pending_lists_the_tenants_behind_from_the_central_record() {
    let db = test_db!("pending_lists_the_tenants_behind_from_the_central_record");
    let w = Workdir::new();
    assert_eq!(w.run(&db, &["pending"]).ok(), "no tenants\n");
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    w.run(&db, &["c:t:s", "initech"]).ok();
    assert_eq!(
        w.run(&db, &["p:t"]).ok(),
        "no tenant is behind (3 tenants up to date)\n"
    );
    add_column_migration(&w);
    w.run(&db, &["m:t", "globex"]).ok();
    assert_eq!(
        w.run(&db, &["pending"]).ok(),
        "acme: 1 pending (20260201000000)\n\
         initech: 1 pending (20260201000000)\n\
         2 tenants of 3 behind\n"
    );
    // From the central record: a tenant's own ledger is not read (`status` reports drift).
    db.conn()
        .batch_execute("DELETE FROM globex.__diesel_schema_migrations")
        .unwrap();
    assert!(!w.run(&db, &["pending"]).ok().contains("globex"));
    fs::remove_dir_all(w.path().join("migrations_tenant")).unwrap();
    w.run(&db, &["pending"])
        .fails_with("the tenant migrations directory `migrations_tenant` does not exist");
}

#[test]
fn redo_tenant_reverts_and_reapplies_the_last_migration() {
    let db = test_db!("redo_tenant_reverts_and_reapplies_the_last_migration");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);
    w.run(&db, &["migrate_all"]).ok();
    db.conn()
        .batch_execute("INSERT INTO acme.notes (title, body, x) VALUES ('t', 'b', 7)")
        .unwrap();
    assert_eq!(
        w.run(&db, &["redo_tenant", "acme"]).ok(),
        "tenant `acme`: reverted 20260201000000\n\
         tenant `acme`: applied 20260201000000\n"
    );
    // The column was dropped and made again (its value is gone); globex is untouched.
    assert!(has_x(&db, "acme"));
    assert!(db.check("(SELECT x IS NULL FROM acme.notes WHERE title = 't')"));
    assert!(has_x(&db, "globex"));
    assert!(db.check(
        "(SELECT count(*) FROM public.workspace_migrations WHERE schema_name = 'acme') = 2"
    ));
    assert_eq!(
        w.run(&db, &["r:d:t", "acme"]).ok(),
        w.run(&db, &["redo-tenant", "acme"]).ok()
    );
    // A down.sql that fails leaves the tenant as it was.
    w.add_migration(
        false,
        "2026-03-01-000000_add_y",
        "ALTER TABLE notes ADD COLUMN y INT;",
        "ALTER TABLE no_such_table DROP COLUMN y;",
    );
    w.run(&db, &["m:t", "acme"]).ok();
    w.run(&db, &["redo_tenant", "acme"])
        .fails_with("no_such_table");
    assert!(db.check(
        "(SELECT count(*) FROM public.workspace_migrations WHERE schema_name = 'acme') = 3"
    ));
    w.run(&db, &["redo_tenant", "nobody"])
        .fails_with("tenant `nobody` does not exist");
    // Nothing applied: nothing to redo.
    db.conn()
        .batch_execute(
            "DELETE FROM public.workspace_migrations WHERE schema_name = 'globex'; \
             DELETE FROM globex.__diesel_schema_migrations",
        )
        .unwrap();
    w.run(&db, &["redo_tenant", "globex"])
        .fails_with("tenant `globex` has no applied migration to redo");
}
