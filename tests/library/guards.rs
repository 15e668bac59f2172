//! Guards of the life-cycle calls: a placeholder migration is refused, single-tenant calls never
//! run tenant DDL in a schema that is not a registered tenant, calls that send their own
//! transactions refuse to run inside the caller's, and a spare whose schema is gone is skipped.
//! The engine's failure paths are in `failure_paths.rs`.

use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_migrations::FileBasedMigrations;
use diesel_workspace::{Error, Migrator, TenantId};

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
