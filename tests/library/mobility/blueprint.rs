//! A clone built from its template's blueprint (its schema rebuilt from the catalog, learned
//! once) against one built by the migrations: the same schema to `pg_dump`, the same rows,
//! and every template the blueprint cannot rebuild, or that was changed by hand, still cloned
//! by its migrations or refused.

use std::process::Command;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, FileBasedMigrations};
use diesel_workspace::{CloneData, Migrator, TenantId};

use super::{count, id, traces};

/// Twenty migrations with a history: ids grown to bigint, a column replaced, indexes swapped, a
/// table dropped (`tests/migrations/history`).
const HISTORY: EmbeddedMigrations = embed_migrations!("migrations/history");

fn history(db: &crate::support::TestDb) -> (Migrator, PgConnection) {
    let migrator = Migrator::builder(HISTORY)
        .shared(crate::support::SHARED_MIGRATIONS)
        .build()
        .unwrap();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    (migrator, conn)
}

/// `schema`'s definition as `pg_dump --schema-only` prints it, the schema's name replaced, its
/// statements sorted (`pg_dump` orders them by their dependencies, objects outside the schema
/// included).
fn dump(db: &crate::support::TestDb, schema: &str) -> String {
    let out = Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "-n", schema, "-d", db.url()])
        .output()
        .expect("pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("--") && !l.starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(&format!("{schema}."), "SCHEMA.")
        .replace(&format!("SCHEMA {schema};"), "SCHEMA SCHEMA;");
    let mut statements: Vec<&str> = text.split(";\n").map(str::trim).collect();
    statements.sort_unstable();
    statements.join(";\n")
}

/// Columns a migration dropped that the table still carries (a table rebuilt from a blueprint
/// has none).
fn dropped_columns(conn: &mut PgConnection, table: &str) -> i64 {
    count(
        conn,
        &format!(
            "SELECT count(*) AS n FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attisdropped"
        ),
    )
}

/// Per table of the history's schema: its rows, in order, as one md5.
fn rows(conn: &mut PgConnection, schema: &str) -> Vec<i64> {
    [
        "accounts",
        "projects",
        "tasks",
        "comments",
        "labels",
        "task_labels",
        "events",
    ]
    .iter()
    .map(|t| {
        count(
            conn,
            &format!(
                "SELECT coalesce(sum(hashtext(r::text)::bigint), 0)::bigint AS n FROM \"{schema}\".{t} r"
            ),
        )
    })
    .collect()
}

fn seed(conn: &mut PgConnection, schema: &str) {
    conn.batch_execute(&format!(
        "SET search_path TO \"{schema}\"; \
         INSERT INTO accounts (email, name) SELECT 'a' || i || '@{schema}', 'account ' || i FROM generate_series(1, 5) i; \
         INSERT INTO projects (owner_id, name) SELECT 1 + i % 5, '{schema} project ' || i FROM generate_series(1, 4) i; \
         INSERT INTO tasks (project_id, name, status, priority) \
           SELECT 1 + i % 4, '{schema} task ' || i, 'open', i % 3 FROM generate_series(1, 40) i; \
         INSERT INTO comments (task_id, author_id, body) SELECT 1 + i % 40, 1 + i % 5, 'c' || i FROM generate_series(1, 60) i; \
         INSERT INTO labels (project_id, name) SELECT 1 + i % 4, 'l' || i FROM generate_series(1, 6) i; \
         INSERT INTO task_labels SELECT 1 + i % 40, 1 + i % 6 FROM generate_series(1, 30) i ON CONFLICT DO NOTHING; \
         DELETE FROM tasks WHERE id % 9 = 0; \
         SET search_path TO DEFAULT"
    ))
    .unwrap();
}

