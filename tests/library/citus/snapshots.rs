//! Snapshots on the cluster: taken with a destructive migration (`migrate_tenant` and
//! `migrate_all`), each a distributed schema of its own; restored row for row into a tenant
//! that is a distributed schema again, on one worker, whose next insert gets the next id; a
//! restore whose rows do not match changes nothing; pruning leaves nothing on any node.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_workspace::registry::{lifecycle_state, set_lifecycle_state, LifecycleState};
use diesel_workspace::{Error, Migrator, Snapshot, TenantId, TenantOutcome};
use workspace_diesel_tests::citus::{
    check_on, move_lock, nodes_of, shard_tables_on, CitusDb, Node,
};
use workspace_diesel_tests::citus_db;

use crate::fleet::migrator_for;
use crate::mobility::fingerprint;
use crate::snapshots::{before_and_after, has_body, snapshot_opts, DESTRUCTIVE, V1, V2};

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

fn in_citus_schemas(db: &CitusDb, schema: &str) -> bool {
    db.check(&format!(
        "EXISTS (SELECT 1 FROM citus_schemas WHERE schema_name::text = '{schema}')"
    ))
}

/// A tenant's tables and ledger, row counts and checksums (`crate::mobility::fingerprint`).
type Fingerprint = Vec<(String, i64, Option<String>)>;

/// `acme` made under the set before, then migrated with a snapshot: the migrator of the set
/// after, `acme`, its fingerprint before the migration, and the snapshot.
fn acme_snapshotted(conn: &mut PgConnection) -> (Migrator, TenantId, Fingerprint, Snapshot) {
    let after = before_and_after(conn, &["acme"]);
    let acme = id("acme");
    let original = fingerprint(conn, "acme");
    after
        .migrate_tenant_with(conn, &acme, &snapshot_opts())
        .unwrap();
    let snap = after.snapshots(conn, None).unwrap().remove(0);
    (after, acme, original, snap)
}

#[test]
fn a_destructive_migration_is_restored_into_a_distributed_tenant() {
    let db = citus_db!("a_destructive_migration_is_restored_into_a_distributed_tenant");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["acme", "globex"]);
    let acme = id("acme");
    let original = fingerprint(&mut conn, "acme");
    let globex = fingerprint(&mut conn, "globex");

    assert_eq!(
        after
            .migrate_tenant_with(&mut conn, &acme, &snapshot_opts())
            .unwrap(),
        TenantOutcome::Applied(vec![V2.to_owned()])
    );
    assert!(!has_body(&mut conn, "acme"), "the column is dropped");
    let snaps = after.snapshots(&mut conn, Some(&acme)).unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let snap = snaps[0].clone();
    assert_eq!(snap.versions, [V1]);
    let notes = original.iter().find(|(t, ..)| t == "notes").unwrap().1;
    let tables: Vec<(&str, i64)> = snap
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t.rows))
        .collect();
    assert_eq!(tables, [("categories", 5), ("notes", notes), ("tags", 3)]);
    assert!(snap.size_bytes > 0, "the size of its shards: {snap:?}");
    // The snapshot is a distributed schema of its own, on one worker, and no tenant.
    db.assert_distributed(&snap.name);
    assert!(in_citus_schemas(&db, &snap.name));
    assert!(after
        .placement(&mut conn)
        .unwrap()
        .iter()
        .all(|p| p.tenant.as_str() != snap.name));
    let status = after.status(&mut conn).unwrap();
    let listed = &status.iter().find(|s| s.tenant == acme).unwrap().snapshots;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size_bytes, snap.size_bytes);
    conn.batch_execute("INSERT INTO acme.notes (title) VALUES ('after the migration')")
        .unwrap();

    let restored = after.restore_snapshot(&mut conn, &snap.name).unwrap();
    assert_eq!(restored, snap);
    assert!(has_body(&mut conn, "acme"), "the column is back");
    assert_eq!(fingerprint(&mut conn, "acme"), original, "identical rows");
    // Checked again here: each table's count and checksum are the snapshot's.
    let again = after.snapshots(&mut conn, Some(&acme)).unwrap();
    assert_eq!(again, std::slice::from_ref(&snap));
    // Still a distributed schema, every table's shard on one worker.
    db.assert_distributed("acme");
    assert!(in_citus_schemas(&db, "acme"));
    assert_eq!(nodes_of(&mut conn, "acme").len(), 1);
    assert_eq!(after.status(&mut conn).unwrap()[0].pending, [V2]);
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Active)
    );
    // The next insert gets the next id.
    let max = count(&mut conn, "SELECT max(id)::int8 AS n FROM acme.notes");
    let next = count(
        &mut conn,
        "INSERT INTO acme.notes (title) VALUES ('x') RETURNING id::int8 AS n",
    );
    assert_eq!(next, max + 1);
    // The other tenant was not touched; migrating again works.
    assert_eq!(fingerprint(&mut conn, "globex"), globex);
    assert_eq!(
        after.migrate_tenant(&mut conn, &acme).unwrap(),
        TenantOutcome::Applied(vec![V2.to_owned()])
    );
    db.assert_distributed("acme");
}

