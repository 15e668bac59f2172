//! Session state one client leaves on a connection (a temporary `notes` holding acme's rows, a
//! temporary `__diesel_schema_migrations`, a `WITH HOLD` cursor over acme's notes, a session
//! `search_path` naming acme, a session `SET ROLE`) never reaches the next client's tenant work:
//! on the r2d2 pool and on the deadpool-diesel pool, on a direct connection (the next checkout
//! of the same physical connection) and through PgBouncer in pooler mode (the next client served
//! by the same server connection). The next client, for globex, reads with the DSL and with raw
//! SQL in `tenant_transaction`, fetches the cursor, and asks who it is: 0 rows of acme, the
//! cursor gone, the login's own role. The negative controls run the same next client on stock
//! Diesel r2d2 and deadpool-diesel pools and a plain client of the bouncer, with the path written
//! by hand (`"globex", public`), and see acme's rows, the cursor and the role. Shared migrations
//! and status through the pooler are right with the temporary ledger in place, where Diesel's
//! harness on the bare path (the negative control) believes every shared migration applied.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::Text;
use diesel_workspace::pooler::Pooler;
use diesel_workspace::prelude::*;
use diesel_workspace::{pool, switch, TenantId};
use workspace_diesel_tests::pgbouncer::{Config, PgBouncer};

use crate::support::schema::notes;
use crate::support::TestDb;
use crate::test_db;

#[derive(QueryableByName)]
struct Title {
    #[diesel(sql_type = Text)]
    title: String,
}

#[derive(QueryableByName)]
struct Who {
    #[diesel(sql_type = Text)]
    who: String,
}

/// acme and globex with one note each, named after the tenant, and a role that may read both
/// (what one client leaves with `SET ROLE`).
fn fixture(db: &TestDb, role: &str) -> Vec<TenantId> {
    let ids = db.provision(&["acme", "globex"]);
    let mut conn = db.conn();
    for t in &ids {
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(notes::title.eq(t.as_str()))
                .execute(&mut conn)
        })
        .unwrap();
    }
    conn.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role}; \
         GRANT USAGE ON SCHEMA acme, globex TO {role}; \
         GRANT SELECT ON ALL TABLES IN SCHEMA acme, globex TO {role}"
    ))
    .unwrap();
    ids
}

fn drop_role(db: &TestDb, role: &str) {
    db.conn()
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"))
        .unwrap();
}

/// What the first client leaves on its session, working for acme (as the role, so that the
/// role may read the temporary table it made).
fn leftovers(role: &str) -> String {
    format!(
        "RESET ROLE; CLOSE ALL; DISCARD TEMP; SET ROLE {role}; \
         CREATE TEMP TABLE notes AS SELECT id, title FROM acme.notes; \
         CREATE TEMP TABLE __diesel_schema_migrations \
           (version varchar(50) PRIMARY KEY, run_on timestamp NOT NULL DEFAULT now()); \
         BEGIN; DECLARE leftover CURSOR WITH HOLD FOR SELECT title FROM acme.notes; COMMIT; \
         SET search_path TO acme, public"
    )
}

/// What the next client, for globex, sees through the library: the DSL's titles, raw SQL's
/// titles in a tenant transaction, the cursor's titles (an error when it is gone), and who it
/// runs as there.
struct Seen {
    dsl: Vec<String>,
    raw: Vec<String>,
    cursor: Result<Vec<String>, String>,
    who: String,
}

fn next_client(conn: &mut PgConnection, globex: &TenantId) -> Seen {
    switch(globex, || {
        let dsl = notes::table.select(notes::title).load(conn).unwrap();
        let (raw, who) = conn
            .tenant_transaction(|c| {
                let raw = diesel::sql_query("SELECT title FROM notes").load::<Title>(c)?;
                let who =
                    diesel::sql_query("SELECT current_user::text AS who").get_result::<Who>(c)?;
                Ok::<_, diesel::result::Error>((raw, who.who))
            })
            .unwrap();
        let cursor = conn
            .tenant_transaction(|c| diesel::sql_query("FETCH ALL FROM leftover").load::<Title>(c))
            .map(|rows| rows.into_iter().map(|r| r.title).collect())
            .map_err(|e| e.to_string());
        Seen {
            dsl,
            raw: raw.into_iter().map(|r| r.title).collect(),
            cursor,
            who,
        }
    })
}

fn assert_clean(seen: &Seen, what: &str) {
    assert_eq!(seen.dsl, ["globex"], "{what}: DSL");
    assert_eq!(
        seen.raw,
        ["globex"],
        "{what}: raw SQL in tenant_transaction"
    );
    match &seen.cursor {
        Ok(rows) => panic!("{what}: the leftover cursor answered {rows:?}"),
        Err(e) => assert!(
            e.contains("cursor \"leftover\" does not exist"),
            "{what}: {e}"
        ),
    }
    assert_eq!(seen.who, "postgres", "{what}: the role");
}

