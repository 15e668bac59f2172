//! The life cycle behind a real PgBouncer in transaction pooling mode: a client killed in a
//! tenant transaction leaves no lock, the migrator under concurrent tenant traffic, an
//! undeclared pooler refused by the migrator, migrations outside a transaction refused in pooler
//! mode, and `audit` reporting an undeclared pooler.

use crate::pooler::*;
use crate::support::schema::notes;
use crate::test_db;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::pool;
use diesel_workspace::prelude::*;
use diesel_workspace::{pooler::Pooler, switch, Error, TenantId};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workspace_diesel_tests::pgbouncer::{Config, PgBouncer};

/// A client killed (SIGKILL) in the middle of a tenant transaction (idle in it), holding a row lock and a
/// transaction advisory lock through PgBouncer, leaves neither behind.
#[test]
fn killed_client_leaves_no_lock() {
    let db = test_db!("killed_client");
    let ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(1));
    let url = bouncer.url(db.url());
    let t = ids[0].quoted();
    // The client sends its tenant transaction and then waits, idle in the transaction, for more
    // input that never comes.
    let mut child = Command::new("psql")
        .arg(&url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let mut stdin = child.stdin.take().expect("psql's stdin");
    writeln!(
        stdin,
        "BEGIN; SET LOCAL search_path TO {t}, public; \
         SELECT pg_catalog.pg_advisory_xact_lock(4242, 1); SELECT id FROM notes FOR UPDATE;"
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut direct = db.conn();
    let held = || -> i64 {
        diesel::sql_query(
            "SELECT count(*)::int4 AS pid FROM pg_catalog.pg_locks \
             WHERE locktype = 'advisory' AND classid = 4242 AND database = \
             (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())",
        )
        .get_result::<Pid>(&mut db.conn())
        .map(|p| i64::from(p.pid))
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while held() == 0 {
        assert!(Instant::now() < deadline, "the client never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    // Through the same PgBouncer (one server connection), a pooler-mode pool takes both locks
    // within its lock timeout.
    let pool = pool::builder()
        .pooler(Pooler::Transaction)
        .max_size(1)
        .lock_timeout(Some(Duration::from_secs(5)))
        .build(url)
        .unwrap();
    let mut conn = pool.get().unwrap();
    let locked: Vec<Pid> = switch(&ids[0], || {
        conn.tenant_transaction(|conn| {
            conn.batch_execute("SELECT pg_catalog.pg_advisory_xact_lock(4242, 1)")?;
            diesel::sql_query("SELECT id AS pid FROM notes FOR UPDATE").load(conn)
        })
    })
    .expect("the locks are free");
    assert!(!locked.is_empty());
    assert_eq!(held(), 0, "no advisory lock left");
    let waiting: Vec<Pid> = diesel::sql_query(
        "SELECT pid FROM pg_catalog.pg_stat_activity \
         WHERE datname = pg_catalog.current_database() AND state LIKE 'idle in transaction%'",
    )
    .load(&mut direct)
    .unwrap();
    assert!(waiting.is_empty(), "a session is still in a transaction");
}

/// A tenant migration set: the example schema plus one pending migration adding `notes.x`.
fn migrations_with_pending() -> (tempfile::TempDir, diesel_migrations::FileBasedMigrations) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations_tenant");
    for entry in std::fs::read_dir(&root).unwrap() {
        let entry = entry.unwrap();
        let to = dir.path().join(entry.file_name());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(entry.path()).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
    let extra = dir.path().join("2030-01-01-000000_add_x");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("up.sql"), "ALTER TABLE notes ADD COLUMN x INT;").unwrap();
    std::fs::write(extra.join("down.sql"), "ALTER TABLE notes DROP COLUMN x;").unwrap();
    let set = diesel_migrations::FileBasedMigrations::from_path(dir.path()).unwrap();
    (dir, set)
}

/// Runs `f` on its own thread and fails the test when it has not returned within `limit`.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// The whole life cycle through PgBouncer (2 server connections) in pooler mode, while two
/// clients keep reading tenants: shared migrations, create one and many tenants, migrate all with
/// pending work, revert, rename, drop, status, and the warm pool filled by two callers at once.
/// Every call finishes within its bound, and the readers see no wrong row and no error.
#[test]
fn life_cycle_through_pgbouncer_under_traffic() {
    let db = test_db!("life_cycle_through_pgbouncer");
    let bouncer = PgBouncer::start(Config::transaction(2));
    let url = bouncer.url(db.url());
    let migrator = || {
        diesel_workspace::Migrator::builder(crate::support::TENANT_MIGRATIONS)
            .shared(crate::support::SHARED_MIGRATIONS)
            .pooler(Pooler::Transaction)
            .build()
            .unwrap()
    };
    let opts = diesel_workspace::MigrateOptions::default()
        .parallel(2)
        .lock_timeout(Duration::from_secs(5));
    let m = migrator();
    let mut conn = diesel_workspace::connect(&url, Pooler::Transaction).unwrap();
    m.run_shared(&mut conn).unwrap();
    assert!(m.run_shared(&mut conn).unwrap().is_empty(), "idempotent");
    let id = |s: &str| TenantId::new(s).unwrap();
    m.create_tenant(&mut conn, &id("alpha")).unwrap();
    let report = m
        .create_tenants(&url, &[id("beta"), id("gamma"), id("delta")], &opts)
        .unwrap();
    assert_eq!(report.applied().count(), 3);
    for t in ["alpha", "beta", "gamma", "delta"] {
        switch(&id(t), || {
            diesel::insert_into(notes::table)
                .values(notes::title.eq(t))
                .execute(&mut conn)
        })
        .unwrap();
    }

    // Two readers through a pooler-mode pool, on the tenants the life cycle leaves in place.
    let pool = pool::builder()
        .pooler(Pooler::Transaction)
        .max_size(2)
        .lock_timeout(Some(Duration::from_secs(10)))
        .build(url.clone())
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let readers: Vec<_> = (0..2)
        .map(|k| {
            let (pool, stop, tally) = (pool.clone(), Arc::clone(&stop), Arc::clone(&tally));
            std::thread::spawn(move || {
                let ids = [
                    TenantId::new("beta").unwrap(),
                    TenantId::new("gamma").unwrap(),
                ];
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let t = &ids[i % 2];
                    i += 1;
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    let read = pool.get().map_err(|e| e.to_string()).and_then(|mut c| {
                        switch(t, || {
                            c.tenant_transaction(|c| {
                                let raw: Vec<Title> =
                                    diesel::sql_query("SELECT title FROM notes").load(c)?;
                                let dsl: Vec<String> = notes::table.select(notes::title).load(c)?;
                                Ok::<_, diesel::result::Error>((raw, dsl))
                            })
                        })
                        .map_err(|e| e.to_string())
                    });
                    match read {
                        Ok((raw, dsl)) => {
                            tally.rows(t, raw.iter().map(|r| r.title.as_str()));
                            tally.rows(t, dsl.iter().map(String::as_str));
                        }
                        Err(e) => {
                            if tally.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("reader {k}: {e}");
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Pending work: a second tenant migration, applied to every tenant, then reverted on one.
    let (_dir, set) = migrations_with_pending();
    let m2 = diesel_workspace::Migrator::builder(set)
        .shared(crate::support::SHARED_MIGRATIONS)
        .pooler(Pooler::Transaction)
        .build()
        .unwrap();
    let (url2, opts2) = (url.clone(), opts.clone());
    let report = within(Duration::from_secs(60), "migrate_all", move || {
        m2.migrate_all(&url2, &opts2).map(|r| r.applied().count())
    })
    .unwrap();
    assert_eq!(report, 4);
    let m2 = diesel_workspace::Migrator::builder(migrations_with_pending().1)
        .shared(crate::support::SHARED_MIGRATIONS)
        .pooler(Pooler::Transaction)
        .build()
        .unwrap();
    assert!(m2.revert_last(&mut conn, &id("alpha")).unwrap().is_some());
    let status = m2.status(&mut conn).unwrap();
    let pending: Vec<_> = status
        .iter()
        .filter(|s| !s.pending.is_empty())
        .map(|s| s.tenant.to_string())
        .collect();
    assert_eq!(pending, ["alpha"]);
    m2.rename_tenant(&mut conn, &id("alpha"), &id("omega"))
        .unwrap();
    m2.drop_tenant(&mut conn, &id("delta")).unwrap();
    let listed: Vec<String> = m2
        .list_tenants(&mut conn)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(listed, ["beta", "gamma", "omega"]);

    // The warm pool, filled by two callers at once: neither hangs.
    let fillers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let m = diesel_workspace::Migrator::builder(migrations_with_pending().1)
                    .pooler(Pooler::Transaction)
                    .build()
                    .unwrap();
                let mut c = diesel_workspace::connect(&url, Pooler::Transaction).unwrap();
                let started = Instant::now();
                let created = m.fill_spares(&mut c, 3);
                (created.map_err(|e| e.to_string()), started.elapsed())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for f in fillers {
        while !f.is_finished() {
            assert!(Instant::now() < deadline, "fill_spares hung");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (created, took) = f.join().unwrap();
        created.unwrap_or_else(|e| panic!("fill_spares failed after {took:?}: {e}"));
    }
    let spares = m2.spares(&mut conn).unwrap().len();
    assert!((3..=4).contains(&spares), "{spares} spares");
    m2.create_tenant(&mut conn, &id("zeta")).unwrap();
    assert_eq!(
        m2.spares(&mut conn).unwrap().len(),
        spares - 1,
        "claimed a spare"
    );

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(tally.ops.load(Ordering::Relaxed) > 0);
    assert_eq!(tally.errors.load(Ordering::Relaxed), 0, "reader errors");
    assert_eq!(tally.wrong.load(Ordering::Relaxed), 0, "wrong-tenant rows");
    // No session advisory lock is left on any server connection.
    let left: i64 = diesel::sql_query(
        "SELECT count(*)::int4 AS pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_catalog.pg_database \
                         WHERE datname = pg_catalog.current_database())",
    )
    .get_result::<Pid>(&mut db.conn())
    .map(|p| i64::from(p.pid))
    .unwrap();
    assert_eq!(left, 0, "advisory locks left behind");
}

/// Not in pooler mode, the migrator's own connections through PgBouncer are refused (a fleet
/// connection served by the backend of another open connection of the process), as is
/// `connect`; no tenant is created.
#[test]
fn undeclared_pooler_is_refused_by_the_migrator() {
    let db = test_db!("undeclared_migrator");
    db.provision(&[]);
    let bouncer = PgBouncer::start(Config::transaction(1));
    let url = bouncer.url(db.url());
    let e = diesel_workspace::connect(&url, Pooler::Direct)
        .err()
        .expect("connect refuses");
    assert_refusal(&e);
    let m = db.migrator();
    let ids = [
        TenantId::new("alpha").unwrap(),
        TenantId::new("beta").unwrap(),
    ];
    // Another open connection of the process (a session-declared pool's, alone on PgBouncer's
    // server connection so far): the fleet's first connection gets the same backend.
    let pool = pool::builder()
        .pooler(Pooler::Session)
        .max_size(1)
        .connection_timeout(Duration::from_secs(2))
        .build_unchecked(url.clone());
    let _held = pool.get().expect("alone on the server connection");
    let opts = diesel_workspace::MigrateOptions::default().parallel(2);
    let e = m.create_tenants(&url, &ids, &opts).expect_err("refused");
    let chain = anyhow_chain(&e);
    let named = match &e {
        Error::FleetMigration { report, .. } => report
            .failed()
            .any(|(_, _, message)| message.contains("pooler(Pooler::Transaction)")),
        other => anyhow_chain(other).contains("pooler(Pooler::Transaction)"),
    };
    assert!(named, "{chain}: {e:?}");
    assert!(
        !db.schema_exists("alpha") || !db.schema_exists("beta"),
        "{chain}"
    );
}

/// In pooler mode, a tenant migration that must run outside a transaction is refused when the
/// migrator is built.
#[test]
fn pooler_mode_refuses_migrations_outside_a_transaction() {
    let (dir, _) = migrations_with_pending();
    let extra = dir.path().join("2030-01-02-000000_concurrent_index");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("up.sql"),
        "CREATE INDEX CONCURRENTLY notes_title_idx ON notes (title);",
    )
    .unwrap();
    std::fs::write(extra.join("down.sql"), "DROP INDEX notes_title_idx;").unwrap();
    std::fs::write(extra.join("metadata.toml"), "run_in_transaction = false\n").unwrap();
    let set = || diesel_migrations::FileBasedMigrations::from_path(dir.path()).unwrap();
    let e = diesel_workspace::Migrator::builder(set())
        .pooler(Pooler::Transaction)
        .build()
        .expect_err("refused");
    let chain = anyhow_chain(&e);
    assert!(
        chain.contains("20300102000000") && chain.contains("run_in_transaction = false"),
        "{chain}"
    );
    // The same set is fine for direct connections.
    diesel_workspace::Migrator::builder(set()).build().unwrap();
}

/// `audit` reports an undeclared pooler when the connection's backend changes between its
/// queries (another client keeps one of the two server connections busy), and says nothing of it
/// for a migrator in pooler mode.
#[test]
fn audit_reports_an_undeclared_pooler() {
    let db = test_db!("audit_undeclared");
    db.provision(&["alpha"]);
    let bouncer = PgBouncer::start(Config::transaction(2));
    let url = bouncer.url(db.url());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (direct, pooled) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut busy = PgConnection::establish(&url).unwrap();
            while !stop.load(Ordering::Relaxed) {
                busy.batch_execute("BEGIN; SELECT pg_catalog.pg_sleep(0.003); COMMIT")
                    .unwrap();
            }
        });
        let mut conn = diesel_workspace::connect(&url, Pooler::Transaction).unwrap();
        let count = |m: &diesel_workspace::Migrator, conn: &mut PgConnection| {
            (0..300)
                .filter(|_| {
                    m.audit(conn).unwrap().iter().any(|h| {
                        matches!(h, diesel_workspace::Hazard::UndeclaredPooler { .. })
                            && h.to_string().contains("pooler(Pooler::Transaction)")
                    })
                })
                .count()
        };
        let direct = count(&db.migrator(), &mut conn);
        let declared = diesel_workspace::Migrator::builder(crate::support::TENANT_MIGRATIONS)
            .pooler(Pooler::Transaction)
            .build()
            .unwrap();
        let pooled = count(&declared, &mut conn);
        stop.store(true, Ordering::Relaxed);
        (direct, pooled)
    });
    assert!(direct >= 1, "no audit of 300 saw the pooler");
    assert_eq!(pooled, 0);
}
