//! Cross-tenant reads at 500 tenants: the fan-out's rows add up to every tenant's own count,
//! each row labelled with its tenant and a missing tenant reported, not skipped; the reporting
//! view follows a create, a drop and a rename with no manual refresh; its reader role gets
//! SQLSTATE 42501 on every write.

use std::collections::BTreeMap;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_workspace::fanout::fan_out;
use diesel_workspace::{reporting, tenant_table, MigrateOptions, Migrator, TenantId};

use crate::support::db::replace_db;
use crate::support::SCALE_MIGRATIONS;
use crate::test_db;

const TENANTS: usize = 500;

tenant_table! {
    items (id) {
        id -> Int4,
        title -> Text,
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct PerTenant {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
}

/// Runs `sql` as the connection's role and returns the SQLSTATE it failed with.
fn sqlstate(conn: &mut PgConnection, sql: &str) -> String {
    let err = conn
        .batch_execute(&format!(
            "DO $t$ BEGIN {sql}; EXCEPTION WHEN OTHERS THEN RAISE EXCEPTION 'sqlstate=%', SQLSTATE; END $t$"
        ))
        .expect_err(sql)
        .to_string();
    err.split("sqlstate=")
        .nth(1)
        .unwrap_or(&err)
        .trim()
        .to_owned()
}

/// Drops the reader role at the end, even when an assertion fails: its grants in the test
/// database first (`DROP OWNED` there), then the role (roles are the cluster's).
struct Role {
    name: String,
    url: String,
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.url) {
            let _ = conn.batch_execute(&format!(
                "DROP OWNED BY \"{0}\"; DROP ROLE IF EXISTS \"{0}\"",
                self.name
            ));
        }
    }
}

