//! Fleet migrations: concurrency, crashes, failure policies, convergence.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{Error, FailurePolicy, MigrateOptions, Migrator, TenantId, TenantOutcome};

use crate::support::SHARED_MIGRATIONS;

/// Five migrations, each creating a table `step_<n>`.
pub const FLEET: EmbeddedMigrations = embed_migrations!("migrations/fleet");
/// The example schema plus an additive migration (`notes.priority` with a default, and an
/// index on it).
pub const ADDITIVE: EmbeddedMigrations = embed_migrations!("migrations/additive");

/// The first `n` migrations of a source: a tenant set "before" a release.
pub struct Prefix<S>(pub S, pub usize);

impl<S: MigrationSource<Pg>> MigrationSource<Pg> for Prefix<S> {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        let mut all = self.0.migrations()?;
        all.sort_by(|a, b| a.name().version().cmp(&b.name().version()));
        all.truncate(self.1);
        Ok(all)
    }
}

/// A migrator over `source` with the test's shared tables, after running the shared set.
pub fn migrator_for<S>(conn: &mut PgConnection, source: S) -> Migrator
where
    S: MigrationSource<Pg> + Send + Sync + 'static,
{
    let m = Migrator::builder(source)
        .shared(SHARED_MIGRATIONS)
        .build()
        .unwrap();
    m.run_shared(conn).expect("shared migrations");
    m
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `(tenant, version)` pairs of every tenant's own ledger.
pub fn ledger_rows(conn: &mut PgConnection, tenants: &[TenantId]) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for t in tenants {
        let versions: Vec<Name> = diesel::sql_query(format!(
            "SELECT version::text AS name FROM {}.__diesel_schema_migrations ORDER BY 1",
            t.quoted()
        ))
        .load(conn)
        .expect("read a ledger");
        rows.extend(versions.into_iter().map(|v| (t.to_string(), v.name)));
    }
    rows
}

/// `(tenant, version)` pairs of the central record.
pub fn central_rows(conn: &mut PgConnection) -> Vec<(String, String)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        schema_name: String,
        #[diesel(sql_type = Text)]
        version: String,
    }
    diesel::sql_query(
        "SELECT schema_name, version::text AS version FROM public.workspace_migrations ORDER BY 1, 2",
    )
    .load::<Row>(conn)
    .expect("read the central record")
    .into_iter()
    .map(|r| (r.schema_name, r.version))
    .collect()
}

/// Tables of `schema` named `step_%`, sorted.
fn step_tables(conn: &mut PgConnection, schema: &TenantId) -> Vec<String> {
    diesel::sql_query(
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name LIKE 'step\\_%' ORDER BY 1",
    )
    .bind::<Text, _>(schema.as_str())
    .load::<Name>(conn)
    .expect("list tables")
    .into_iter()
    .map(|r| r.name)
    .collect()
}

fn ids(prefix: &str, n: usize) -> Vec<TenantId> {
    (0..n)
        .map(|i| TenantId::new(format!("{prefix}{i:02}")).unwrap())
        .collect()
}

