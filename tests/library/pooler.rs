//! Behind a real PgBouncer in transaction pooling mode (a child process on a free loopback port,
//! `default_pool_size` 1 and 2): pooler mode returns no wrong-tenant row and no error under
//! interleaved switches; a pool not in pooler mode is refused with the documented error before
//! any tenant query; the negative control (session `SET search_path`) leaks through the same
//! PgBouncer (the life cycle behind it: `pooler_lifecycle.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_workspace::pool::{self, TenantPool};
use diesel_workspace::prelude::*;
use diesel_workspace::{pooler::Pooler, pooler::PoolerEvidence, switch, Error, TenantId};
use workspace_diesel_tests::pgbouncer::{Config, PgBouncer};

use crate::support::schema::{categories, notes, plans};
use crate::support::TestDb;
use crate::test_db;

const CLIENTS: usize = 4;
const SWITCHES: usize = 1_000;
const TENANTS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

#[derive(QueryableByName)]
pub(crate) struct Title {
    #[diesel(sql_type = Text)]
    pub(crate) title: String,
}

#[derive(QueryableByName)]
pub(crate) struct Pid {
    #[diesel(sql_type = Integer)]
    pub(crate) pid: i32,
}

/// Four tenants, each with one category and one note named after the tenant, and a shared plan.
pub(crate) fn fixture(db: &TestDb) -> Vec<TenantId> {
    let ids = db.provision(&TENANTS);
    let mut conn = db.conn();
    conn.batch_execute("INSERT INTO public.plans (id, name) VALUES (1, 'basic')")
        .unwrap();
    for t in &ids {
        switch(t, || {
            let cat: i32 = diesel::insert_into(categories::table)
                .values(categories::name.eq(t.as_str()))
                .returning(categories::id)
                .get_result(&mut conn)?;
            diesel::insert_into(notes::table)
                .values((notes::title.eq(t.as_str()), notes::category_id.eq(cat)))
                .execute(&mut conn)
        })
        .unwrap();
    }
    ids
}

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ops: AtomicUsize,
    pub(crate) wrong: AtomicUsize,
    pub(crate) errors: AtomicUsize,
}

impl Tally {
    pub(crate) fn rows<'a>(&self, tenant: &TenantId, titles: impl IntoIterator<Item = &'a str>) {
        let wrong = titles.into_iter().filter(|t| *t != tenant.as_str()).count();
        self.wrong.fetch_add(wrong, Ordering::Relaxed);
    }
}

