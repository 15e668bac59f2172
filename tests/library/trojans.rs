//! No object planted outside `pg_catalog` changes what the library's own SQL does
//! (CVE-2018-1058): operators for every type pair the library compares, shadows of every function
//! it calls and look-alike tables, planted in the shared schema and in a tenant schema, each
//! logging its calls. Every library path runs on a trojaned database and on a clean one: the
//! trojans are never called, and the results are the same.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::prelude::*;
use diesel_workspace::{
    switch, FailurePolicy, Hazard, MigrateOptions, MigrationReport, Migrator, TenantId,
};

use crate::support::schema::notes;
use crate::support::{trojan, TestDb, SHARED_MIGRATIONS};
use crate::test_db;

const ADDITIVE: EmbeddedMigrations = embed_migrations!("migrations/additive");

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn migrator() -> Migrator {
    Migrator::builder(ADDITIVE)
        .shared(SHARED_MIGRATIONS)
        .build()
        .unwrap()
}

fn report(r: &MigrationReport) -> String {
    let mut lines: Vec<String> = r
        .tenants
        .iter()
        .map(|(t, o)| format!("{t}: {o:?}"))
        .collect();
    lines.sort();
    lines.join("; ")
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Runs every library path on `db` and returns what each returned, one line each. Spare names
/// are random, so spares are reported by count. `plant` runs once the registry exists and the
/// tenant `victim` is provisioned.
fn run_paths(db: &TestDb, plant: impl FnOnce(&mut PgConnection)) -> Vec<String> {
    let m = migrator();
    let mut out = Vec::new();
    let mut conn = db.conn();
    out.push(format!(
        "run_shared: {:?}",
        m.run_shared(&mut conn).unwrap()
    ));
    m.create_tenant(&mut conn, &id("victim")).unwrap();
    plant(&mut conn);
    drop(conn);
    // A fresh connection: nothing cached from before the trojans were planted.
    let mut conn = db.conn();
    let opts = MigrateOptions::default()
        .parallel(2)
        .on_failure(FailurePolicy::Continue);

    out.push(format!(
        "run_shared again: {:?}",
        m.run_shared(&mut conn).unwrap()
    ));
    out.push(format!(
        "fill_spares: {}",
        m.fill_spares(&mut conn, 2).unwrap()
    ));
    out.push(format!("spares: {}", m.spares(&mut conn).unwrap().len()));
    m.create_tenant(&mut conn, &id("acme")).unwrap(); // claims a spare
    m.create_tenant(&mut conn, &id("globex")).unwrap();
    m.create_tenant(&mut conn, &id("initech")).unwrap(); // no spare left: provisions
    out.push(format!(
        "spares after claims: {}",
        m.spares(&mut conn).unwrap().len()
    ));
    out.push(format!(
        "create_tenants: {}",
        report(
            &m.create_tenants(db.url(), &[id("umbrella"), id("hooli")], &opts)
                .unwrap()
        )
    ));
    out.push(format!("tenants: {:?}", m.list_tenants(&mut conn).unwrap()));
    out.push(format!(
        "revert_last victim: {:?}",
        m.revert_last(&mut conn, &id("victim")).unwrap()
    ));
    out.push(format!(
        "revert_last acme: {:?}",
        m.revert_last(&mut conn, &id("acme")).unwrap()
    ));
    out.push(format!("status: {:?}", m.status(&mut conn).unwrap()));
    out.push(format!(
        "status_with_drift: {:?}",
        m.status_with_drift(&mut conn).unwrap()
    ));
    out.push(format!(
        "drift victim: {:?}",
        m.drift(&mut conn, &id("victim")).unwrap()
    ));
    out.push(format!(
        "migrate_tenant victim: {:?}",
        m.migrate_tenant(&mut conn, &id("victim")).unwrap()
    ));
    out.push(format!(
        "migrate_all: {}",
        report(&m.migrate_all(db.url(), &opts).unwrap())
    ));
    out.push(format!(
        "revert_last_all: {}",
        report(&m.revert_last_all(db.url(), &opts).unwrap())
    ));
    out.push(format!(
        "migrate_all_with: {}",
        report(&m.migrate_all_with(&mut conn, db.url(), &opts).unwrap())
    ));
    out.push(format!(
        "startup: {}",
        report(&m.startup(db.url(), &opts).unwrap())
    ));
    out.push(format!(
        "revert_version acme: {:?}",
        m.revert_version(&mut conn, &id("acme"), "20260301000001", &opts)
            .unwrap()
    ));
    out.push(format!(
        "revert_version acme again: {:?}",
        m.revert_version(&mut conn, &id("acme"), "20260301000001", &opts)
            .unwrap()
    ));
    out.push(format!(
        "revert_version victim, not the last: {}",
        m.revert_version(&mut conn, &id("victim"), "20260101000001", &opts)
            .is_err()
    ));
    out.push(format!(
        "revert_version_all: {}",
        report(
            &m.revert_version_all(db.url(), "20260301000001", &opts)
                .unwrap()
        )
    ));
    out.push(format!(
        "revert_last_with victim: {:?}",
        m.revert_last_with(&mut conn, &id("victim"), &opts).unwrap()
    ));
    out.push(format!(
        "migrate_all again: {}",
        report(&m.migrate_all(db.url(), &opts).unwrap())
    ));
    out.push(format!(
        "installed: {} {} {}",
        m.is_registry_installed(&mut conn).unwrap(),
        m.is_installed(&mut conn).unwrap(),
        m.is_registered(&mut conn, &id("victim")).unwrap()
    ));
    out.push(format!(
        "shared_status: {:?}",
        m.shared_status(&mut conn).unwrap()
    ));
    // The pool's session set-up and checkout, and a tenant-table query through it.
    let pool = diesel_workspace::pool::builder()
        .max_size(1)
        .build(db.url())
        .unwrap();
    let mut pooled = pool.get().unwrap();
    let titles: Vec<String> = switch(&id("victim"), || {
        notes::table
            .select(notes::title)
            .order(notes::id)
            .load(&mut *pooled)
    })
    .unwrap();
    out.push(format!("pooled victim notes: {titles:?}"));
    drop(pooled);
    drop(pool);
    out.push(format!(
        "set_tenant_status: {:?} then {:?}",
        diesel_workspace::registry::set_lifecycle_state(
            &mut conn,
            &id("globex"),
            diesel_workspace::registry::LifecycleState::Suspended
        )
        .unwrap(),
        diesel_workspace::registry::lifecycle_state(&mut conn, &id("globex")).unwrap()
    ));
    m.rename_tenant(&mut conn, &id("initech"), &id("initrode"))
        .unwrap();
    m.drop_tenant(&mut conn, &id("hooli")).unwrap();
    out.push(format!("tenants: {:?}", m.list_tenants(&mut conn).unwrap()));
    // A tenant transaction in the trojaned tenant: the library's BEGIN and its check; the raw SQL
    // inside is the application's own, so it qualifies what it calls.
    let n = switch(&id("victim"), || {
        conn.tenant_transaction(|conn| {
            diesel::sql_query("SELECT pg_catalog.count(*) AS n FROM notes").get_result::<N>(conn)
        })
    })
    .unwrap();
    out.push(format!("victim notes: {}", n.n));
    out.push(format!(
        "drain_spares: {}",
        m.drain_spares(&mut conn).unwrap()
    ));
    out.push(format!(
        "final status: {:?}",
        m.status_with_drift(&mut conn).unwrap()
    ));
    out
}

#[test]
fn planted_objects_never_run_and_change_nothing() {
    let clean = test_db!("trojans_clean");
    let expected = run_paths(&clean, |_| {});

    let db = test_db!("trojans_planted");
    let mut planted = 0;
    let got = run_paths(&db, |conn| {
        trojan::create_log(conn);
        planted += trojan::plant(conn, "public");
        planted += trojan::plant(conn, "victim");
    });
    assert!(planted > 400, "only {planted} trojans planted");
    let mut conn = db.conn();
    conn.batch_execute("SET search_path TO pg_catalog").unwrap();
    let (calls, what) = trojan::calls(&mut conn);
    assert_eq!((calls, what), (0, Vec::<String>::new()), "trojans ran");
    assert_eq!(got, expected);

    // The audit names them: every operator and shadow is an overload of a pg_catalog name.
    let hazards = migrator().audit(&mut conn).unwrap();
    let overloads = hazards
        .iter()
        .filter(|h| matches!(h, Hazard::CatalogNameOverloaded { .. }))
        .count();
    assert!(overloads > 350, "{overloads} overloads reported");
    assert!(hazards.contains(&Hazard::CatalogNameOverloaded {
        schema: "public".into(),
        kind: "operator",
        signature: "public.=(character varying,text)".into(),
    }));
    assert!(hazards.contains(&Hazard::CatalogNameOverloaded {
        schema: "victim".into(),
        kind: "function",
        signature: "victim.hashtext(character varying)".into(),
    }));
    let (calls, _) = trojan::calls(&mut conn);
    assert_eq!(calls, 0, "the audit ran a trojan");

    // Negative control: SQL that resolves operators through a path naming `public` runs them.
    conn.batch_execute("SET search_path TO public").unwrap();
    let hit = diesel::sql_query(
        "SELECT pg_catalog.count(*) AS n FROM public.workspace_migrations WHERE version = 'x'::text",
    )
    .get_result::<N>(&mut conn)
    .unwrap();
    assert_eq!(hit.n, 0);
    conn.batch_execute("SET search_path TO pg_catalog").unwrap();
    let (calls, what) = trojan::calls(&mut conn);
    assert!(calls > 0, "the control query did not reach the trojan");
    assert!(
        what.contains(&"public.=(pg_catalog.varchar,pg_catalog.text)".to_owned()),
        "{what:?}"
    );
}
