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
        "set_tenant_status",
        "fill_spares",
        "list_spares",
        "drain_spares",
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

// ---------------------------------------------------------------------------------------------
// migrate_tenant, migrate_all, revert_tenant

/// A second tenant migration adding `notes.x`.
fn add_column_migration(w: &Workdir) {
    w.add_migration(
        false,
        "2026-02-01-000000_add_x",
        "ALTER TABLE notes ADD COLUMN x INT;",
        "ALTER TABLE notes DROP COLUMN x;",
    );
}

fn has_x(db: &TestDb, tenant: &str) -> bool {
    db.check(&format!(
        "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{tenant}' \
         AND table_name = 'notes' AND column_name = 'x')"
    ))
}

use support::TestDb;

#[test]
fn migrate_tenant_applies_pending_migrations_to_one_tenant() {
    let db = test_db!("migrate_tenant_applies_pending_migrations_to_one_tenant");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);
    assert_eq!(
        w.run(&db, &["migrate_tenant", "acme"]).ok(),
        "tenant `acme`: applied 20260201000000\n"
    );
    assert!(has_x(&db, "acme"));
    assert!(!has_x(&db, "globex"));
    assert_eq!(
        w.run(&db, &["m:t", "acme"]).ok(),
        "tenant `acme` is up to date\n"
    );
    assert_eq!(
        w.run(&db, &["m:t", "globex"]).ok(),
        "tenant `globex`: applied 20260201000000\n"
    );
    assert!(has_x(&db, "globex"));
}

#[test]
fn migrate_tenant_rejects_bad_input() {
    let db = test_db!("migrate_tenant_rejects_bad_input");
    let w = Workdir::new();
    w.run(&db, &["m:t", "nope"])
        .fails_with("tenant `nope` does not exist");
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["m:t", "Acme"])
        .fails_with("invalid tenant name `Acme`");
    w.run(&db, &["m:t", "nope"])
        .fails_with("tenant `nope` does not exist");
    assert_eq!(
        w.run(&db, &["m:t", "acme", "--all"]).code,
        2,
        "a usage error"
    );

    // A failing migration: one error line naming the tenant, the version and PostgreSQL's
    // message; nothing of it is kept.
    w.add_migration(
        false,
        "2026-02-01-000000_broken",
        "ALTER TABLE notes ADD COLUMN x INT; ALTER TABLE nope ADD COLUMN y INT;",
        "",
    );
    let line = w
        .run(&db, &["m:t", "acme"])
        .fails_with("migration failed for tenant `acme`")
        .to_owned();
    assert!(line.contains("20260201000000"), "{line}");
    assert!(line.contains("\"nope\" does not exist"), "{line}");
    assert!(!has_x(&db, "acme"));
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"));
}

#[test]
fn migrate_all_migrates_the_fleet() {
    let db = test_db!("migrate_all_migrates_the_fleet");
    let w = Workdir::new();
    for t in ["acme", "globex", "initech"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    // Nothing pending: no tenant is touched, only the summary is printed.
    let out = w.run(&db, &["migrate_all"]).ok().to_owned();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("migrated 3 tenants in "), "{out}");
    assert!(
        out.ends_with(": 0 applied, 3 up to date, 0 failed, 0 skipped\n"),
        "{out}"
    );
    add_column_migration(&w);
    let out = w
        .run(&db, &["migrate_all", "--parallel", "2"])
        .ok()
        .to_owned();
    let progress: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), 3, "{out}");
    for t in ["acme", "globex", "initech"] {
        assert!(
            progress
                .iter()
                .any(|l| l.contains(&format!("] {t}: applied 20260201000000 (0 failed"))),
            "{out}"
        );
        assert!(has_x(&db, t));
    }
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("migrated 3 tenants in "), "{out}");
    assert!(
        last.ends_with(": 3 applied, 0 up to date, 0 failed, 0 skipped"),
        "{out}"
    );

    // `migrate_tenant --all` is the same command.
    let out = w.run(&db, &["m:t", "--all"]).ok().to_owned();
    assert!(
        out.ends_with(": 0 applied, 3 up to date, 0 failed, 0 skipped\n"),
        "{out}"
    );
}