/// One operation of the mix for client `client`, switch `i`, on tenant `t`: DSL select,
/// insert RETURNING, update RETURNING, delete RETURNING, a join with a tenant and a shared table,
/// raw SQL in a tenant transaction. `mine` holds the ids this client inserted, per tenant.
fn operation(
    conn: &mut PgConnection,
    t: &TenantId,
    i: usize,
    client: usize,
    mine: &mut HashMap<String, Vec<i32>>,
    tally: &Tally,
) -> QueryResult<()> {
    switch(t, || match i % 6 {
        0 => {
            let titles: Vec<String> = notes::table
                .select(notes::title)
                .filter(notes::body.eq(""))
                .load(conn)?;
            tally.rows(t, titles.iter().map(String::as_str));
            if titles.is_empty() {
                tally.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        1 => {
            let (id, title): (i32, String) = diesel::insert_into(notes::table)
                .values((
                    notes::title.eq(t.as_str()),
                    notes::body.eq(format!("client {client}")),
                ))
                .returning((notes::id, notes::title))
                .get_result(conn)?;
            tally.rows(t, [title.as_str()]);
            mine.entry(t.to_string()).or_default().push(id);
            Ok(())
        }
        2 => {
            let titles: Vec<String> =
                diesel::update(notes::table.filter(notes::title.eq(t.as_str())))
                    .filter(notes::body.eq(format!("client {client}")))
                    .set(notes::body.eq(format!("client {client}")))
                    .returning(notes::title)
                    .get_results(conn)?;
            tally.rows(t, titles.iter().map(String::as_str));
            Ok(())
        }
        3 => {
            let Some(id) = mine.get_mut(t.as_str()).and_then(Vec::pop) else {
                return Ok(());
            };
            let titles: Vec<String> = diesel::delete(notes::table.filter(notes::id.eq(id)))
                .returning(notes::title)
                .get_results(conn)?;
            tally.rows(t, titles.iter().map(String::as_str));
            if titles.len() != 1 {
                // The row this client inserted in this tenant was not found there.
                tally.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        4 => {
            let rows: Vec<(String, String, String)> = notes::table
                .inner_join(categories::table)
                .inner_join(plans::table.on(plans::id.eq(1)))
                .select((notes::title, categories::name, plans::name))
                .load(conn)?;
            tally.rows(
                t,
                rows.iter().flat_map(|(n, c, _)| [n.as_str(), c.as_str()]),
            );
            let shared_wrong = rows.iter().filter(|(_, _, p)| p != "basic").count();
            tally.wrong.fetch_add(shared_wrong, Ordering::Relaxed);
            if rows.is_empty() {
                tally.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        _ => conn.tenant_transaction(|conn| {
            let titles: Vec<Title> =
                diesel::sql_query("SELECT title FROM notes WHERE body = ''").load(conn)?;
            tally.rows(t, titles.iter().map(|r| r.title.as_str()));
            if titles.is_empty() {
                tally.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }),
    })
}

/// `CLIENTS` threads × `SWITCHES` interleaved switches over the four tenants, each thread on its
/// own checkout every two switches.
fn run_mix(pool: &TenantPool, ids: &[TenantId]) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let start = Arc::new(Barrier::new(CLIENTS));
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let (tally, start) = (Arc::clone(&tally), Arc::clone(&start));
            s.spawn(move || {
                let mut mine = HashMap::new();
                start.wait();
                let mut conn = None;
                for i in 0..SWITCHES {
                    if i % 2 == 0 {
                        drop(conn.take());
                        match pool.get() {
                            Ok(c) => conn = Some(c),
                            Err(e) => panic!("checkout: {e}"),
                        }
                    }
                    let t = &ids[(client + i) % ids.len()];
                    let conn = conn.as_mut().expect("checked out");
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = operation(conn, t, i, client, &mut mine, &tally) {
                        if tally.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("client {client}, switch {i}, tenant {t}: {e}");
                        }
                    }
                }
            });
        }
    });
    tally
}

/// Every row of every tenant, read directly: titles and categories are the tenant's own name.
pub(crate) fn assert_tables_clean(db: &TestDb, ids: &[TenantId]) {
    let mut conn = db.conn();
    for t in ids {
        let wrong: i64 = diesel::sql_query(format!(
            "SELECT count(*)::int4 AS pid FROM {q}.notes WHERE title <> '{t}'",
            q = t.quoted()
        ))
        .get_result::<Pid>(&mut conn)
        .map(|p| i64::from(p.pid))
        .unwrap();
        assert_eq!(wrong, 0, "rows of another tenant written into {t}");
    }
}

fn pooler_mode_mix(pool_size: u32) {
    let db = TestDb::new(&format!("{}::pooler_mode_mix_{pool_size}", module_path!()));
    let ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(pool_size));
    let pool = pool::builder()
        .pooler(Pooler::Transaction)
        .max_size(CLIENTS as u32)
        .statement_timeout(Some(Duration::from_secs(30)))
        .connection_timeout(Duration::from_secs(20))
        .build(bouncer.url(db.url()))
        .expect("pooler-mode pool through PgBouncer");
    let tally = run_mix(&pool, &ids);
    assert_eq!(tally.ops.load(Ordering::Relaxed), CLIENTS * SWITCHES);
    assert_eq!(tally.errors.load(Ordering::Relaxed), 0, "errors");
    assert_eq!(tally.wrong.load(Ordering::Relaxed), 0, "wrong-tenant rows");
    drop(pool);
    assert_tables_clean(&db, &ids);
}

#[test]
fn pooler_mode_no_wrong_rows_one_server_connection() {
    pooler_mode_mix(1);
}

#[test]
fn pooler_mode_no_wrong_rows_two_server_connections() {
    pooler_mode_mix(2);
}

pub(crate) fn assert_refusal(e: &Error) {
    let text = format!("{e}");
    assert!(
        matches!(e, Error::PoolerNotDeclared(_)),
        "not the pooler refusal: {e:?}"
    );
    assert!(
        text.contains("transaction pooler") && text.contains("pooler(Pooler::Transaction)"),
        "{text}"
    );
}

/// The same topology, not in pooler mode: `build` refuses before any tenant query (so no row,
/// wrong or right, is ever returned). A default pool sees its startup setting missing on the
/// backend (PgBouncer ignoring `options`) or refused (PgBouncer's default); a pool declared for a
/// session pooler sees two open connections share one server.
#[test]
fn undeclared_pooler_is_refused_at_build() {
    let db = test_db!("undeclared_at_build");
    let _ids = fixture(&db);
    for (config, pooler) in [
        (Config::transaction(1), Pooler::Direct),
        (Config::transaction(2), Pooler::Direct),
        (Config::transaction(2).refusing_options(), Pooler::Direct),
        (Config::transaction(1), Pooler::Session),
    ] {
        let bouncer = PgBouncer::start(config.clone());
        let started = Instant::now();
        let e = pool::builder()
            .pooler(pooler)
            .max_size(CLIENTS as u32)
            .connection_timeout(Duration::from_secs(5))
            .build(bouncer.url(db.url()))
            .expect_err("an undeclared pool through PgBouncer must be refused");
        assert_refusal(&e);
        let expected = match (pooler, config.ignore_options) {
            (Pooler::Session, _) => PoolerEvidence::SharedBackend { pid: 0 },
            (_, true) => PoolerEvidence::StartupSettingLost,
            (_, false) => PoolerEvidence::StartupOptionRefused,
        };
        assert!(
            matches!(&e, Error::PoolerNotDeclared(d)
                if std::mem::discriminant(&d.evidence) == std::mem::discriminant(&expected)),
            "{config:?} {pooler}: {e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused at once"
        );
    }
}

/// A new physical connection whose backend another open connection of the process already has is
/// refused (two pools declared for a session pooler, built without the build check, one
/// connection each), and from then on the pool refuses every checkout.
#[test]
fn undeclared_pooler_is_refused_at_new_connection() {
    let db = test_db!("undeclared_at_connect");
    let ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(1));
    let url = bouncer.url(db.url());
    let make = || {
        pool::builder()
            .pooler(Pooler::Session)
            .max_size(1)
            .connection_timeout(Duration::from_secs(2))
            .build_unchecked(url.clone())
    };
    let first = make();
    let mut held = first
        .get()
        .expect("the first connection has a backend of its own");
    let second = make();
    let err = Error::from(second.get().err().expect("shared backend"));
    let chain = anyhow_chain(&err);
    assert!(chain.contains("served by the same backend"), "{chain}");
    assert!(chain.contains("pooler(Pooler::Transaction)"), "{chain}");
    // The first pool's connection still reads its tenant correctly (it has the server alone).
    let titles: Vec<String> = switch(&ids[0], || {
        notes::table.select(notes::title).load(&mut held)
    })
    .unwrap();
    assert!(titles.iter().all(|t| t == "alpha"));
}

