//! The tenant pool: no wrong-tenant rows under concurrency, a clean session on every checkout, the
//! statement cap, and the session defaults.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_workspace::pool::{self, TenantPool};
use diesel_workspace::prelude::*;
use diesel_workspace::{switch, TenantId};

use crate::support::schema::notes;
use crate::support::TestDb;
use crate::test_db;

#[derive(QueryableByName)]
struct Title {
    #[diesel(sql_type = Text)]
    title: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = Integer)]
    pid: i32,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `SHOW <name>`, as text.
macro_rules! show {
    ($conn:expr, $name:ident) => {{
        #[derive(QueryableByName)]
        struct Setting {
            #[diesel(sql_type = Text)]
            $name: String,
        }
        diesel::sql_query(concat!("SHOW ", stringify!($name)))
            .get_result::<Setting>($conn)
            .map(|s| s.$name)
            .expect(concat!("SHOW ", stringify!($name)))
    }};
}

fn backend_pid(conn: &mut PgConnection) -> i32 {
    diesel::select(diesel::dsl::sql::<Integer>("pg_catalog.pg_backend_pid()"))
        .get_result(conn)
        .unwrap()
}

/// Provisions `n` tenants `t000`, `t001`, ..., each holding one note titled with its own name.
fn tenants_with_sentinels(db: &TestDb, n: usize) -> Vec<TenantId> {
    let names: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let ids = db.provision(&names);
    let mut conn = db.conn();
    for t in &ids {
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(notes::title.eq(t.as_str()))
                .execute(&mut conn)
        })
        .unwrap();
    }
    ids
}

/// The raw read of an unqualified tenant table that must fail on a clean checkout.
fn unqualified_notes(conn: &mut PgConnection) -> QueryResult<i64> {
    diesel::sql_query("SELECT count(*) AS n FROM notes")
        .get_result::<Count>(conn)
        .map(|c| c.n)
}

fn assert_no_tenant_table(conn: &mut PgConnection, after: &str) {
    let err = unqualified_notes(conn).expect_err(after);
    assert!(
        err.to_string()
            .contains("relation \"notes\" does not exist"),
        "after {after}: {err}"
    );
}

#[derive(Default)]
struct Tally {
    reads: AtomicUsize,
    rows: AtomicUsize,
    wrong_rows: AtomicUsize,
    fail_closed: AtomicUsize,
}

impl Tally {
    fn record(&self, tenant: &TenantId, titles: &[String]) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(titles.len(), Ordering::Relaxed);
        let wrong = titles.iter().filter(|t| *t != tenant.as_str()).count();
        self.wrong_rows.fetch_add(wrong, Ordering::Relaxed);
    }
}

const THREADS: usize = 8;
const SWITCHES_PER_THREAD: usize = 2_000;
const TENANTS: usize = 16;