#[test]
fn a_restore_that_does_not_match_changes_nothing_on_the_cluster() {
    let db = citus_db!("a_restore_that_does_not_match_changes_nothing_on_the_cluster");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["acme"]);
    let acme = id("acme");
    after
        .migrate_tenant_with(&mut conn, &acme, &snapshot_opts())
        .unwrap();
    let snap = after.snapshots(&mut conn, None).unwrap().remove(0);
    set_lifecycle_state(&mut conn, &acme, LifecycleState::Suspended).unwrap();
    let migrated = fingerprint(&mut conn, "acme");
    let node = nodes_of(&mut conn, "acme");

    // The snapshot's rows changed behind its back: the checksums refuse the restore.
    conn.batch_execute(&format!(
        "UPDATE \"{}\".notes SET title = 'tampered' WHERE id = (SELECT min(id) FROM \"{}\".notes)",
        snap.name, snap.name
    ))
    .unwrap();
    let err = after.restore_snapshot(&mut conn, &snap.name).unwrap_err();
    assert!(
        matches!(&err, Error::SnapshotRefused { reason, .. } if reason.contains("table notes")),
        "{err:?}"
    );
    assert_eq!(fingerprint(&mut conn, "acme"), migrated);
    assert!(!has_body(&mut conn, "acme"));
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Suspended),
        "the state before is back"
    );
    // The tenant is the distributed schema it was, on the worker it was on.
    db.assert_distributed("acme");
    assert_eq!(nodes_of(&mut conn, "acme"), node);
    let worker = db.worker(&node[0]).clone();
    let shards = shards_on(&db, &worker, "acme");
    assert_eq!(shards.len(), 4, "{shards:?}");
    // The restore's own shards rolled back on every worker.
    for w in db.workers() {
        if *w != worker {
            assert!(shards_on(&db, w, "acme").is_empty());
        }
    }
}