/// A checkout whose backend changed since the connection was opened is refused by the reset's own
/// round trip, before the reset touches that backend (a pool declared for a session pooler, which
/// has no startup setting to lose).
#[test]
fn undeclared_pooler_is_refused_at_checkout() {
    let db = test_db!("undeclared_at_checkout");
    let _ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(2));
    let url = bouncer.url(db.url());
    let pool = pool::builder()
        .pooler(Pooler::Session)
        .max_size(1)
        .connection_timeout(Duration::from_secs(2))
        .build_unchecked(url.clone());
    let pid = {
        let mut c = pool.get().expect("first checkout");
        diesel::sql_query("SELECT pg_catalog.pg_backend_pid() AS pid")
            .get_result::<Pid>(&mut c)
            .unwrap()
            .pid
    };
    // Another client keeps that backend busy in a transaction: the next checkout gets the other.
    let mut other = PgConnection::establish(&url).unwrap();
    other.batch_execute("BEGIN").unwrap();
    let other_pid = diesel::sql_query("SELECT pg_catalog.pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut other)
        .unwrap()
        .pid;
    assert_eq!(
        other_pid, pid,
        "PgBouncer hands the idle server out last-in first-out"
    );
    let err = Error::from(pool.get().err().expect("backend changed"));
    let chain = anyhow_chain(&err);
    assert!(
        chain.contains(&format!("backend changed from pid {pid}")),
        "{chain}"
    );
    assert!(chain.contains("pooler(Pooler::Transaction)"), "{chain}");
    other.batch_execute("ROLLBACK").unwrap();
    // Once seen, the pool refuses every checkout, whatever backend answers.
    let again = Error::from(pool.get().err().expect("refused for good"));
    assert!(anyhow_chain(&again).contains("pooler(Pooler::Transaction)"));
}