/// 8 threads × 2,000 switches over 16 tenants through a pool of `max_size` connections. Every
/// checkout serves two switches; the reads alternate between the DSL (schema rendered into the
/// SQL, statements cached per tenant) and raw SQL in a tenant transaction (`search_path`), and a
/// session-level `SET search_path` is left behind by hand on every other checkout.
fn no_wrong_tenant_rows(db: TestDb, max_size: u32) {
    let ids = Arc::new(tenants_with_sentinels(&db, TENANTS));
    let pool = pool::builder().max_size(max_size).build(db.url()).unwrap();
    let tally = Arc::new(Tally::default());

    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (pool, ids, tally) = (pool.clone(), Arc::clone(&ids), Arc::clone(&tally));
            std::thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ (thread as u64 + 1);
                let mut conn = None;
                for i in 0..SWITCHES_PER_THREAD {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let t = &ids[(seed % TENANTS as u64) as usize];
                    if i % 2 == 0 {
                        drop(conn.take()); // check the previous connection in first
                        conn = Some(pool.get().expect("checkout"));
                    }
                    let conn = conn.as_mut().unwrap();
                    let titles: Vec<String> = switch(t, || match i % 4 {
                        0 => notes::table.select(notes::title).load(conn),
                        1 | 2 => conn.tenant_transaction(|c| {
                            diesel::sql_query("SELECT title FROM notes")
                                .load::<Title>(c)
                                .map(|v| v.into_iter().map(|r| r.title).collect())
                        }),
                        _ => conn.transaction(|c| notes::table.select(notes::title).load(c)),
                    })
                    .expect("read");
                    tally.record(t, &titles);
                    if i % 4 == 3 {
                        // Outside the switch nothing resolves to a tenant, then leave a
                        // session-level search_path behind for the next user of the connection.
                        assert_no_tenant_table(conn, "a checkout");
                        tally.fail_closed.fetch_add(1, Ordering::Relaxed);
                        conn.batch_execute(&format!("SET search_path TO {}", t.quoted()))
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }

    let reads = THREADS * SWITCHES_PER_THREAD;
    assert_eq!(tally.wrong_rows.load(Ordering::Relaxed), 0);
    assert_eq!(tally.reads.load(Ordering::Relaxed), reads);
    assert_eq!(tally.rows.load(Ordering::Relaxed), reads);
    assert_eq!(tally.fail_closed.load(Ordering::Relaxed), reads / 4);
}

#[test]
fn no_wrong_tenant_rows_with_4_connections() {
    no_wrong_tenant_rows(test_db!("no_wrong_tenant_rows_with_4_connections"), 4);
}

#[test]
fn no_wrong_tenant_rows_with_1_connection() {
    no_wrong_tenant_rows(test_db!("no_wrong_tenant_rows_with_1_connection"), 1);
}

/// The next checkout after `scenario`, outside any switch: no tenant table resolves and every
/// session setting is back to the pool's default. Returns the backend's pid.
fn next_checkout_is_clean(pool: &TenantPool, scenario: &str) -> i32 {
    let mut conn = pool.get().unwrap();
    assert_no_tenant_table(&mut conn, scenario);
    assert_eq!(
        show!(&mut conn, search_path),
        "public, pg_temp",
        "after {scenario}"
    );
    assert_eq!(
        show!(&mut conn, application_name),
        pool::DEFAULT_APPLICATION_NAME,
        "after {scenario}"
    );
    assert_eq!(show!(&mut conn, statement_timeout), "0", "after {scenario}");
    assert_eq!(
        show!(&mut conn, idle_in_transaction_session_timeout),
        "10min",
        "after {scenario}"
    );
    let leftovers = diesel::sql_query(
        "SELECT (SELECT count(*) FROM pg_catalog.pg_locks \
                 WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
              + (SELECT count(*) FROM pg_catalog.pg_listening_channels()) \
              + (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable) AS n",
    )
    .get_result::<Count>(&mut conn)
    .unwrap();
    assert_eq!(leftovers.n, 0, "after {scenario}");
    backend_pid(&mut conn)
}

fn set_path(conn: &mut PgConnection, tenant: &TenantId) -> QueryResult<()> {
    conn.batch_execute(&format!("SET search_path TO {}", tenant.quoted()))
}

/// Every way a checkout can end leaves the next checkout fail-closed; only a panic costs the
/// connection.
#[test]
fn every_checkout_starts_clean() {
    let db = test_db!("every_checkout_starts_clean");
    let ids = db.provision(&["acme", "globex"]);
    let (acme, globex) = (&ids[0], &ids[1]);
    let pool = pool::builder().max_size(1).build(db.url()).unwrap();
    let first = next_checkout_is_clean(&pool, "opening the pool");

    // Ok: a tenant transaction commits a session-level SET made inside it.
    {
        let mut conn = pool.get().unwrap();
        let n = switch(acme, || {
            conn.tenant_transaction(|c| {
                set_path(c, acme)?;
                unqualified_notes(c)
            })
        })
        .unwrap();
        assert_eq!(n, 0);
        assert_eq!(show!(&mut conn, search_path), "acme");
    }
    let pid = next_checkout_is_clean(&pool, "a committed tenant transaction");
    assert_eq!(pid, first, "a clean connection is reused");

    // Err returned from a tenant transaction.
    {
        let mut conn = pool.get().unwrap();
        let r: Result<(), DieselError> = switch(acme, || {
            conn.tenant_transaction(|c| {
                set_path(c, acme)?;
                Err(DieselError::NotFound)
            })
        });
        assert!(matches!(r, Err(DieselError::NotFound)));
    }
    assert_eq!(next_checkout_is_clean(&pool, "an Err"), first);

    // A panic inside a switch, inside a transaction, while holding the connection.
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        let mut conn = pool.get().unwrap();
        switch(acme, || {
            set_path(&mut conn, acme).unwrap();
            let _ = conn.transaction::<(), DieselError, _>(|c| {
                set_path(c, globex)?;
                panic!("boom while holding a pooled connection")
            });
        })
    }));
    assert!(panicked.is_err());
    let after_panic = next_checkout_is_clean(&pool, "a panic");
    assert_ne!(
        after_panic, first,
        "a connection dropped while panicking is discarded"
    );

    // A rolled back transaction (the SET inside it is undone; the one before it is not).
    {
        let mut conn = pool.get().unwrap();
        switch(globex, || {
            set_path(&mut conn, globex)?;
            conn.transaction::<(), _, _>(|c| {
                set_path(c, acme)?;
                Err(DieselError::RollbackTransaction)
            })
        })
        .unwrap_err();
        assert_eq!(show!(&mut conn, search_path), "globex");
    }
    assert_eq!(
        next_checkout_is_clean(&pool, "a rolled back transaction"),
        after_panic
    );

    // A savepoint rolled back inside a committed transaction.
    {
        let mut conn = pool.get().unwrap();
        switch(globex, || {
            conn.transaction::<(), DieselError, _>(|c| {
                set_path(c, globex)?;
                let inner = c.transaction::<(), _, _>(|c| {
                    set_path(c, acme)?;
                    Err(DieselError::RollbackTransaction)
                });
                assert!(inner.is_err());
                Ok(())
            })
        })
        .unwrap();
        assert_eq!(show!(&mut conn, search_path), "globex");
    }
    assert_eq!(
        next_checkout_is_clean(&pool, "a rolled back savepoint"),
        after_panic
    );

    // Session state set by hand with raw SQL: search_path, settings, a temporary table that
    // would shadow every schema, an advisory lock, a listener, a cursor.
    {
        let mut conn = pool.get().unwrap();
        conn.batch_execute(&format!(
            "SET search_path TO {}; SET application_name TO 'by hand'; \
             SET statement_timeout TO 1234; SET idle_in_transaction_session_timeout TO 0; \
             CREATE TEMPORARY TABLE notes (title text); \
             SELECT pg_catalog.pg_advisory_lock(42); LISTEN by_hand; \
             BEGIN; DECLARE kept CURSOR WITH HOLD FOR SELECT 1; COMMIT",
            acme.quoted()
        ))
        .unwrap();
        assert_eq!(unqualified_notes(&mut conn).unwrap(), 0);
        assert_eq!(show!(&mut conn, application_name), "by hand");
    }
    assert_eq!(
        next_checkout_is_clean(&pool, "session state set by hand"),
        after_panic
    );
}

