//! Temporary objects left on a connection never answer for a tenant or for the library.
//!
//! Unless `pg_temp` is named on the `search_path`, PostgreSQL searches it first for tables: a
//! temporary `notes` left by earlier work (another tenant's request on the same pooled
//! connection, another client of a transaction pooler) would answer an unqualified `notes`
//! inside a tenant transaction, and a temporary `__diesel_schema_migrations` would stand in for
//! a ledger. Each test leaves such an object on the connection, runs the library's path, and
//! checks it against the same statement on the bare path (the negative control: the object
//! does answer there, so the harness would see a leak).

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::MigrationHarness;
use diesel_workspace::prelude::*;
use diesel_workspace::{pool, switch, TenantId};

use crate::support::schema::notes;
use crate::support::SHARED_MIGRATIONS;
use crate::test_db;

#[derive(QueryableByName)]
struct Title {
    #[diesel(sql_type = Text)]
    title: String,
}

fn titles_in(conn: &mut PgConnection, tenant: &TenantId) -> Vec<String> {
    switch(tenant, || {
        conn.tenant_transaction(|c| {
            diesel::sql_query("SELECT title FROM notes ORDER BY title").load::<Title>(c)
        })
    })
    .unwrap()
    .into_iter()
    .map(|t| t.title)
    .collect()
}

/// The same read on the bare path `"<tenant>", public` (no `pg_temp`): what a transaction-local
/// path without it returns.
fn titles_on_bare_path(conn: &mut PgConnection, tenant: &TenantId) -> Vec<String> {
    conn.transaction(|c| {
        c.batch_execute(&format!(
            "SET LOCAL search_path TO {}, public",
            tenant.quoted()
        ))?;
        diesel::sql_query("SELECT title FROM notes ORDER BY title").load::<Title>(c)
    })
    .unwrap()
    .into_iter()
    .map(|t| t.title)
    .collect()
}

fn add_note(conn: &mut PgConnection, tenant: &TenantId, title: &str) {
    switch(tenant, || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq(title))
            .execute(conn)
    })
    .unwrap();
}

const LEFTOVER: &str = "CREATE TEMP TABLE notes (id int4, title text); \
                        INSERT INTO notes VALUES (1, 'left by acme')";

#[test]
fn a_temporary_table_never_answers_a_tenant_transaction() {
    let db = test_db!("a_temporary_table_never_answers_a_tenant_transaction");
    let ids = db.provision(&["acme", "globex"]);
    let mut conn = db.conn();
    add_note(&mut conn, &ids[0], "a1");
    add_note(&mut conn, &ids[1], "g1");
    conn.batch_execute(LEFTOVER).unwrap();

    assert_eq!(titles_in(&mut conn, &ids[1]), ["g1"]);
    assert_eq!(titles_in(&mut conn, &ids[0]), ["a1"]);
    // transaction_in takes the same path.
    let explicit = conn
        .transaction_in(&ids[1], |c| {
            diesel::sql_query("SELECT title FROM notes").load::<Title>(c)
        })
        .unwrap();
    assert_eq!(explicit.len(), 1);
    assert_eq!(explicit[0].title, "g1");
    // Negative control: without `pg_temp` last, the leftover answers.
    assert_eq!(titles_on_bare_path(&mut conn, &ids[1]), ["left by acme"]);
}

#[test]
fn a_temporary_table_left_on_a_pooled_connection_never_answers() {
    let db = test_db!("a_temporary_table_left_on_a_pooled_connection_never_answers");
    let ids = db.provision(&["acme", "globex"]);
    add_note(&mut db.conn(), &ids[1], "g1");
    // No session cleanup at checkout, one connection: the temporary table survives check-in.
    let pool = pool::builder()
        .max_size(1)
        .session_cleanup(false)
        .build(db.url())
        .unwrap();
    pool.get().unwrap().batch_execute(LEFTOVER).unwrap();
    let mut conn = pool.get().unwrap();
    assert_eq!(titles_in(&mut conn, &ids[1]), ["g1"]);
    // The routed DSL names its schema and never looks in `pg_temp`.
    let dsl: Vec<String> = switch(&ids[1], || {
        notes::table.select(notes::title).load(&mut conn)
    })
    .unwrap();
    assert_eq!(dsl, ["g1"]);
    // Negative control: the leftover is still there on this connection.
    assert_eq!(titles_on_bare_path(&mut conn, &ids[1]), ["left by acme"]);
}

#[test]
fn a_temporary_ledger_never_stands_in_for_the_shared_one() {
    let db = test_db!("a_temporary_ledger_never_stands_in_for_the_shared_one");
    let mut conn = db.conn();
    // A temporary ledger that claims every shared migration (the registry's and the
    // application's) is applied.
    conn.batch_execute(
        "CREATE TEMP TABLE __diesel_schema_migrations \
         (version varchar(50) PRIMARY KEY, run_on timestamp NOT NULL DEFAULT now()); \
         INSERT INTO __diesel_schema_migrations (version) VALUES ('00000000000000'), ('00000000000001'), \
         ('00000000000002')",
    )
    .unwrap();
    let shared = MigrationSource::<Pg>::migrations(&SHARED_MIGRATIONS).unwrap();
    for m in &shared {
        diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ($1)")
            .bind::<Text, _>(m.name().version().to_string())
            .execute(&mut conn)
            .unwrap();
    }
    // Negative control: on the bare shared path, Diesel's harness believes nothing is pending.
    conn.batch_execute("BEGIN; SET LOCAL search_path TO public")
        .unwrap();
    let fooled = conn.pending_migrations(SHARED_MIGRATIONS).unwrap().len();
    conn.batch_execute("ROLLBACK").unwrap();
    assert_eq!(fooled, 0, "the harness must see the temporary ledger here");

    let applied = db.migrator().run_shared(&mut conn).unwrap();
    assert_eq!(applied.len(), 3 + shared.len(), "{applied:?}");
    assert!(db.registry_exists());
    // And the tenant life cycle on the same connection, temporary ledger still in place.
    let acme = TenantId::new("acme").unwrap();
    db.migrator().create_tenant(&mut conn, &acme).unwrap();
    assert!(db.check(
        "(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1 \
         AND pg_catalog.to_regclass('acme.notes') IS NOT NULL"
    ));
    let status = db.migrator().status(&mut conn).unwrap();
    assert_eq!(status.len(), 1);
}

/// The shared migrations run under a transaction-local path: the session's own `search_path` is
/// the same afterwards, whether migrations ran or not (Diesel 2.4's harness would set its saved
/// path back at session level; the library applies shared migrations itself).
#[test]
fn shared_migrations_leave_the_session_path_alone() {
    let db = test_db!("shared_migrations_leave_the_session_path_alone");
    let mut conn = db.conn();
    let path = |conn: &mut PgConnection| {
        diesel::select(diesel::dsl::sql::<Text>(
            "pg_catalog.current_setting('search_path')",
        ))
        .get_result::<String>(conn)
        .unwrap()
    };
    let before = path(&mut conn);
    let applied = db.migrator().run_shared(&mut conn).unwrap();
    assert!(!applied.is_empty());
    assert_eq!(path(&mut conn), before);
    assert!(db.migrator().run_shared(&mut conn).unwrap().is_empty());
    assert_eq!(path(&mut conn), before);
}
