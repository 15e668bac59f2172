//! The dry-run plan: the lock levels each statement takes, the sizes of the tables it locks,
//! the fleet-cost rules, the lock budget, and nothing changed (`pg_class`, `pg_attribute`, every
//! ledger, the central record and the registry byte-identical before and after).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::registry::{set_lifecycle_state, LifecycleState};
use diesel_workspace::{CostRule, LockLevel, MigrateOptions, Selection, TenantId};

use crate::fleet::{migrator_for, Prefix};

/// Two tables, then one migration with an index build, a column added with a default, a type
/// change, a foreign key, and a new table with its index.
const PLAN: EmbeddedMigrations = embed_migrations!("migrations/plan");

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

/// The rows of `sql` (one text column `line`), joined.
fn text(conn: &mut PgConnection, sql: &str) -> String {
    diesel::sql_query(sql)
        .load::<Line>(conn)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the plan must not change: `pg_class` and `pg_attribute` of the database (every
/// column, as text), each tenant's ledger, the central record and the registry.
fn snapshot(conn: &mut PgConnection, tenants: &[TenantId]) -> Vec<String> {
    let mut out =
        vec![
        text(conn, "SELECT c::text AS line FROM pg_catalog.pg_class c ORDER BY c.oid"),
        text(
            conn,
            "SELECT a::text AS line FROM pg_catalog.pg_attribute a ORDER BY a.attrelid, a.attnum",
        ),
        text(
            conn,
            "SELECT m::text AS line FROM public.workspace_migrations m ORDER BY 1",
        ),
        text(conn, "SELECT w::text AS line FROM public.workspaces w ORDER BY 1"),
    ];
    for t in tenants {
        out.push(text(
            conn,
            &format!(
                "SELECT l::text AS line FROM {}.__diesel_schema_migrations l ORDER BY 1",
                t.quoted()
            ),
        ));
    }
    out
}

fn total_size(conn: &mut PgConnection, table: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Size {
        #[diesel(sql_type = BigInt)]
        bytes: i64,
    }
    diesel::sql_query("SELECT pg_catalog.pg_total_relation_size($1::regclass) AS bytes")
        .bind::<Text, _>(table)
        .get_result::<Size>(conn)
        .unwrap()
        .bytes
}

#[test]
fn the_plan_names_locks_and_sizes_and_changes_nothing() {
    let db = crate::test_db!("the_plan_names_locks_and_sizes_and_changes_nothing");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(PLAN, 1));
    let tenants = [id("big"), id("small"), id("paused"), id("zz_done")];
    before
        .create_tenants(db.url(), &tenants, &MigrateOptions::default())
        .unwrap();
    // `big` holds 100,000 notes (several MB), `small` a few.
    conn.batch_execute(
        "INSERT INTO big.notes (n, title) SELECT g, 'note ' || g FROM generate_series(1, 100000) g; \
         INSERT INTO small.notes (n, title) VALUES (1, 'one'), (2, 'two')",
    )
    .unwrap();
    set_lifecycle_state(&mut conn, &id("paused"), LifecycleState::Suspended).unwrap();
    let after = migrator_for(&mut conn, PLAN);
    after.migrate_tenant(&mut conn, &id("zz_done")).unwrap();
    // Settled statistics, so that no autovacuum rewrites pg_class rows meanwhile.
    conn.batch_execute("VACUUM ANALYZE").unwrap();

    let was = snapshot(&mut conn, &tenants);
    let plan = after.plan(&mut conn, &Selection::all()).unwrap();
    assert_eq!(
        snapshot(&mut conn, &tenants),
        was,
        "the plan changed something"
    );

    // Who: big and small to migrate, zz_done up to date, paused held.
    let planned: Vec<&str> = plan.tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(planned, ["big", "small"]);
    assert_eq!(plan.up_to_date, 1);
    assert_eq!(plan.held, [(id("paused"), "suspended".to_owned())]);
    assert_eq!(plan.fleet_size, 4);

    // What: each statement's locks and costs.
    assert_eq!(plan.migrations.len(), 1);
    let m = &plan.migrations[0];
    assert!(m.in_transaction);
    let locks: Vec<(usize, Vec<(String, LockLevel)>)> = m
        .statements
        .iter()
        .map(|s| {
            (
                s.line,
                s.locks.iter().map(|l| (l.table.clone(), l.lock)).collect(),
            )
        })
        .collect();
    let l = |t: &str, level| (t.to_owned(), level);
    assert_eq!(
        locks,
        [
            (2, vec![l("notes", LockLevel::Share)]),
            (3, vec![l("notes", LockLevel::AccessExclusive)]),
            (4, vec![l("notes", LockLevel::AccessExclusive)]),
            (
                5,
                vec![
                    l("notes", LockLevel::ShareRowExclusive),
                    l("authors", LockLevel::ShareRowExclusive)
                ]
            ),
            (6, vec![l("notes", LockLevel::ShareRowExclusive)]),
            (7, vec![l("labels", LockLevel::Share)]),
        ]
    );
    let costs: Vec<Vec<CostRule>> = m.statements.iter().map(|s| s.costs.clone()).collect();
    assert_eq!(
        costs,
        [
            vec![CostRule::IndexWithoutConcurrently],
            vec![],
            vec![CostRule::TypeChange],
            vec![CostRule::ConstraintWithoutNotValid],
            vec![],
            // The new table is empty: its index costs nothing.
            vec![],
        ]
    );
    assert!(m.statements[0].sql.starts_with("CREATE INDEX notes_n_idx"));

    // Sizes: each tenant's own tables, as the catalog says; the new table does not exist yet.
    let big = &plan.tenants[0];
    let notes = big.size("big", "notes").unwrap();
    assert_eq!(notes.bytes, Some(total_size(&mut conn, "big.notes")));
    assert!(notes.bytes.unwrap() > 4 << 20, "{notes:?}");
    assert!(
        (90_000..=110_000).contains(&notes.rows.unwrap()),
        "{notes:?}"
    );
    assert_eq!(big.size("big", "labels").unwrap().bytes, None);
    let small = plan.tenants[1].size("small", "notes").unwrap();
    assert_eq!(small.bytes, Some(total_size(&mut conn, "small.notes")));
    assert!(small.bytes.unwrap() < 1 << 20);
    assert_eq!(small.rows, Some(2));

    // The budget: a write-blocking lock on a table over 1 MB is big's notes only (three
    // statements of SHARE or stronger on it, the foreign key's twice: notes, not authors).
    let over = plan.over_budget(LockLevel::Share, 1 << 20);
    let lines: Vec<(&str, usize, &str, LockLevel)> = over
        .iter()
        .map(|o| (o.tenant.as_str(), o.line, o.table.as_str(), o.lock))
        .collect();
    assert_eq!(
        lines,
        [
            ("big", 2, "notes", LockLevel::Share),
            ("big", 3, "notes", LockLevel::AccessExclusive),
            ("big", 4, "notes", LockLevel::AccessExclusive),
            ("big", 5, "notes", LockLevel::ShareRowExclusive),
            ("big", 6, "notes", LockLevel::ShareRowExclusive),
        ]
    );
    // Negative controls: a budget above big's size, and the read-blocking level only on a
    // larger budget, find nothing.
    let above = notes.bytes.unwrap();
    assert_eq!(plan.over_budget(LockLevel::AccessShare, above), []);
    assert_eq!(plan.over_budget(LockLevel::AccessExclusive, above), []);
    assert_eq!(
        plan.over_budget(LockLevel::AccessExclusive, 1 << 20).len(),
        2
    );

    // A selection narrows the plan; a tenant not registered is refused.
    let only_small = Selection::all().tenants([id("small")]);
    let plan = after.plan(&mut conn, &only_small).unwrap();
    assert_eq!(plan.tenants.len(), 1);
    assert_eq!(plan.over_budget(LockLevel::Share, 1 << 20), []);
    assert!(after
        .plan(&mut conn, &Selection::all().tenants([id("nobody")]))
        .is_err());
    assert_eq!(
        snapshot(&mut conn, &tenants),
        was,
        "a plan changed something"
    );
}
