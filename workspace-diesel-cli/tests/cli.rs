//! End-to-end tests of the `workspace-diesel` binary: each runs the real binary against a
//! database of its own and a temporary copy of the example migrations.

mod support;

/// The `print-schema` output for the example migrations, kept here so that it is compiled with
/// the tests (and used against a real database below).
#[path = "support/generated_schema.rs"]
#[rustfmt::skip]
mod generated_schema;

use std::fs;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{switch, TenantId};

use support::{Run, Workdir};

const EXPECTED_SCHEMA: &str = include_str!("support/generated_schema.rs");

// ---------------------------------------------------------------------------------------------
// --help

#[test]
fn help_is_pinned() {
    let db = test_db!("help_is_pinned");
    let w = Workdir::new();
    insta::assert_snapshot!("help", w.run(&db, &["--help"]).ok());
    for command in [
        "create_tenant_schema",
        "makemigrations_tenant",
        "migrate_tenant",
        "migrate_all",
        "revert_tenant",
        "list_tenants",
        "status",
        "drop_tenant",
        "rename_tenant",
        "print-schema",
    ] {
        let run = w.run(&db, &[command, "--help"]);
        insta::assert_snapshot!(format!("help_{command}"), run.ok());
    }
}

#[test]
fn aliases_resolve_to_their_commands() {
    let db = test_db!("aliases_resolve_to_their_commands");
    let w = Workdir::new();
    for (alias, command) in [
        ("c:t:s", "create_tenant_schema"),
        ("m:m:t", "makemigrations_tenant"),
        ("m:t", "migrate_tenant"),
    ] {
        assert_eq!(
            w.run(&db, &[alias, "--help"]).ok(),
            w.run(&db, &[command, "--help"]).ok(),
            "{alias}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let db = test_db!("usage_errors_exit_2");
    let w = Workdir::new();
    let run = w.run(&db, &["no_such_command"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let run = w.run(&db, &["migrate_tenant"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("<IDENTIFIER>"), "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// create_tenant_schema

#[test]
fn create_tenant_schema_registers_and_provisions() {
    let db = test_db!("create_tenant_schema_registers_and_provisions");
    let w = Workdir::new();
    let out = w.run(&db, &["create_tenant_schema", "acme"]);
    assert_eq!(
        out.ok(),
        "created tenant `acme` (schema \"acme\", 1 migration applied)\n"
    );
    w.run(&db, &["c:t:s", "globex"]).ok();
    for t in ["acme", "globex"] {
        assert!(db.schema_exists(t));
        assert!(db.check(&format!(
            "EXISTS (SELECT 1 FROM public.workspaces WHERE schema_name = '{t}')"
        )));
        assert!(db.check(&format!("pg_catalog.to_regclass('{t}.notes') IS NOT NULL")));
        assert!(db.check(&format!(
            "(SELECT count(*) FROM {t}.__diesel_schema_migrations) = 1"
        )));
    }
    // The shared migrations ran once, in `public`.
    assert!(db.check("pg_catalog.to_regclass('public.plans') IS NOT NULL"));
}

#[test]
fn create_tenant_schema_rejects_bad_input() {
    let db = test_db!("create_tenant_schema_rejects_bad_input");
    let w = Workdir::new();

    // Invalid identifiers never reach the database.
    w.run(&db, &["c:t:s", "Acme"])
        .fails_with("invalid tenant name `Acme`: only lower-case ASCII letters");
    w.run(&db, &["c:t:s", "public"])
        .fails_with("invalid tenant name `public`");
    w.run(&db, &["c:t:s", "a;drop"])
        .fails_with("invalid tenant name `a;drop`");
    assert!(!db.registry_exists());

    // An existing tenant.
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "acme"])
        .fails_with("tenant `acme` already exists");

    // An unreachable database, and none at all.
    let run = Run::from(
        w.cmd(&db)
            .args([
                "--database-url",
                "postgres://postgres@127.0.0.1:1/nowhere",
                "c:t:s",
                "x",
            ])
            .output()
            .unwrap(),
    );
    run.fails_with("could not connect to the database");
    let run = Run::from(
        w.cmd(&db)
            .env_remove("DATABASE_URL")
            .args(["c:t:s", "x"])
            .output()
            .unwrap(),
    );
    run.fails_with("no database given: pass --database-url or set DATABASE_URL");

    // A missing migrations directory.
    w.run(&db, &["--migrations-dir", "nope", "c:t:s", "x"])
        .fails_with("the tenant migrations directory `nope` does not exist");
    w.run(&db, &["--shared-migrations-dir", "nope", "c:t:s", "x"])
        .fails_with("the shared migrations directory `nope` does not exist");
    assert!(!db.schema_exists("x"));
}

#[test]
fn create_tenant_schema_leaves_nothing_when_a_migration_fails() {
    let db = test_db!("create_tenant_schema_leaves_nothing_when_a_migration_fails");
    let w = Workdir::new();
    w.add_migration(
        false,
        "2026-02-01-000000_broken",
        "CREATE TABLE fine (id INT PRIMARY KEY); SELECT * FROM no_such_table;",
        "DROP TABLE fine;",
    );
    let line = w
        .run(&db, &["c:t:s", "acme"])
        .fails_with("migration failed for tenant `acme`")
        .to_owned();
    assert!(line.contains("no_such_table"), "{line}");
    assert!(!db.schema_exists("acme"));
    assert!(db.check("NOT EXISTS (SELECT 1 FROM public.workspaces WHERE schema_name = 'acme')"));
}

// ---------------------------------------------------------------------------------------------
// makemigrations_tenant

#[test]
fn makemigrations_tenant_writes_diesel_layout() {
    let db = test_db!("makemigrations_tenant_writes_diesel_layout");
    let w = Workdir::new();
    let out = w
        .run(&db, &["makemigrations_tenant", "add_invoices"])
        .ok()
        .to_owned();
    let created: Vec<&str> = out.lines().collect();
    assert_eq!(created.len(), 2, "{out}");
    let up = created[0].strip_prefix("Creating ").unwrap();
    let down = created[1].strip_prefix("Creating ").unwrap();
    assert!(
        up.starts_with("migrations_tenant/") && up.ends_with("_add_invoices/up.sql"),
        "{up}"
    );
    assert!(down.ends_with("_add_invoices/down.sql"), "{down}");
    let dir_name = up.split('/').nth(1).unwrap();
    let version = dir_name.strip_suffix("_add_invoices").unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(version, "%Y-%m-%d-%H%M%S").is_ok(),
        "{version}"
    );
    assert!(fs::read_to_string(w.path().join(up))
        .unwrap()
        .contains("tenant schema"));
    assert!(w.path().join(down).is_file());

    // The alias, with --shared, writes into the shared directory.
    let out = w
        .run(&db, &["m:m:t", "add_users", "--shared"])
        .ok()
        .to_owned();
    assert!(out.starts_with("Creating migrations_shared/"), "{out}");
    assert!(out.contains("_add_users/up.sql"), "{out}");

    // Filled in, the new migrations run: the shared one once, the tenant one in each tenant.
    fs::write(
        w.path().join(up),
        "CREATE TABLE invoices (id SERIAL PRIMARY KEY);",
    )
    .unwrap();
    let shared_up = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("Creating ")
        .unwrap();
    fs::write(
        w.path().join(shared_up),
        "CREATE TABLE users (id SERIAL PRIMARY KEY);",
    )
    .unwrap();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 2"));
    assert!(db.check("pg_catalog.to_regclass('acme.invoices') IS NOT NULL"));
    assert!(db.check("pg_catalog.to_regclass('public.users') IS NOT NULL"));
}

#[test]
fn makemigrations_tenant_rejects_bad_input() {
    let db = test_db!("makemigrations_tenant_rejects_bad_input");
    let w = Workdir::new();
    for bad in ["Add", "add-invoices", "../escape", "a b"] {
        w.run(&db, &["m:m:t", bad])
            .fails_with(&format!("invalid migration name `{bad}`"));
    }
    w.run(&db, &["m:m:t", ""])
        .fails_with("invalid migration name ``");
    w.run(&db, &["m:m:t", "create_notes"])
        .fails_with("a migration named `create_notes` already exists");
    w.run(&db, &["--migrations-dir", "nope", "m:m:t", "x"])
        .fails_with("the tenant migrations directory `nope` does not exist");
    w.run(
        &db,
        &["--shared-migrations-dir", "nope", "m:m:t", "x", "--shared"],
    )
    .fails_with("the shared migrations directory `nope` does not exist");
    // Nothing was written.
    assert_eq!(
        fs::read_dir(w.path().join("migrations_tenant"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn makemigrations_tenant_never_reuses_a_version() {
    let db = test_db!("makemigrations_tenant_never_reuses_a_version");
    let w = Workdir::new();
    w.run(&db, &["m:m:t", "one"]).ok();
    w.run(&db, &["m:m:t", "two"]).ok();
    w.run(&db, &["m:m:t", "three"]).ok();
    let mut versions: Vec<String> = fs::read_dir(w.path().join("migrations_tenant"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split_once('_').unwrap().0.to_owned()
        })
        .collect();
    let n = versions.len();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), n, "{versions:?}");
}

// ---------------------------------------------------------------------------------------------
// print-schema

/// The items of a schema file, normalised for comparison: comments, `use` lines and macro paths
/// dropped, whitespace collapsed, the `allow_tables_to_appear_in_same_query!` list sorted, the
/// items sorted.
fn items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") || line.starts_with("use ") {
            continue;
        }
        depth += line.matches(['{', '(']).count() as i32;
        depth -= line.matches(['}', ')']).count() as i32;
        current.push_str(line);
        current.push(' ');
        if depth == 0 {
            let item = current
                .replace("diesel_workspace::", "")
                .replace("diesel::", "")
                .replace(", ", ",");
            let item = match item.strip_prefix("allow_tables_to_appear_in_same_query!(") {
                Some(list) => {
                    let mut names: Vec<&str> = list
                        .trim_end_matches([' ', ';', ')'])
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .collect();
                    names.sort_unstable();
                    format!("allow_tables_to_appear_in_same_query!({})", names.join(","))
                }
                None => item.split_whitespace().collect::<Vec<_>>().join(" "),
            };
            items.push(item);
            current.clear();
        }
    }
    items.sort();
    items
}

#[test]
fn print_schema_reads_a_provisioned_database() {
    let db = test_db!("print_schema_reads_a_provisioned_database");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    let out = w.run(&db, &["print-schema"]).ok().to_owned();

    assert!(
        out.contains("diesel_workspace::tenant_table! {\n    notes (id) {\n"),
        "{out}"
    );
    assert!(
        out.contains("diesel::table! {\n    public.plans (id) {\n"),
        "{out}"
    );
    assert!(
        out.contains("diesel::joinable!(notes -> categories (category_id));"),
        "{out}"
    );
    assert!(
        out.contains("diesel::joinable!(notes -> tags (tag_id));"),
        "{out}"
    );
    assert!(
        out.contains("diesel::allow_tables_to_appear_in_same_query!("),
        "{out}"
    );
    // Neither the ledger nor the registry's own tables.
    assert!(!out.contains("__diesel_schema_migrations"), "{out}");
    assert!(!out.contains("workspaces"), "{out}");

    // The same declarations as the hand-written schema of the library's tests, modulo order.
    let hand_written =
        fs::read_to_string(support::repo_root().join("workspace-diesel/tests/support/schema.rs"))
            .unwrap();
    assert_eq!(items(&out), items(&hand_written));

    // And exactly the file compiled into this test binary.
    if std::env::var_os("UPDATE_GENERATED_SCHEMA").is_some() {
        fs::write(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/support/generated_schema.rs"),
            &out,
        )
        .unwrap();
    }
    assert_eq!(
        out, EXPECTED_SCHEMA,
        "regenerate with UPDATE_GENERATED_SCHEMA=1"
    );

    // --output, and an explicit --tenant, give the same text.
    w.run(
        &db,
        &["print-schema", "--tenant", "acme", "--output", "schema.rs"],
    )
    .ok();
    assert_eq!(fs::read_to_string(w.path().join("schema.rs")).unwrap(), out);
}

#[test]
fn print_schema_without_tenants_builds_a_scratch_schema_and_rolls_it_back() {
    let db = test_db!("print_schema_without_tenants_builds_a_scratch_schema_and_rolls_it_back");
    let w = Workdir::new();
    let out = w.run(&db, &["print-schema"]).ok().to_owned();
    assert_eq!(out, EXPECTED_SCHEMA);
    // Nothing is left behind: no registry, no shared table, no scratch schema.
    assert!(!db.registry_exists());
    assert!(db.check("pg_catalog.to_regclass('public.plans') IS NULL"));
    assert!(db.check(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname LIKE '__workspace%')"
    ));
}

#[test]
fn print_schema_rejects_bad_input() {
    let db = test_db!("print_schema_rejects_bad_input");
    let w = Workdir::new();
    w.run(&db, &["print-schema", "--tenant", "Nope"])
        .fails_with("invalid tenant name `Nope`");
    w.run(&db, &["print-schema", "--tenant", "nope"])
        .fails_with("tenant `nope` does not exist");
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["print-schema", "--tenant", "globex"])
        .fails_with("tenant `globex` does not exist");
    db.conn().batch_execute("DROP SCHEMA acme CASCADE").unwrap();
    w.run(&db, &["print-schema", "--tenant", "acme"])
        .fails_with("the schema of tenant `acme` does not exist");
    w.run(&db, &["print-schema", "--output", "no/such/dir/schema.rs"])
        .fails_with("could not write `no/such/dir/schema.rs`");
}

#[test]
fn print_schema_maps_postgres_types() {
    let db = test_db!("print_schema_maps_postgres_types");
    let w = Workdir::new();
    w.add_migration(
        true,
        "2026-01-02-000000_mood",
        "CREATE TYPE mood AS ENUM ('happy', 'sad');",
        "DROP TYPE mood;",
    );
    w.add_migration(
        false,
        "2026-02-01-000000_kitchen_sink",
        "COMMENT ON TABLE notes IS 'A note.';
         CREATE TABLE kitchen_sink (
            id BIGSERIAL PRIMARY KEY,
            small SMALLINT NOT NULL,
            flag BOOLEAN,
            code VARCHAR(20) NOT NULL,
            initials CHAR(3) NOT NULL,
            price NUMERIC(10, 2) NOT NULL,
            ratio REAL NOT NULL,
            score DOUBLE PRECISION,
            uid UUID NOT NULL,
            doc JSONB NOT NULL,
            raw JSON,
            blob BYTEA NOT NULL,
            day DATE NOT NULL,
            at TIME,
            local_at TIMESTAMP NOT NULL,
            took INTERVAL,
            labels TEXT[] NOT NULL,
            counts INT4[],
            feeling public.mood NOT NULL,
            \"type\" TEXT NOT NULL,
            plan_id INT REFERENCES public.plans (id)
         );
         COMMENT ON COLUMN kitchen_sink.code IS 'Product code.';
         CREATE TABLE no_key (x INT);",
        "DROP TABLE no_key; DROP TABLE kitchen_sink;",
    );
    w.run(&db, &["c:t:s", "acme"]).ok();
    let run = w.run(&db, &["print-schema"]);
    let out = run.ok();
    for line in [
        "pub mod sql_types {",
        "    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]",
        "    #[diesel(postgres_type(name = \"mood\", schema = \"public\"))]",
        "    pub struct Mood;",
        "    use diesel::sql_types::*;",
        "    use super::sql_types::Mood;",
        "    /// A note.",
        "    kitchen_sink (id) {",
        "        id -> Int8,",
        "        small -> Int2,",
        "        flag -> Nullable<Bool>,",
        "        /// Product code.",
        "        #[max_length = 20]",
        "        code -> Varchar,",
        "        #[max_length = 3]",
        "        initials -> Bpchar,",
        "        price -> Numeric,",
        "        ratio -> Float4,",
        "        score -> Nullable<Float8>,",
        "        uid -> Uuid,",
        "        doc -> Jsonb,",
        "        raw -> Nullable<Json>,",
        "        blob -> Bytea,",
        "        day -> Date,",
        "        at -> Nullable<Time>,",
        "        local_at -> Timestamp,",
        "        took -> Nullable<Interval>,",
        "        labels -> Array<Nullable<Text>>,",
        "        counts -> Nullable<Array<Nullable<Int4>>>,",
        "        feeling -> Mood,",
        "        #[sql_name = \"type\"]",
        "        type_ -> Text,",
        "        plan_id -> Nullable<Int4>,",
        "diesel::joinable!(kitchen_sink -> plans (plan_id));",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    assert!(!out.contains("no_key"), "{out}");
    assert!(
        run.stderr
            .contains("warning: skipping table `acme.no_key`: it has no primary key"),
        "{run:#?}"
    );
}

/// The generated declarations work against a database provisioned by the binary: inserts,
/// a join through `joinable!`, and a shared table.
#[test]
fn generated_schema_routes_queries() {
    use generated_schema::{categories, notes, plans};

    let db = test_db!("generated_schema_routes_queries");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    let mut conn = db.conn();
    diesel::insert_into(plans::table)
        .values(plans::name.eq("pro"))
        .execute(&mut conn)
        .unwrap();
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    switch(&acme, || {
        let cat: i32 = diesel::insert_into(categories::table)
            .values(categories::name.eq("work"))
            .returning(categories::id)
            .get_result(&mut conn)
            .unwrap();
        diesel::insert_into(notes::table)
            .values((notes::title.eq("hello"), notes::category_id.eq(cat)))
            .execute(&mut conn)
            .unwrap();
    });
    let joined: Vec<(String, String)> = switch(&acme, || {
        notes::table
            .inner_join(categories::table)
            .select((notes::title, categories::name))
            .load(&mut conn)
            .unwrap()
    });
    assert_eq!(joined, [("hello".to_owned(), "work".to_owned())]);
    let in_globex: i64 = switch(&globex, || {
        notes::table.count().get_result(&mut conn).unwrap()
    });
    assert_eq!(in_globex, 0);
    let plan_names: Vec<String> = plans::table.select(plans::name).load(&mut conn).unwrap();
    assert_eq!(plan_names, ["pro"]);
}
