//! The test support against the local server: a database per test (migrated, dropped, kept
//! after a failure only when asked), tenants from the warm pool that never see each other's
//! rows (100 at once in one database), r2d2 and async use (a single-threaded executor, and tokio's
//! multi-threaded runtime with a deadpool-diesel pool), and the outer-transaction refusal.

use std::sync::{Arc, Barrier};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{current, switch, tenant_table, Error, Migrator, TenantConnectionExt};
use diesel_workspace_test::{TestDatabase, ADMIN_URL_ENV};

const SHARED: EmbeddedMigrations = embed_migrations!("../migrations_shared");
const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");

tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn migrator() -> Migrator {
    if std::env::var(ADMIN_URL_ENV).is_err() {
        std::env::set_var(ADMIN_URL_ENV, "postgres://postgres@127.0.0.1:5432/postgres");
    }
    Migrator::builder(TENANT).shared(SHARED).build().unwrap()
}

fn admin() -> PgConnection {
    PgConnection::establish(&std::env::var(ADMIN_URL_ENV).unwrap()).unwrap()
}

fn database_exists(name: &str) -> bool {
    diesel::sql_query("SELECT count(*) AS n FROM pg_catalog.pg_database WHERE datname = $1")
        .bind::<Text, _>(name)
        .get_result::<Count>(&mut admin())
        .unwrap()
        .n
        == 1
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

#[test]
fn a_database_is_migrated_with_a_warm_pool_and_dropped_at_the_end() {
    let migrator = migrator();
    let db = TestDatabase::builder(&migrator)
        .label("migrated")
        .spares(3)
        .create()
        .unwrap();
    let name = db.name().to_owned();
    assert!(database_exists(&name));
    let mut conn = db.connection().unwrap();
    assert!(migrator.is_installed(&mut conn).unwrap());
    // The shared set ran: the example's `plans` table is in `public`.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE schemaname = 'public' AND tablename = 'plans'"
        ),
        1
    );
    assert_eq!(migrator.spares(&mut conn).unwrap().len(), 3);
    let tenant = db.tenant().unwrap();
    // Claimed from the pool: one spare fewer, one tenant more.
    assert_eq!(migrator.spares(&mut conn).unwrap().len(), 2);
    assert_eq!(
        migrator.list_tenants(&mut conn).unwrap(),
        [tenant.id().clone()]
    );
    drop(tenant);
    assert_eq!(migrator.list_tenants(&mut conn).unwrap(), []);
    drop(conn);
    drop(db);
    assert!(!database_exists(&name), "{name} is still there");
}

#[test]
fn a_hundred_tests_in_one_database_each_see_only_their_tenant() {
    const TESTS: usize = 100;
    let migrator = migrator();
    let db = TestDatabase::builder(&migrator)
        .label("hundred")
        .spares(TESTS)
        .create()
        .unwrap();
    // The tests share a small pool, as a suite on one server does (`max_connections`).
    let pool = diesel_workspace::pool::builder()
        .max_size(8)
        .build(db.url())
        .unwrap();
    let start = Arc::new(Barrier::new(TESTS));
    let handles: Vec<_> = (0..TESTS)
        .map(|i| {
            let db = db.clone();
            let pool = pool.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let tenant = db.tenant().unwrap();
                start.wait();
                let mut conn = pool.get().unwrap();
                // Test `i` writes `i + 1` rows, so any row seen from another tenant shows.
                let seen: Vec<String> = tenant.switch(|| {
                    conn.tenant_transaction(|c| {
                        for n in 0..=i {
                            diesel::insert_into(notes::table)
                                .values(notes::title.eq(format!("{}-{n}", tenant.id())))
                                .execute(c)?;
                        }
                        notes::table.select(notes::title).load(c)
                    })
                    .unwrap()
                });
                assert_eq!(seen.len(), i + 1, "{}", tenant.id());
                let prefix = format!("{}-", tenant.id());
                assert!(seen.iter().all(|t| t.starts_with(&prefix)), "{seen:?}");
                // Read back outside the routing too: the rows are in the tenant's schema.
                let own = count(
                    &mut conn,
                    &format!("SELECT count(*) AS n FROM \"{}\".notes", tenant.id()),
                );
                assert_eq!(own, i as i64 + 1);
                tenant
            })
        })
        .collect();
    let tenants: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut conn = db.connection().unwrap();
    assert_eq!(migrator.list_tenants(&mut conn).unwrap().len(), TESTS);
    let total: i64 = tenants
        .iter()
        .map(|t| {
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM \"{}\".notes", t.id()),
            )
        })
        .sum();
    assert_eq!(total, (TESTS * (TESTS + 1) / 2) as i64);
    drop(tenants);
    assert_eq!(migrator.list_tenants(&mut conn).unwrap(), []);
}

#[test]
fn a_pool_routes_to_the_test_tenant_and_fails_closed_outside_it() {
    let migrator = migrator();
    let db = TestDatabase::builder(&migrator)
        .label("pool")
        .spares(2)
        .create()
        .unwrap();
    let (a, b) = (db.tenant().unwrap(), db.tenant().unwrap());
    let pool = db.pool().unwrap();
    let mut conn = pool.get().unwrap();
    a.switch(|| {
        diesel::insert_into(notes::table)
            .values(notes::title.eq("a"))
            .execute(&mut conn)
            .unwrap()
    });
    let in_b: Vec<String> = b.switch(|| notes::table.select(notes::title).load(&mut conn).unwrap());
    assert_eq!(in_b, Vec::<String>::new());
    let in_a: Vec<String> = a.switch(|| notes::table.select(notes::title).load(&mut conn).unwrap());
    assert_eq!(in_a, ["a"]);
    let outside = notes::table.select(notes::title).load::<String>(&mut conn);
    assert!(Error::from(outside.unwrap_err())
        .to_string()
        .starts_with("no tenant is active"),);
}