pub(crate) fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Negative control, in the same harness: the django-tenants way (session `SET search_path`,
/// then unqualified SQL) through the same PgBouncer returns another tenant's rows.
#[test]
fn negative_control_session_search_path_leaks() {
    let db = test_db!("negative_control");
    let ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(2));
    let url = bouncer.url(db.url());
    let leaks = AtomicUsize::new(0);
    let reads = AtomicUsize::new(0);
    let start = Barrier::new(CLIENTS);
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let (url, ids, leaks, reads, start) = (&url, &ids, &leaks, &reads, &start);
            s.spawn(move || {
                let mut conn = PgConnection::establish(url).unwrap();
                conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
                start.wait();
                for i in 0..SWITCHES {
                    if leaks.load(Ordering::Relaxed) > 0 {
                        break;
                    }
                    let t = &ids[(client + i) % ids.len()];
                    conn.batch_execute(&format!("SET search_path TO {}", t.quoted()))
                        .unwrap();
                    // A server connection still on the default path answers "relation does
                    // not exist": the setting did not follow this client either.
                    let Ok(rows) =
                        diesel::sql_query("SELECT title FROM notes").load::<Title>(&mut conn)
                    else {
                        continue;
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    if rows.iter().any(|r| r.title != t.as_str()) {
                        leaks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(
        leaks.load(Ordering::Relaxed) >= 1,
        "the harness saw no leak in {} reads",
        reads.load(Ordering::Relaxed)
    );
}

/// Through PgBouncer in statement pooling mode, a pool (declared for a transaction pooler or not)
/// and the migrator's connection are refused with an error that names statement pooling.
#[test]
fn statement_pooling_is_refused_by_name() {
    let db = test_db!("statement_pooling");
    let _ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::statement(2));
    let url = bouncer.url(db.url());
    for pooler in [Pooler::Transaction, Pooler::Direct] {
        let e = pool::builder()
            .pooler(pooler)
            .max_size(1)
            .connection_timeout(Duration::from_secs(5))
            .build(url.clone())
            .expect_err("statement pooling");
        assert!(matches!(e, Error::StatementPooling(_)), "{pooler}: {e:?}");
        assert!(e.to_string().contains("pool_mode = statement"), "{e}");
    }
    let e = diesel_workspace::connect(&url, Pooler::Transaction)
        .err()
        .expect("statement pooling");
    assert!(matches!(e, Error::StatementPooling(_)), "{e:?}");
}

/// A checkout held while its backend changes (a pool declared for a session pooler, through a
/// transaction pooler): the next `tenant_transaction` is refused by the check in its `BEGIN`
/// batch, before its closure runs.
#[test]
fn a_held_checkout_is_refused_in_the_tenant_transactions_begin() {
    let db = test_db!("held_checkout_begin");
    let ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(2));
    let url = bouncer.url(db.url());
    let pool = pool::builder()
        .pooler(Pooler::Session)
        .max_size(1)
        .connection_timeout(Duration::from_secs(2))
        .build_unchecked(url.clone());
    let mut held = pool.get().expect("first checkout");
    let pid = diesel::sql_query("SELECT pg_catalog.pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut held)
        .unwrap()
        .pid;
    // Another client keeps that backend busy in a transaction: the held checkout's next
    // transaction gets the other server.
    let mut other = PgConnection::establish(&url).unwrap();
    other.batch_execute("BEGIN").unwrap();
    let other_pid = diesel::sql_query("SELECT pg_catalog.pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut other)
        .unwrap()
        .pid;
    assert_eq!(
        other_pid, pid,
        "PgBouncer hands the idle server out last-in first-out"
    );
    let mut ran = false;
    let err = switch(&ids[1], || {
        held.tenant_transaction(|c| {
            ran = true;
            diesel::sql_query("SELECT title FROM notes").load::<Title>(c)
        })
    })
    .map(|rows| rows.len())
    .expect_err("backend changed");
    assert!(!ran, "the closure ran on another backend");
    let err = Error::from(err);
    assert!(
        matches!(&err, Error::PoolerNotDeclared(d)
            if matches!(d.evidence, PoolerEvidence::BackendChanged { was, .. } if was == pid)),
        "{err:?}"
    );
    other.batch_execute("ROLLBACK").unwrap();
}
