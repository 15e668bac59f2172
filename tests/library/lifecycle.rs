//! Tenant life cycle: atomic provisioning, drop, rename, list, status, revert, drift, spares,
//! dropped schemas and non-transactional migrations.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, FileBasedMigrations};
use diesel_workspace::prelude::*;
use diesel_workspace::{Error, MigrateOptions, MigrationFailure, TenantId, TenantOutcome};

use crate::fleet::{central_rows, ledger_rows, migrator_for, Prefix, ADDITIVE, FLEET};

/// A tenant set whose second migration fails (`ALTER TABLE` of a table that does not exist).
pub const FAILING: EmbeddedMigrations = embed_migrations!("migrations/failing");
/// The example schema plus a `CREATE INDEX CONCURRENTLY` migration (`run_in_transaction = false`).
const CONCURRENT: EmbeddedMigrations = embed_migrations!("migrations/concurrent");

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

fn schema_exists(conn: &mut PgConnection, name: &str) -> bool {
    count(
        conn,
        &format!("SELECT count(*) AS n FROM pg_namespace WHERE nspname = '{name}'"),
    ) == 1
}

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[test]
fn provisioning_is_atomic() {
    let db = crate::test_db!("provisioning_is_atomic");
    let mut conn = db.conn();
    let migrator = migrator_for(&mut conn, FAILING);
    let acme = id("acme");
    let err = migrator.create_tenant(&mut conn, &acme).unwrap_err();
    let Error::TenantMigration { tenant, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(tenant, &acme);
    assert_eq!(err.to_string(), "migration failed for tenant `acme`");
    let failure: &MigrationFailure = source;
    assert_eq!(failure.version(), Some("20260201000002"));
    assert_eq!(failure.sqlstate(), Some("42P01"), "undefined_table");
    assert!(failure.message().contains("no_such_table"), "{failure}");
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM public.workspaces"),
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM public.workspace_migrations"
        ),
        0
    );
    assert!(!schema_exists(&mut conn, "acme"));

    // The bulk form: every tenant fails, none is left behind.
    let many = [id("b1"), id("b2"), id("b3")];
    let Err(Error::FleetMigration { report }) =
        migrator.create_tenants(db.url(), &many, &MigrateOptions::default().parallel(2))
    else {
        panic!("bulk provisioning must fail");
    };
    assert!(report
        .tenants
        .iter()
        .all(|(_, o)| matches!(o, TenantOutcome::Failed { .. } | TenantOutcome::Skipped)));
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM public.workspaces"),
        0
    );
    for t in &many {
        assert!(!schema_exists(&mut conn, t.as_str()));
    }
}

#[test]
fn create_tenants_in_bulk_list_and_exists() {
    let db = crate::test_db!("create_tenants_in_bulk");
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let tenants: Vec<TenantId> = (0..20).map(|i| id(&format!("bulk_{i:02}"))).collect();
    let report = migrator
        .create_tenants(db.url(), &tenants, &MigrateOptions::default().parallel(2))
        .unwrap();
    assert_eq!(report.applied().count(), 20);
    assert_eq!(migrator.list_tenants(&mut conn).unwrap(), tenants);
    let err = migrator.create_tenant(&mut conn, &tenants[3]).unwrap_err();
    assert!(
        matches!(err, Error::TenantExists(ref t) if t == &tenants[3]),
        "{err:?}"
    );
    let Err(Error::FleetMigration { report }) =
        migrator.create_tenants(db.url(), &tenants[..2], &MigrateOptions::default())
    else {
        panic!("existing tenants");
    };
    assert_eq!(report.failed().next().unwrap().1, Some("42P06"));
    // Reserved names.
    let err = migrator
        .create_tenant(&mut conn, &id("_spare_x"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTenantName { .. }), "{err:?}");
}