#[test]
fn concurrent_migrate_all_applies_each_migration_once() {
    let db = crate::test_db!("concurrent_migrate_all");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(FLEET, 0));
    let tenants = ids("t", 50);
    for t in &tenants {
        before.create_tenant(&mut conn, t).unwrap();
    }
    let after = migrator_for(&mut conn, FLEET);
    let url = db.url().to_owned();
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let after = after.clone();
                let url = url.clone();
                s.spawn(move || after.migrate_all(&url, &MigrateOptions::default().parallel(2)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut applied_by: std::collections::HashMap<(String, String), usize> = Default::default();
    for r in &reports {
        let r = r.as_ref().expect("every migrate_all succeeds");
        assert!(r.is_success());
        assert_eq!(r.tenants.len(), 50);
        for (t, versions) in r.applied() {
            for v in versions {
                *applied_by.entry((t.to_string(), v.clone())).or_default() += 1;
            }
        }
    }
    // Across the four runs, each (tenant, version) was applied by exactly one of them.
    assert_eq!(applied_by.len(), 50 * 5);
    assert!(applied_by.values().all(|&n| n == 1), "{applied_by:?}");
    let expected: BTreeSet<(String, String)> = tenants
        .iter()
        .flat_map(|t| {
            after
                .tenant_versions()
                .iter()
                .map(move |v| (t.to_string(), v.clone()))
        })
        .collect();
    let ledger = ledger_rows(&mut conn, &tenants);
    assert_eq!(ledger.len(), 250, "no duplicate ledger rows");
    assert_eq!(ledger.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        central_rows(&mut conn).into_iter().collect::<BTreeSet<_>>(),
        expected
    );
    for t in &tenants {
        assert_eq!(step_tables(&mut conn, t).len(), 5);
    }
}

#[test]
fn killed_backends_leave_each_tenant_at_one_version_and_a_rerun_converges() {
    let db = crate::test_db!("killed_backends");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(FLEET, 1));
    let after = migrator_for(&mut conn, FLEET);
    let versions = after.tenant_versions().to_vec();
    let mut all = Vec::new();
    // A cheap deterministic generator for the kill delays.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut killed_runs = 0;
    for trial in 0..20 {
        // The killer ends every other backend, this one included: a fresh connection per trial.
        let mut conn = db.conn();
        let tenants = ids(&format!("k{trial:02}_"), 6);
        for t in &tenants {
            before.create_tenant(&mut conn, t).unwrap();
        }
        all.extend(tenants.iter().cloned());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_micros(seed % 40_000);
        let url = db.url().to_owned();
        let result = std::thread::scope(|s| {
            let run = s.spawn(|| {
                after.migrate_all(
                    &url,
                    &MigrateOptions::default()
                        .parallel(2)
                        .on_failure(FailurePolicy::Continue),
                )
            });
            std::thread::sleep(delay);
            let mut killer = db.conn();
            killer
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .unwrap();
            run.join().unwrap()
        });
        if result.is_err() {
            killed_runs += 1;
        }
        // Whatever happened, every tenant is at exactly one version: its ledger is a prefix of
        // the set, and its tables match its ledger and the central record.
        let mut conn = db.conn();
        let central = central_rows(&mut conn);
        for t in &all {
            let ledger: Vec<String> = ledger_rows(&mut conn, std::slice::from_ref(t))
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            assert_eq!(ledger, versions[..ledger.len()], "{t}: ledger is a prefix");
            let tables = step_tables(&mut conn, t);
            let expected: Vec<String> = (1..=ledger.len()).map(|i| format!("step_{i}")).collect();
            assert_eq!(tables, expected, "{t}: tables match the ledger");
            let c: Vec<String> = central
                .iter()
                .filter(|(s, _)| s == t.as_str())
                .map(|(_, v)| v.clone())
                .collect();
            assert_eq!(c, ledger, "{t}: central record matches the ledger");
        }
    }
    assert!(killed_runs > 0, "at least one run was interrupted");
    let report = after
        .migrate_all(db.url(), &MigrateOptions::default())
        .expect("the rerun succeeds");
    assert!(report.is_success());
    let mut conn = db.conn();
    for t in &all {
        assert_eq!(step_tables(&mut conn, t).len(), 5, "{t}");
    }
    assert_eq!(central_rows(&mut conn).len(), all.len() * 5);
}

/// Counts DDL commands with an event trigger.
fn install_ddl_counter(conn: &mut PgConnection) {
    conn.batch_execute(
        "CREATE TABLE public.ddl_log (tag text NOT NULL); \
         CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO public.ddl_log VALUES (tg_tag); END $$; \
         CREATE EVENT TRIGGER count_ddl ON ddl_command_start EXECUTE FUNCTION public.log_ddl();",
    )
    .unwrap();
}

fn ddl_count(conn: &mut PgConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM public.ddl_log")
        .get_result::<Count>(conn)
        .unwrap()
        .n
}

