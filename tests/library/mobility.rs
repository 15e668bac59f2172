//! A tenant's data moving: cloned from a template tenant (rows, sequences, ledger; atomic, even
//! when the connection is killed mid-copy).

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_workspace::{CloneData, Error, TenantId};

mod blueprint;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = Nullable<Text>)]
    sum: Option<String>,
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

/// The example schema's tables with the ledger: per table, its row count and an md5 of its rows
/// in order.
pub fn fingerprint(conn: &mut PgConnection, schema: &str) -> Vec<(String, i64, Option<String>)> {
    ["categories", "tags", "notes", "__diesel_schema_migrations"]
        .iter()
        .map(|t| {
            let n = count(conn, &format!("SELECT count(*) AS n FROM \"{schema}\".{t}"));
            let sum = diesel::sql_query(format!(
                "SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) AS sum FROM \"{schema}\".{t} r"
            ))
            .get_result::<Sum>(conn)
            .unwrap()
            .sum;
            (t.to_string(), n, sum)
        })
        .collect()
}

/// Fills `schema`'s example tables: `n` notes over a few categories and tags, each carrying
/// the tenant's name (its sentinel).
pub fn seed(conn: &mut PgConnection, schema: &str, n: i64) {
    conn.batch_execute(&format!(
        "INSERT INTO \"{schema}\".categories (name) SELECT '{schema} c' || i FROM generate_series(1, 5) i; \
         INSERT INTO \"{schema}\".tags (label) SELECT '{schema} t' || i FROM generate_series(1, 3) i; \
         INSERT INTO \"{schema}\".notes (category_id, tag_id, title, body) \
         SELECT 1 + i % 5, CASE WHEN i % 2 = 0 THEN 1 + i % 3 END, '{schema}', 'note ' || i \
         FROM generate_series(1, {n}) i; \
         DELETE FROM \"{schema}\".notes WHERE id % 7 = 0"
    ))
    .unwrap();
}

/// The registry row, the schema and the central record rows of `schema`.
fn traces(conn: &mut PgConnection, schema: &str) -> (i64, i64, i64) {
    (
        count(
            conn,
            &format!("SELECT count(*) AS n FROM public.workspaces WHERE schema_name = '{schema}'"),
        ),
        count(
            conn,
            &format!("SELECT count(*) AS n FROM pg_namespace WHERE nspname = '{schema}'"),
        ),
        count(
            conn,
            &format!(
                "SELECT count(*) AS n FROM public.workspace_migrations WHERE schema_name = '{schema}'"
            ),
        ),
    )
}

#[test]
fn a_clone_has_the_templates_rows_sequences_and_ledger() {
    let db = crate::test_db!("a_clone_has_the_templates_rows_sequences_and_ledger");
    let template = &db.provision(&["template_basic"])[0];
    let migrator = db.migrator();
    let mut conn = db.conn();
    seed(&mut conn, "template_basic", 500);
    let before = fingerprint(&mut conn, "template_basic");

    let acme = id("acme");
    migrator
        .clone_tenant(&mut conn, template, &acme, CloneData::WithData)
        .unwrap();
    assert!(migrator.is_registered(&mut conn, &acme).unwrap());
    assert_eq!(
        fingerprint(&mut conn, "acme"),
        before,
        "rows and ledger equal"
    );
    assert_eq!(traces(&mut conn, "acme"), (1, 1, 1));

    // The clone's sequences stand past its rows; they are its own.
    let max = count(&mut conn, "SELECT max(id)::bigint AS n FROM acme.notes");
    let next = count(
        &mut conn,
        "INSERT INTO acme.notes (title) VALUES ('new') RETURNING id::bigint AS n",
    );
    assert_eq!(next, max + 1);
    assert!(db.check("pg_get_serial_sequence('acme.notes', 'id') = 'acme.notes_id_seq'"));
    assert!(db.check(
        "(SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef \
          WHERE adrelid = 'acme.notes'::regclass AND adnum = 1) = 'nextval(''acme.notes_id_seq''::regclass)'"
    ));
    assert_eq!(
        fingerprint(&mut conn, "template_basic"),
        before,
        "the template is unchanged"
    );
    let template_next = count(
        &mut conn,
        "INSERT INTO template_basic.notes (title) VALUES ('t') RETURNING id::bigint AS n",
    );
    assert_eq!(
        template_next,
        max + 1,
        "the template's sequence was not used"
    );

    // Schema only: the same tables, empty, sequences at their start, the ledger copied.
    let empty = id("empty");
    migrator
        .clone_tenant(&mut conn, template, &empty, CloneData::SchemaOnly)
        .unwrap();
    let shape = fingerprint(&mut conn, "empty");
    assert_eq!(shape[3], before[3], "the ledger is copied");
    assert!(shape[..3].iter().all(|(_, n, _)| *n == 0), "{shape:?}");
    assert_eq!(
        count(
            &mut conn,
            "INSERT INTO empty.notes (title) VALUES ('x') RETURNING id::bigint AS n"
        ),
        1
    );
}