#[test]
fn drop_and_rename() {
    let db = crate::test_db!("drop_and_rename");
    let ids = db.provision(&["acme", "globex", "initech"]);
    let migrator = db.migrator();
    let mut conn = db.conn();

    migrator.drop_tenant(&mut conn, &ids[1]).unwrap();
    assert!(!schema_exists(&mut conn, "globex"));
    assert_eq!(
        migrator.list_tenants(&mut conn).unwrap(),
        vec![ids[0].clone(), ids[2].clone()]
    );
    assert!(central_rows(&mut conn).iter().all(|(s, _)| s != "globex"));
    let err = migrator.drop_tenant(&mut conn, &ids[1]).unwrap_err();
    assert!(matches!(err, Error::TenantNotFound(_)), "{err:?}");
    assert_eq!(err.to_string(), "tenant `globex` does not exist");

    // Rename: schema, registry and central record move together; data and ledger come along.
    conn.batch_execute("INSERT INTO acme.notes (title) VALUES ('kept')")
        .unwrap();
    let renamed = id("acme_corp");
    migrator
        .rename_tenant(&mut conn, &ids[0], &renamed)
        .unwrap();
    assert!(!schema_exists(&mut conn, "acme"));
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM acme_corp.notes"),
        1
    );
    assert_eq!(
        migrator.list_tenants(&mut conn).unwrap(),
        vec![renamed.clone(), ids[2].clone()]
    );
    let status = migrator.status_with_drift(&mut conn).unwrap();
    assert!(
        status
            .iter()
            .all(|s| s.pending.is_empty() && s.drift.is_none()),
        "{status:?}"
    );
    assert_eq!(
        ledger_rows(&mut conn, std::slice::from_ref(&renamed)).len(),
        1
    );

    let err = migrator
        .rename_tenant(&mut conn, &renamed, &ids[2])
        .unwrap_err();
    assert!(
        matches!(err, Error::TenantExists(ref t) if t == &ids[2]),
        "{err:?}"
    );
    let err = migrator
        .rename_tenant(&mut conn, &ids[1], &id("nobody"))
        .unwrap_err();
    assert!(matches!(err, Error::TenantNotFound(_)), "{err:?}");
}

#[test]
fn status_revert_and_drift() {
    let db = crate::test_db!("status_revert_and_drift");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(FLEET, 3));
    let (a, b) = (id("alpha"), id("beta"));
    before.create_tenant(&mut conn, &a).unwrap();
    before.create_tenant(&mut conn, &b).unwrap();
    let migrator = migrator_for(&mut conn, FLEET);
    let versions = migrator.tenant_versions().to_vec();
    assert_eq!(versions.len(), 5);

    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status.len(), 2);
    assert_eq!(status[0].tenant, a);
    assert_eq!(status[0].applied, versions[..3]);
    assert_eq!(status[0].pending, versions[3..]);
    assert_eq!(status[0].drift, None);

    assert_eq!(
        migrator.migrate_tenant(&mut conn, &a).unwrap(),
        TenantOutcome::Applied(versions[3..].to_vec())
    );
    assert_eq!(
        migrator.migrate_tenant(&mut conn, &a).unwrap(),
        TenantOutcome::UpToDate
    );

    // Revert: down.sql, ledger and central record together.
    assert_eq!(
        migrator.revert_last(&mut conn, &a).unwrap(),
        Some(versions[4].clone())
    );
    assert!(!schema_exists_table(&mut conn, "alpha", "step_5"));
    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status[0].pending, versions[4..]);
    assert_eq!(migrator.drift(&mut conn, &a).unwrap(), None);

    // Revert everywhere.
    let report = migrator
        .revert_last_all(db.url(), &MigrateOptions::default())
        .unwrap();
    assert_eq!(
        report.outcome(&a),
        Some(&TenantOutcome::Applied(vec![versions[3].clone()]))
    );
    assert_eq!(
        report.outcome(&b),
        Some(&TenantOutcome::Applied(vec![versions[2].clone()]))
    );
    for _ in 0..3 {
        migrator.revert_last(&mut conn, &b).unwrap();
    }
    assert_eq!(migrator.revert_last(&mut conn, &b).unwrap(), None);

    // Drift: the ledger and the central record disagree.
    conn.batch_execute(&format!(
        "DELETE FROM public.workspace_migrations WHERE schema_name = 'alpha' AND version = '{}'",
        versions[0]
    ))
    .unwrap();
    let drift = migrator.drift(&mut conn, &a).unwrap().unwrap();
    assert_eq!(
        drift,
        format!(
            "the ledger has {} missing from the central record",
            versions[0]
        )
    );
    let all = migrator.status_with_drift(&mut conn).unwrap();
    assert_eq!(all[0].drift.as_deref(), Some(drift.as_str()));
    assert_eq!(all[1].drift, None);
    conn.batch_execute("DROP SCHEMA beta CASCADE").unwrap();
    assert_eq!(
        migrator.drift(&mut conn, &b).unwrap().as_deref(),
        Some("the schema is missing")
    );
}

