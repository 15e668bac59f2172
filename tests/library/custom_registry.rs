//! An application's own registry table (`Registry::new`), in a schema of its own.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{registry::Registry, switch, MigrateOptions, Migrator, TenantId};

use crate::support::schema::notes;
use crate::support::TENANT_MIGRATIONS;
use crate::test_db;

const APP_SHARED: EmbeddedMigrations = embed_migrations!("migrations/custom_registry");

#[derive(QueryableByName, Debug, PartialEq)]
struct Customer {
    #[diesel(sql_type = Text)]
    slug: String,
    #[diesel(sql_type = Text)]
    plan: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn customers(conn: &mut PgConnection) -> Vec<Customer> {
    diesel::sql_query("SELECT slug, plan FROM app.customers ORDER BY slug")
        .load(conn)
        .unwrap()
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

#[test]
fn a_custom_registry_table_drives_the_life_cycle() {
    let db = test_db!("a_custom_registry_table_drives_the_life_cycle");
    let migrator = Migrator::builder(TENANT_MIGRATIONS)
        .shared(APP_SHARED)
        .registry(Registry::new("app", "customers").identifier_column("slug"))
        .build()
        .unwrap();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    // The library's own tables stay in public; the application's shared migration made `app`.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE schemaname = 'public' \
             AND tablename IN ('workspaces', 'workspace_migrations', 'workspace_spares')"
        ),
        3
    );

    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    migrator.create_tenant(&mut conn, &acme).unwrap();
    migrator.create_tenant(&mut conn, &globex).unwrap();
    assert_eq!(
        customers(&mut conn),
        [
            Customer {
                slug: "acme".into(),
                plan: "free".into()
            },
            Customer {
                slug: "globex".into(),
                plan: "free".into()
            },
        ]
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM public.workspaces"),
        0
    );
    assert_eq!(
        migrator.list_tenants(&mut conn).unwrap(),
        [acme.clone(), globex.clone()]
    );
    // The registry's schema is not a tenant name.
    assert!(migrator
        .create_tenant(&mut conn, &TenantId::new("app").unwrap())
        .is_err());

    // Routing works as with the built-in registry.
    switch(&acme, || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq("hello"))
            .execute(&mut conn)
    })
    .unwrap();

    let report = migrator
        .migrate_all(db.url(), &MigrateOptions::default())
        .unwrap();
    assert!(report.is_success());
    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status.len(), 2);
    assert!(status.iter().all(|s| s.pending.is_empty()));

    let acme2 = TenantId::new("acme_two").unwrap();
    migrator.rename_tenant(&mut conn, &acme, &acme2).unwrap();
    let titles: Vec<String> =
        switch(&acme2, || notes::table.select(notes::title).load(&mut conn)).unwrap();
    assert_eq!(titles, ["hello"]);
    migrator.drop_tenant(&mut conn, &globex).unwrap();
    assert_eq!(
        customers(&mut conn),
        [Customer {
            slug: "acme_two".into(),
            plan: "free".into()
        }]
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_catalog.pg_namespace WHERE nspname = 'globex'"
        ),
        0
    );
}
