//! An undeclared transaction pooler on a busy PgBouncer (transaction mode, 4 server connections,
//! `server_round_robin`, another client keeping it busy): two processes each build a default
//! pool through it (r2d2 with `build`, r2d2 with `build_unchecked`, deadpool-diesel, in turn)
//! and hold one checkout for a run of DSL reads and writes over four tenants. Every such pool is
//! refused before its first tenant statement, in every round, and no client reads or writes a
//! row of another tenant. The negative control runs the same two processes
//! with stock Diesel pools (named prepared statements, no check) through the same bouncer and
//! sees other tenants' rows.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::prelude::*;
use diesel_workspace::pooler::Pooler;
use diesel_workspace::prelude::*;
use diesel_workspace::{pool, switch, TenantId};
use workspace_diesel_tests::busy::{self, Kind, Outcome};
use workspace_diesel_tests::pgbouncer::{Config, PgBouncer};

use crate::pooler::{assert_tables_clean, fixture, Tally};
use crate::support::schema::notes;
use crate::test_db;

/// Rounds of the scenario, each pool kind in a third of them.
const ROUNDS: usize = 30;
const OPS: usize = 600;

/// The other client: a pool declared for the pooler, two threads reading tenants with the DSL
/// and raw SQL in tenant transactions until `stop`.
fn busy_client(
    url: &str,
    ids: &[TenantId],
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Tally>> {
    let pool = pool::builder()
        .pooler(Pooler::Transaction)
        .max_size(2)
        .build(url)
        .expect("a declared pool");
    (0..2)
        .map(|k| {
            let (pool, stop, ids) = (pool.clone(), Arc::clone(stop), ids.to_vec());
            std::thread::spawn(move || {
                let tally = Tally::default();
                let mut conn = pool.get().expect("the busy client's checkout");
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let t = &ids[i % ids.len()];
                    i += 1;
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    let read = switch(t, || {
                        let dsl: Vec<String> = notes::table.select(notes::title).load(&mut conn)?;
                        let raw: Vec<String> = conn.tenant_transaction(|c| {
                            diesel::sql_query("SELECT title FROM notes WHERE body = ''")
                                .load::<crate::pooler::Title>(c)
                                .map(|rows| rows.into_iter().map(|r| r.title).collect())
                        })?;
                        Ok::<_, diesel::result::Error>((dsl, raw))
                    });
                    match read {
                        Ok((dsl, raw)) => {
                            tally.rows(t, dsl.iter().map(String::as_str));
                            tally.rows(t, raw.iter().map(String::as_str));
                        }
                        Err(e) => {
                            if tally.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("busy client {k}: {e}");
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect()
}

fn spawn_client(url: &str, kind: Kind, offset: usize, ids: &[TenantId]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_busy-client"))
        .arg(url)
        .arg(kind.as_str())
        .arg(offset.to_string())
        .arg(OPS.to_string())
        .args(ids.iter().map(TenantId::as_str))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start busy-client")
}

fn outcome(child: Child) -> Outcome {
    let out = child.wait_with_output().expect("busy-client ran");
    assert!(out.status.success(), "busy-client failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    Outcome::parse(line).unwrap_or_else(|| panic!("busy-client printed {text:?}"))
}

/// Both processes' outcomes for one round of `kind`: the child (offset 1) and this process
/// (offset 0) run at the same time.
fn round(url: &str, kind: Kind, ids: &[TenantId]) -> [Outcome; 2] {
    let child = spawn_client(url, kind, 1, ids);
    let mine = busy::run(url, kind, ids, 0, OPS);
    [mine, outcome(child)]
}

fn stop_busy(
    stop: &AtomicBool,
    busy: Vec<std::thread::JoinHandle<Tally>>,
) -> (usize, usize, usize) {
    stop.store(true, Ordering::Relaxed);
    busy.into_iter()
        .map(|h| h.join().expect("busy client"))
        .fold((0, 0, 0), |(o, w, e), t| {
            (
                o + t.ops.load(Ordering::Relaxed),
                w + t.wrong.load(Ordering::Relaxed),
                e + t.errors.load(Ordering::Relaxed),
            )
        })
}

#[test]
fn undeclared_pools_on_a_busy_bouncer_are_refused_before_any_row() {
    let db = test_db!("undeclared_busy_bouncer");
    let ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(4).round_robin());
    let url = bouncer.url(db.url());
    let stop = Arc::new(AtomicBool::new(false));
    let busy = busy_client(&url, &ids, &stop);
    let mut refused = 0;
    for r in 0..ROUNDS {
        let kind = [Kind::Build, Kind::Unchecked, Kind::Deadpool][r % 3];
        for o in round(&url, kind, &ids) {
            assert!(o.refused, "round {r} ({kind:?}): not refused: {o}");
            assert!(
                o.message.contains("pooler(Pooler::Transaction)"),
                "round {r}: {o}"
            );
            assert_eq!((o.ops, o.wrong), (0, 0), "round {r}: {o}");
            refused += 1;
        }
    }
    assert_eq!(refused, 2 * ROUNDS);
    let (ops, wrong, errors) = stop_busy(&stop, busy);
    assert!(ops > 0, "the busy client ran");
    assert_eq!((wrong, errors), (0, 0), "the declared client");
    eprintln!(
        "busy bouncer: {refused} of {} undeclared pools refused with 0 operations run; the \
         declared client: {ops} operations, {wrong} wrong rows",
        2 * ROUNDS
    );
    assert_tables_clean(&db, &ids);
}

/// The negative control: stock Diesel pools in the same two processes, through the same busy
/// bouncer, read rows of other tenants (named prepared statements meet another client's).
#[test]
fn negative_control_stock_pools_on_a_busy_bouncer_read_wrong_rows() {
    let db = test_db!("stock_busy_bouncer");
    let ids = fixture(&db);
    let bouncer = PgBouncer::start(Config::transaction(4).round_robin());
    let url = bouncer.url(db.url());
    let stop = Arc::new(AtomicBool::new(false));
    let busy = busy_client(&url, &ids, &stop);
    let mut wrong = 0;
    let mut seen = Vec::new();
    for _ in 0..5 {
        for o in round(&url, Kind::Stock, &ids) {
            assert!(!o.refused);
            wrong += o.wrong;
            seen.push(o.to_string());
        }
        if wrong > 0 {
            break;
        }
    }
    stop_busy(&stop, busy);
    eprintln!("stock pools on a busy bouncer: {seen:#?}");
    assert!(wrong > 0, "the harness saw no wrong row: {seen:#?}");
}