fn schema_exists_table(conn: &mut PgConnection, schema: &str, table: &str) -> bool {
    count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM information_schema.tables \
             WHERE table_schema = '{schema}' AND table_name = '{table}'"
        ),
    ) == 1
}

#[test]
fn dropped_schema_fails_clearly_and_creates_nothing() {
    let db = crate::test_db!("dropped_schema");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    let ghost = id("ghost");
    before.create_tenant(&mut conn, &ghost).unwrap();
    let other = id("other");
    before.create_tenant(&mut conn, &other).unwrap();
    conn.batch_execute("DROP SCHEMA ghost CASCADE").unwrap();
    let public_before = count(
        &mut conn,
        "SELECT count(*) AS n FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    );
    let migrator = migrator_for(&mut conn, ADDITIVE);

    // Switching into it.
    let err = conn
        .transaction_in(&ghost, |c| {
            diesel::sql_query("SELECT count(*) AS n FROM notes").get_result::<Count>(c)
        })
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    // Migrating it.
    let err = migrator.migrate_tenant(&mut conn, &ghost).unwrap_err();
    assert!(
        matches!(err, Error::SchemaMissing(ref t) if t == &ghost),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the schema of tenant `ghost` does not exist"
    );
    let Err(Error::FleetMigration { report }) = migrator.migrate_all(
        db.url(),
        &MigrateOptions::default().on_failure(diesel_workspace::FailurePolicy::Continue),
    ) else {
        panic!("the ghost tenant must fail");
    };
    assert_eq!(
        report.outcome(&ghost),
        Some(&TenantOutcome::Failed {
            sqlstate: Some("3F000".into()),
            message: "the schema of tenant `ghost` does not exist".into()
        })
    );
    assert!(matches!(
        report.outcome(&other),
        Some(TenantOutcome::Applied(_))
    ));
    assert!(!schema_exists(&mut conn, "ghost"));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ),
        public_before,
        "nothing was created in public"
    );
}

