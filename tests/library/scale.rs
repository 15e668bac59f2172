//! A fleet past PostgreSQL's default lock table: every fleet-wide read works with more tenants
//! than `max_locks_per_transaction` × `max_connections` (64 × 100 by default) lets one
//! transaction lock, in the library and in the CLI.
//!
//! Reading two relations (a ledger and its index) per tenant in one transaction holds two locks
//! per tenant until it ends; past about 6,000 tenants on a default server that fails with `out
//! of shared memory`. The fleet here is larger than the server's own limit, read from the server.
//! The pool's memory bound and catalog estimate are in [`memory`], its shards in [`shards`].

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_workspace::{Hazard, MigrateOptions, Migrator, TenantId};

use crate::support::cli::Workdir;
use crate::support::SCALE_MIGRATIONS;
use crate::test_db;

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many relation locks the server's shared lock table holds at most.
fn lock_table_size(conn: &mut PgConnection) -> i64 {
    diesel::sql_query(
        "SELECT (pg_catalog.current_setting('max_locks_per_transaction')::int8 * \
         (pg_catalog.current_setting('max_connections')::int8 + \
          pg_catalog.current_setting('max_prepared_transactions')::int8)) AS n",
    )
    .get_result::<Number>(conn)
    .unwrap()
    .n
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    flag: bool,
}

/// Whether `public.<table>` has been analyzed by an `ANALYZE` command (not by autovacuum).
fn analyzed(conn: &mut PgConnection, table: &str) -> bool {
    diesel::sql_query(
        "SELECT last_analyze IS NOT NULL AS flag FROM pg_catalog.pg_stat_user_tables \
         WHERE schemaname = 'public' AND relname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .get_result::<Flag>(conn)
    .unwrap()
    .flag
}

/// A bulk call that adds few rows leaves the registry to autovacuum; one that adds many
/// analyzes it (the control for the fleet test's check).
#[test]
fn small_bulk_calls_do_not_analyze_the_registry() {
    let db = test_db!("small_bulk_calls_do_not_analyze_the_registry");
    let mut conn = db.conn();
    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut conn).unwrap();
    let ids: Vec<TenantId> = (0..5)
        .map(|i| TenantId::new(format!("s{i}")).unwrap())
        .collect();
    let report = migrator
        .create_tenants(db.url(), &ids, &MigrateOptions::default())
        .unwrap();
    assert_eq!(report.applied().count(), 5);
    migrator.fill_spares(&mut conn, 3).unwrap();
    assert!(!analyzed(&mut conn, "workspaces"));
    assert!(!analyzed(&mut conn, "workspace_spares"));
    // Past the threshold, the warm pool's filling analyzes too.
    migrator.fill_spares(&mut conn, 203).unwrap();
    assert!(analyzed(&mut conn, "workspace_spares"));
    assert!(analyzed(&mut conn, "workspaces"));
}

#[test]
fn every_fleet_read_works_past_the_lock_table() {
    let db = test_db!("every_fleet_read_works_past_the_lock_table");
    let mut conn = db.conn();
    // One lock per tenant in one transaction would need more than the whole table.
    let tenants = usize::try_from(lock_table_size(&mut conn) + 600).unwrap();
    assert!(tenants >= 3_000, "{tenants}");
    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut conn).unwrap();
    let ids: Vec<TenantId> = (0..tenants)
        .map(|i| TenantId::new(format!("t{i:05}")).unwrap())
        .collect();
    let opts = MigrateOptions::default().parallel(2);
    let report = migrator.create_tenants(db.url(), &ids, &opts).unwrap();
    assert!(report.is_success(), "{}", report.failure_summary());
    assert_eq!(report.applied().count(), tenants);
    // A bulk creation this large analyzes the registry's tables itself.
    assert!(analyzed(&mut conn, "workspaces"));
    assert!(analyzed(&mut conn, "workspace_migrations"));

    // The control: reading every ledger in one transaction would need more locks than the
    // server's shared lock table holds. Measured on one batch and extrapolated, not run out for
    // real: the table is shared by every test on this server, and exhausting it would fail them.
    let batch = &ids[..500];
    let locks_per_tenant = conn
        .transaction(|c| {
            let sql = batch
                .iter()
                .map(|t| {
                    format!(
                        "SELECT count(*) AS n FROM {}.__diesel_schema_migrations",
                        t.quoted()
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            diesel::sql_query(sql).load::<Number>(c)?;
            let held = diesel::sql_query(
                "SELECT count(*) AS n FROM pg_catalog.pg_locks \
                 WHERE pid = pg_catalog.pg_backend_pid() AND locktype = 'relation'",
            )
            .get_result::<Number>(c)?;
            diesel::QueryResult::Ok(held.n as f64 / batch.len() as f64)
        })
        .unwrap();
    assert!(
        locks_per_tenant >= 1.0,
        "{locks_per_tenant} locks per tenant"
    );
    let needed = locks_per_tenant * tenants as f64;
    assert!(
        needed > lock_table_size(&mut conn) as f64,
        "one transaction over {tenants} tenants needs {needed} locks"
    );

    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status.len(), tenants);
    assert!(status.iter().all(|s| s.pending.is_empty()));
    let drifted = migrator.status_with_drift(&mut conn).unwrap();
    assert_eq!(drifted.len(), tenants);
    assert!(
        drifted.iter().all(|s| s.drift.is_none()),
        "no tenant drifts"
    );
    assert_eq!(migrator.list_tenants(&mut conn).unwrap().len(), tenants);
    // The tests connect as a superuser: that is the one finding.
    let hazards = migrator.audit(&mut conn).unwrap();
    assert!(
        hazards
            .iter()
            .all(|h| matches!(h, Hazard::Superuser { .. })),
        "{hazards:?}"
    );
    let report = migrator.migrate_all(db.url(), &opts).unwrap();
    assert_eq!(report.up_to_date().count(), tenants);

    // The CLI, with the same tenant set.
    let w = Workdir::new();
    let tenant_dir = w.path().join("migrations_tenant");
    std::fs::remove_dir_all(&tenant_dir).unwrap();
    std::fs::create_dir_all(tenant_dir.join("2026-05-01-000001_create_items")).unwrap();
    for file in ["up.sql", "down.sql"] {
        std::fs::copy(
            crate::support::cli::repo_root()
                .join("tests/migrations/scale/2026-05-01-000001_create_items")
                .join(file),
            tenant_dir.join("2026-05-01-000001_create_items").join(file),
        )
        .unwrap();
    }
    for args in [
        &["status"][..],
        &["list_tenants"],
        &["pending"],
        &["migrate_all"],
        &["status", "--format", "json"],
    ] {
        let run = w.run(&db, args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    let listed = w.run(&db, &["list_tenants"]);
    assert!(
        listed.stdout.contains("t00000") && listed.stdout.contains(&format!("t{:05}", tenants - 1))
    );
}

diesel_workspace::tenant_table! {
    items (id) {
        id -> Int4,
    }
}

mod memory;
mod shards;
