//! Reverting cannot hang or double: behind a reader's lock a revert gives up within
//! `lock_timeout × (retries + 1)` (plus the back-off), readers queued behind it wait at most about
//! `lock_timeout`, and a revert that names its version is a no-op once that version is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{Error, MigrateOptions, Migrator, TenantId, TenantOutcome};

use crate::support::TestDb;
use crate::test_db;

const ADDITIVE: EmbeddedMigrations = embed_migrations!("migrations/additive");
const V1: &str = "20260101000001";
const V2: &str = "20260301000001";

fn setup(db: &TestDb) -> (Migrator, TenantId) {
    let m = Migrator::builder(ADDITIVE).build().unwrap();
    let mut conn = db.conn();
    m.run_shared(&mut conn).unwrap();
    let acme = TenantId::new("acme").unwrap();
    m.create_tenant(&mut conn, &acme).unwrap();
    (m, acme)
}

fn ledger(db: &TestDb) -> Vec<String> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    diesel::sql_query(
        "SELECT version::text AS version FROM acme.__diesel_schema_migrations ORDER BY 1",
    )
    .load::<V>(&mut db.conn())
    .unwrap()
    .into_iter()
    .map(|v| v.version)
    .collect()
}

/// Reads `acme.notes` every 50 ms on its own connection until `stop`; returns the longest wait.
fn reader(db: &TestDb, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    let url = db.url().to_owned();
    std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        let mut longest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            conn.batch_execute("SELECT pg_catalog.count(*) FROM acme.notes")
                .unwrap();
            longest = longest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        longest
    })
}

/// Both the single-tenant revert and the fleet revert give up behind an open reader within
/// `lock_timeout × (retries + 1) + 1 s`, with a lock timeout reported, nothing reverted, and the
/// other readers never queued for more than `lock_timeout + 1 s`.
#[test]
fn revert_behind_a_readers_lock_gives_up_in_time() {
    let db = test_db!("revert_behind_a_readers_lock_gives_up_in_time");
    let (m, acme) = setup(&db);
    let lock_timeout = Duration::from_secs(1);
    let retries = 2;
    let bound = lock_timeout * (retries + 1) + Duration::from_secs(1);
    let opts = MigrateOptions::default()
        .lock_timeout(lock_timeout)
        .retries(retries);

    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; SELECT pg_catalog.count(*) FROM acme.notes")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers = reader(&db, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let err = m
        .revert_version(&mut db.conn(), &acme, V2, &opts)
        .unwrap_err();
    let single = started.elapsed();
    match &err {
        Error::TenantMigration { source, .. } => {
            assert_eq!(source.sqlstate(), Some("55P03"), "{err:?}")
        }
        other => panic!("expected a lock timeout, got {other:?}"),
    }

    let started = Instant::now();
    let err = m.revert_last_all(db.url(), &opts).unwrap_err();
    let fleet = started.elapsed();
    match &err {
        Error::FleetMigration { report } => match report.outcome(&acme) {
            Some(TenantOutcome::Failed { sqlstate, .. }) => {
                assert_eq!(sqlstate.as_deref(), Some("55P03"))
            }
            other => panic!("expected a lock timeout for acme, got {other:?}"),
        },
        other => panic!("expected a fleet failure, got {other:?}"),
    }
    stop.store(true, Ordering::Relaxed);
    let longest_read = readers.join().unwrap();
    holder.batch_execute("COMMIT").unwrap();

    eprintln!(
        "behind a reader: revert_version gave up after {single:?}, revert_last_all after \
         {fleet:?} (bound {bound:?}); longest read {longest_read:?}"
    );
    assert!(
        single <= bound,
        "revert_version took {single:?} (bound {bound:?})"
    );
    assert!(
        fleet <= bound,
        "revert_last_all took {fleet:?} (bound {bound:?})"
    );
    assert!(
        longest_read <= lock_timeout + Duration::from_secs(1),
        "a reader waited {longest_read:?}"
    );
    assert_eq!(ledger(&db), [V1, V2], "nothing reverted");
    // Nothing lingers server-side: with the reader gone, the ledger stays as it is.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ledger(&db), [V1, V2]);
}

/// A revert naming its version reverts it when it is the last applied one, is a no-op once it
/// is gone (a rerun), and refuses when a later version is applied.
#[test]
fn revert_by_version_is_idempotent_and_refuses_a_wrong_version() {
    let db = test_db!("revert_by_version_is_idempotent_and_refuses_a_wrong_version");
    let (m, acme) = setup(&db);
    let opts = MigrateOptions::default();
    let mut conn = db.conn();

    let err = m.revert_version(&mut conn, &acme, V1, &opts).unwrap_err();
    assert!(err.to_string().contains("acme"), "{err}");
    let why = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        why.contains(&format!(
            "not the last applied migration (the last is {V2})"
        )),
        "{why}"
    );
    assert_eq!(ledger(&db), [V1, V2]);

    assert_eq!(
        m.revert_version(&mut conn, &acme, V2, &opts).unwrap(),
        Some(V2.to_owned())
    );
    assert_eq!(ledger(&db), [V1]);
    // The rerun: V2 is not applied any more, nothing happens.
    assert_eq!(m.revert_version(&mut conn, &acme, V2, &opts).unwrap(), None);
    assert_eq!(ledger(&db), [V1]);
    assert!(matches!(
        m.revert_version(&mut conn, &TenantId::new("nobody").unwrap(), V2, &opts),
        Err(Error::TenantNotFound(_))
    ));

    // The fleet form: V1 is the last of acme now.
    let report = m.revert_version_all(db.url(), V1, &opts).unwrap();
    assert_eq!(
        report.outcome(&acme),
        Some(&TenantOutcome::Applied(vec![V1.to_owned()]))
    );
    let report = m.revert_version_all(db.url(), V1, &opts).unwrap();
    assert_eq!(report.outcome(&acme), Some(&TenantOutcome::UpToDate));
    assert!(ledger(&db).is_empty());
}
