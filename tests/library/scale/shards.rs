//! The tenant-affine pools: the default pool's shards and `AffinePool` serve each tenant from
//! its own backend and never choose the tenant a query reaches.

use diesel::prelude::*;
use diesel_workspace::{MigrateOptions, Migrator, TenantId};

use super::Number;
use crate::support::SCALE_MIGRATIONS;
use crate::test_db;

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
    let ids = twelve_tenants(db.url(), &mut conn, "a");

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
    let ids = twelve_tenants(db.url(), &mut conn, "d");

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

/// Twelve tenants of the scale schema named `<prefix>00`..`<prefix>11`, tenant `i` holding one
/// item whose id is `i`, so a read tells which tenant it reached.
fn twelve_tenants(url: &str, conn: &mut PgConnection, prefix: &str) -> Vec<TenantId> {
    use diesel_workspace::prelude::*;
    use diesel_workspace::switch;

    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    migrator.run_shared(conn).unwrap();
    let ids: Vec<TenantId> = (0..12)
        .map(|i| TenantId::new(format!("{prefix}{i:02}")).unwrap())
        .collect();
    let report = migrator
        .create_tenants(url, &ids, &MigrateOptions::default())
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
    ids
}
