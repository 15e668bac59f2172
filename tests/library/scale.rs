//! A fleet past PostgreSQL's default lock table: every fleet-wide read works with more tenants
//! than `max_locks_per_transaction` × `max_connections` (64 × 100 by default) lets one
//! transaction lock, in the library and in the CLI.
//!
//! Reading two relations (a ledger and its index) per tenant in one transaction holds two locks
//! per tenant until it ends; past about 6,000 tenants on a default server that fails with `out
//! of shared memory`. The fleet here is larger than the server's own limit, read from the server.

use diesel::connection::SimpleConnection;
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

/// An affine pool serves a tenant from its own shard: every checkout for the same tenant reaches
/// the same backend, tenants of different shards reach different backends, and a connection
/// checked out for one tenant still reaches only the tenant that is active (the pool chooses a
/// backend, never a tenant).
#[test]
fn affine_pool_serves_each_tenant_from_its_shard() {
    use diesel_workspace::affinity::AffinePool;
    use diesel_workspace::prelude::*;
    use diesel_workspace::{pool, switch};

    let db = test_db!("affine_pool_serves_each_tenant_from_its_shard");
    let mut conn = db.conn();
    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut conn).unwrap();
    let ids: Vec<TenantId> = (0..12)
        .map(|i| TenantId::new(format!("a{i:02}")).unwrap())
        .collect();
    let report = migrator
        .create_tenants(db.url(), &ids, &MigrateOptions::default())
        .unwrap();
    assert!(report.is_success(), "{}", report.failure_summary());
    for (i, t) in ids.iter().enumerate() {
        switch(t, || {
            conn.tenant_transaction(|c| {
                diesel::sql_query(format!("INSERT INTO items (id) VALUES ({i})")).execute(c)
            })
        })
        .unwrap();
    }

    let pool = AffinePool::build(3, db.url(), || pool::builder().max_size(1)).unwrap();
    let pid = |c: &mut PgConnection| {
        diesel::sql_query("SELECT pg_catalog.pg_backend_pid()::int8 AS n")
            .get_result::<Number>(c)
            .unwrap()
            .n
    };
    let mut by_shard = std::collections::BTreeMap::new();
    for t in &ids {
        let first = pid(&mut pool.get_for(t).unwrap());
        let again = pid(&mut pool.get_for(t).unwrap());
        assert_eq!(first, again, "{t}: two checkouts, two backends");
        let shard = pool.shard_of(t);
        assert_eq!(*by_shard.entry(shard).or_insert(first), first, "{t}");
    }
    assert_eq!(
        by_shard.len(),
        3,
        "twelve tenants all hashed onto fewer than 3 shards"
    );
    let backends: std::collections::BTreeSet<_> = by_shard.values().collect();
    assert_eq!(backends.len(), 3, "one backend per shard");

    // A connection of a's shard, used for another tenant, reads that tenant's rows only.
    let a = &ids[0];
    let other = ids
        .iter()
        .find(|t| pool.shard_of(t) != pool.shard_of(a))
        .unwrap();
    let mut c = pool.get_for(a).unwrap();
    let rows: i64 = switch(other, || {
        c.tenant_transaction(|c| {
            diesel::sql_query("SELECT pg_catalog.count(*) AS n FROM items")
                .get_result::<Number>(c)
                .map(|r| r.n)
        })
    })
    .unwrap();
    assert_eq!(rows, 1);
    let own: i64 = switch(other, || {
        c.tenant_transaction(|c| {
            diesel::sql_query("SELECT id::int8 AS n FROM items")
                .get_result::<Number>(c)
                .map(|r| r.n)
        })
    })
    .unwrap();
    let index = ids.iter().position(|t| t == other).unwrap() as i64;
    assert_eq!(
        own, index,
        "the row of the active tenant, not of the shard's"
    );
    drop(c);
    // `get` with an active tenant takes that tenant's shard.
    let expected = by_shard[&pool.shard_of(other)];
    let got = switch(other, || pid(&mut pool.get().unwrap()));
    assert_eq!(got, expected);
}