#[test]
fn a_clone_from_a_blueprint_is_the_clone_the_migrations_build() {
    let db = crate::test_db!("a_clone_from_a_blueprint_is_the_clone_the_migrations_build");
    let (migrator, mut conn) = history(&db);
    let template = id("template_history");
    migrator.create_tenant(&mut conn, &template).unwrap();
    seed(&mut conn, "template_history");
    assert!(dropped_columns(&mut conn, "template_history.tasks") > 0);

    // The first clone replays the migrations (and learns the blueprint); the next ones are
    // built from it: no dropped column left behind, and `pg_dump` cannot tell them apart.
    let (first, second, empty) = (id("first"), id("second"), id("empty"));
    migrator
        .clone_tenant(&mut conn, &template, &first, CloneData::WithData)
        .unwrap();
    assert!(
        dropped_columns(&mut conn, "first.tasks") > 0,
        "built by the migrations"
    );
    migrator
        .clone_tenant(&mut conn, &template, &second, CloneData::WithData)
        .unwrap();
    assert_eq!(
        dropped_columns(&mut conn, "second.tasks"),
        0,
        "built from the blueprint"
    );
    migrator
        .clone_tenant(&mut conn, &template, &empty, CloneData::SchemaOnly)
        .unwrap();
    assert_eq!(dropped_columns(&mut conn, "empty.tasks"), 0);
    let expected = dump(&db, "template_history");
    for clone in ["first", "second", "empty"] {
        assert_eq!(dump(&db, clone), expected, "{clone}'s schema");
        assert_eq!(traces(&mut conn, clone).0, 1);
    }
    let before = rows(&mut conn, "template_history");
    assert_eq!(rows(&mut conn, "second"), before);
    assert_eq!(rows(&mut conn, "first"), before);
    assert!(rows(&mut conn, "empty").iter().all(|&r| r == 0));
    // Sequences stand where the template's do; the ledgers are the template's.
    let max = count(&mut conn, "SELECT max(id) AS n FROM second.tasks");
    let next = count(
        &mut conn,
        "INSERT INTO second.tasks (project_id, name) VALUES (1, 'new') RETURNING id AS n",
    );
    assert_eq!(next, max + 1);
    assert_eq!(
        count(
            &mut conn,
            "INSERT INTO empty.accounts (email, name) VALUES ('x', 'y') RETURNING id AS n"
        ),
        1
    );
    assert!(db.check(
        "(SELECT array_agg(version ORDER BY version) FROM second.__diesel_schema_migrations) = \
         (SELECT array_agg(version ORDER BY version) FROM template_history.__diesel_schema_migrations)"
    ));
    // The constraints hold in the rebuilt schema as in the template.
    let err = conn
        .batch_execute(
            "INSERT INTO second.tasks (project_id, name, status) VALUES (1, 'x', 'later')",
        )
        .unwrap_err();
    assert!(err.to_string().contains("tasks_status_check"), "{err}");
    let err = conn
        .batch_execute("INSERT INTO second.comments (task_id, body) VALUES (999999, 'x')")
        .unwrap_err();
    assert!(err.to_string().contains("comments_task_id_fkey"), "{err}");
}

#[test]
fn a_template_changed_by_hand_is_refused_after_its_blueprint_was_learned() {
    let db =
        crate::test_db!("a_template_changed_by_hand_is_refused_after_its_blueprint_was_learned");
    let (migrator, mut conn) = history(&db);
    let template = id("template_hand");
    migrator.create_tenant(&mut conn, &template).unwrap();
    migrator
        .clone_tenant(&mut conn, &template, &id("learner"), CloneData::SchemaOnly)
        .unwrap();

    // An index, a default, a check: each is a different shape, refused with nothing created,
    // and put back each is cloned again (from the blueprint).
    let changes = [
        (
            "CREATE INDEX by_hand ON template_hand.tasks (name)",
            "DROP INDEX template_hand.by_hand",
        ),
        (
            "ALTER TABLE template_hand.tasks ALTER COLUMN status SET DEFAULT 'doing'",
            "ALTER TABLE template_hand.tasks ALTER COLUMN status SET DEFAULT 'open'",
        ),
        (
            "ALTER TABLE template_hand.labels DROP CONSTRAINT labels_color_check",
            "ALTER TABLE template_hand.labels ADD CONSTRAINT labels_color_check \
             CHECK (color ~ '^#[0-9a-f]{6}$')",
        ),
    ];
    for (i, (change, undo)) in changes.iter().enumerate() {
        conn.batch_execute(change).unwrap();
        let clone = id(&format!("clone_{i}"));
        let err = migrator
            .clone_tenant(&mut conn, &template, &clone, CloneData::SchemaOnly)
            .unwrap_err();
        assert!(err.to_string().contains("differ"), "{change}: {err}");
        assert_eq!(traces(&mut conn, clone.as_str()), (0, 0, 0), "{change}");
        conn.batch_execute(undo).unwrap();
        migrator
            .clone_tenant(&mut conn, &template, &clone, CloneData::SchemaOnly)
            .unwrap();
        assert_eq!(traces(&mut conn, clone.as_str()).0, 1);
    }
    // A refusal forgets the blueprint: the clone after it replays the migrations and learns it
    // again, and the next one is built from it.
    assert!(dropped_columns(&mut conn, "clone_2.tasks") > 0);
    migrator
        .clone_tenant(&mut conn, &template, &id("after"), CloneData::SchemaOnly)
        .unwrap();
    assert_eq!(dropped_columns(&mut conn, "after.tasks"), 0);
    assert_eq!(dump(&db, "after"), dump(&db, "template_hand"));
}