#[test]
fn a_clone_claims_a_warm_spare_and_is_the_same() {
    let db = crate::test_db!("a_clone_claims_a_warm_spare_and_is_the_same");
    let template = &db.provision(&["template_warm"])[0];
    let migrator = db.migrator();
    let mut conn = db.conn();
    seed(&mut conn, "template_warm", 300);
    // The template's ledger ran long before the spares: the clone carries the template's.
    conn.batch_execute(
        "UPDATE template_warm.__diesel_schema_migrations SET run_on = '2020-01-02 03:04:05'",
    )
    .unwrap();
    let before = fingerprint(&mut conn, "template_warm");
    assert_eq!(migrator.fill_spares(&mut conn, 2).unwrap(), 2);
    let spares = migrator.spares(&mut conn).unwrap();

    // A template that is not current is refused before any spare is taken.
    conn.batch_execute(
        "INSERT INTO template_warm.__diesel_schema_migrations (version) VALUES ('29990101000000')",
    )
    .unwrap();
    let err = migrator
        .clone_tenant(&mut conn, template, &id("early"), CloneData::WithData)
        .unwrap_err();
    assert!(err.to_string().contains("migrate it first"), "{err}");
    assert_eq!(traces(&mut conn, "early"), (0, 0, 0));
    assert_eq!(
        migrator.spares(&mut conn).unwrap(),
        spares,
        "no spare taken"
    );
    conn.batch_execute(
        "DELETE FROM template_warm.__diesel_schema_migrations WHERE version = '29990101000000'",
    )
    .unwrap();

    let acme = id("acme");
    migrator
        .clone_tenant(&mut conn, template, &acme, CloneData::WithData)
        .unwrap();
    let left = migrator.spares(&mut conn).unwrap();
    assert_eq!(left.len(), 1, "the clone claimed a spare");
    assert!(!db.check(&format!(
        "EXISTS (SELECT 1 FROM pg_namespace WHERE nspname IN ('{}', '{}') AND nspname <> '{}')",
        spares[0], spares[1], left[0]
    )));
    assert_eq!(
        fingerprint(&mut conn, "acme"),
        before,
        "rows and ledger equal"
    );
    assert_eq!(traces(&mut conn, "acme"), (1, 1, 1));
    let max = count(&mut conn, "SELECT max(id)::bigint AS n FROM acme.notes");
    let next = count(
        &mut conn,
        "INSERT INTO acme.notes (title) VALUES ('new') RETURNING id::bigint AS n",
    );
    assert_eq!(next, max + 1);
    assert!(db.check("pg_get_serial_sequence('acme.notes', 'id') = 'acme.notes_id_seq'"));

    // Schema only, from the last spare: empty tables, sequences at their start.
    let bare = id("bare");
    migrator
        .clone_tenant(&mut conn, template, &bare, CloneData::SchemaOnly)
        .unwrap();
    assert!(migrator.spares(&mut conn).unwrap().is_empty());
    let shape = fingerprint(&mut conn, "bare");
    assert_eq!(shape[3], before[3], "the ledger is the template's");
    assert!(shape[..3].iter().all(|(_, n, _)| *n == 0), "{shape:?}");
    assert_eq!(
        count(
            &mut conn,
            "INSERT INTO bare.notes (title) VALUES ('x') RETURNING id::bigint AS n"
        ),
        1
    );
    assert_eq!(
        fingerprint(&mut conn, "template_warm"),
        before,
        "the template is unchanged"
    );
}

