//! `print-schema`.

use super::*;

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
        fs::read_to_string(support::repo_root().join("tests/src/schema.rs")).unwrap();
    assert_eq!(items(&out), items(&hand_written));

    // And exactly the file compiled into this test binary.
    if std::env::var_os("UPDATE_GENERATED_SCHEMA").is_some() {
        fs::write(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cli/generated_schema.rs"),
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

#[test]
fn print_schema_filters_tables_and_names_what_it_skips() {
    let db = test_db!("print_schema_filters_tables_and_names_what_it_skips");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    db.conn()
        .batch_execute(
            "CREATE VIEW acme.recent_notes AS SELECT id, title FROM acme.notes; \
             CREATE MATERIALIZED VIEW public.plan_names AS SELECT 1 AS one; \
             CREATE TABLE acme.audit_log (id SERIAL PRIMARY KEY); \
             CREATE TABLE acme.events (id INT, at DATE, PRIMARY KEY (id, at)) PARTITION BY RANGE (at); \
             CREATE TABLE acme.events_2026 PARTITION OF acme.events \
               FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        )
        .unwrap();
    let run = w.run(
        &db,
        &[
            "print-schema",
            "--only-tables",
            "^notes$",
            "^plans$",
            "^events$",
        ],
    );
    let out = run.ok().to_owned();
    assert!(out.contains("    notes (id) {"), "{out}");
    assert!(out.contains("    public.plans (id) {"), "{out}");
    assert!(out.contains("    events (id, at) {"), "{out}");
    for absent in [
        "tags (",
        "categories (",
        "audit_log (",
        "recent_notes",
        "plan_names",
    ] {
        assert!(!out.contains(absent), "{absent}: {out}");
    }
    // notes' foreign keys point at tables not printed: no joinable! for them.
    assert!(!out.contains("joinable!(notes -> tags"), "{out}");
    let mut warnings: Vec<&str> = run.stderr.lines().collect();
    warnings.sort_unstable();
    assert_eq!(
        warnings,
        [
            "warning: skipping materialized view `public.plan_names`: print-schema does not print views",
            "warning: skipping partition `acme.events_2026`: its partitioned table is printed instead",
            "warning: skipping table `acme.audit_log`: it matches no --only-tables pattern",
            "warning: skipping table `acme.categories`: it matches no --only-tables pattern",
            "warning: skipping table `acme.tags`: it matches no --only-tables pattern",
            "warning: skipping view `acme.recent_notes`: print-schema does not print views",
        ]
    );

    let run = w.run(&db, &["print-schema", "--except-tables", "^audit_", "tags"]);
    let out = run.ok().to_owned();
    assert!(
        out.contains("    categories (id) {") && out.contains("    notes (id) {"),
        "{out}"
    );
    assert!(
        !out.contains("audit_log") && !out.contains("tags ("),
        "{out}"
    );
    assert!(
        run.stderr.contains(
            "warning: skipping table `acme.audit_log`: it matches an --except-tables pattern\n"
        ),
        "{run:#?}"
    );

    // From the config file: the output file and the filter; flags still win.
    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[print_schema]\nfile = \"src/schema.rs\"\nexcept_tables = [\"^audit_log$\"]\n",
    )
    .unwrap();
    fs::create_dir_all(w.path().join("src")).unwrap();
    let run = w.run(&db, &["print-schema"]);
    assert_eq!(run.ok(), "");
    let written = fs::read_to_string(w.path().join("src/schema.rs")).unwrap();
    assert!(
        written.contains("    tags (id) {") && !written.contains("audit_log"),
        "{written}"
    );
    let run = w.run(
        &db,
        &[
            "print-schema",
            "--only-tables",
            "audit",
            "--output-file",
            "other.rs",
        ],
    );
    run.ok();
    let other = fs::read_to_string(w.path().join("other.rs")).unwrap();
    assert!(
        other.contains("    audit_log (id) {") && !other.contains("tags ("),
        "{other}"
    );

    let run = w.run(&db, &["print-schema", "--only-tables", "("]);
    run.fails_with("invalid regular expression `(` in --only-tables");
    let run = w.run(
        &db,
        &["print-schema", "--only-tables", "a", "--except-tables", "b"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
}