#[test]
fn conflicting_tenant_stop_continue_and_convergence() {
    let db = crate::test_db!("conflicting_tenant");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    let tenants = ids("c", 40);
    for t in &tenants {
        before.create_tenant(&mut conn, t).unwrap();
    }
    let bad = &tenants[17];
    conn.batch_execute(&format!(
        "ALTER TABLE {}.notes ADD COLUMN priority TEXT",
        bad.quoted()
    ))
    .unwrap();
    let after = migrator_for(&mut conn, ADDITIVE);
    let new_version = after.tenant_versions()[1].clone();

    // Stop, one worker: tenants before 17 are migrated, 17 failed, the rest skipped.
    let stop = MigrateOptions::default()
        .parallel(1)
        .on_failure(FailurePolicy::Stop);
    let Err(Error::FleetMigration { report }) = after.migrate_all(db.url(), &stop) else {
        panic!("tenant 17 must fail");
    };
    let message = Error::FleetMigration {
        report: report.clone(),
    }
    .to_string();
    assert_eq!(message, "migration failed for 1 of 40 tenants: `c17`");
    for (i, (t, outcome)) in report.tenants.iter().enumerate() {
        assert_eq!(t, &tenants[i]);
        match i {
            0..=16 => assert_eq!(outcome, &TenantOutcome::Applied(vec![new_version.clone()])),
            17 => match outcome {
                TenantOutcome::Failed { sqlstate, message } => {
                    assert_eq!(sqlstate.as_deref(), Some("42701"));
                    assert!(message.contains(&new_version), "{message}");
                    assert!(message.contains("priority"), "{message}");
                }
                other => panic!("{other:?}"),
            },
            _ => assert_eq!(outcome, &TenantOutcome::Skipped),
        }
    }
    let status = after.status(&mut conn).unwrap();
    let pending: Vec<&str> = status
        .iter()
        .filter(|s| !s.pending.is_empty())
        .map(|s| s.tenant.as_str())
        .collect();
    assert_eq!(pending.len(), 23, "17 and the 22 skipped ones are pending");

    // Continue, several workers: every other tenant is migrated; 17 still fails, untouched.
    let cont = MigrateOptions::default()
        .parallel(3)
        .on_failure(FailurePolicy::Continue);
    let Err(Error::FleetMigration { report }) = after.migrate_all(db.url(), &cont) else {
        panic!("tenant 17 must fail again");
    };
    let failed: Vec<_> = report.failed().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, bad);
    assert_eq!(failed[0].1, Some("42701"));
    assert_eq!(report.applied().count(), 22);
    assert_eq!(report.up_to_date().count(), 17);
    assert_eq!(report.skipped().count(), 0);
    let ledger = ledger_rows(&mut conn, std::slice::from_ref(bad));
    assert_eq!(ledger.len(), 1, "the failed tenant kept its old version");

    // Fix tenant 17, rerun: converges. Another rerun runs no DDL.
    conn.batch_execute(&format!(
        "ALTER TABLE {}.notes DROP COLUMN priority",
        bad.quoted()
    ))
    .unwrap();
    let report = after.migrate_all(db.url(), &cont).unwrap();
    assert_eq!(
        report.applied().map(|(t, _)| t).collect::<Vec<_>>(),
        vec![bad]
    );
    install_ddl_counter(&mut conn);
    let done = Arc::new(AtomicUsize::new(0));
    let seen = done.clone();
    let quiet = cont.clone().progress(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let report = after.migrate_all(db.url(), &quiet).unwrap();
    assert_eq!(report.up_to_date().count(), 40);
    assert_eq!(ddl_count(&mut conn), 0, "nothing pending: no DDL");
    assert_eq!(done.load(Ordering::SeqCst), 0, "no tenant needed work");
    assert!(after
        .status(&mut conn)
        .unwrap()
        .iter()
        .all(|s| s.pending.is_empty()));
}