#[test]
fn five_hundred_tenants_read_across_by_fan_out_and_by_view() {
    let db = test_db!("five_hundred_tenants_read_across");
    let migrator = Migrator::builder(SCALE_MIGRATIONS).build().unwrap();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("t{i:03}")).unwrap())
        .collect();
    migrator
        .create_tenants(db.url(), &tenants, &MigrateOptions::default().parallel(2))
        .unwrap();
    // Tenant i holds i % 7 rows.
    let inserts: String = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "INSERT INTO \"{t}\".items (title) SELECT '{t}' FROM generate_series(1, {});",
                i % 7
            )
        })
        .collect();
    conn.batch_execute(&inserts).unwrap();
    let own: BTreeMap<TenantId, i64> = tenants
        .iter()
        .map(|t| {
            (
                t.clone(),
                count(
                    &mut conn,
                    &format!("SELECT count(*) AS n FROM \"{t}\".items"),
                ),
            )
        })
        .collect();
    let expected: i64 = own.values().sum();
    assert_eq!(expected, (0..TENANTS).map(|i| (i % 7) as i64).sum::<i64>());

    // The fan-out: every row with its tenant, the total the sum of the tenants' own counts.
    let pool = diesel_workspace::pool::builder()
        .max_size(4)
        .build(db.url())
        .unwrap();
    let result = fan_out(&pool, &tenants, 4, |c| {
        items::table.select(items::title).load::<String>(c)
    });
    assert!(!result.is_partial(), "{:?}", result.failed);
    assert_eq!(result.answered, TENANTS);
    assert_eq!(result.rows.len() as i64, expected);
    let mut per: BTreeMap<TenantId, i64> = BTreeMap::new();
    for (tenant, title) in &result.rows {
        // Each row was written with its tenant's name: a row read in another tenant shows.
        assert_eq!(title, tenant.as_str());
        *per.entry(tenant.clone()).or_default() += 1;
    }
    per.retain(|_, n| *n > 0);
    let mut nonzero = own.clone();
    nonzero.retain(|_, n| *n > 0);
    assert_eq!(per, nonzero);
    // A tenant that is not there is reported with its error, and the rest still answer.
    let mut with_ghost = tenants[..10].to_vec();
    with_ghost.push(TenantId::new("ghost").unwrap());
    let partial = fan_out(&pool, &with_ghost, 4, |c| {
        items::table.select(items::title).load::<String>(c)
    });
    assert!(partial.is_partial());
    assert_eq!(partial.answered, 10);
    assert_eq!(partial.failed.len(), 1);
    assert_eq!(partial.failed[0].0.as_str(), "ghost");
    let refused = partial.complete().unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("1 of 11 tenants failed (first: `ghost`)"),
        "{refused}"
    );

    // The reporting view, read by a role of its own.
    let database: String = diesel::select(diesel::dsl::sql::<Text>("current_database()::text"))
        .get_result(&mut conn)
        .unwrap();
    let reader = Role {
        name: format!("{}_reader", &database[..database.len().min(50)]),
        url: db.url().to_owned(),
    };
    conn.batch_execute(&format!("CREATE ROLE \"{}\" LOGIN", reader.name))
        .unwrap();
    reporting::install(&mut conn, "reporting", &reader.name).unwrap();
    reporting::add_view(&mut conn, "reporting", "items", &["id", "title"]).unwrap();
    let reader_url =
        replace_db(db.url(), &database).replacen("postgres@", &format!("{}@", reader.name), 1);
    let mut as_reader = PgConnection::establish(&reader_url).unwrap();
    let in_view = |c: &mut PgConnection| count(c, "SELECT count(*) AS n FROM reporting.items");
    assert_eq!(in_view(&mut as_reader), expected);
    let by_tenant: BTreeMap<TenantId, i64> =
        diesel::sql_query("SELECT tenant, count(*) AS n FROM reporting.items GROUP BY tenant")
            .load::<PerTenant>(&mut as_reader)
            .unwrap()
            .into_iter()
            .map(|r| (TenantId::new(r.tenant).unwrap(), r.n))
            .collect();
    assert_eq!(by_tenant, nonzero);

    // A create, a drop and a rename show with no refresh.
    let new = TenantId::new("t_new").unwrap();
    migrator.create_tenant(&mut conn, &new).unwrap();
    conn.batch_execute("INSERT INTO t_new.items (title) VALUES ('a'), ('b'), ('c')")
        .unwrap();
    assert_eq!(in_view(&mut as_reader), expected + 3);
    let dropped = &tenants[6]; // 6 rows
    migrator.drop_tenant(&mut conn, dropped).unwrap();
    assert_eq!(in_view(&mut as_reader), expected + 3 - 6);
    migrator
        .rename_tenant(&mut conn, &tenants[5], &TenantId::new("t_renamed").unwrap())
        .unwrap();
    let label = |c: &mut PgConnection, t: &str| {
        count(
            c,
            &format!("SELECT count(*) AS n FROM reporting.items WHERE tenant = '{t}'"),
        )
    };
    assert_eq!(label(&mut as_reader, "t_renamed"), 5);
    assert_eq!(label(&mut as_reader, tenants[5].as_str()), 0);
    assert_eq!(in_view(&mut as_reader), expected + 3 - 6);
    // A spare of the warm pool is not a tenant: its row stays out of the view until a create
    // claims it, and then shows under the new tenant's label, still with no refresh.
    migrator.fill_spares(&mut conn, 1).unwrap();
    let spare = migrator.spares(&mut conn).unwrap().remove(0);
    conn.batch_execute(&format!(
        "INSERT INTO \"{spare}\".items (title) VALUES ('in the spare')"
    ))
    .unwrap();
    assert_eq!(in_view(&mut as_reader), expected + 3 - 6);
    assert_eq!(label(&mut as_reader, spare.as_str()), 0);
    let claimed = TenantId::new("t_claimed").unwrap();
    migrator.create_tenant(&mut conn, &claimed).unwrap();
    assert_eq!(migrator.spares(&mut conn).unwrap(), []);
    assert_eq!(label(&mut as_reader, "t_claimed"), 1);
    assert_eq!(in_view(&mut as_reader), expected + 3 - 6 + 1);

    // The reader writes nowhere: the view, a tenant table, the registry.
    for write in [
        "INSERT INTO reporting.items (id, title) VALUES (1000, 'x')",
        "UPDATE reporting.items SET title = 'x'",
        "DELETE FROM reporting.items",
        "INSERT INTO t000.items (title) VALUES ('x')",
        "DELETE FROM t001.items",
        "UPDATE public.workspaces SET display_name = 'x'",
        "CREATE TABLE reporting.mine (id int)",
        "TRUNCATE t000.items",
        "CREATE TABLE t000.mine (id int)",
        "ALTER TABLE t000.items ADD COLUMN x int",
        "CREATE SCHEMA mine",
        "DROP VIEW reporting.items",
        "INSERT INTO public.workspaces (schema_name) VALUES ('x')",
    ] {
        assert_eq!(sqlstate(&mut as_reader, write), "42501", "{write}");
    }
    // Nor reads a tenant table directly: only the views.
    assert_eq!(
        sqlstate(&mut as_reader, "PERFORM count(*) FROM t001.items"),
        "42501"
    );
    drop(as_reader);
}
