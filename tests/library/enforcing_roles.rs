//! The enforcing roles mode: a pool per tenant logged in as the tenant's role
//! (`TenantRolePools`, roles created with `TenantRoles::login`). On tenant acme's connection,
//! `RESET ROLE`, `SET ROLE` to globex's role, `set_config('role', …)` and the DSL for globex all
//! get 0 rows of globex; a `WITH HOLD` cursor of acme's is not reachable from globex's
//! connection; a planted `SECURITY DEFINER` function without a fixed `search_path` stops the
//! pools from starting, and `audit` names it. The negative control runs the same escapes in the
//! assumed mode (`tenant_transaction_as`), where `RESET ROLE` reads globex's rows. The pools stay
//! within their bound.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_workspace::prelude::*;
use diesel_workspace::{switch, Error, Hazard, Migrator, TenantId, TenantRolePools, TenantRoles};

use crate::support::schema::notes;
use crate::support::{db::run_token, TestDb, SHARED_MIGRATIONS, TENANT_MIGRATIONS};
use crate::test_db;

#[derive(QueryableByName, Debug)]
struct Title {
    #[diesel(sql_type = Text)]
    title: String,
}

/// acme and globex, created by a migrator with login roles, one note each named after the
/// tenant.
fn fixture(db: &TestDb, roles: &TenantRoles) -> Vec<TenantId> {
    let migrator = Migrator::builder(TENANT_MIGRATIONS)
        .shared(SHARED_MIGRATIONS)
        .tenant_roles(roles.clone())
        .build()
        .unwrap();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let ids: Vec<TenantId> = ["acme", "globex"]
        .iter()
        .map(|t| TenantId::new(*t).unwrap())
        .collect();
    for t in &ids {
        migrator.create_tenant(&mut conn, t).unwrap();
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(notes::title.eq(t.as_str()))
                .execute(&mut conn)
        })
        .unwrap();
    }
    ids
}

fn drop_roles(db: &TestDb, roles: &TenantRoles, ids: &[TenantId]) {
    let mut conn = db.conn();
    for t in ids {
        let role = roles.role_name(t).unwrap();
        conn.batch_execute(&format!(
            "DROP OWNED BY \"{role}\"; DROP ROLE IF EXISTS \"{role}\""
        ))
        .unwrap();
    }
}

/// Titles a raw statement returns on `conn`, or the error's text.
fn titles(conn: &mut PgConnection, sql: &str) -> Result<Vec<String>, String> {
    diesel::sql_query(sql)
        .load::<Title>(conn)
        .map(|rows| rows.into_iter().map(|r| r.title).collect())
        .map_err(|e| e.to_string())
}

/// The escapes tenant acme's code may try for globex's rows: each returns the titles it got
/// (an error counts as none).
fn escapes(
    conn: &mut PgConnection,
    globex: &TenantId,
    globex_role: &str,
) -> Vec<(String, Vec<String>)> {
    let attempts = [
        ("RESET ROLE".to_owned(), "RESET ROLE".to_owned()),
        ("SET ROLE".to_owned(), format!("SET ROLE \"{globex_role}\"")),
        (
            "set_config('role')".to_owned(),
            format!("SELECT pg_catalog.set_config('role', '{globex_role}', false)"),
        ),
        (
            "SET SESSION AUTHORIZATION DEFAULT".to_owned(),
            "SET SESSION AUTHORIZATION DEFAULT".to_owned(),
        ),
    ];
    let mut out = Vec::new();
    for (name, escape) in attempts {
        let _ = conn.batch_execute(&escape);
        let got = titles(conn, "SELECT title FROM globex.notes").unwrap_or_default();
        out.push((name, got));
    }
    let dsl: Vec<String> =
        switch(globex, || notes::table.select(notes::title).load(conn)).unwrap_or_default();
    out.push(("DSL".to_owned(), dsl));
    out
}