/// The shard tables (`notes_102011`) of `schema` on `worker`, without the shell tables of the
/// metadata it holds.
fn shards_on(db: &CitusDb, worker: &Node, schema: &str) -> Vec<String> {
    shard_tables_on(&mut db.conn_on(worker), schema)
        .into_iter()
        .filter(|t| {
            t.rsplit_once('_')
                .is_some_and(|(_, id)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

#[test]
fn a_fleet_run_snapshots_each_tenant_and_prune_leaves_nothing_on_any_node() {
    let db = citus_db!("a_fleet_run_snapshots_each_tenant_and_prune_leaves_nothing_on_any_node");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["a1", "a2"]);
    let report = after.migrate_all(db.url(), &snapshot_opts()).unwrap();
    assert_eq!(report.tenants.len(), 2, "{report:?}");
    let snaps = after.snapshots(&mut conn, None).unwrap();
    let mut tenants: Vec<&str> = snaps.iter().map(|s| s.tenant.as_str()).collect();
    tenants.sort();
    assert_eq!(tenants, ["a1", "a2"]);
    for s in &snaps {
        db.assert_distributed(&s.name);
    }
    // Each snapshot's tables are on the workers (shards, and the shell tables of the metadata
    // they hold): a positive control for the checks below.
    let on_workers = |name: &str| -> usize {
        db.workers()
            .iter()
            .map(|w| shard_tables_on(&mut db.conn_on(w), name).len())
            .sum()
    };
    for s in &snaps {
        assert!(on_workers(&s.name) >= 3, "{}", s.name);
    }
    // Movable as tenants are (by logical replication: its tables have a replica identity).
    let first = &snaps[0].name;
    let from = nodes_of(&mut conn, first);
    let to = db
        .workers()
        .iter()
        .find(|w| format!("{}:{}", w.host, w.port) != from[0])
        .unwrap()
        .clone();
    {
        let _moving = move_lock();
        conn.batch_execute(&format!(
            "SELECT pg_catalog.citus_schema_move('{first}', '{}', {})",
            to.host, to.port
        ))
        .unwrap();
    }
    assert_eq!(db.assert_distributed(first), &to);

    let removed = after
        .prune_snapshots(&mut conn, Some(Duration::ZERO))
        .unwrap();
    assert_eq!(removed.len(), 2);
    assert!(after.snapshots(&mut conn, None).unwrap().is_empty());
    for s in &snaps {
        assert!(!in_citus_schemas(&db, &s.name));
        assert!(!db.check(&format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = '{}')",
            s.name
        )));
        assert_eq!(on_workers(&s.name), 0, "{}", s.name);
        for w in db.workers() {
            assert!(!check_on(
                &mut db.conn_on(w),
                &format!(
                    "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = '{}')",
                    s.name
                )
            ));
        }
    }
    // The tenants are untouched.
    for t in ["a1", "a2"] {
        db.assert_distributed(t);
        assert!(!has_body(&mut conn, t));
    }
}

#[test]
fn a_restore_whose_connection_is_killed_leaves_the_tenant_as_it_was() {
    let db = citus_db!("a_restore_whose_connection_is_killed_leaves_the_tenant_as_it_was");
    let mut conn = db.conn();
    let (after, acme, original, snap) = acme_snapshotted(&mut conn);
    let migrated = fingerprint(&mut conn, "acme");
    let node = nodes_of(&mut conn, "acme");

    // An application transaction holds a table: the restore's opening batch (its lock, its
    // `DROP SCHEMA`) waits behind it, and its connection is killed there, its transaction open.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE acme.notes IN ACCESS SHARE MODE")
        .unwrap();
    let url = db.url().to_owned();
    let name = snap.name.clone();
    let restore = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        migrator_for(&mut conn, DESTRUCTIVE).restore_snapshot(&mut conn, &name)
    });
    let waiting = "FROM pg_catalog.pg_stat_activity WHERE pid <> pg_catalog.pg_backend_pid() \
                   AND wait_event_type = 'Lock' AND query LIKE '%hashtext(''acme'')%'";
    let started = std::time::Instant::now();
    while !db.check(&format!("EXISTS (SELECT 1 {waiting})")) {
        if restore.is_finished() {
            panic!("the restore ended: {:?}", restore.join().unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the restore never waited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(db.check(&format!(
        "(SELECT bool_and(pg_catalog.pg_terminate_backend(pid)) {waiting})"
    )));
    assert!(restore.join().unwrap().is_err(), "the restore was killed");
    holder.batch_execute("COMMIT").unwrap();

    // Nothing of it is left: the migrated rows, on the same worker, still distributed.
    assert_eq!(fingerprint(&mut conn, "acme"), migrated);
    assert!(!has_body(&mut conn, "acme"));
    db.assert_distributed("acme");
    assert_eq!(nodes_of(&mut conn, "acme"), node);
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Restoring),
        "marked until a restore completes"
    );
    // Run again, it completes and gives the tenant its state before back.
    after.restore_snapshot(&mut conn, &snap.name).unwrap();
    assert_eq!(fingerprint(&mut conn, "acme"), original);
    db.assert_distributed("acme");
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Active)
    );
}

/// The worker of a new distributed schema `name` made with one table, as a restore makes one.
fn new_schema_node(conn: &mut PgConnection, name: &str) -> String {
    conn.batch_execute(&format!(
        "BEGIN; SET LOCAL citus.enable_schema_based_sharding = on; CREATE SCHEMA {name}; \
         CREATE TABLE {name}.t (id int PRIMARY KEY); COMMIT"
    ))
    .unwrap();
    let nodes = nodes_of(conn, name);
    assert_eq!(nodes.len(), 1, "{name}: {nodes:?}");
    nodes[0].clone()
}

/// Moves `schema` to the worker `node` unless it is there (`block_writes`: no replication
/// slot, whose name would collide with a move in another test's database).
fn move_to(db: &CitusDb, conn: &mut PgConnection, schema: &str, node: &str) {
    if nodes_of(conn, schema) != [node.to_owned()] {
        let to = db.worker(node);
        conn.batch_execute(&format!(
            "SELECT citus_schema_move('{schema}', '{}', {}, 'block_writes')",
            to.host, to.port
        ))
        .unwrap();
    }
}

fn colocation_of(conn: &mut PgConnection, schema: &str) -> i64 {
    count(
        conn,
        &format!(
            "SELECT colocation_id::int8 AS n FROM citus_schemas WHERE schema_name::text = '{schema}'"
        ),
    )
}

