//! Background jobs carry their tenant: 1,000 jobs over 20 tenants through fang's blocking queue
//! (PostgreSQL, Diesel) on a pool of workers, each row written in its job's tenant; the jobs of a
//! suspended and of a dropped tenant are reported and not run; a job with no tenant fails closed.

use std::sync::OnceLock;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use fang::{FangError, Queue, Queueable, RetentionMode, Runnable, Worker};
use serde::{Deserialize, Serialize};

use diesel_workspace::jobs::{JobError, TenantJob};
use diesel_workspace::pool::TenantPool;
use diesel_workspace::registry::{set_lifecycle_state, LifecycleState};
use diesel_workspace::switch;

use crate::support::schema::notes;
use crate::test_db;

const TENANTS: usize = 20;
const JOBS: usize = 1_000;
const WORKERS: usize = 4;

/// The pool the jobs write through: the worker process's, set once.
static JOB_POOL: OnceLock<TenantPool> = OnceLock::new();

/// The job: write one note in the job's tenant.
#[derive(Serialize, Deserialize)]
struct WriteNote {
    job: TenantJob<String>,
}

#[typetag::serde]
impl Runnable for WriteNote {
    fn run(&self, _queue: &dyn Queueable) -> Result<(), FangError> {
        let pool = JOB_POOL.get().expect("the job pool");
        let mut conn = pool.get().map_err(|e| FangError {
            description: e.to_string(),
        })?;
        self.job
            .run(&mut conn, |conn, title| {
                diesel::insert_into(notes::table)
                    .values((notes::title.eq(title), notes::body.eq("")))
                    .execute(conn)
            })
            .map(drop)
            .map_err(|e: JobError<diesel::result::Error>| FangError {
                description: e.to_string(),
            })
    }

    // A refusal is final: a suspended tenant's job is reported, not retried in a loop.
    fn max_retries(&self) -> i32 {
        0
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Message {
    #[diesel(sql_type = Text)]
    message: String,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

#[test]
fn a_thousand_queued_jobs_run_each_in_its_tenant_and_refused_ones_are_reported() {
    let db = test_db!("a_thousand_queued_jobs");
    let names: Vec<String> = (0..TENANTS).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tenants = db.provision(&refs);
    let (suspended, dropped) = (&tenants[TENANTS - 2], &tenants[TENANTS - 1]);
    let mut conn = db.conn();
    fang::run_migrations_postgres(&mut conn).unwrap();
    JOB_POOL
        .set(
            diesel_workspace::pool::builder()
                .max_size(WORKERS as u32)
                .build(db.url())
                .unwrap(),
        )
        .unwrap_or_else(|_| panic!("one test sets the job pool"));

    // Enqueue: job `i` for tenant `i % 20`, under a switch as a request handler would.
    let queue = Queue::builder()
        .connection_pool(
            diesel::r2d2::Pool::builder()
                .max_size(WORKERS as u32)
                .build(diesel::r2d2::ConnectionManager::<PgConnection>::new(
                    db.url(),
                ))
                .unwrap(),
        )
        .build();
    for i in 0..JOBS {
        let job = switch(&tenants[i % TENANTS], || {
            TenantJob::for_current(format!("job-{i}"))
        });
        queue.insert_task(&WriteNote { job: job.unwrap() }).unwrap();
    }
    // No tenant to carry outside a switch: refused before anything is queued.
    assert!(TenantJob::for_current(String::from("orphan")).is_err());
    // A message written by another producer without a tenant is queued as is.
    let orphan: TenantJob<String> = serde_json::from_str(r#"{"payload":"orphan"}"#).unwrap();
    queue.insert_task(&WriteNote { job: orphan }).unwrap();
    // One tenant is suspended and one dropped while their jobs wait.
    set_lifecycle_state(&mut conn, suspended, LifecycleState::Suspended).unwrap();
    db.migrator().drop_tenant(&mut conn, dropped).unwrap();

    // The worker pool: fang's worker on each thread, until the queue is empty.
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let worker: Worker<Queue> = Worker::builder()
                    .queue(queue.clone())
                    .retention_mode(RetentionMode::KeepAll)
                    .build();
                let mut ran = 0;
                while let Some(task) = queue.fetch_and_touch_task("common".to_owned()).unwrap() {
                    worker.run(&task).unwrap();
                    ran += 1;
                }
                ran
            })
        })
        .collect();
    let ran: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(ran, JOBS + 1);