/// A migration set with what a blueprint does not rebuild: a function, a trigger, a comment,
/// and reference rows written by a migration.
fn unfit_set(dir: &std::path::Path) -> Migrator {
    one_migration_set(
        dir,
        "2026-03-01-000001_kinds",
        "CREATE TABLE kinds (id SERIAL PRIMARY KEY, name TEXT NOT NULL, touched INT NOT NULL DEFAULT 0);\n\
         INSERT INTO kinds (name) VALUES ('bug'), ('feature');\n\
         COMMENT ON TABLE kinds IS 'the kinds of a ticket';\n\
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$;\n\
         CREATE TRIGGER kinds_touch BEFORE UPDATE ON kinds FOR EACH ROW EXECUTE FUNCTION touch();\n",
        "DROP TABLE kinds;\nDROP FUNCTION touch();\n",
    )
}

/// A set of one migration, `version` (its `up.sql` and `down.sql`), written under `dir`, with
/// the example shared migrations.
fn one_migration_set(dir: &std::path::Path, version: &str, up: &str, down: &str) -> Migrator {
    let version = dir.join(version);
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("up.sql"), up).unwrap();
    std::fs::write(version.join("down.sql"), down).unwrap();
    Migrator::builder(FileBasedMigrations::from_path(dir).unwrap())
        .shared(crate::support::SHARED_MIGRATIONS)
        .build()
        .unwrap()
}

#[test]
fn a_template_the_blueprint_cannot_rebuild_is_cloned_by_its_migrations() {
    let db = crate::test_db!("a_template_the_blueprint_cannot_rebuild_is_cloned_by_its_migrations");
    let dir = tempfile::tempdir().unwrap();
    let migrator = unfit_set(dir.path());
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let template = TenantId::new("template_unfit").unwrap();
    migrator.create_tenant(&mut conn, &template).unwrap();
    for (clone, data) in [
        ("one", CloneData::SchemaOnly),
        ("two", CloneData::SchemaOnly),
        ("three", CloneData::WithData),
    ] {
        migrator
            .clone_tenant(&mut conn, &template, &id(clone), data)
            .unwrap();
        assert_eq!(
            dump(&db, clone),
            dump(&db, "template_unfit"),
            "{clone}: function, trigger and comment"
        );
        // The migration's reference rows, in a schema-only clone too.
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT count(*) AS n FROM {clone}.kinds")
            ),
            2
        );
        conn.batch_execute(&format!("UPDATE {clone}.kinds SET name = name"))
            .unwrap();
        assert_eq!(
            count(
                &mut conn,
                &format!("SELECT sum(touched)::bigint AS n FROM {clone}.kinds")
            ),
            2,
            "{clone}'s own trigger fired"
        );
    }
}