#[test]
fn a_restore_puts_the_tenant_back_on_the_worker_it_was_moved_to() {
    let db = citus_db!("a_restore_puts_the_tenant_back_on_the_worker_it_was_moved_to");
    let mut conn = db.conn();
    let (after, acme, original, snap) = acme_snapshotted(&mut conn);

    // Citus places a new distributed schema by its colocation id alone, round robin over the
    // workers: as many made in a row as there are workers land on each worker once, and the
    // next one (the restore's) is placed where the first was.
    let workers = db.workers().len() as i64;
    let probes: Vec<String> = (0..workers)
        .map(|i| new_schema_node(&mut conn, &format!("probe_{i}")))
        .collect();
    let mut distinct = probes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), probes.len(), "round robin: {probes:?}");
    // The tenant goes to a worker Citus would not pick for the restore's schema.
    let target = probes[1].clone();
    move_to(&db, &mut conn, "acme", &target);
    assert_eq!(nodes_of(&mut conn, "acme"), std::slice::from_ref(&target));
    let colocation = colocation_of(&mut conn, "acme");

    after.restore_snapshot(&mut conn, &snap.name).unwrap();
    assert_eq!(fingerprint(&mut conn, "acme"), original, "rows and ledger");
    assert_eq!(after.status(&mut conn).unwrap()[0].pending, [V2]);
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Active)
    );
    // Negative control: a new distributed schema, whose colocation id alone would have put it
    // where the first probe is (`colocationId % workers`, Citus's
    // EmptySingleShardTableColocationDecideNodeId), not where the tenant was.
    let restored = colocation_of(&mut conn, "acme");
    assert_ne!(restored, colocation);
    assert_eq!(
        restored % workers,
        colocation_of(&mut conn, "probe_0") % workers,
        "the restore's schema is the one after the probes"
    );
    assert_ne!(probes[0], target);
    // It is on the worker it was on: every shard there, none anywhere else (once Citus has
    // dropped the placements the move left behind, which it defers).
    conn.batch_execute("CALL pg_catalog.citus_cleanup_orphaned_resources()")
        .unwrap();
    assert_eq!(db.assert_distributed("acme"), db.worker(&target));
    assert_eq!(nodes_of(&mut conn, "acme"), std::slice::from_ref(&target));
    let worker = db.worker(&target).clone();
    let shards = shards_on(&db, &worker, "acme");
    assert_eq!(shards.len(), 4, "{shards:?}");
    for w in db.workers() {
        if *w != worker {
            assert!(shards_on(&db, w, "acme").is_empty(), "{w:?}");
        }
    }
    assert!(!db.check(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = 'acme' \
         AND pg_catalog.obj_description(n.oid, 'pg_namespace') IS NOT NULL)"
    ));
    // The next insert gets the next id.
    let max = count(&mut conn, "SELECT max(id)::int8 AS n FROM acme.notes");
    let next = count(
        &mut conn,
        "INSERT INTO acme.notes (title) VALUES ('x') RETURNING id::int8 AS n",
    );
    assert_eq!(next, max + 1);
}

#[test]
fn a_restore_run_again_after_its_commit_moves_the_tenant_to_its_node_before() {
    let db = citus_db!("a_restore_run_again_after_its_commit_moves_the_tenant_to_its_node_before");
    let mut conn = db.conn();
    let (after, acme, original, snap) = acme_snapshotted(&mut conn);
    let workers = db.workers().len();
    let probes: Vec<String> = (0..workers)
        .map(|i| new_schema_node(&mut conn, &format!("probe_{i}")))
        .collect();
    // The tenant sits where Citus will place the restore's schema (the first probe's worker);
    // a restore interrupted after its commit kept another node as the node before.
    let (now, kept) = (probes[0].clone(), db.worker(&probes[1]).clone());
    move_to(&db, &mut conn, "acme", &now);
    conn.batch_execute(&format!(
        "COMMENT ON SCHEMA acme IS 'workspace-diesel restore; state before: suspended; \
         node before: {}:{}'",
        kept.host, kept.port
    ))
    .unwrap();
    set_lifecycle_state(&mut conn, &acme, LifecycleState::Restoring).unwrap();

    after.restore_snapshot(&mut conn, &snap.name).unwrap();
    assert_eq!(fingerprint(&mut conn, "acme"), original);
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Suspended),
        "the state before the first run"
    );
    // On the node kept, not the one it was on when run again (nor Citus's pick).
    assert_ne!(now, probes[1]);
    assert_eq!(db.assert_distributed("acme"), &kept);
    assert_eq!(nodes_of(&mut conn, "acme"), &probes[1..2]);
}