/// The negative control's next client: the path written by hand, as before `pg_temp` was named,
/// on a connection nobody reset.
fn stock_next_client(conn: &mut PgConnection) -> (Vec<String>, Vec<String>, String) {
    conn.transaction(|c| {
        c.batch_execute("SET LOCAL search_path TO \"globex\", public")?;
        let raw = diesel::sql_query("SELECT title FROM notes").load::<Title>(c)?;
        let cursor = diesel::sql_query("FETCH ALL FROM leftover").load::<Title>(c)?;
        let who = diesel::sql_query("SELECT current_user::text AS who").get_result::<Who>(c)?;
        Ok::<_, diesel::result::Error>((
            raw.into_iter().map(|r| r.title).collect(),
            cursor.into_iter().map(|r| r.title).collect(),
            who.who,
        ))
    })
    .unwrap()
}

fn assert_control_leaks(seen: (Vec<String>, Vec<String>, String), role: &str, what: &str) {
    assert_eq!(
        seen.0,
        ["acme"],
        "{what}: the temporary table must answer here"
    );
    assert_eq!(seen.1, ["acme"], "{what}: the cursor must answer here");
    assert_eq!(seen.2, role, "{what}: the role must be left here");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn leftovers_on_a_direct_connection_never_reach_the_next_checkout() {
    let db = test_db!("leftovers_direct");
    let role = format!("dwx_left_{}", std::process::id());
    let ids = fixture(&db, &role);

    // r2d2: the same physical connection, checked out twice.
    let pool = pool::builder().max_size(1).build(db.url()).unwrap();
    pool.get()
        .unwrap()
        .batch_execute(&leftovers(&role))
        .unwrap();
    assert_clean(&next_client(&mut pool.get().unwrap(), &ids[1]), "r2d2");
    drop(pool);

    // deadpool-diesel, built with the same hygiene.
    let rt = runtime();
    let _in_runtime = rt.enter();
    let pool = pool::builder()
        .deadpool(db.url())
        .unwrap()
        .max_size(1)
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let left = leftovers(&role);
        pool.get()
            .await
            .unwrap()
            .interact(move |c| c.batch_execute(&left))
            .await
            .unwrap()
            .unwrap();
        let globex = ids[1].clone();
        let seen = pool
            .get()
            .await
            .unwrap()
            .interact(move |c| next_client(c, &globex))
            .await
            .unwrap();
        seen
    });
    assert_clean(&seen, "deadpool");
    drop(pool);

    // Negative control: a stock Diesel pool of one connection keeps all of it.
    let stock = Pool::builder()
        .max_size(1)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    stock
        .get()
        .unwrap()
        .batch_execute(&leftovers(&role))
        .unwrap();
    assert_control_leaks(
        stock_next_client(&mut stock.get().unwrap()),
        &role,
        "stock r2d2",
    );
    drop(stock);

    // Negative control: a deadpool-diesel pool of one built with its own manager (recycling by
    // `SELECT 1`) keeps all of it too.
    let stock = deadpool_diesel::postgres::Pool::builder(deadpool_diesel::postgres::Manager::new(
        db.url(),
        deadpool_diesel::Runtime::Tokio1,
    ))
    .max_size(1)
    .build()
    .unwrap();
    let seen = rt.block_on(async {
        let left = leftovers(&role);
        stock
            .get()
            .await
            .unwrap()
            .interact(move |c| c.batch_execute(&left))
            .await
            .unwrap()
            .unwrap();
        stock
            .get()
            .await
            .unwrap()
            .interact(stock_next_client)
            .await
            .unwrap()
    });
    assert_control_leaks(seen, &role, "stock deadpool");
    drop(stock);
    drop_role(&db, &role);
}

#[test]
fn leftovers_through_pgbouncer_never_reach_the_next_client() {
    let db = test_db!("leftovers_pgbouncer");
    let role = format!("dwx_leftp_{}", std::process::id());
    let ids = fixture(&db, &role);
    // One server connection: every client meets what the previous one left.
    let bouncer = PgBouncer::start(Config::transaction(1));
    let url = bouncer.url(db.url());
    let leave = || {
        let mut other = PgConnection::establish(&url).unwrap();
        other.batch_execute(&leftovers(&role)).unwrap();
    };

    leave();
    let pool = pool::builder()
        .pooler(Pooler::Transaction)
        .max_size(1)
        .build(url.clone())
        .unwrap();
    let mut conn = pool.get().unwrap();
    leave();
    assert_clean(&next_client(&mut conn, &ids[1]), "r2d2 through PgBouncer");
    drop((conn, pool));

    let rt = runtime();
    let _in_runtime = rt.enter();
    let pool = pool::builder()
        .pooler(Pooler::Transaction)
        .deadpool(url.clone())
        .unwrap()
        .max_size(1)
        .build()
        .unwrap();
    let obj = rt.block_on(pool.get()).unwrap();
    leave();
    let globex = ids[1].clone();
    let seen = rt
        .block_on(obj.interact(move |c| next_client(c, &globex)))
        .unwrap();
    assert_clean(&seen, "deadpool through PgBouncer");
    drop((obj, pool));

    // Negative control: a plain client through the same PgBouncer, path written by hand.
    leave();
    let mut plain = PgConnection::establish(&url).unwrap();
    plain.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    assert_control_leaks(
        stock_next_client(&mut plain),
        &role,
        "plain client through PgBouncer",
    );
    plain
        .batch_execute("RESET ROLE; CLOSE ALL; DISCARD TEMP")
        .unwrap();
    drop(plain);
    drop(bouncer);
    drop_role(&db, &role);
}

