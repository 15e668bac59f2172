//! `fill_spares`, `list_spares`, `drain_spares`.

use super::*;

/// The spare schemas `list_spares` prints, in its order.
fn list_spares(w: &Workdir, db: &TestDb) -> Vec<String> {
    w.run(db, &["list_spares"])
        .ok()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn spare_schemas(db: &TestDb) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT pg_catalog.count(*) AS n FROM pg_catalog.pg_namespace WHERE nspname LIKE '\\_spare\\_%'",
    )
    .get_result::<Count>(&mut db.conn())
    .unwrap()
    .n
}

#[test]
fn spares_fill_list_claim_and_drain() {
    let db = test_db!("spares_fill_list_claim_and_drain");
    let w = Workdir::new();
    // An empty pool, before the shared migrations have run: nothing is created.
    assert_eq!(w.run(&db, &["list_spares"]).ok(), "no spares\n");
    assert_eq!(w.run(&db, &["drain_spares"]).ok(), "no spares\n");
    assert!(!db.registry_exists());

    assert_eq!(
        w.run(&db, &["fill_spares", "3"]).ok(),
        "created 3 spare schemas (3 in the warm pool)\n"
    );
    let spares = list_spares(&w, &db);
    assert_eq!(spares.len(), 3, "{spares:?}");
    for spare in &spares {
        assert!(spare.starts_with("_spare_"), "{spare}");
        assert!(db.check(&format!(
            "pg_catalog.to_regclass('{spare}.notes') IS NOT NULL"
        )));
    }
    assert_eq!(spare_schemas(&db), 3);
    // Spares are not tenants.
    assert_eq!(w.run(&db, &["list_tenants"]).ok(), "no tenants\n");
    // A full pool is left as it is.
    assert_eq!(
        w.run(&db, &["fill_spares", "3"]).ok(),
        "created 0 spare schemas (3 in the warm pool)\n"
    );
    assert_eq!(list_spares(&w, &db), spares);

    // Creating a tenant claims the oldest spare.
    assert_eq!(
        w.run(&db, &["c:t:s", "acme"]).ok(),
        "created tenant `acme` (schema \"acme\", 1 migration applied)\n"
    );
    assert_eq!(list_spares(&w, &db), spares[1..]);
    assert!(!db.schema_exists(&spares[0]));
    assert!(db.check("pg_catalog.to_regclass('acme.notes') IS NOT NULL"));
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"));
    assert!(db.check(
        "(SELECT count(*) FROM public.workspace_migrations WHERE schema_name = 'acme') = 1"
    ));
    let tenants = w.run(&db, &["list_tenants"]).ok().to_owned();
    assert!(
        tenants
            .lines()
            .any(|l| l.starts_with("acme ") && l.ends_with("up to date")),
        "{tenants}"
    );

    // Draining asks first; without a terminal it refuses.
    w.run(&db, &["drain_spares"]).fails_with(
        "refusing to drain the warm pool without confirmation: pass --yes (standard input is not a terminal)",
    );
    assert_eq!(list_spares(&w, &db).len(), 2);
    assert_eq!(
        w.run(&db, &["drain_spares", "--yes"]).ok(),
        "dropped 2 spare schemas\n"
    );
    assert_eq!(w.run(&db, &["list_spares"]).ok(), "no spares\n");
    assert_eq!(spare_schemas(&db), 0);
    assert!(db.check(
        "NOT EXISTS (SELECT 1 FROM public.workspace_migrations WHERE schema_name LIKE '\\_spare\\_%')"
    ));
    assert_eq!(w.run(&db, &["drain_spares", "-y"]).ok(), "no spares\n");
    // The tenant is untouched.
    assert!(db.check("pg_catalog.to_regclass('acme.notes') IS NOT NULL"));
}

#[test]
fn fill_spares_brings_stale_spares_up_to_date() {
    let db = test_db!("fill_spares_brings_stale_spares_up_to_date");
    let w = Workdir::new();
    w.run(&db, &["fill_spares", "2"]).ok();
    let spares = list_spares(&w, &db);
    add_column_migration(&w);
    assert_eq!(
        w.run(&db, &["fill_spares", "2"]).ok(),
        "created 0 spare schemas (2 in the warm pool)\n"
    );
    assert_eq!(list_spares(&w, &db), spares);
    for spare in &spares {
        assert!(has_x(&db, spare), "{spare}");
    }
    // Current again, the oldest is claimed with both migrations.
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert_eq!(list_spares(&w, &db), spares[1..]);
    assert!(has_x(&db, "acme"));
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 2"));
}

#[test]
fn fill_spares_rejects_bad_input() {
    let db = test_db!("fill_spares_rejects_bad_input");
    let w = Workdir::new();
    // Checked before connecting: nothing reaches the database.
    for bad in ["-3", "1001", "99999999999999999999999", "three", "2.5", ""] {
        w.run(&db, &["fill_spares", bad]).fails_usage(&format!(
            "invalid spare count `{bad}`: expected a whole number from 0 to 1000"
        ));
    }
    assert!(!db.registry_exists());
    assert_eq!(spare_schemas(&db), 0);
    assert_eq!(w.run(&db, &["fill_spares"]).code, 2, "a usage error");
    w.run(&db, &["--migrations-dir", "nope", "fill_spares", "1"])
        .fails_with("the tenant migrations directory `nope` does not exist");

    // A broken tenant migration: the spare being made is rolled back, one error line.
    w.add_migration(
        false,
        "2026-02-01-000000_broken",
        "SELECT * FROM no_such_table;",
        "",
    );
    let line = w
        .run(&db, &["fill_spares", "1"])
        .fails_with("could not fill the warm pool")
        .to_owned();
    assert!(line.contains("no_such_table"), "{line}");
    assert_eq!(spare_schemas(&db), 0);
    assert_eq!(w.run(&db, &["list_spares"]).ok(), "no spares\n");
}