#[test]
fn an_async_test_runs_under_its_tenant() {
    let migrator = migrator();
    let db = TestDatabase::builder(&migrator)
        .label("async")
        .spares(1)
        .create()
        .unwrap();
    let tenant = db.tenant().unwrap();
    let mut conn = db.connection().unwrap();
    let titles = futures_executor::block_on(tenant.scope(async {
        // An await point between the write and the read: the tenant stays active.
        diesel::insert_into(notes::table)
            .values(notes::title.eq("from async"))
            .execute(&mut conn)?;
        std::future::ready(()).await;
        notes::table.select(notes::title).load::<String>(&mut conn)
    }))
    .unwrap();
    assert_eq!(titles, ["from async"]);
    let outside =
        futures_executor::block_on(async { notes::table.count().get_result::<i64>(&mut conn) });
    assert!(outside.is_err());
}

#[test]
fn async_tests_on_a_multi_threaded_runtime_each_keep_their_tenant() {
    const TASKS: usize = 16;
    let migrator = migrator();
    let db = TestDatabase::builder(&migrator)
        .label("tokio")
        .spares(TASKS)
        .create()
        .unwrap();
    let tenants: Vec<_> = (0..TASKS).map(|_| db.tenant().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let pool = diesel_workspace::pool::builder()
        .deadpool(db.url())
        .unwrap()
        .max_size(4)
        .build()
        .unwrap();
    // Each task is one async test with its tenant: it yields between its writes, so it resumes
    // on whichever worker is free while the other tasks run on the same workers in between.
    let tasks: Vec<_> = tenants
        .into_iter()
        .enumerate()
        .map(|(i, tenant)| {
            let pool = pool.clone();
            rt.spawn(async move {
                let seen = tenant
                    .scope(async {
                        for n in 0..=i {
                            tokio::task::yield_now().await;
                            let active = current().expect("the test's tenant after an await");
                            let title = format!("{active}-{n}");
                            // deadpool runs the closure on a blocking thread: the tenant goes
                            // there by name.
                            pool.get()
                                .await
                                .unwrap()
                                .interact(move |c| {
                                    switch(&active, || {
                                        diesel::insert_into(notes::table)
                                            .values(notes::title.eq(title))
                                            .execute(c)
                                    })
                                })
                                .await
                                .unwrap()
                                .unwrap();
                        }
                        let active = current().expect("the test's tenant");
                        pool.get()
                            .await
                            .unwrap()
                            .interact(move |c| {
                                switch(&active, || {
                                    notes::table.select(notes::title).load::<String>(c)
                                })
                            })
                            .await
                            .unwrap()
                            .unwrap()
                    })
                    .await;
                (tenant, seen)
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (tenant, seen) = rt.block_on(task).unwrap();
        // Task `i` wrote `i + 1` rows, so a row written in another task's tenant shows.
        assert_eq!(seen.len(), i + 1, "{}", tenant.id());
        let prefix = format!("{}-", tenant.id());
        assert!(seen.iter().all(|t| t.starts_with(&prefix)), "{seen:?}");
    }
    // A task outside any scope has no tenant: its query fails closed.
    let outside = rt.block_on(async {
        pool.get()
            .await
            .unwrap()
            .interact(|c| notes::table.count().get_result::<i64>(c))
            .await
            .unwrap()
    });
    assert!(Error::from(outside.unwrap_err())
        .to_string()
        .starts_with("no tenant is active"));
}

#[test]
fn life_cycle_calls_inside_a_test_transaction_get_the_dedicated_error() {
    let migrator = migrator();
    let db = TestDatabase::builder(&migrator)
        .label("outer")
        .spares(1)
        .create()
        .unwrap();
    let mut conn = db.connection().unwrap();
    conn.begin_test_transaction().unwrap();
    let name = diesel_workspace::TenantId::new("acme").unwrap();
    let err = migrator.create_tenant(&mut conn, &name).unwrap_err();
    assert!(matches!(err, Error::OuterTransaction), "{err:?}");
    assert!(err.to_string().contains("outer transaction"), "{err}");
    let err = migrator.fill_spares(&mut conn, 2).unwrap_err();
    assert!(matches!(err, Error::OuterTransaction), "{err:?}");
    drop(conn);
    let mut conn = db.connection().unwrap();
    assert_eq!(migrator.list_tenants(&mut conn).unwrap(), []);
    assert_eq!(migrator.spares(&mut conn).unwrap().len(), 1);
}

#[test]
fn a_failing_test_keeps_its_database_only_when_asked() {
    let migrator = migrator();
    for keep in [false, true] {
        let db = TestDatabase::builder(&migrator)
            .label(if keep { "kept" } else { "not_kept" })
            .spares(1)
            .keep_on_failure(keep)
            .create()
            .unwrap();
        let name = db.name().to_owned();
        let tenant = db.tenant().unwrap();
        let id = tenant.id().clone();
        // The failing test: it panics while holding its tenant (and the last handle).
        let failed = std::thread::spawn(move || {
            let _tenant = tenant;
            let _db = db;
            panic!("the test fails");
        })
        .join();
        assert!(failed.is_err());
        assert_eq!(database_exists(&name), keep, "{name}");
        if keep {
            let url = std::env::var(ADMIN_URL_ENV).unwrap();
            let url = format!("{}/{name}", &url[..url.rfind('/').unwrap()]);
            let mut conn = PgConnection::establish(&url).unwrap();
            assert_eq!(migrator.list_tenants(&mut conn).unwrap(), [id]);
            drop(conn);
            use diesel::connection::SimpleConnection;
            admin()
                .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .unwrap();
        }
    }
}
