//! Snapshots before risky changes: taken with the migration (only for tenants it changes),
//! restored row for row after a destructive migration, refused restores that change nothing,
//! the `restoring` state while it runs, pruning, and snapshot schemas that are never tenants.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::registry::{lifecycle_state, set_lifecycle_state, LifecycleState};
use diesel_workspace::{Error, MigrateOptions, Migrator, TenantId, TenantOutcome};

use crate::fleet::{migrator_for, Prefix};
use crate::mobility::{fingerprint, seed};

/// The example schema, then a destructive migration (`notes.body` dropped).
pub(crate) const DESTRUCTIVE: EmbeddedMigrations = embed_migrations!("migrations/destructive");
pub(crate) const V1: &str = "20260101000001";
pub(crate) const V2: &str = "20260601000001";
const HOUR: Duration = Duration::from_secs(3600);

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

fn central(conn: &mut PgConnection, tenant: &str) -> Vec<String> {
    diesel::sql_query(format!(
        "SELECT version::text AS version FROM public.workspace_migrations \
         WHERE schema_name = '{tenant}' ORDER BY 1"
    ))
    .load::<Version>(conn)
    .unwrap()
    .into_iter()
    .map(|v| v.version)
    .collect()
}

/// Whether `tenant`'s `notes` still has the column the destructive migration drops.
pub(crate) fn has_body(conn: &mut PgConnection, tenant: &str) -> bool {
    count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM information_schema.columns \
             WHERE table_schema = '{tenant}' AND table_name = 'notes' AND column_name = 'body'"
        ),
    ) == 1
}

/// Tenants `names` at the first version (seeded), and the migrator of both versions.
pub(crate) fn before_and_after(conn: &mut PgConnection, names: &[&str]) -> Migrator {
    let before = migrator_for(conn, Prefix(DESTRUCTIVE, 1));
    for name in names {
        before.create_tenant(conn, &id(name)).unwrap();
        seed(conn, name, 40);
    }
    migrator_for(conn, DESTRUCTIVE)
}

/// Options that keep a snapshot of each tenant changed, for an hour.
pub(crate) fn snapshot_opts() -> MigrateOptions {
    MigrateOptions::default().snapshot(HOUR)
}

#[test]
fn a_destructive_migration_is_undone_by_restoring_its_snapshot_row_for_row() {
    let db = crate::test_db!("a_destructive_migration_is_undone_by_restoring_its_snapshot");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["acme", "globex"]);
    let acme = id("acme");
    let original = fingerprint(&mut conn, "acme");
    let globex = fingerprint(&mut conn, "globex");

    let outcome = after
        .migrate_tenant_with(&mut conn, &acme, &snapshot_opts())
        .unwrap();
    assert_eq!(outcome, TenantOutcome::Applied(vec![V2.to_owned()]));
    assert!(
        !has_body(&mut conn, "acme"),
        "the migration dropped the column"
    );
    let snaps = after.snapshots(&mut conn, Some(&acme)).unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let snap = &snaps[0];
    assert!(snap
        .name
        .starts_with(diesel_workspace::registry::SNAPSHOT_PREFIX));
    assert_eq!(snap.tenant, acme);
    assert_eq!(snap.versions, [V1]);
    assert!(snap.size_bytes > 0);
    let expires = snap.expires_at.expect("a retention");
    assert!((expires - snap.taken_at).num_seconds() == 3600, "{snap:?}");
    let notes = original.iter().find(|(t, ..)| t == "notes").unwrap().1;
    let tables: Vec<(&str, i64)> = snap
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t.rows))
        .collect();
    assert_eq!(tables, [("categories", 5), ("notes", notes), ("tags", 3)]);
    // Writes after the migration are undone too.
    conn.batch_execute("INSERT INTO acme.notes (title) VALUES ('after the migration')")
        .unwrap();

    let restored = after.restore_snapshot(&mut conn, &snap.name).unwrap();
    assert_eq!(&restored, snap);
    assert!(has_body(&mut conn, "acme"), "the column is back");
    assert_eq!(fingerprint(&mut conn, "acme"), original, "identical rows");
    assert_eq!(
        central(&mut conn, "acme"),
        [V1],
        "the central record is back"
    );
    assert_eq!(
        after.status(&mut conn).unwrap()[0].pending,
        [V2],
        "the ledger is back before the migration"
    );
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Active)
    );
    // The sequence stands where it stood: the next insert gets the next id.
    let max = count(&mut conn, "SELECT max(id)::int8 AS n FROM acme.notes");
    let next = count(
        &mut conn,
        "INSERT INTO acme.notes (title) VALUES ('x') RETURNING id::int8 AS n",
    );
    assert!(next > max, "{next} after {max}");
    // The other tenant was not touched, and the snapshot is kept.
    assert_eq!(fingerprint(&mut conn, "globex"), globex);
    assert_eq!(after.snapshots(&mut conn, None).unwrap().len(), 1);
    // Migrating again works on the restored tenant.
    assert_eq!(
        after.migrate_tenant(&mut conn, &acme).unwrap(),
        TenantOutcome::Applied(vec![V2.to_owned()])
    );
}

