//! `create_tenant_schema`.

use super::*;

#[test]
fn create_tenant_schema_registers_and_provisions() {
    let db = test_db!("create_tenant_schema_registers_and_provisions");
    let w = Workdir::new();
    let out = w.run(&db, &["create_tenant_schema", "acme"]);
    assert_eq!(
        out.ok(),
        "created tenant `acme` (schema \"acme\", 1 migration applied)\n"
    );
    w.run(&db, &["c:t:s", "globex"]).ok();
    for t in ["acme", "globex"] {
        assert!(db.schema_exists(t));
        assert!(db.check(&format!(
            "EXISTS (SELECT 1 FROM public.workspaces WHERE schema_name = '{t}')"
        )));
        assert!(db.check(&format!("pg_catalog.to_regclass('{t}.notes') IS NOT NULL")));
        assert!(db.check(&format!(
            "(SELECT count(*) FROM {t}.__diesel_schema_migrations) = 1"
        )));
    }
    // The shared migrations ran once, in `public`.
    assert!(db.check("pg_catalog.to_regclass('public.plans') IS NOT NULL"));
}

#[test]
fn create_tenant_schema_rejects_bad_input() {
    let db = test_db!("create_tenant_schema_rejects_bad_input");
    let w = Workdir::new();

    // Invalid identifiers never reach the database.
    w.run(&db, &["c:t:s", "Acme"])
        .fails_with("invalid tenant name `Acme`: only lower-case ASCII letters");
    w.run(&db, &["c:t:s", "public"])
        .fails_with("invalid tenant name `public`");
    w.run(&db, &["c:t:s", "a;drop"])
        .fails_with("invalid tenant name `a;drop`");
    assert!(!db.registry_exists());

    // An existing tenant.
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "acme"])
        .fails_with("tenant `acme` already exists");

    // An unreachable database, and none at all.
    let run = Run::from(
        w.cmd(&db)
            .args([
                "--database-url",
                "postgres://postgres@127.0.0.1:1/nowhere",
                "c:t:s",
                "x",
            ])
            .output()
            .unwrap(),
    );
    run.fails_with("could not connect to the database");
    let run = Run::from(
        w.cmd(&db)
            .env_remove("DATABASE_URL")
            .args(["c:t:s", "x"])
            .output()
            .unwrap(),
    );
    run.fails_with("no database given: pass --database-url or set DATABASE_URL");

    // A missing migrations directory.
    w.run(&db, &["--migrations-dir", "nope", "c:t:s", "x"])
        .fails_with("the tenant migrations directory `nope` does not exist");
    w.run(&db, &["--shared-migrations-dir", "nope", "c:t:s", "x"])
        .fails_with("the shared migrations directory `nope` does not exist");
    assert!(!db.schema_exists("x"));
}

#[test]
fn create_tenant_schema_leaves_nothing_when_a_migration_fails() {
    let db = test_db!("create_tenant_schema_leaves_nothing_when_a_migration_fails");
    let w = Workdir::new();
    w.add_migration(
        false,
        "2026-02-01-000000_broken",
        "CREATE TABLE fine (id INT PRIMARY KEY); SELECT * FROM no_such_table;",
        "DROP TABLE fine;",
    );
    let line = w
        .run(&db, &["c:t:s", "acme"])
        .fails_with("migration failed for tenant `acme`")
        .to_owned();
    assert!(line.contains("no_such_table"), "{line}");
    assert!(!db.schema_exists("acme"));
    assert!(db.check("NOT EXISTS (SELECT 1 FROM public.workspaces WHERE schema_name = 'acme')"));
}