#[test]
fn startup_from_several_processes_at_once() {
    let db = crate::test_db!("startup_concurrently");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(FLEET, 2));
    let tenants = ids("s", 12);
    for t in &tenants {
        before.create_tenant(&mut conn, t).unwrap();
    }
    let after = Migrator::builder(FLEET)
        .shared(SHARED_MIGRATIONS)
        .build()
        .unwrap();
    let url = db.url().to_owned();
    let progress = Arc::new(AtomicUsize::new(0));
    let reports: Vec<_> = std::thread::scope(|s| {
        (0..3)
            .map(|_| {
                let after = after.clone();
                let url = url.clone();
                let progress = progress.clone();
                s.spawn(move || {
                    after.startup(
                        &url,
                        &MigrateOptions::default().progress(move |p| {
                            assert!(p.done <= p.total);
                            progress.fetch_add(1, Ordering::SeqCst);
                        }),
                    )
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    let applied: usize = reports
        .iter()
        .map(|r| {
            r.as_ref()
                .unwrap()
                .applied()
                .map(|(_, v)| v.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(
        applied,
        12 * 3,
        "three new migrations per tenant, applied once"
    );
    assert!(progress.load(Ordering::SeqCst) >= 12);
    assert_eq!(central_rows(&mut conn).len(), 12 * 5);
}

#[test]
fn lock_timeouts_are_reported_and_retried() {
    let db = crate::test_db!("lock_timeouts");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    let busy = TenantId::new("busy").unwrap();
    before.create_tenant(&mut conn, &busy).unwrap();
    let after = migrator_for(&mut conn, ADDITIVE);

    // Application traffic holds a lock on `notes` for the whole run: the DDL gives up after
    // `lock_timeout`, is retried `retries` times, then reported with SQLSTATE 55P03.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE busy.notes IN ACCESS SHARE MODE")
        .unwrap();
    let opts = MigrateOptions::default()
        .lock_timeout(std::time::Duration::from_millis(50))
        .retries(1);
    let Err(Error::FleetMigration { report }) = after.migrate_all(db.url(), &opts) else {
        panic!("the locked tenant must fail");
    };
    let (_, sqlstate, message) = report.failed().next().unwrap();
    assert_eq!(sqlstate, Some("55P03"), "{message}");
    assert_eq!(ledger_rows(&mut conn, std::slice::from_ref(&busy)).len(), 1);

    // The lock is released while the migrator retries: it gets through.
    let patient = MigrateOptions::default()
        .lock_timeout(std::time::Duration::from_millis(100))
        .retries(100);
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| after.migrate_all(db.url(), &patient));
        std::thread::sleep(std::time::Duration::from_millis(300));
        holder.batch_execute("COMMIT").unwrap();
        run.join().unwrap()
    })
    .expect("the retried migration succeeds");
    assert_eq!(report.applied().count(), 1);
    assert_eq!(ledger_rows(&mut conn, std::slice::from_ref(&busy)).len(), 2);
}

#[test]
fn a_tenant_whose_schema_was_dropped_fails_even_when_nothing_is_pending() {
    let db = crate::test_db!("schema_dropped_nothing_pending");
    let ids = db.provision(&["alpha", "beta", "gamma"]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    let report = migrator
        .migrate_all(db.url(), &MigrateOptions::default())
        .expect("a provisioned fleet is up to date");
    assert_eq!(report.up_to_date().count(), 3);

    // The schema goes; the registry row and the central record stay: nothing is pending.
    conn.batch_execute("DROP SCHEMA beta CASCADE").unwrap();
    assert!(migrator.status(&mut conn).unwrap()[1].pending.is_empty());
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&seen);
    let opts = MigrateOptions::default()
        .on_failure(FailurePolicy::Continue)
        .progress(move |p| {
            assert_eq!(p.tenant.as_str(), "beta");
            counted.fetch_add(1, Ordering::SeqCst);
        });
    let Err(Error::FleetMigration { report }) = migrator.migrate_all(db.url(), &opts) else {
        panic!("a tenant without its schema must fail");
    };
    assert_eq!(
        report.outcome(&ids[1]),
        Some(&TenantOutcome::Failed {
            sqlstate: Some("3F000".into()),
            message: "the schema of tenant `beta` does not exist".into(),
        })
    );
    assert_eq!(report.outcome(&ids[0]), Some(&TenantOutcome::UpToDate));
    assert_eq!(report.outcome(&ids[2]), Some(&TenantOutcome::UpToDate));
    assert_eq!(
        report.failure_summary(),
        "migration failed for 1 of 3 tenants: `beta`"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // The same on a caller's connection; nothing was created for the missing tenant.
    let Err(Error::FleetMigration { report }) =
        migrator.migrate_all_with(&mut conn, db.url(), &MigrateOptions::default())
    else {
        panic!("a tenant without its schema must fail");
    };
    assert_eq!(report.failed().count(), 1);
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let schemas = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_catalog.pg_namespace WHERE nspname = 'beta'",
    )
    .get_result::<Count>(&mut conn)
    .unwrap();
    assert_eq!(schemas.n, 0, "migrating never creates a schema");

    // Control: once that tenant is dropped, the rest of the fleet is up to date.
    migrator.drop_tenant(&mut conn, &ids[1]).unwrap();
    let report = migrator
        .migrate_all(db.url(), &MigrateOptions::default())
        .expect("the remaining tenants are up to date");
    assert_eq!(report.up_to_date().count(), 2);
}