#[test]
fn only_tenants_a_run_changes_get_a_snapshot() {
    let db = crate::test_db!("only_tenants_a_run_changes_get_a_snapshot");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["a1", "a2", "current"]);
    after.migrate_tenant(&mut conn, &id("current")).unwrap();
    let report = after.migrate_all(db.url(), &snapshot_opts()).unwrap();
    assert_eq!(report.tenants.len(), 3, "{report:?}");
    let mut snapped: Vec<String> = after
        .snapshots(&mut conn, None)
        .unwrap()
        .into_iter()
        .map(|s| s.tenant.to_string())
        .collect();
    snapped.sort();
    assert_eq!(snapped, ["a1", "a2"]);
    // Nothing pending: a second run takes none.
    after.migrate_all(db.url(), &snapshot_opts()).unwrap();
    assert_eq!(after.snapshots(&mut conn, None).unwrap().len(), 2);
    // Negative control: without the option, no snapshot.
    let plain = before_and_after(&mut conn, &["b1"]);
    plain
        .migrate_all(db.url(), &MigrateOptions::default())
        .unwrap();
    assert_eq!(after.snapshots(&mut conn, None).unwrap().len(), 2);
}

#[test]
fn a_failed_restore_changes_nothing() {
    let db = crate::test_db!("a_failed_restore_changes_nothing");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["acme"]);
    let acme = id("acme");
    after
        .migrate_tenant_with(&mut conn, &acme, &snapshot_opts())
        .unwrap();
    let snap = after.snapshots(&mut conn, None).unwrap().remove(0);
    set_lifecycle_state(&mut conn, &acme, LifecycleState::Suspended).unwrap();
    let migrated = fingerprint_after(&mut conn);

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
    assert_eq!(fingerprint_after(&mut conn), migrated);
    assert!(!has_body(&mut conn, "acme"));
    assert_eq!(central(&mut conn, "acme"), [V1, V2]);
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Suspended),
        "the state before is back"
    );

    // A migration set that does not know the snapshot's versions is refused before anything.
    let other = migrator_for(&mut conn, crate::fleet::FLEET);
    let err = other.restore_snapshot(&mut conn, &snap.name).unwrap_err();
    assert!(
        matches!(&err, Error::SnapshotRefused { reason, .. } if reason.contains(V1)),
        "{err:?}"
    );
    assert_eq!(fingerprint_after(&mut conn), migrated);
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Suspended)
    );
    assert!(matches!(
        after.restore_snapshot(&mut conn, "_snap_nothing"),
        Err(Error::SnapshotNotFound(name)) if name == "_snap_nothing"
    ));
}

/// The migrated `acme` (no `body` column): per table, rows and an md5 of them.
fn fingerprint_after(conn: &mut PgConnection) -> Vec<(String, i64)> {
    ["categories", "tags", "notes", "__diesel_schema_migrations"]
        .iter()
        .map(|t| {
            let n = count(conn, &format!("SELECT count(*) AS n FROM acme.{t}"));
            #[derive(QueryableByName)]
            struct S {
                #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
                s: Option<String>,
            }
            let s = diesel::sql_query(format!(
                "SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) AS s FROM acme.{t} r"
            ))
            .get_result::<S>(conn)
            .unwrap()
            .s;
            (format!("{t} {s:?}"), n)
        })
        .collect()
}