/// Touching many more tenants than the cap, one query per tenant per checkout, never lets a
/// connection start a checkout with more prepared statements than the cap: connections are
/// recycled instead.
#[test]
fn statement_cap_recycles_connections() {
    const CAP: usize = 50;
    const TOUCHED: usize = 500;
    let db = test_db!("statement_cap_recycles_connections");
    let names: Vec<String> = (0..TOUCHED).map(|i| format!("t{i:03}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let ids = db.provision(&names);
    let pool = pool::builder()
        .max_size(1)
        .statement_cap(CAP)
        .build(db.url())
        .unwrap();

    let mut pids = BTreeSet::new();
    let mut most_held = 0;
    for t in &ids {
        let mut conn = pool.get().unwrap();
        // First thing on the checkout: the server's count of this backend's prepared statements
        // (it includes the statement of this query).
        let held = diesel::sql_query(
            "SELECT pg_catalog.pg_backend_pid() AS pid, \
                    (SELECT count(*) FROM pg_catalog.pg_prepared_statements) AS n",
        )
        .get_result::<Held>(&mut conn)
        .unwrap();
        let n = usize::try_from(held.n).unwrap();
        assert!(n <= CAP, "a checkout started with {n} prepared statements");
        assert_eq!(
            pool::cached_statements(&mut conn),
            Some(n),
            "the count is exact"
        );
        most_held = most_held.max(n);
        pids.insert(held.pid);
        let count: i64 = switch(t, || notes::table.count().get_result(&mut conn)).unwrap();
        assert_eq!(count, 0);
    }
    assert_eq!(most_held, CAP, "connections filled up to the cap");
    // Each connection serves about CAP tenants before it is replaced.
    assert!(
        pids.len() >= TOUCHED / CAP,
        "only {} backends served {TOUCHED} tenants",
        pids.len()
    );
}

/// The session defaults set by the customizer are what `SHOW` reports, on the first checkout and
/// after they were changed by hand.
#[test]
fn session_defaults_are_visible() {
    let db = test_db!("session_defaults_are_visible");
    db.provision(&["acme"]);
    db.conn().batch_execute("CREATE SCHEMA shared_ext").unwrap();
    let pool = pool::builder()
        .max_size(1)
        .shared_schema("shared_ext")
        .application_name("billing-api")
        .statement_timeout(Some(Duration::from_secs(5)))
        .lock_timeout(Some(Duration::from_millis(1500)))
        .idle_in_transaction_session_timeout(Some(Duration::from_secs(30)))
        .build(db.url())
        .unwrap();
    for round in ["first checkout", "after changes by hand"] {
        let mut conn = pool.get().unwrap();
        assert_eq!(
            show!(&mut conn, search_path),
            "shared_ext, pg_temp",
            "{round}"
        );
        assert_eq!(show!(&mut conn, application_name), "billing-api", "{round}");
        assert_eq!(show!(&mut conn, statement_timeout), "5s", "{round}");
        assert_eq!(show!(&mut conn, lock_timeout), "1500ms", "{round}");
        assert_eq!(
            show!(&mut conn, idle_in_transaction_session_timeout),
            "30s",
            "{round}"
        );
        conn.batch_execute(
            "SET search_path TO public; SET application_name TO 'x'; SET statement_timeout TO 0; \
             SET lock_timeout TO 0; SET idle_in_transaction_session_timeout TO 0",
        )
        .unwrap();
    }

    // The defaults of a default builder.
    let pool = pool::new(db.url()).unwrap();
    let mut conn = pool.get().unwrap();
    assert_eq!(show!(&mut conn, search_path), "public, pg_temp");
    assert_eq!(show!(&mut conn, application_name), "workspace-diesel");
    assert_eq!(
        show!(&mut conn, idle_in_transaction_session_timeout),
        "10min"
    );
    assert_eq!(pool.max_size(), 10);
}

/// The statement counter forwards every event to the configured instrumentation.
#[test]
fn instrumentation_is_forwarded() {
    let db = test_db!("instrumentation_is_forwarded");
    let ids = db.provision(&["acme"]);
    let queries = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&queries);
    let pool = pool::builder()
        .max_size(1)
        .instrumentation(move || {
            let seen = Arc::clone(&seen);
            Some(Box::new(move |event: InstrumentationEvent<'_>| {
                if let InstrumentationEvent::FinishQuery { .. } = event {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }) as Box<dyn Instrumentation>)
        })
        .build(db.url())
        .unwrap();
    let mut conn = pool.get().unwrap();
    let before = queries.load(Ordering::Relaxed);
    let held = pool::cached_statements(&mut conn).unwrap();
    let n: i64 = switch(&ids[0], || notes::table.count().get_result(&mut conn)).unwrap();
    assert_eq!(n, 0);
    assert_eq!(queries.load(Ordering::Relaxed), before + 1);
    assert_eq!(pool::cached_statements(&mut conn), Some(held + 1));
}