/// A migration set with the less common definitions a blueprint must rebuild exactly, or leave
/// to the migrations: identity and generated columns, a collation, a keyword for a name, table
/// options, a deferrable self-reference, a `NOT VALID` check, an `IN` list (printed otherwise
/// than it is held), expression, partial and covering indexes, an exclusion constraint, a
/// foreign key to the shared schema, a sequence of its own and a column dropped and added again.
fn wide_set(dir: &std::path::Path) -> Migrator {
    one_migration_set(
        dir,
        "2026-03-01-000001_orders",
        "CREATE TABLE \"order\" (\n\
           id BIGINT GENERATED BY DEFAULT AS IDENTITY (START WITH 10 INCREMENT BY 10) PRIMARY KEY,\n\
           \"from\" TEXT COLLATE \"C\" NOT NULL,\n\
           qty INT NOT NULL DEFAULT 1,\n\
           double_qty INT GENERATED ALWAYS AS (qty * 2) STORED,\n\
           parent_id BIGINT REFERENCES \"order\" (id) DEFERRABLE INITIALLY DEFERRED,\n\
           during TSTZRANGE,\n\
           kind VARCHAR(10) NOT NULL DEFAULT 'a' CHECK (kind IN ('a', 'b')),\n\
           plan_id INT REFERENCES public.plans (id),\n\
           EXCLUDE USING gist (during WITH &&)\n\
         ) WITH (fillfactor = 80);\n\
         ALTER TABLE \"order\" ADD CONSTRAINT order_qty_positive CHECK (qty > 0) NOT VALID;\n\
         CREATE INDEX order_lower_idx ON \"order\" (lower(\"from\")) WHERE kind IN ('a', 'b');\n\
         CREATE UNIQUE INDEX order_select_kind ON \"order\" (\"from\", kind) INCLUDE (qty);\n\
         CREATE SEQUENCE invoice_numbers START 100 INCREMENT 5;\n\
         CREATE TABLE lines (id SERIAL PRIMARY KEY, order_id BIGINT REFERENCES \"order\" ON DELETE CASCADE, note TEXT,\n\
           invoice INT NOT NULL DEFAULT nextval('invoice_numbers'));\n\
         ALTER TABLE lines DROP COLUMN note;\n\
         ALTER TABLE lines ADD COLUMN note TEXT DEFAULT 'none';\n",
        "DROP TABLE lines;\nDROP SEQUENCE invoice_numbers;\nDROP TABLE \"order\";\n",
    )
}

#[test]
fn every_clone_of_an_unusual_schema_is_its_template() {
    let db = crate::test_db!("every_clone_of_an_unusual_schema_is_its_template");
    let dir = tempfile::tempdir().unwrap();
    let migrator = wide_set(dir.path());
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    conn.batch_execute("INSERT INTO public.plans (name) VALUES ('basic')")
        .unwrap();
    let template = TenantId::new("template_wide").unwrap();
    migrator.create_tenant(&mut conn, &template).unwrap();
    conn.batch_execute(
        "SET search_path TO template_wide; \
         INSERT INTO \"order\" (\"from\", qty, kind, plan_id, during) \
           SELECT 's' || i, i, 'a', 1, tstzrange(now() + i * interval '1 day', now() + (i + 1) * interval '1 day') \
           FROM generate_series(1, 5) i; \
         UPDATE \"order\" SET parent_id = id - 10 WHERE id > 10; \
         INSERT INTO lines (order_id) SELECT id FROM \"order\"; \
         SET search_path TO DEFAULT",
    )
    .unwrap();
    let expected = dump(&db, "template_wide");
    for (clone, data) in [
        ("w_one", CloneData::WithData),
        ("w_two", CloneData::WithData),
        ("w_three", CloneData::SchemaOnly),
        ("w_four", CloneData::WithData),
    ] {
        migrator
            .clone_tenant(&mut conn, &template, &id(clone), data)
            .unwrap();
        assert_eq!(dump(&db, clone), expected, "{clone}");
        eprintln!(
            "DROPPED {clone} {}",
            dropped_columns(&mut conn, &format!("{clone}.lines"))
        );
    }
    // The rows, the identity and the sequences carry on in a clone with data.
    assert!(db.check(
        "(SELECT array_agg(o::text ORDER BY id) FROM w_four.\"order\" o) = \
         (SELECT array_agg(o::text ORDER BY id) FROM template_wide.\"order\" o)"
    ));
    assert_eq!(
        count(
            &mut conn,
            "INSERT INTO w_four.\"order\" (\"from\") VALUES ('new') RETURNING id AS n"
        ),
        60
    );
    assert_eq!(
        count(
            &mut conn,
            "INSERT INTO w_three.\"order\" (\"from\") VALUES ('new') RETURNING id AS n"
        ),
        10
    );
    assert_eq!(
        count(
            &mut conn,
            "INSERT INTO w_four.lines (order_id) VALUES (10) RETURNING invoice::bigint AS n"
        ),
        125
    );
}

