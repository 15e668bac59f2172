//! The backend memory bound at scale: the limit holds where the statement cap cannot see (the
//! statement cache off), a role that cannot read its backend's memory falls back to the cap, and
//! the catalog cache estimate matches a backend.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_workspace::{MigrateOptions, Migrator, TenantId};

use super::{items, Number};
use crate::support::SCALE_MIGRATIONS;
use crate::test_db;

#[derive(QueryableByName)]
struct Sample {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// One pass of a pool of 2 over every tenant, with the statement cache off and raw SQL in a
/// tenant transaction, two threads. At the start of every checkout the test reads the backend's
/// memory on that connection (its own query on the view, not the pool's). Returns the largest
/// sample and the number of backends used.
fn touch_every_tenant(
    url: &str,
    ids: &[TenantId],
    limit: Option<u64>,
) -> (u64, std::collections::BTreeSet<i32>) {
    use diesel::connection::CacheSize;
    use diesel_workspace::prelude::*;
    use diesel_workspace::{pool, switch};

    let pool = pool::builder()
        .max_size(2)
        .backend_memory_limit(limit)
        .memory_check_every(1)
        .build(url)
        .unwrap();
    let halves: Vec<Vec<TenantId>> = ids
        .chunks(ids.len().div_ceil(2))
        .map(<[_]>::to_vec)
        .collect();
    let handles: Vec<_> = halves
        .into_iter()
        .map(|half| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut most = 0u64;
                let mut pids = std::collections::BTreeSet::new();
                for t in &half {
                    let mut conn = pool.get().unwrap();
                    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
                    let s: Sample = diesel::sql_query(
                        "SELECT pg_catalog.pg_backend_pid() AS pid, \
                         (SELECT sum(total_bytes)::int8 FROM pg_catalog.pg_backend_memory_contexts) \
                         AS bytes",
                    )
                    .get_result(&mut conn)
                    .unwrap();
                    most = most.max(u64::try_from(s.bytes).unwrap());
                    pids.insert(s.pid);
                    let n: i64 = switch(t, || {
                        conn.tenant_transaction(|c| {
                            diesel::sql_query("SELECT count(*) AS n FROM items")
                                .get_result::<Number>(c)
                                .map(|r| r.n)
                        })
                    })
                    .unwrap();
                    assert_eq!(n, 0);
                }
                (most, pids)
            })
        })
        .collect();
    let mut most = 0;
    let mut pids = std::collections::BTreeSet::new();
    for h in handles {
        let (m, p) = h.join().unwrap();
        most = most.max(m);
        pids.extend(p);
    }
    (most, pids)
}

/// The pool's backend memory limit holds for a workload the statement cap cannot see: a pool of
/// 2 touching 3,000 tenants with the statement cache off. Every backend, sampled at the start of
/// every checkout, stays under the limit; the control, the same pass without the limit, goes
/// over it (the catalog cache grows with every tenant a backend touches).
#[test]
fn backend_memory_limit_bounds_every_backend() {
    const TENANTS: usize = 3_000;
    const LIMIT: u64 = 16 << 20;
    let db = test_db!("backend_memory_limit_bounds_every_backend");
    let mut conn = db.conn();
    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut conn).unwrap();
    let ids: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("m{i:04}")).unwrap())
        .collect();
    let opts = MigrateOptions::default().parallel(2);
    let report = migrator.create_tenants(db.url(), &ids, &opts).unwrap();
    assert!(report.is_success(), "{}", report.failure_summary());

    let (bounded, bounded_pids) = touch_every_tenant(db.url(), &ids, Some(LIMIT));
    assert!(
        bounded <= LIMIT,
        "a backend held {bounded} bytes, over the limit of {LIMIT}"
    );
    assert!(
        bounded_pids.len() > 2,
        "the limit recycled no backend ({} used)",
        bounded_pids.len()
    );

    let (unbounded, unbounded_pids) = touch_every_tenant(db.url(), &ids, None);
    assert_eq!(
        unbounded_pids.len(),
        2,
        "nothing recycles without the limit"
    );
    assert!(
        unbounded > LIMIT,
        "the control stayed at {unbounded} bytes: the pass does not grow a backend past the limit"
    );
    eprintln!(
        "largest backend: {} KiB with the limit ({} backends), {} KiB without",
        bounded >> 10,
        bounded_pids.len(),
        unbounded >> 10
    );
}

/// `url` with its user replaced by `role` (and no password).
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

