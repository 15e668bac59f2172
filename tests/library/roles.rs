//! Per-tenant roles: raw SQL in tenant A's transaction cannot read tenant B (permission denied),
//! the DSL and migrations still work, and the role follows the tenant through a spare claim, a
//! rename and a drop.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_workspace::prelude::*;
use diesel_workspace::{switch, Migrator, TenantId, TenantRoles};

use crate::support::schema::notes;
use crate::support::{db::run_token, TestDb, SHARED_MIGRATIONS, TENANT_MIGRATIONS};
use crate::test_db;

#[derive(QueryableByName, Debug)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn role_exists(db: &TestDb, role: &str) -> bool {
    db.check(&format!(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{role}')"
    ))
}

/// Raw SQL counting `table` in `tenant`'s transaction under its role.
fn count_as(
    conn: &mut PgConnection,
    roles: &TenantRoles,
    tenant: &TenantId,
    table: &str,
) -> QueryResult<i64> {
    switch(tenant, || {
        conn.tenant_transaction_as(roles, |conn| {
            diesel::sql_query(format!("SELECT pg_catalog.count(*) AS n FROM {table}"))
                .get_result::<N>(conn)
        })
    })
    .map(|r| r.n)
}

fn add_note(conn: &mut PgConnection, tenant: &TenantId, title: &str) {
    switch(tenant, || {
        diesel::insert_into(notes::table)
            .values((notes::title.eq(title), notes::body.eq("")))
            .execute(conn)
    })
    .unwrap();
}

fn is_denied(r: QueryResult<i64>) -> bool {
    matches!(&r, Err(e) if e.to_string().contains("permission denied"))
}

#[test]
fn tenant_roles_deny_cross_tenant_raw_sql_and_follow_the_tenant() {
    let db = test_db!("tenant_roles_deny_cross_tenant_raw_sql_and_follow_the_tenant");
    // Roles belong to the cluster: a prefix of this run's own.
    let prefix = format!("dwr{}_", run_token());
    let roles = TenantRoles::new(prefix.clone()).unwrap();
    let m = Migrator::builder(TENANT_MIGRATIONS)
        .shared(SHARED_MIGRATIONS)
        .tenant_roles(roles.clone())
        .build()
        .unwrap();
    let mut conn = db.conn();
    m.run_shared(&mut conn).unwrap();
    let (acme, globex) = (id("acme"), id("globex"));
    m.create_tenant(&mut conn, &acme).unwrap();
    m.create_tenant(&mut conn, &globex).unwrap();
    assert!(role_exists(&db, &format!("{prefix}acme")));
    add_note(&mut conn, &acme, "a1");
    add_note(&mut conn, &globex, "g1");
    add_note(&mut conn, &globex, "g2");

    // Its own tables, unqualified or qualified: allowed. Another tenant's: denied.
    assert_eq!(count_as(&mut conn, &roles, &acme, "notes").unwrap(), 1);
    assert_eq!(count_as(&mut conn, &roles, &acme, "acme.notes").unwrap(), 1);
    assert!(is_denied(count_as(
        &mut conn,
        &roles,
        &acme,
        "globex.notes"
    )));
    assert!(is_denied(count_as(
        &mut conn,
        &roles,
        &globex,
        "acme.notes"
    )));
    // Negative control: the same raw SQL in a tenant transaction without the role reads it.
    let leaked = switch(&acme, || {
        conn.tenant_transaction(|conn| {
            diesel::sql_query("SELECT pg_catalog.count(*) AS n FROM globex.notes")
                .get_result::<N>(conn)
        })
    })
    .unwrap();
    assert_eq!(leaked.n, 2);
    // The role ends with the transaction: the connection is itself again.
    assert!(
        diesel::sql_query("SELECT pg_catalog.count(*) AS n FROM globex.notes")
            .get_result::<N>(&mut conn)
            .is_ok()
    );

    // The DSL path is unchanged (no role), and migrations still work, their new tables
    // reachable under the role (default privileges).
    let n: i64 = switch(&acme, || notes::table.count().get_result(&mut conn)).unwrap();
    assert_eq!(n, 1);
    m.revert_last(&mut conn, &acme).unwrap();
    m.migrate_tenant(&mut conn, &acme).unwrap();
    assert_eq!(count_as(&mut conn, &roles, &acme, "notes").unwrap(), 0);
    add_note(&mut conn, &acme, "a2");
    let inserted = switch(&acme, || {
        conn.tenant_transaction_as(&roles, |conn| {
            diesel::sql_query("INSERT INTO notes (title, body) VALUES ('raw', '')").execute(conn)
        })
    });
    assert_eq!(inserted.unwrap(), 1);
    assert_eq!(count_as(&mut conn, &roles, &acme, "notes").unwrap(), 2);

    // A claimed spare gets its tenant's role.
    assert_eq!(m.fill_spares(&mut conn, 1).unwrap(), 1);
    let initech = id("initech");
    m.create_tenant(&mut conn, &initech).unwrap();
    assert!(
        m.spares(&mut conn).unwrap().is_empty(),
        "the spare was claimed"
    );
    assert_eq!(count_as(&mut conn, &roles, &initech, "notes").unwrap(), 0);
    assert!(is_denied(count_as(
        &mut conn,
        &roles,
        &initech,
        "acme.notes"
    )));

    // A rename carries the role; a drop drops it.
    let acme2 = id("acme_two");
    m.rename_tenant(&mut conn, &acme, &acme2).unwrap();
    assert!(!role_exists(&db, &format!("{prefix}acme")));
    assert!(role_exists(&db, &format!("{prefix}acme_two")));
    assert_eq!(count_as(&mut conn, &roles, &acme2, "notes").unwrap(), 2);
    assert!(is_denied(count_as(
        &mut conn,
        &roles,
        &acme2,
        "globex.notes"
    )));
    for t in [&acme2, &globex, &initech] {
        m.drop_tenant(&mut conn, t).unwrap();
        assert!(!role_exists(&db, &format!("{prefix}{t}")), "{t}");
    }
    // No tenant role: the transaction fails rather than run without it.
    let err = count_as(&mut conn, &roles, &acme2, "notes").unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}
