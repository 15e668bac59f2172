//! One `Migrator` used with connections to two servers, plain PostgreSQL and the Citus cluster,
//! alternately and in both orders: every tenant it creates takes the engine of the connection it
//! is created on (distributed on Citus, plain on PostgreSQL), never the engine met first.

use diesel::PgConnection;
use diesel_workspace::{Migrator, TenantId, TenantOutcome};
use workspace_diesel_tests::citus::{tables, CitusDb};
use workspace_diesel_tests::{citus_db, TestDb};

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

const TABLES: [&str; 4] = ["__diesel_schema_migrations", "categories", "notes", "tags"];

/// A tenant on the plain server: all its tables, on a database without Citus.
fn assert_plain(local: &TestDb, conn: &mut PgConnection, tenant: &str) {
    assert_eq!(tables(conn, tenant), TABLES, "{tenant} is provisioned");
    assert!(local.check("NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"));
}

/// A tenant on the cluster: a distributed schema whose every table is a tenant table on one
/// worker (no table left local on the coordinator).
fn assert_distributed(cluster: &CitusDb, conn: &mut PgConnection, tenant: &str) {
    assert_eq!(tables(conn, tenant), TABLES, "{tenant} is provisioned");
    cluster.assert_distributed(tenant);
    assert!(cluster.check(&format!(
        "EXISTS (SELECT 1 FROM citus_schemas WHERE schema_name::text = '{tenant}')"
    )));
}

/// Creates tenants with one migrator on both servers, alternately, starting on the cluster when
/// `citus_first`; then a spare on each, claimed; then migrates each tenant.
fn alternate(local: &TestDb, cluster: &CitusDb, citus_first: bool) {
    let migrator: Migrator = workspace_diesel_tests::example_migrator();
    let mut on_pg = local.conn();
    let mut on_citus = cluster.conn();
    let servers = if citus_first {
        [true, false]
    } else {
        [false, true]
    };
    let mut made = Vec::new();
    for round in 0..2 {
        for &citus in &servers {
            let (conn, name) = if citus {
                (&mut on_citus, format!("c{round}"))
            } else {
                (&mut on_pg, format!("p{round}"))
            };
            if round == 0 {
                migrator.run_shared(conn).unwrap();
            }
            migrator.create_tenant(conn, &id(&name)).unwrap();
            made.push((citus, name));
        }
    }
    // The warm pool: a spare filled and claimed on each server, in the same order.
    for &citus in &servers {
        let (conn, name) = if citus {
            (&mut on_citus, "c_spare")
        } else {
            (&mut on_pg, "p_spare")
        };
        migrator.fill_spares(conn, 1).unwrap();
        migrator.create_tenant(conn, &id(name)).unwrap();
        assert!(
            migrator.spares(conn).unwrap().is_empty(),
            "the spare was claimed"
        );
        made.push((citus, name.to_owned()));
    }
    // Reverted and migrated again, still alternating: the table the migration re-creates
    // is distributed on the cluster.
    for (citus, name) in &made {
        let conn = if *citus { &mut on_citus } else { &mut on_pg };
        let last = migrator
            .revert_last(conn, &id(name))
            .unwrap()
            .expect("a version");
        assert_eq!(
            migrator.migrate_tenant(conn, &id(name)).unwrap(),
            TenantOutcome::Applied(vec![last])
        );
    }
    for (citus, name) in &made {
        if *citus {
            assert_distributed(cluster, &mut on_citus, name);
        } else {
            assert_plain(local, &mut on_pg, name);
        }
    }
    // The accessor reports the engine of the connection it is given, whichever came last.
    for _ in 0..2 {
        assert!(migrator
            .dialect(&mut on_citus)
            .unwrap()
            .distributes_schemas());
        assert!(!migrator.dialect(&mut on_pg).unwrap().distributes_schemas());
    }
}

#[test]
fn one_migrator_creates_on_postgresql_then_citus() {
    let cluster = citus_db!("one_migrator_creates_on_postgresql_then_citus");
    let local = crate::test_db!("one_migrator_creates_on_postgresql_then_citus");
    alternate(&local, &cluster, false);
}

#[test]
fn one_migrator_creates_on_citus_then_postgresql() {
    let cluster = citus_db!("one_migrator_creates_on_citus_then_postgresql");
    let local = crate::test_db!("one_migrator_creates_on_citus_then_postgresql");
    alternate(&local, &cluster, true);
}