#[test]
fn migrate_all_reports_failures_and_exits_non_zero() {
    let db = test_db!("migrate_all_reports_failures_and_exits_non_zero");
    let w = Workdir::new();
    for t in ["acme", "globex", "initech"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    add_column_migration(&w);
    // `acme` already has the column: its migration fails (duplicate column, 42701).
    db.conn()
        .batch_execute("ALTER TABLE acme.notes ADD COLUMN x INT")
        .unwrap();

    // Stop (the default): with one worker, the tenants after `acme` are skipped.
    let run = w.run(&db, &["migrate_all", "--parallel", "1"]);
    run.fails_with("migration failed for 1 of 3 tenants: `acme`");
    assert!(
        run.stdout
            .contains("[1/3] acme: FAILED: migration 20260201000000 failed with sqlstate 42701"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("0 applied, 0 up to date, 1 failed, 2 skipped"),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("  failed: acme: migration 20260201000000"),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("skipped after the first failure"),
        "{run:#?}"
    );
    assert!(!has_x(&db, "globex"));

    // --continue-on-error: the others are migrated, the exit code still says something failed.
    let run = w.run(
        &db,
        &["m:t", "--all", "--continue-on-error", "--parallel", "2"],
    );
    run.fails_with("migration failed for 1 of 3 tenants: `acme`");
    assert!(
        run.stdout
            .contains("2 applied, 0 up to date, 1 failed, 0 skipped"),
        "{run:#?}"
    );
    assert!(has_x(&db, "globex") && has_x(&db, "initech"));
    // The failed tenant kept nothing of its run.
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"));
}

#[test]
fn revert_tenant_reverts_the_last_migration() {
    let db = test_db!("revert_tenant_reverts_the_last_migration");
    let w = Workdir::new();
    add_column_migration(&w);
    for t in ["acme", "globex"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    assert_eq!(
        w.run(&db, &["revert_tenant", "acme"]).ok(),
        "tenant `acme`: reverted 20260201000000\n"
    );
    assert!(!has_x(&db, "acme"));
    assert!(has_x(&db, "globex"));
    w.run(&db, &["revert_tenant", "nope"])
        .fails_with("tenant `nope` does not exist");
    w.run(&db, &["revert_tenant", "No"])
        .fails_with("invalid tenant name `No`");

    let out = w.run(&db, &["revert_tenant", "--all"]).ok().to_owned();
    assert!(out.contains("acme: reverted 20260101000001"), "{out}");
    assert!(out.contains("globex: reverted 20260201000000"), "{out}");
    assert!(
        out.ends_with(": 2 reverted, 0 up to date, 0 failed, 0 skipped\n"),
        "{out}"
    );
    assert!(db.check("pg_catalog.to_regclass('acme.notes') IS NULL"));
}

// ---------------------------------------------------------------------------------------------
// list_tenants, status

#[test]
fn list_tenants_shows_each_tenants_state() {
    let db = test_db!("list_tenants_shows_each_tenants_state");
    let w = Workdir::new();
    assert_eq!(w.run(&db, &["list_tenants"]).ok(), "no tenants\n");
    w.run(&db, &["c:t:s", "globex"]).ok();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert_eq!(
        w.run(&db, &["list_tenants"]).ok(),
        "TENANT  APPLIED  PENDING  STATE\n\
         acme          1        0  up to date\n\
         globex        1        0  up to date\n"
    );
    add_column_migration(&w);
    w.run(&db, &["m:t", "acme"]).ok();
    assert_eq!(
        w.run(&db, &["list_tenants"]).ok(),
        "TENANT  APPLIED  PENDING  STATE\n\
         acme          2        0  up to date\n\
         globex        1        1  1 pending (20260201000000)\n"
    );
}

#[test]
fn status_summarises_shared_and_tenant_migrations() {
    let db = test_db!("status_summarises_shared_and_tenant_migrations");
    let w = Workdir::new();
    assert_eq!(
        w.run(&db, &["status"]).ok(),
        "shared migrations: 0 applied, 2 pending (00000000000000, 20260101000001)\n\
         tenant migrations: 1 migration, latest 20260101000001\n\
         tenants: 0 (0 up to date, 0 with pending migrations, 0 drifted)\n"
    );
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);
    // A ledger that disagrees with the central record is drift.
    db.conn()
        .batch_execute("DELETE FROM acme.__diesel_schema_migrations")
        .unwrap();
    db.conn()
        .batch_execute("CREATE TABLE public.notes (id int)")
        .unwrap();
    let run = w.run(&db, &["status"]);
    let out = run.ok().to_owned();
    // Hazards go to stderr: the tests connect as a superuser, and a shared table shadows `notes`.
    assert_eq!(
        run.stderr,
        "warning: the application connects as `postgres`, a superuser: privileges do not contain its mistakes\n\
         warning: shared table `notes` has the name of a tenant table: unqualified names in raw SQL, triggers and functions may reach it\n"
    );
    assert!(
        out.starts_with("shared migrations: 2 applied, 0 pending\n"),
        "{out}"
    );
    assert!(
        out.contains("tenant migrations: 2 migrations, latest 20260201000000\n"),
        "{out}"
    );
    assert!(
        out.contains("tenants: 2 (0 up to date, 2 with pending migrations, 1 drifted)\n"),
        "{out}"
    );
    assert!(
        out.contains("  acme: 1 pending (20260201000000); drift: "),
        "{out}"
    );
    assert!(
        out.contains("  globex: 1 pending (20260201000000)\n"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// drop_tenant, rename_tenant

#[test]
fn drop_tenant_needs_confirmation() {
    let db = test_db!("drop_tenant_needs_confirmation");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    w.run(&db, &["drop_tenant", "acme"])
        .fails_with("refusing to drop tenant `acme` without confirmation: pass --yes");
    assert!(db.schema_exists("acme"));
    assert_eq!(
        w.run(&db, &["drop_tenant", "acme", "--yes"]).ok(),
        "dropped tenant `acme`\n"
    );
    assert!(!db.schema_exists("acme"));
    assert!(db.check("NOT EXISTS (SELECT 1 FROM public.workspaces WHERE schema_name = 'acme')"));
    assert!(db.check(
        "NOT EXISTS (SELECT 1 FROM public.workspace_migrations WHERE schema_name = 'acme')"
    ));
    assert!(db.schema_exists("globex"));
    w.run(&db, &["drop_tenant", "acme", "-y"])
        .fails_with("tenant `acme` does not exist");
    w.run(&db, &["drop_tenant", "public", "-y"])
        .fails_with("invalid tenant name `public`");
}

#[test]
fn rename_tenant_moves_schema_and_records() {
    let db = test_db!("rename_tenant_moves_schema_and_records");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    assert_eq!(
        w.run(&db, &["rename_tenant", "acme", "acme_corp"]).ok(),
        "renamed tenant `acme` to `acme_corp`\n"
    );
    assert!(!db.schema_exists("acme"));
    assert!(db.check("pg_catalog.to_regclass('acme_corp.notes') IS NOT NULL"));
    let list = w.run(&db, &["list_tenants"]).ok().to_owned();
    assert!(
        list.lines()
            .any(|l| l.starts_with("acme_corp ") && l.ends_with(" 1        0  up to date")),
        "{list}"
    );
    w.run(&db, &["rename_tenant", "acme", "x"])
        .fails_with("tenant `acme` does not exist");
    w.run(&db, &["rename_tenant", "acme_corp", "globex"])
        .fails_with("tenant `globex` already exists");
    w.run(&db, &["rename_tenant", "acme_corp", "Bad"])
        .fails_with("invalid tenant name `Bad`");
    assert!(db.schema_exists("acme_corp") && db.schema_exists("globex"));
}

#[test]
fn set_tenant_status_changes_the_registry_state() {
    let db = test_db!("set_tenant_status_changes_the_registry_state");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert_eq!(
        w.run(&db, &["set_tenant_status", "acme", "suspended"]).ok(),
        "tenant `acme`: active -> suspended\n"
    );
    assert!(db.check(
        "(SELECT status::text FROM public.workspaces WHERE schema_name = 'acme') = 'suspended'"
    ));
    assert_eq!(
        w.run(&db, &["set_tenant_status", "acme", "archived"]).ok(),
        "tenant `acme`: suspended -> archived\n"
    );
    assert_eq!(
        w.run(&db, &["set_tenant_status", "acme", "active"]).ok(),
        "tenant `acme`: archived -> active\n"
    );
    w.run(&db, &["set_tenant_status", "nobody", "active"])
        .fails_with("tenant `nobody` does not exist");
    w.run(&db, &["set_tenant_status", "Bad", "active"])
        .fails_with("invalid tenant name `Bad`");
    let run = w.run(&db, &["set_tenant_status", "acme", "paused"]);
    assert_eq!(run.code, 2, "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// fill_spares, list_spares, drain_spares

/// The spare schemas `list_spares` prints, in its order.
fn list_spares(w: &Workdir, db: &TestDb) -> Vec<String> {
    w.run(db, &["list_spares"])
        .ok()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn spare_schemas(db: &TestDb) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT pg_catalog.count(*) AS n FROM pg_catalog.pg_namespace WHERE nspname LIKE '\\_spare\\_%'",
    )
    .get_result::<Count>(&mut db.conn())
    .unwrap()
    .n
}

#[test]
fn spares_fill_list_claim_and_drain() {
    let db = test_db!("spares_fill_list_claim_and_drain");
    let w = Workdir::new();
    // An empty pool, before the shared migrations have run: nothing is created.
    assert_eq!(w.run(&db, &["list_spares"]).ok(), "no spares\n");
    assert_eq!(w.run(&db, &["drain_spares"]).ok(), "no spares\n");
    assert!(!db.registry_exists());

    assert_eq!(
        w.run(&db, &["fill_spares", "3"]).ok(),
        "created 3 spare schemas (3 in the warm pool)\n"
    );
    let spares = list_spares(&w, &db);
    assert_eq!(spares.len(), 3, "{spares:?}");
    for spare in &spares {
        assert!(spare.starts_with("_spare_"), "{spare}");
        assert!(db.check(&format!(
            "pg_catalog.to_regclass('{spare}.notes') IS NOT NULL"
        )));
    }
    assert_eq!(spare_schemas(&db), 3);
    // Spares are not tenants.
    assert_eq!(w.run(&db, &["list_tenants"]).ok(), "no tenants\n");
    // A full pool is left as it is.
    assert_eq!(
        w.run(&db, &["fill_spares", "3"]).ok(),
        "created 0 spare schemas (3 in the warm pool)\n"
    );
    assert_eq!(list_spares(&w, &db), spares);

    // Creating a tenant claims the oldest spare.
    assert_eq!(
        w.run(&db, &["c:t:s", "acme"]).ok(),
        "created tenant `acme` (schema \"acme\", 1 migration applied)\n"
    );
    assert_eq!(list_spares(&w, &db), spares[1..]);
    assert!(!db.schema_exists(&spares[0]));
    assert!(db.check("pg_catalog.to_regclass('acme.notes') IS NOT NULL"));
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"));
    assert!(db.check(
        "(SELECT count(*) FROM public.workspace_migrations WHERE schema_name = 'acme') = 1"
    ));
    let tenants = w.run(&db, &["list_tenants"]).ok().to_owned();
    assert!(
        tenants
            .lines()
            .any(|l| l.starts_with("acme ") && l.ends_with("up to date")),
        "{tenants}"
    );

    // Draining asks first; without a terminal it refuses.
    w.run(&db, &["drain_spares"]).fails_with(
        "refusing to drain the warm pool without confirmation: pass --yes (standard input is not a terminal)",
    );
    assert_eq!(list_spares(&w, &db).len(), 2);
    assert_eq!(
        w.run(&db, &["drain_spares", "--yes"]).ok(),
        "dropped 2 spare schemas\n"
    );
    assert_eq!(w.run(&db, &["list_spares"]).ok(), "no spares\n");
    assert_eq!(spare_schemas(&db), 0);
    assert!(db.check(
        "NOT EXISTS (SELECT 1 FROM public.workspace_migrations WHERE schema_name LIKE '\\_spare\\_%')"
    ));
    assert_eq!(w.run(&db, &["drain_spares", "-y"]).ok(), "no spares\n");
    // The tenant is untouched.
    assert!(db.check("pg_catalog.to_regclass('acme.notes') IS NOT NULL"));
}

#[test]
fn fill_spares_brings_stale_spares_up_to_date() {
    let db = test_db!("fill_spares_brings_stale_spares_up_to_date");
    let w = Workdir::new();
    w.run(&db, &["fill_spares", "2"]).ok();
    let spares = list_spares(&w, &db);
    add_column_migration(&w);
    assert_eq!(
        w.run(&db, &["fill_spares", "2"]).ok(),
        "created 0 spare schemas (2 in the warm pool)\n"
    );
    assert_eq!(list_spares(&w, &db), spares);
    for spare in &spares {
        assert!(has_x(&db, spare), "{spare}");
    }
    // Current again, the oldest is claimed with both migrations.
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert_eq!(list_spares(&w, &db), spares[1..]);
    assert!(has_x(&db, "acme"));
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 2"));
}

#[test]
fn fill_spares_rejects_bad_input() {
    let db = test_db!("fill_spares_rejects_bad_input");
    let w = Workdir::new();
    // Checked before connecting: nothing reaches the database.
    for bad in ["-3", "1001", "99999999999999999999999", "three", "2.5", ""] {
        w.run(&db, &["fill_spares", bad]).fails_with(&format!(
            "invalid spare count `{bad}`: expected a whole number from 0 to 1000"
        ));
    }
    assert!(!db.registry_exists());
    assert_eq!(spare_schemas(&db), 0);
    assert_eq!(w.run(&db, &["fill_spares"]).code, 2, "a usage error");
    w.run(&db, &["--migrations-dir", "nope", "fill_spares", "1"])
        .fails_with("the tenant migrations directory `nope` does not exist");

    // A broken tenant migration: the spare being made is rolled back, one error line.
    w.add_migration(
        false,
        "2026-02-01-000000_broken",
        "SELECT * FROM no_such_table;",
        "",
    );
    let line = w
        .run(&db, &["fill_spares", "1"])
        .fails_with("could not fill the warm pool")
        .to_owned();
    assert!(line.contains("no_such_table"), "{line}");
    assert_eq!(spare_schemas(&db), 0);
    assert_eq!(w.run(&db, &["list_spares"]).ok(), "no spares\n");
}

// ---------------------------------------------------------------------------------------------
// every command

#[test]
fn every_database_command_reports_an_unreachable_database_in_one_line() {
    let db = test_db!("every_database_command_reports_an_unreachable_database_in_one_line");
    let w = Workdir::new();
    for args in [
        &["c:t:s", "acme"][..],
        &["m:t", "acme"],
        &["m:t", "--all"],
        &["migrate_all"],
        &["revert_tenant", "acme"],
        &["revert_tenant", "--all"],
        &["list_tenants"],
        &["status"],
        &["drop_tenant", "acme", "--yes"],
        &["rename_tenant", "acme", "globex"],
        &["fill_spares", "3"],
        &["list_spares"],
        &["drain_spares", "--yes"],
        &["print-schema"],
    ] {
        let run = Run::from(
            w.cmd(&db)
                .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
                .args(args)
                .output()
                .unwrap(),
        );
        let line = run.fails_with("could not connect to the database");
        assert!(line.contains("127.0.0.1"), "{args:?}: {line}");
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let db = test_db!("a_closed_stdout_ends_the_command_quietly");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["fill_spares", "1"]).ok();
    for args in [
        &["list_tenants"][..],
        &["print-schema"],
        &["status"],
        &["list_spares"],
    ] {
        let mut child = w
            .cmd(&db)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command writes (as `| head -0` would).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

/// On a terminal, fleet progress is a bar on stderr (failures printed above it), not one line per
/// tenant. Runs the binary under `script` (util-linux) for a pseudo-terminal; skipped without it.
#[test]
fn fleet_progress_is_a_bar_on_a_terminal() {
    let db = test_db!("fleet_progress_is_a_bar_on_a_terminal");
    let w = Workdir::new();
    for t in ["acme", "globex"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    add_column_migration(&w);
    db.conn()
        .batch_execute("ALTER TABLE acme.notes ADD COLUMN x INT")
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_workspace-diesel");
    let run = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("'{bin}' migrate_all --continue-on-error --parallel 1"),
            "/dev/null",
        ])
        .current_dir(w.path())
        .env("DATABASE_URL", db.url())
        .env("TERM", "xterm")
        .env_remove("RUST_LOG")
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("`script` is not available: skipped");
            return;
        }
        Err(e) => panic!("run script: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("acme: FAILED: migration 20260201000000"),
        "{text}"
    );
    assert!(text.contains("/2 tenants, "), "no progress bar: {text}");
    assert!(
        !text.contains("[1/2]"),
        "plain progress lines on a terminal: {text}"
    );
    assert!(
        text.contains("1 applied, 0 up to date, 1 failed, 0 skipped"),
        "{text}"
    );
    assert!(
        text.contains("error: migration failed for 1 of 2 tenants: `acme`"),
        "{text}"
    );
}