#[test]
fn the_tenant_is_restoring_while_the_restore_runs_then_gets_its_state_back() {
    let db = crate::test_db!("the_tenant_is_restoring_while_the_restore_runs");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["acme"]);
    let acme = id("acme");
    after
        .migrate_tenant_with(&mut conn, &acme, &snapshot_opts())
        .unwrap();
    let snap = after.snapshots(&mut conn, None).unwrap().remove(0);
    set_lifecycle_state(&mut conn, &acme, LifecycleState::Suspended).unwrap();

    // An application transaction holds the tenant's table: the restore waits behind it.
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
    let started = std::time::Instant::now();
    let mut seen = None;
    while started.elapsed() < Duration::from_secs(20) {
        seen = lifecycle_state(&mut conn, &acme).unwrap();
        if seen == Some(LifecycleState::Restoring) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, Some(LifecycleState::Restoring));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!restore.is_finished(), "the restore waits for the lock");
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Restoring)
    );
    holder.batch_execute("COMMIT").unwrap();
    restore.join().unwrap().unwrap();
    assert_eq!(
        lifecycle_state(&mut conn, &acme).unwrap(),
        Some(LifecycleState::Suspended)
    );
    assert!(has_body(&mut conn, "acme"));
}

#[test]
fn prune_removes_only_expired_snapshots() {
    let db = crate::test_db!("prune_removes_only_expired_snapshots");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["short", "long"]);
    after
        .migrate_tenant_with(
            &mut conn,
            &id("short"),
            &MigrateOptions::default().snapshot(Duration::ZERO),
        )
        .unwrap();
    after
        .migrate_tenant_with(&mut conn, &id("long"), &snapshot_opts())
        .unwrap();
    let all = after.snapshots(&mut conn, None).unwrap();
    assert_eq!(all.len(), 2);
    let (short, long) = (all[0].clone(), all[1].clone());
    assert_eq!(
        (short.tenant.as_str(), long.tenant.as_str()),
        ("short", "long")
    );

    let removed = after.prune_snapshots(&mut conn, None).unwrap();
    assert_eq!(removed, vec![short.clone()]);
    assert!(!db.schema_exists(&short.name), "its schema is dropped");
    assert!(db.schema_exists(&long.name), "the unexpired one is kept");
    assert_eq!(
        after.snapshots(&mut conn, None).unwrap(),
        vec![long.clone()]
    );
    // Nothing else expired: a second prune removes nothing.
    assert!(after.prune_snapshots(&mut conn, None).unwrap().is_empty());
    // By age: older than a day keeps it, older than nothing removes it.
    let day = Duration::from_secs(24 * 3600);
    assert!(after
        .prune_snapshots(&mut conn, Some(day))
        .unwrap()
        .is_empty());
    assert_eq!(
        after
            .prune_snapshots(&mut conn, Some(Duration::ZERO))
            .unwrap(),
        vec![long.clone()]
    );
    assert!(!db.schema_exists(&long.name));
    // The tenants themselves are untouched.
    assert_eq!(
        after.list_tenants(&mut conn).unwrap(),
        [id("long"), id("short")]
    );
}

#[test]
fn a_snapshot_schema_is_never_a_tenant() {
    let db = crate::test_db!("a_snapshot_schema_is_never_a_tenant");
    let mut conn = db.conn();
    let after = before_and_after(&mut conn, &["acme"]);
    after
        .migrate_tenant_with(&mut conn, &id("acme"), &snapshot_opts())
        .unwrap();
    let snap = after.snapshots(&mut conn, None).unwrap().remove(0);
    assert!(db.schema_exists(&snap.name));
    // A valid schema name, and yet no tenant: not listed, not in status, not migrated.
    let as_tenant = TenantId::new(&snap.name).unwrap();
    assert_eq!(after.list_tenants(&mut conn).unwrap(), [id("acme")]);
    let status = after.status(&mut conn).unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].tenant, id("acme"));
    let report = after.migrate_all(db.url(), &snapshot_opts()).unwrap();
    assert!(
        report.tenants.iter().all(|(t, _)| t != &as_tenant),
        "{report:?}"
    );
    let hazards = after.audit(&mut conn).unwrap();
    assert!(
        hazards
            .iter()
            .all(|h| !format!("{h:?}").contains(&snap.name)),
        "{hazards:?}"
    );
    // Every tenant operation refuses its name.
    for result in [
        after.create_tenant(&mut conn, &as_tenant).map(|_| ()),
        after.migrate_tenant(&mut conn, &as_tenant).map(|_| ()),
        after.drop_tenant(&mut conn, &as_tenant),
    ] {
        assert!(
            matches!(&result, Err(Error::InvalidTenantName { reason, .. }) if reason.contains("_snap_")),
            "{result:?}"
        );
    }
    assert!(db.schema_exists(&snap.name), "nothing dropped it");
    // Negative control: the snapshot holds acme's rows, so a leak would show them.
    let rows = count(
        &mut conn,
        &format!("SELECT count(*) AS n FROM \"{}\".notes", snap.name),
    );
    assert!(rows > 0);
}