#[test]
fn a_clone_is_refused_with_nothing_created() {
    let db = crate::test_db!("a_clone_is_refused_with_nothing_created");
    let tenants = db.provision(&["template_a", "taken"]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    let new = id("newcomer");

    let err = migrator
        .clone_tenant(&mut conn, &id("nobody"), &new, CloneData::WithData)
        .unwrap_err();
    assert!(
        matches!(err, Error::TenantNotFound(ref t) if t.as_str() == "nobody"),
        "{err:?}"
    );
    let err = migrator
        .clone_tenant(&mut conn, &tenants[0], &tenants[1], CloneData::WithData)
        .unwrap_err();
    assert!(matches!(err, Error::TenantExists(_)), "{err:?}");
    assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM taken.notes"), 0);

    // A template whose ledger is not the set's versions (here: a version the set lacks).
    conn.batch_execute(
        "INSERT INTO template_a.__diesel_schema_migrations (version) VALUES ('29990101000000')",
    )
    .unwrap();
    let err = migrator
        .clone_tenant(&mut conn, &tenants[0], &new, CloneData::WithData)
        .unwrap_err();
    assert!(matches!(err, Error::CloneRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("migrate it first"), "{err}");
    assert_eq!(traces(&mut conn, "newcomer"), (0, 0, 0));
    conn.batch_execute(
        "DELETE FROM template_a.__diesel_schema_migrations WHERE version = '29990101000000'",
    )
    .unwrap();

    // A template changed by hand: refused rather than copied into another shape.
    conn.batch_execute("ALTER TABLE template_a.notes ADD COLUMN secret text")
        .unwrap();
    let err = migrator
        .clone_tenant(&mut conn, &tenants[0], &new, CloneData::WithData)
        .unwrap_err();
    assert!(err.to_string().contains("differ"), "{err}");
    assert_eq!(traces(&mut conn, "newcomer"), (0, 0, 0));

    // Negative control: put back, the same clone goes through.
    conn.batch_execute("ALTER TABLE template_a.notes DROP COLUMN secret")
        .unwrap();
    migrator
        .clone_tenant(&mut conn, &tenants[0], &new, CloneData::WithData)
        .unwrap();
    assert_eq!(traces(&mut conn, "newcomer"), (1, 1, 1));
}

#[test]
fn a_clone_killed_mid_copy_leaves_nothing() {
    let db = crate::test_db!("a_clone_killed_mid_copy_leaves_nothing");
    let template = db.provision(&["template_big"]).remove(0);
    let mut conn = db.conn();
    seed(&mut conn, "template_big", 1000);

    // Hold the template's notes so the clone waits in its copy, after its schema, its registry
    // row and its first tables were written inside its transaction.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE template_big.notes IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let url = db.url().to_owned();
    let cloning = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        crate::support::example_migrator().clone_tenant(
            &mut conn,
            &template,
            &id("victim"),
            CloneData::WithData,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = "FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()";
    while count(&mut conn, &format!("SELECT count(*) AS n {waiting}")) == 0 {
        assert!(
            Instant::now() < deadline,
            "the clone never reached its copy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only the clone waits for a lock; inside its transaction it has written its registry row,
    // its schema and the template's categories by now.
    assert!(db.check(&format!(
        "(SELECT bool_and(pg_terminate_backend(pid)) {waiting})"
    )));
    let err = cloning.join().unwrap().unwrap_err();
    holder.batch_execute("ROLLBACK").unwrap();
    assert!(matches!(err, Error::Query(_)), "{err:?}");
    assert_eq!(traces(&mut conn, "victim"), (0, 0, 0), "no half tenant");
    assert!(!db.check(
        "EXISTS (SELECT 1 FROM pg_class WHERE relname = 'notes' AND relnamespace::regnamespace::text = 'victim')"
    ));
}

#[test]
fn a_clone_gets_its_own_role_not_the_templates() {
    use diesel_workspace::{switch, Migrator, TenantConnectionExt, TenantRoles};

    let db = crate::test_db!("a_clone_gets_its_own_role_not_the_templates");
    // Roles belong to the cluster: a prefix of this run's own.
    let prefix = format!("dwc{}_", crate::support::db::run_token());
    let roles = TenantRoles::new(prefix.clone()).unwrap();
    let m = Migrator::builder(crate::support::TENANT_MIGRATIONS)
        .shared(crate::support::SHARED_MIGRATIONS)
        .tenant_roles(roles.clone())
        .build()
        .unwrap();
    let mut conn = db.conn();
    m.run_shared(&mut conn).unwrap();
    let (template, acme) = (id("template_roles"), id("acme"));
    m.create_tenant(&mut conn, &template).unwrap();
    seed(&mut conn, "template_roles", 20);
    m.clone_tenant(&mut conn, &template, &acme, CloneData::WithData)
        .unwrap();
    let notes = count(&mut conn, "SELECT count(*) AS n FROM template_roles.notes");
    let mut count_as = |tenant: &TenantId, table: &str| {
        switch(tenant, || {
            conn.tenant_transaction_as(&roles, |conn| {
                diesel::sql_query(format!("SELECT pg_catalog.count(*) AS n FROM {table}"))
                    .get_result::<Count>(conn)
            })
        })
        .map(|c| c.n)
    };
    let denied =
        |r: QueryResult<i64>| matches!(&r, Err(e) if e.to_string().contains("permission denied"));
    assert_eq!(
        count_as(&acme, "notes").unwrap(),
        notes,
        "its own copied rows"
    );
    assert!(denied(count_as(&acme, "template_roles.notes")));
    assert!(denied(count_as(&template, "acme.notes")));
    // Negative control: the template's role reads its own rows.
    assert_eq!(count_as(&template, "notes").unwrap(), notes);
    m.drop_tenant(&mut conn, &acme).unwrap();
    m.drop_tenant(&mut conn, &template).unwrap();
    assert!(!db.check(&format!(
        "EXISTS (SELECT 1 FROM pg_roles WHERE rolname LIKE '{prefix}%')"
    )));
}

#[test]
fn a_clone_reads_its_template_as_of_one_moment_while_it_is_written() {
    let db = crate::test_db!("a_clone_reads_its_template_as_of_one_moment_while_it_is_written");
    let template = db.provision(&["template_busy"]).remove(0);
    let migrator = db.migrator();
    let mut conn = db.conn();
    seed(&mut conn, "template_busy", 2000);
    // Many categories, so their copy takes long enough for the writer to commit meanwhile.
    conn.batch_execute(
        "INSERT INTO template_busy.categories (name) SELECT 'bulk ' || i FROM generate_series(1, 100000) i",
    )
    .unwrap();
    // A writer adds a category and a note referencing it, in one transaction each, all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = db.url().to_owned();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = PgConnection::establish(&url).unwrap();
            let mut pairs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.batch_execute(
                    "BEGIN; \
                     WITH c AS (INSERT INTO template_busy.categories (name) \
                                VALUES ('w' || clock_timestamp()::text || random()::text) RETURNING id) \
                     INSERT INTO template_busy.notes (category_id, title) SELECT id, 'template_busy' FROM c; \
                     COMMIT",
                )
                .unwrap();
                pairs += 1;
            }
            pairs
        })
    };
    for i in 0..4 {
        let name = format!("copy_{i}");
        migrator
            .clone_tenant(&mut conn, &template, &id(&name), CloneData::WithData)
            .unwrap_or_else(|e| panic!("clone {name}: {e:?}"));
        // Every copied note's category was copied too: one snapshot, parents and children.
        assert_eq!(
            count(
                &mut conn,
                &format!(
                    "SELECT count(*) AS n FROM \"{name}\".notes n WHERE n.category_id IS NOT NULL \
                     AND NOT EXISTS (SELECT 1 FROM \"{name}\".categories c WHERE c.id = n.category_id)"
                )
            ),
            0
        );
        assert_eq!(
            count(
                &mut conn,
                &format!(
                    "SELECT count(*) AS n FROM \"{name}\".notes WHERE title <> 'template_busy'"
                )
            ),
            0,
            "only the template's rows"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0, "the writer wrote meanwhile");
}