#[test]
fn spares_are_claimed_by_create_and_refilled() {
    let db = crate::test_db!("spares");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    assert_eq!(before.fill_spares(&mut conn, 3).unwrap(), 3);
    assert_eq!(before.fill_spares(&mut conn, 3).unwrap(), 0);
    let spares = before.spares(&mut conn).unwrap();
    assert_eq!(spares.len(), 3);
    assert!(spares.iter().all(|s| s.as_str().starts_with("_spare_")));
    // Spares are not tenants: not listed, not migrated.
    assert!(before.list_tenants(&mut conn).unwrap().is_empty());
    assert!(before.status(&mut conn).unwrap().is_empty());

    let acme = id("acme");
    before.create_tenant(&mut conn, &acme).unwrap();
    assert_eq!(
        before.spares(&mut conn).unwrap().len(),
        2,
        "one spare claimed"
    );
    assert!(
        !schema_exists(&mut conn, spares[0].as_str()),
        "the oldest was renamed"
    );
    assert_eq!(before.list_tenants(&mut conn).unwrap(), vec![acme.clone()]);
    assert!(central_rows(&mut conn)
        .iter()
        .all(|(s, _)| s == "acme" || s.starts_with("_spare_")));
    assert_eq!(before.drift(&mut conn, &acme).unwrap(), None);
    conn.transaction_in(&acme, |c| {
        c.batch_execute("INSERT INTO notes (title) VALUES ('from a spare')")
    })
    .unwrap();

    // A new tenant migration makes the spares stale: they are not claimed, and refilling
    // brings them up to date.
    let after = migrator_for(&mut conn, ADDITIVE);
    let globex = id("globex");
    after.create_tenant(&mut conn, &globex).unwrap();
    assert_eq!(
        after.spares(&mut conn).unwrap().len(),
        2,
        "stale spares are not claimed"
    );
    assert_eq!(after.fill_spares(&mut conn, 2).unwrap(), 0);
    let initech = id("initech");
    after.create_tenant(&mut conn, &initech).unwrap();
    assert_eq!(after.spares(&mut conn).unwrap().len(), 1);
    let status = after.status_with_drift(&mut conn).unwrap();
    let acme_status = &status[0];
    assert_eq!(
        acme_status.pending.len(),
        1,
        "acme is a tenant, still pending"
    );
    assert!(status[1..]
        .iter()
        .all(|s| s.pending.is_empty() && s.drift.is_none()));
    // The migrated spare has the new column.
    assert!(schema_exists_table(&mut conn, "initech", "notes"));
    count(&mut conn, "SELECT count(priority) AS n FROM initech.notes");

    assert_eq!(after.drain_spares(&mut conn).unwrap(), 1);
    assert!(after.spares(&mut conn).unwrap().is_empty());
}

#[test]
fn non_transactional_migrations_run_on_their_own_path() {
    let db = crate::test_db!("non_transactional");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(CONCURRENT, 1));
    let acme = id("acme");
    before.create_tenant(&mut conn, &acme).unwrap();
    let migrator = migrator_for(&mut conn, CONCURRENT);
    let report = migrator
        .migrate_all(db.url(), &MigrateOptions::default())
        .unwrap();
    let version = migrator.tenant_versions()[1].clone();
    assert_eq!(
        report.outcome(&acme),
        Some(&TenantOutcome::Applied(vec![version]))
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_indexes WHERE schemaname = 'acme' \
             AND indexname = 'notes_title_idx'"
        ),
        1
    );
    // The session's search_path is restored.
    #[derive(QueryableByName)]
    struct Path {
        #[diesel(sql_type = Text)]
        p: String,
    }
    let path = diesel::sql_query("SELECT current_setting('search_path') AS p")
        .get_result::<Path>(&mut conn)
        .unwrap();
    assert_eq!(path.p, "\"$user\", public");
    // Reverting it takes the same path (`DROP INDEX CONCURRENTLY` cannot run in a transaction).
    let version = migrator.tenant_versions()[1].clone();
    assert_eq!(
        migrator.revert_last(&mut conn, &acme).unwrap(),
        Some(version.clone())
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_indexes WHERE schemaname = 'acme' \
             AND indexname = 'notes_title_idx'"
        ),
        0
    );
    assert_eq!(
        migrator.status(&mut conn).unwrap()[0].pending,
        vec![version]
    );
    assert_eq!(migrator.drift(&mut conn, &acme).unwrap(), None);
    migrator.migrate_tenant(&mut conn, &acme).unwrap();
    // A new tenant gets it too (after its atomic transactional part).
    let globex = id("globex");
    migrator.create_tenant(&mut conn, &globex).unwrap();
    assert!(migrator
        .status_with_drift(&mut conn)
        .unwrap()
        .iter()
        .all(|s| s.pending.is_empty() && s.drift.is_none()));
}

#[test]
fn file_based_migrations_at_run_time() {
    let db = crate::test_db!("file_based");
    let mut conn = db.conn();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/fleet");
    let migrator = migrator_for(&mut conn, FileBasedMigrations::from_path(dir).unwrap());
    assert_eq!(migrator.tenant_versions().len(), 5);
    migrator.create_tenant(&mut conn, &id("acme")).unwrap();
    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status[0].applied.len(), 5);
}