/// The default pool is tenant-affine: `pool::builder().max_size(3)` makes three shards of one
/// connection, each tenant's checkouts reach its shard's backend, a connection of one shard
/// still reads only the active tenant's rows, and a tenant whose shard is busy gets another
/// shard's idle connection after the affinity wait instead of waiting for its own.
#[test]
fn default_pool_serves_each_tenant_from_its_shard() {
    use diesel_workspace::prelude::*;
    use diesel_workspace::{pool, switch};

    let db = test_db!("default_pool_serves_each_tenant_from_its_shard");
    let mut conn = db.conn();
    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    migrator.run_shared(&mut conn).unwrap();
    let ids: Vec<TenantId> = (0..12)
        .map(|i| TenantId::new(format!("d{i:02}")).unwrap())
        .collect();
    let report = migrator
        .create_tenants(db.url(), &ids, &MigrateOptions::default())
        .unwrap();
    assert!(report.is_success(), "{}", report.failure_summary());
    for (i, t) in ids.iter().enumerate() {
        switch(t, || {
            conn.tenant_transaction(|c| {
                diesel::sql_query(format!("INSERT INTO items (id) VALUES ({i})")).execute(c)
            })
        })
        .unwrap();
    }

    let pool = pool::builder().max_size(3).build(db.url()).unwrap();
    assert_eq!(pool.shards().len(), 3);
    assert_eq!(pool.max_size(), 3);
    let pid = |c: &mut PgConnection| {
        diesel::sql_query("SELECT pg_catalog.pg_backend_pid()::int8 AS n")
            .get_result::<Number>(c)
            .unwrap()
            .n
    };
    let mut by_shard = std::collections::BTreeMap::new();
    for t in &ids {
        let first = pid(&mut pool.get_for(t).unwrap());
        let again = switch(t, || pid(&mut pool.get().unwrap()));
        assert_eq!(
            first, again,
            "{t}: get_for and get under switch, two backends"
        );
        assert_eq!(
            *by_shard.entry(pool.shard_of(t)).or_insert(first),
            first,
            "{t}"
        );
    }
    let backends: std::collections::BTreeSet<_> = by_shard.values().collect();
    assert_eq!(backends.len(), 3, "one backend per shard");

    // A connection of a's shard, used under another tenant, reads that tenant's row only.
    let a = &ids[0];
    let (index, other) = ids
        .iter()
        .enumerate()
        .find(|(_, t)| pool.shard_of(t) != pool.shard_of(a))
        .unwrap();
    let mut held = pool.get_for(a).unwrap();
    let row: i64 = switch(other, || {
        held.tenant_transaction(|c| {
            diesel::sql_query("SELECT id::int8 AS n FROM items")
                .get_result::<Number>(c)
                .map(|r| r.n)
        })
    })
    .unwrap();
    assert_eq!(
        row, index as i64,
        "the active tenant's row, not the shard's"
    );

    // a's shard is busy (held above): a's next checkout spills to another shard's backend.
    let start = std::time::Instant::now();
    let spilled = pid(&mut pool.get_for(a).unwrap());
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert_ne!(spilled, by_shard[&pool.shard_of(a)], "a busy shard spills");
    drop(held);
    assert_eq!(
        pid(&mut pool.get_for(a).unwrap()),
        by_shard[&pool.shard_of(a)]
    );

    // The control: one shard is one plain pool, every tenant on whichever connection is idle.
    let plain = pool::builder()
        .max_size(3)
        .shards(1)
        .build(db.url())
        .unwrap();
    assert_eq!(plain.shards().len(), 1);
    let seen: std::collections::BTreeSet<i64> = ids
        .iter()
        .map(|t| pid(&mut plain.get_for(t).unwrap()))
        .collect();
    assert_eq!(
        seen.len(),
        1,
        "one idle connection serves every tenant in turn"
    );
}

diesel_workspace::tenant_table! {
    items (id) {
        id -> Int4,
    }
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