#[test]
fn login_roles_hold_against_the_tenants_own_code() {
    let db = test_db!("enforcing_roles");
    let roles = TenantRoles::new(format!("dwx{}_", run_token().replace('_', "")))
        .unwrap()
        .login(true);
    let ids = fixture(&db, &roles);
    let (acme, globex) = (&ids[0], &ids[1]);
    let globex_role = roles.role_name(globex).unwrap();

    let pools = TenantRolePools::builder(db.url(), roles.clone()).build();
    let mut a = pools.get(acme).unwrap();
    // acme's own work runs: the DSL, and raw SQL in a tenant transaction.
    let own: Vec<String> = switch(acme, || notes::table.select(notes::title).load(&mut a)).unwrap();
    assert_eq!(own, ["acme"]);
    let raw = switch(acme, || {
        a.tenant_transaction(|c| diesel::sql_query("SELECT title FROM notes").load::<Title>(c))
    })
    .unwrap();
    assert_eq!(raw.len(), 1);
    // Every escape gets 0 rows of globex.
    for (name, got) in escapes(&mut a, globex, &globex_role) {
        assert!(got.is_empty(), "{name}: read {got:?}");
    }
    // A held cursor of acme's is not globex's to fetch.
    a.batch_execute(
        "BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT title FROM acme.notes; COMMIT",
    )
    .unwrap();
    assert!(titles(
        &mut a,
        "DECLARE c CURSOR WITH HOLD FOR SELECT title FROM globex.notes"
    )
    .is_err());
    let mut g = pools.get(globex).unwrap();
    let fetched = titles(&mut g, "FETCH ALL FROM held");
    assert!(
        matches!(&fetched, Err(e) if e.contains("does not exist")),
        "{fetched:?}"
    );
    assert_eq!(pools.open_pools(), 2);
    drop((a, g));

    // The bound: one pool at a time, the least recently used one dropped.
    let one = TenantRolePools::builder(db.url(), roles.clone())
        .max_pools(1)
        .build();
    drop(one.get(acme).unwrap());
    drop(one.get(globex).unwrap());
    assert_eq!(one.open_pools(), 1);
    drop((one, pools));

    // A URL that does not log in as the role is refused.
    let wrong = TenantRolePools::builder(db.url(), roles.clone())
        .url_for(|_, _| crate::support::admin_url())
        .build();
    let e = wrong.get(acme).err().expect("refused");
    assert!(matches!(e, Error::RoleLogin { .. }), "{e:?}");

    // Negative control: the assumed mode, same escape, reads globex.
    let nologin = TenantRoles::new(format!("dwn{}_", run_token().replace('_', ""))).unwrap();
    let mut conn = db.conn();
    conn.batch_execute(&format!(
        "CREATE ROLE \"{r}\" NOLOGIN; GRANT USAGE ON SCHEMA acme TO \"{r}\"; \
         GRANT SELECT ON ALL TABLES IN SCHEMA acme TO \"{r}\"",
        r = nologin.role_name(acme).unwrap()
    ))
    .unwrap();
    let leaked = switch(acme, || {
        conn.tenant_transaction_as(&nologin, |c| {
            c.batch_execute("RESET ROLE")?;
            diesel::sql_query("SELECT title FROM globex.notes").load::<Title>(c)
        })
    })
    .unwrap();
    assert_eq!(leaked.len(), 1, "the assumed role must be escapable here");
    conn.batch_execute(&format!(
        "DROP OWNED BY \"{r}\"; DROP ROLE \"{r}\"",
        r = nologin.role_name(acme).unwrap()
    ))
    .unwrap();

    // A SECURITY DEFINER function whose caller decides its path: acme could point it at globex,
    // so the pools refuse to start, and audit names it.
    conn.batch_execute(
        "SET check_function_bodies = off; \
         CREATE FUNCTION public.peek() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER \
           AS 'SELECT title FROM notes'",
    )
    .unwrap();
    let pools = TenantRolePools::builder(db.url(), roles.clone()).build();
    let e = pools.get(acme).err().expect("refused");
    assert!(
        matches!(&e, Error::HijackHazards(h) if h.iter().any(|h| matches!(h,
            Hazard::SecurityDefinerWithoutSearchPath { signature, .. } if signature == "public.peek()"))),
        "{e:?}"
    );
    let audit = Migrator::builder(TENANT_MIGRATIONS)
        .build()
        .unwrap()
        .audit(&mut conn)
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|h| h.to_string().contains("public.peek()")),
        "{audit:?}"
    );
    // What it would have done: acme's role, path set to globex, reads globex through it.
    let through = {
        let mut raw = PgConnection::establish(&db.url().replacen(
            "postgres@",
            &format!("{}@", roles.role_name(acme).unwrap()),
            1,
        ))
        .unwrap();
        raw.batch_execute("SET search_path TO globex").unwrap();
        titles(&mut raw, "SELECT public.peek() AS title").unwrap()
    };
    assert_eq!(through, ["globex"], "the planted function is a real leak");
    conn.batch_execute("DROP FUNCTION public.peek()").unwrap();
    drop(pools);
    drop_roles(&db, &roles, &ids);
}