    // Every active tenant has its 50 rows, each from one of its own jobs.
    let per_tenant = JOBS / TENANTS;
    for (k, tenant) in tenants[..TENANTS - 2].iter().enumerate() {
        let titles: Vec<String> = switch(tenant, || {
            notes::table.select(notes::title).load(&mut conn).unwrap()
        });
        assert_eq!(titles.len(), per_tenant, "{tenant}");
        for title in &titles {
            let i: usize = title.strip_prefix("job-").unwrap().parse().unwrap();
            assert_eq!(i % TENANTS, k, "{title} landed in {tenant}");
        }
    }
    // The suspended tenant ran none of its jobs; each is reported as failed, with the reason.
    let in_suspended: i64 =
        switch(suspended, || notes::table.count().get_result(&mut conn)).unwrap();
    assert_eq!(in_suspended, 0);
    let states = |conn: &mut PgConnection, state: &str| {
        diesel::sql_query(format!(
            "SELECT error_message AS message FROM fang_tasks WHERE state = '{state}' ORDER BY error_message"
        ))
        .load::<Message>(conn)
        .unwrap()
        .into_iter()
        .map(|m| m.message)
        .collect::<Vec<_>>()
    };
    let failed = states(&mut conn, "failed");
    let reason = |needle: &str| failed.iter().filter(|m| m.contains(needle)).count();
    assert_eq!(
        reason("tenant `t18` is Suspended: its job was not run"),
        per_tenant
    );
    assert_eq!(
        reason("tenant `t19` does not exist: its job was not run"),
        per_tenant
    );
    assert_eq!(reason("the job names no tenant: not run"), 1);
    assert_eq!(failed.len(), 2 * per_tenant + 1, "{failed:?}");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM fang_tasks WHERE state = 'finished'"
        ),
        (JOBS - 2 * per_tenant) as i64
    );
    // No note anywhere else: the shared schema has no `notes`, the total is the finished jobs.
    let total: i64 = tenants[..TENANTS - 1]
        .iter()
        .map(|t| {
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM \"{t}\".notes"),
            )
        })
        .sum();
    assert_eq!(total, (JOBS - 2 * per_tenant) as i64);
    assert!(!db.check("pg_catalog.to_regclass('public.notes') IS NOT NULL"));
}

#[test]
fn a_job_is_not_run_for_an_archived_tenant_and_its_failure_rolls_back() {
    let db = test_db!("a_job_archived_and_rollback");
    let tenants = db.provision(&["acme", "globex"]);
    let mut conn = db.conn();
    set_lifecycle_state(&mut conn, &tenants[1], LifecycleState::Archived).unwrap();
    let mut ran = false;
    let refused = TenantJob::new(&tenants[1], ()).run(&mut conn, |_, _| {
        ran = true;
        Ok::<_, diesel::result::Error>(())
    });
    assert!(!ran);
    assert!(
        matches!(
            refused,
            Err(JobError::Inactive {
                state: LifecycleState::Archived,
                ..
            })
        ),
        "{refused:?}"
    );
    // A failing job's writes roll back with its transaction.
    let failed = TenantJob::new(&tenants[0], "x").run(&mut conn, |conn, title| {
        diesel::insert_into(notes::table)
            .values((notes::title.eq(*title), notes::body.eq("")))
            .execute(conn)?;
        diesel::sql_query("SELECT 1/0").execute(conn)
    });
    assert!(matches!(failed, Err(JobError::Failed { .. })), "{failed:?}");
    let n: i64 = switch(&tenants[0], || notes::table.count().get_result(&mut conn)).unwrap();
    assert_eq!(n, 0);
    // An invalid name in a message is refused, not run anywhere.
    let bad: TenantJob<()> =
        serde_json::from_str(r#"{"tenant":"public; drop","payload":null}"#).unwrap();
    let refused = bad.run(&mut conn, |_, _| Ok::<_, diesel::result::Error>(()));
    assert!(
        matches!(refused, Err(JobError::InvalidTenant(_))),
        "{refused:?}"
    );
}

#[test]
fn a_running_job_holds_off_a_suspension_until_it_commits() {
    use diesel::connection::SimpleConnection;
    let db = test_db!("a_running_job_holds_off_a_suspension");
    let tenants = db.provision(&["acme"]);
    let acme = tenants[0].clone();
    let url = db.url().to_owned();
    let mut conn = db.conn();
    let during = TenantJob::new(&acme, ())
        .run(&mut conn, |_, _| {
            // Another session tries to suspend the tenant while the job runs.
            let mut other = PgConnection::establish(&url).unwrap();
            other.batch_execute("SET lock_timeout = '200ms'").unwrap();
            Ok::<_, diesel::result::Error>(
                set_lifecycle_state(&mut other, &acme, LifecycleState::Suspended).map(drop),
            )
        })
        .unwrap();
    let waited = during.unwrap_err();
    assert!(format!("{waited:?}").contains("lock timeout"), "{waited:?}");
    // Once the job has committed, the suspension goes through, and the next job is refused.
    set_lifecycle_state(&mut conn, &acme, LifecycleState::Suspended).unwrap();
    let refused =
        TenantJob::new(&acme, ()).run(&mut conn, |_, _| Ok::<_, diesel::result::Error>(()));
    assert!(
        matches!(refused, Err(JobError::Inactive { .. })),
        "{refused:?}"
    );
}