/// Shared migrations and status through PgBouncer in pooler mode, on a database without a
/// registry, while the server connection holds a temporary ledger that claims every shared
/// migration, a temporary `notes` and a session `search_path`: the shared migrations are applied
/// (not reported up to date), a tenant is created, and status reports it up to date.
#[test]
fn setup_and_status_through_pgbouncer_ignore_a_temporary_ledger() {
    use diesel::migration::MigrationSource;
    use diesel::pg::Pg;
    let db = test_db!("leftover_ledger_pgbouncer");
    let bouncer = PgBouncer::start(Config::transaction(1));
    let url = bouncer.url(db.url());
    let mut other = PgConnection::establish(&url).unwrap();
    other.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    other
        .batch_execute(
            "CREATE TEMP TABLE __diesel_schema_migrations \
             (version varchar(50) PRIMARY KEY, run_on timestamp NOT NULL DEFAULT now()); \
             INSERT INTO __diesel_schema_migrations (version) VALUES ('00000000000000'), \
             ('00000000000001'), ('00000000000002'); \
             CREATE TEMP TABLE notes (id int4, title text); \
             SET search_path TO pg_temp, public",
        )
        .unwrap();
    let shared = MigrationSource::<Pg>::migrations(&crate::support::SHARED_MIGRATIONS).unwrap();
    for m in &shared {
        diesel::sql_query("INSERT INTO pg_temp.__diesel_schema_migrations (version) VALUES ($1)")
            .bind::<Text, _>(m.name().version().to_string())
            .execute(&mut other)
            .unwrap();
    }
    // Negative control: on the bare shared path, through the same server connection, Diesel's
    // harness believes nothing is pending.
    other
        .batch_execute("BEGIN; SET LOCAL search_path TO public")
        .unwrap();
    let fooled = diesel_migrations::MigrationHarness::pending_migrations(
        &mut other,
        crate::support::SHARED_MIGRATIONS,
    )
    .unwrap()
    .len();
    other.batch_execute("ROLLBACK").unwrap();
    assert_eq!(fooled, 0, "the harness must see the temporary ledger here");
    drop(other);
    let migrator = diesel_workspace::Migrator::builder(crate::support::TENANT_MIGRATIONS)
        .shared(crate::support::SHARED_MIGRATIONS)
        .pooler(Pooler::Transaction)
        .build()
        .unwrap();
    let mut conn = diesel_workspace::connect(&url, Pooler::Transaction).unwrap();
    let applied = migrator.run_shared(&mut conn).unwrap();
    assert_eq!(applied.len(), 3 + shared.len(), "{applied:?}");
    assert!(db.registry_exists());
    let acme = TenantId::new("acme").unwrap();
    migrator.create_tenant(&mut conn, &acme).unwrap();
    let status = migrator.status(&mut conn).unwrap();
    assert_eq!(status.len(), 1);
    assert!(status[0].pending.is_empty(), "{status:?}");
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) >= 1"));
    // The leftover is still on the server connection: it was ignored, not removed.
    let mut again = PgConnection::establish(&url).unwrap();
    again.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    let left = diesel::sql_query("SELECT version AS title FROM pg_temp.__diesel_schema_migrations")
        .load::<Title>(&mut again)
        .unwrap();
    assert_eq!(left.len(), 3 + shared.len());
}

/// The owners of `schema` and of every relation in it other than the login's (`postgres`), as
/// `name: owner`.
fn foreign_owners(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    diesel::sql_query(
        "SELECT n.nspname::text || ': ' || pg_catalog.pg_get_userbyid(n.nspowner)::text AS title \
         FROM pg_catalog.pg_namespace n WHERE n.nspname = $1 AND n.nspowner <> 'postgres'::regrole \
         UNION ALL \
         SELECT c.relname::text || ': ' || pg_catalog.pg_get_userbyid(c.relowner)::text \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relowner <> 'postgres'::regrole ORDER BY 1",
    )
    .bind::<Text, _>(schema)
    .load::<Title>(conn)
    .unwrap()
    .into_iter()
    .map(|r| r.title)
    .collect()
}