#[test]
fn what_other_schemas_hold_on_a_template_does_not_refuse_its_clones() {
    let db = crate::test_db!("what_other_schemas_hold_on_a_template_does_not_refuse_its_clones");
    let (migrator, mut conn) = history(&db);
    let template = id("template_seen");
    migrator.create_tenant(&mut conn, &template).unwrap();
    // A reporting view, a function and a foreign key outside the template, over its tables.
    conn.batch_execute(
        "CREATE VIEW public.all_tasks AS SELECT id, name FROM template_seen.tasks; \
         CREATE FUNCTION public.open_tasks() RETURNS bigint LANGUAGE sql \
           BEGIN ATOMIC SELECT count(*) FROM template_seen.tasks WHERE status = 'open'; END; \
         CREATE TABLE public.audit (task_id bigint REFERENCES template_seen.tasks (id))",
    )
    .unwrap();
    for clone in ["seen_one", "seen_two"] {
        migrator
            .clone_tenant(&mut conn, &template, &id(clone), CloneData::WithData)
            .unwrap();
        assert_eq!(dump(&db, clone), dump(&db, "template_seen"), "{clone}");
    }
    assert_eq!(
        dropped_columns(&mut conn, "seen_two.tasks"),
        0,
        "from the blueprint"
    );
    // A grant on the template is no shape: its clones are made, with the grants their
    // migrations give (none), from the blueprint still.
    conn.batch_execute("GRANT SELECT ON template_seen.tasks TO PUBLIC")
        .unwrap();
    migrator
        .clone_tenant(
            &mut conn,
            &template,
            &id("seen_granted"),
            CloneData::WithData,
        )
        .unwrap();
    assert_eq!(dropped_columns(&mut conn, "seen_granted.tasks"), 0);
    assert!(db
        .check("(SELECT relacl IS NULL FROM pg_class WHERE oid = 'seen_granted.tasks'::regclass)"));
    assert!(!db.check(
        "(SELECT relacl IS NULL FROM pg_class WHERE oid = 'template_seen.tasks'::regclass)"
    ));
    // Negative control: a trigger on the template itself is its own: cloned by the migrations,
    // and since they do not build it, refused.
    conn.batch_execute(
        "CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TRIGGER by_hand BEFORE INSERT ON template_seen.tasks FOR EACH ROW EXECUTE FUNCTION public.noop()",
    )
    .unwrap();
    let err = migrator
        .clone_tenant(&mut conn, &template, &id("seen_three"), CloneData::WithData)
        .unwrap_err();
    assert!(err.to_string().contains("differ"), "{err}");
}

#[test]
fn a_migrator_without_blueprints_replays_every_clone() {
    let db = crate::test_db!("a_migrator_without_blueprints_replays_every_clone");
    let migrator = Migrator::builder(HISTORY)
        .shared(crate::support::SHARED_MIGRATIONS)
        .blueprints(false)
        .build()
        .unwrap();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let template = id("template_plain");
    migrator.create_tenant(&mut conn, &template).unwrap();
    for clone in ["plain_one", "plain_two", "plain_three"] {
        migrator
            .clone_tenant(&mut conn, &template, &id(clone), CloneData::SchemaOnly)
            .unwrap();
        assert!(
            dropped_columns(&mut conn, &format!("{clone}.tasks")) > 0,
            "{clone} replayed"
        );
        assert_eq!(dump(&db, clone), dump(&db, "template_plain"));
    }
}