/// The default memory bound needs a role that can read its backend's memory. For one that
/// cannot (no `pg_read_all_stats`), the default pool falls back to the statement cap of 256 and
/// recycles a connection that passes it, where a superuser's default pool (memory-bounded,
/// no cap) keeps its one backend; a limit set on the builder refuses such a role when the pool
/// starts.
#[test]
fn the_default_pool_falls_back_to_the_statement_cap() {
    use diesel_workspace::{pool, switch};

    const TENANTS: usize = 300;
    let db = test_db!("the_default_pool_falls_back_to_the_statement_cap");
    let mut conn = db.conn();
    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut conn).unwrap();
    let ids: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("f{i:03}")).unwrap())
        .collect();
    let report = migrator
        .create_tenants(db.url(), &ids, &MigrateOptions::default().parallel(2))
        .unwrap();
    assert!(report.is_success(), "{}", report.failure_summary());
    // Roles are the server's: named after this test's database, which is unique to the run.
    let name = db.url().rsplit('/').next().unwrap();
    let role = format!("{}_reader", &name[name.len().saturating_sub(50)..]);
    conn.batch_execute(&format!(
        "DROP ROLE IF EXISTS \"{role}\"; CREATE ROLE \"{role}\" LOGIN; \
         GRANT pg_read_all_data TO \"{role}\""
    ))
    .unwrap();

    let backends = |url: &str| {
        let pool = pool::builder().max_size(1).build(url).unwrap();
        let mut pids = std::collections::BTreeSet::new();
        for t in &ids {
            let mut c = pool.get_for(t).unwrap();
            switch(t, || items::table.count().get_result::<i64>(&mut c)).unwrap();
            pids.insert(
                diesel::sql_query("SELECT pg_catalog.pg_backend_pid()::int8 AS n")
                    .get_result::<Number>(&mut c)
                    .unwrap()
                    .n,
            );
        }
        pids.len()
    };
    let reader = as_role(db.url(), &role);
    assert!(
        backends(&reader) > 1,
        "{TENANTS} statements on one connection, over the fallback cap of 256: recycled"
    );
    assert_eq!(
        backends(db.url()),
        1,
        "the memory-bounded default has no statement cap"
    );
    let refused = pool::builder()
        .max_size(1)
        .backend_memory_limit(Some(64 << 20))
        .build(&reader)
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("permission denied"),
        "{refused:?}"
    );
    conn.batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();
}

/// `CATALOG_BYTES_PER_RELATION` against a measurement: a fresh backend that reads every table of
/// 300 tenants of the example schema (three tables, five indexes; statement cache off, so only the
/// catalog cache grows) holds, per tenant, what the estimate says for that tenant's relations,
/// within a quarter.
#[test]
fn the_catalog_estimate_matches_a_backend() {
    use crate::support::TENANT_MIGRATIONS;
    use diesel::connection::CacheSize;

    const WARM: usize = 100;
    const TENANTS: usize = 400;
    let db = test_db!("the_catalog_estimate_matches_a_backend");
    let mut conn = db.conn();
    let migrator = Migrator::builder(TENANT_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut conn).unwrap();
    let before = migrator.catalog_size(&mut conn).unwrap();
    let ids: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("c{i:03}")).unwrap())
        .collect();
    let report = migrator
        .create_tenants(db.url(), &ids, &MigrateOptions::default().parallel(2))
        .unwrap();
    assert!(report.is_success(), "{}", report.failure_summary());
    let after = migrator.catalog_size(&mut conn).unwrap();
    let relations = (after.relations - before.relations) as f64 / TENANTS as f64;

    let mut fresh = PgConnection::establish(db.url()).unwrap();
    fresh.set_prepared_statement_cache_size(CacheSize::Disabled);
    let memory = |c: &mut PgConnection| diesel_workspace::pool::backend_memory(c).unwrap() as f64;
    let touch = |c: &mut PgConnection, tenants: &[TenantId]| {
        for t in tenants {
            let q = t.quoted();
            c.batch_execute(&format!(
                "SELECT title FROM {q}.notes WHERE id = 1; \
                 SELECT count(*) FROM {q}.notes; SELECT count(*) FROM {q}.tags; \
                 SELECT count(*) FROM {q}.categories; \
                 SELECT count(*) FROM {q}.__diesel_schema_migrations"
            ))
            .unwrap();
        }
    };
    // The first tenants also grow the caches' hash tables: measured past them.
    touch(&mut fresh, &ids[..WARM]);
    let start = memory(&mut fresh);
    touch(&mut fresh, &ids[WARM..]);
    let per_tenant = (memory(&mut fresh) - start) / (TENANTS - WARM) as f64;
    let estimate = relations * diesel_workspace::CATALOG_BYTES_PER_RELATION as f64;
    eprintln!(
        "catalog cache: {per_tenant:.0} bytes per tenant measured, {estimate:.0} estimated \
         ({relations} relations per tenant, {:.0} bytes per relation measured)",
        per_tenant / relations
    );
    assert!(
        (0.75..=1.25).contains(&(estimate / per_tenant)),
        "estimated {estimate:.0} bytes per tenant, measured {per_tenant:.0}"
    );
}