/// The number of tables in `schema`.
fn tables(conn: &mut PgConnection, schema: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
    )
    .bind::<Text, _>(schema)
    .get_result::<Count>(conn)
    .unwrap()
    .n
}

/// Through PgBouncer (one server connection), another client leaves a session `SET ROLE` to a
/// role that may create schemas and write the registry. The migrator in pooler mode creates a
/// tenant, reverts and migrates it again, and clones it: the schemas and every table are owned
/// by the login, not the leftover role, which is still on the server connection afterwards
/// (ignored for the migrator's transactions, not removed). Negative controls: the same migrator
/// declared [`Pooler::Direct`] (a role set on purpose is kept) creates a tenant owned by the
/// leftover role, and so does a plain client creating a schema and a table in a transaction.
#[test]
fn a_leftover_role_owns_nothing_the_migrator_creates_through_pgbouncer() {
    let db = test_db!("leftover_role_pgbouncer");
    let role = format!("dwx_leftr_{}", std::process::id());
    let mut admin = db.conn();
    let migrator = |pooler| {
        diesel_workspace::Migrator::builder(crate::support::TENANT_MIGRATIONS)
            .shared(crate::support::SHARED_MIGRATIONS)
            .pooler(pooler)
            .build()
            .unwrap()
    };
    migrator(Pooler::Direct).run_shared(&mut admin).unwrap();
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role}; \
             DO $$ BEGIN EXECUTE pg_catalog.format('GRANT CREATE ON DATABASE %I TO {role}', \
             pg_catalog.current_database()); END $$; \
             GRANT USAGE, CREATE ON SCHEMA public TO {role}; \
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"
        ))
        .unwrap();
    let bouncer = PgBouncer::start(Config::transaction(1));
    let url = bouncer.url(db.url());
    let leave = || {
        let mut other = PgConnection::establish(&url).unwrap();
        other.batch_execute(&format!("SET ROLE {role}")).unwrap();
    };
    let who = || {
        let mut plain = PgConnection::establish(&url).unwrap();
        plain.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        diesel::sql_query("SELECT current_user::text AS who")
            .get_result::<Who>(&mut plain)
            .unwrap()
            .who
    };

    let pooled = migrator(Pooler::Transaction);
    let mut conn = diesel_workspace::connect(&url, Pooler::Transaction).unwrap();
    let acme = TenantId::new("acme").unwrap();
    leave();
    pooled.create_tenant(&mut conn, &acme).unwrap();
    leave();
    assert!(pooled.revert_last(&mut conn, &acme).unwrap().is_some());
    leave();
    let outcome = pooled.migrate_tenant(&mut conn, &acme).unwrap();
    assert!(
        matches!(&outcome, diesel_workspace::TenantOutcome::Applied(v) if v.len() == 1),
        "{outcome:?}"
    );
    leave();
    let copy = TenantId::new("acme_copy").unwrap();
    pooled
        .clone_tenant(
            &mut conn,
            &acme,
            &copy,
            diesel_workspace::CloneData::WithData,
        )
        .unwrap();
    for schema in ["acme", "acme_copy"] {
        assert!(tables(&mut admin, schema) >= 2, "{schema}: its tables");
        assert_eq!(
            foreign_owners(&mut admin, schema),
            Vec::<String>::new(),
            "{schema}: owned by the login"
        );
    }
    assert_eq!(who(), role, "the leftover role is ignored, not removed");

    // Negative control: the same migrator declared direct keeps the session's role.
    let direct = migrator(Pooler::Direct);
    let globex = TenantId::new("globex").unwrap();
    leave();
    direct.create_tenant(&mut conn, &globex).unwrap();
    let owners = foreign_owners(&mut admin, "globex");
    for owned in [
        "globex",
        "notes",
        "categories",
        "tags",
        "__diesel_schema_migrations",
    ] {
        assert!(
            owners.contains(&format!("{owned}: {role}")),
            "the leftover role must own {owned} here: {owners:?}"
        );
    }
    // Negative control: a plain client's transaction through the same server connection.
    leave();
    let mut plain = PgConnection::establish(&url).unwrap();
    plain.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    plain
        .transaction(|c| c.batch_execute("CREATE SCHEMA stock; CREATE TABLE stock.t (id int4)"))
        .unwrap();
    assert_eq!(
        foreign_owners(&mut admin, "stock"),
        [format!("stock: {role}"), format!("t: {role}")],
        "a plain client's transaction runs as the leftover role"
    );
    plain.batch_execute("RESET ROLE").unwrap();
    drop((plain, conn, bouncer));
    admin
        .batch_execute(&format!(
            "DROP SCHEMA globex, stock CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .unwrap();
}
