//! `plan`, `migrate_all --dry-run`, the lock budget (`--max-lock-table-size`, exit status 3, its
//! negative control) and the fleet-cost lines of `lint_migrations`.

use serde_json::Value;

use super::*;

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = diesel::sql_types::Text)]
    line: String,
}

/// `pg_class`, `pg_attribute`, the central record and the tenants' ledgers, as text.
fn snapshot(db: &TestDb, tenants: &[&str]) -> Vec<String> {
    let mut conn = db.conn();
    let mut queries = vec![
        "SELECT c::text AS line FROM pg_catalog.pg_class c ORDER BY c.oid".to_owned(),
        "SELECT a::text AS line FROM pg_catalog.pg_attribute a ORDER BY a.attrelid, a.attnum"
            .to_owned(),
        "SELECT m::text AS line FROM public.workspace_migrations m ORDER BY 1".to_owned(),
    ];
    for t in tenants {
        queries.push(format!(
            "SELECT l::text AS line FROM {t}.__diesel_schema_migrations l ORDER BY 1"
        ));
    }
    queries
        .iter()
        .map(|q| {
            diesel::sql_query(q)
                .load::<Line>(&mut conn)
                .unwrap()
                .into_iter()
                .map(|l| l.line)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

fn has_rank(db: &TestDb, tenant: &str) -> bool {
    db.check(&format!(
        "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{tenant}' \
         AND table_name = 'notes' AND column_name = 'rank')"
    ))
}

#[test]
fn plan_budget_and_dry_run() {
    let db = test_db!("cli_plan_budget_and_dry_run");
    let w = Workdir::new();
    for t in ["big", "small"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    let mut conn = db.conn();
    conn.batch_execute(
        "INSERT INTO big.notes (title, body) SELECT 'note ' || g, repeat('x', 100) \
         FROM generate_series(1, 50000) g",
    )
    .unwrap();
    conn.batch_execute("VACUUM ANALYZE").unwrap();
    w.add_migration(
        false,
        "2026-02-01-000000_costly",
        "CREATE INDEX notes_title_idx ON notes (title);\n\
         ALTER TABLE notes ADD COLUMN rank INTEGER NOT NULL DEFAULT 0;\n\
         ALTER TABLE notes ALTER COLUMN body TYPE VARCHAR(500);\n",
        "ALTER TABLE notes ALTER COLUMN body TYPE TEXT; ALTER TABLE notes DROP COLUMN rank; \
         DROP INDEX notes_title_idx;",
    );
    let tenants = ["big", "small"];
    let was = snapshot(&db, &tenants);

    // The plan, in JSON: the lock of each statement, each tenant's table sizes.
    let run = w.run(&db, &["--format", "json", "plan"]);
    let doc: Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(doc["command"], "plan");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["budget"], Value::Null);
    let statements = doc["migrations"][0]["statements"].as_array().unwrap();
    let locks: Vec<(u64, &str, &str)> = statements
        .iter()
        .map(|s| {
            (
                s["line"].as_u64().unwrap(),
                s["locks"][0]["table"].as_str().unwrap(),
                s["locks"][0]["lock"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        locks,
        [
            (1, "notes", "SHARE"),
            (2, "notes", "ACCESS EXCLUSIVE"),
            (3, "notes", "ACCESS EXCLUSIVE")
        ]
    );
    let rules: Vec<Vec<&str>> = statements
        .iter()
        .map(|s| {
            s["costs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["rule"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        rules,
        [
            vec!["index_without_concurrently"],
            vec![],
            vec!["type_change"]
        ]
    );
    let sizes: Vec<(&str, i64)> = doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["tables"].as_array().unwrap().len(), 1, "{t}");
            (
                t["tenant"].as_str().unwrap(),
                t["tables"][0]["bytes"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sizes[0].0, "big");
    assert!(sizes[0].1 > 5 << 20, "{sizes:?}");
    assert_eq!(sizes[1].0, "small");
    assert!(sizes[1].1 < 1 << 20, "{sizes:?}");
    assert_eq!(doc["tenants"][0]["tables"][0]["rows"], 50000);

    // Human output names the same.
    let text = w.run(&db, &["plan"]).ok().to_owned();
    assert!(text.contains("plan: 2 tenants to migrate"), "{text}");
    assert!(text.contains("locks: SHARE on notes"), "{text}");
    assert!(text.contains("cost: type_change"), "{text}");
    assert!(text.contains("tenant big: 1 pending; big.notes "), "{text}");

    // Over the budget: exit status 3, the locks on big's notes listed, small's not.
    let over = w.run(&db, &["plan", "--max-lock-table-size", "1MB"]);
    assert_eq!(over.code, 3, "{over:#?}");
    assert!(
        over.stderr
            .contains("3 statements would take a SHARE lock or stronger on a table over 1024 kB"),
        "{over:#?}"
    );
    assert_eq!(over.stdout.matches("  over: big ").count(), 3, "{over:#?}");
    assert!(!over.stdout.contains("over: small"), "{over:#?}");
    let over = w.run(
        &db,
        &[
            "--format",
            "json",
            "plan",
            "--max-lock-table-size",
            "1MB",
            "--strong-lock",
            "access_exclusive",
        ],
    );
    assert_eq!(over.code, 3, "{over:#?}");
    let doc: Value = serde_json::from_str(&over.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["budget"]["strong_lock"], "ACCESS EXCLUSIVE");
    assert_eq!(doc["budget"]["over"].as_array().unwrap().len(), 2);
    // The negative control: within the budget, exit status 0.
    let within = w.run(&db, &["plan", "--max-lock-table-size", "1GB"]);
    assert!(within
        .ok()
        .contains("lock budget: SHARE or stronger on tables up to 1024 MB: within"));
    w.run(&db, &["plan", "--max-lock-table-size", "lots"])
        .fails_usage("invalid size `lots`");
    w.run(
        &db,
        &[
            "plan",
            "--max-lock-table-size",
            "1MB",
            "--strong-lock",
            "sharp",
        ],
    )
    .fails_usage("unknown lock level `sharp`");
    assert_eq!(snapshot(&db, &tenants), was, "plan changed something");

    // migrate_all --dry-run is the plan; over the budget migrate_all applies nothing.
    let dry = w.run(&db, &["migrate_all", "--dry-run"]);
    assert!(dry.ok().contains("plan: 2 tenants to migrate"));
    let refused = w.run(&db, &["migrate_all", "--max-lock-table-size", "1MB"]);
    assert_eq!(refused.code, 3, "{refused:#?}");
    assert!(
        refused.stderr.contains("nothing was applied"),
        "{refused:#?}"
    );
    assert_eq!(
        snapshot(&db, &tenants),
        was,
        "a refused run changed something"
    );
    assert!(!has_rank(&db, "big") && !has_rank(&db, "small"));
    // Within the budget, the run goes on.
    w.run(&db, &["migrate_all", "--max-lock-table-size", "1GB"])
        .ok();
    assert!(has_rank(&db, "big") && has_rank(&db, "small"));
    let after = w.run(&db, &["plan"]);
    assert!(
        after
            .ok()
            .starts_with("plan: 0 tenants to migrate, 2 up to date"),
        "{after:#?}"
    );
}

#[test]
fn lint_flags_costly_forms_and_not_cheap_ones() {
    let db = test_db!("cli_lint_flags_costly_forms_and_not_cheap_ones");
    let w = Workdir::new();
    w.run(&db, &["setup"]).ok();
    // The example migrations alone: nothing costly (their tables are new).
    let clean = w.run(&db, &["lint_migrations", "--deny-costs"]);
    assert!(!clean.ok().contains("cost:"), "{clean:#?}");
    w.add_migration(
        false,
        "2026-02-01-000000_cheap",
        "ALTER TABLE notes ADD COLUMN rank INTEGER;\n\
         ALTER TABLE notes ADD COLUMN flag BOOLEAN NOT NULL DEFAULT false;\n\
         ALTER TABLE notes ADD CONSTRAINT rank_pos CHECK (rank > 0) NOT VALID;\n\
         ALTER TABLE notes VALIDATE CONSTRAINT rank_pos;\n",
        "SELECT 1;",
    );
    let cheap = w.run(&db, &["lint_migrations", "--deny-costs"]);
    assert!(!cheap.ok().contains("cost:"), "{cheap:#?}");
    w.add_migration(
        false,
        "2026-03-01-000000_costly",
        "ALTER TABLE notes ADD COLUMN uid UUID DEFAULT gen_random_uuid();\n\
         ALTER TABLE notes ALTER COLUMN rank TYPE BIGINT;\n\
         ALTER TABLE notes ALTER COLUMN rank SET NOT NULL;\n\
         CREATE INDEX notes_rank_idx ON notes (rank);\n\
         ALTER TABLE notes ADD CONSTRAINT rank_small CHECK (rank < 100);\n",
        "SELECT 1;",
    );
    let run = w.run(&db, &["lint_migrations"]);
    let out = run.ok();
    for (line, rule) in [
        (1, "volatile_default"),
        (2, "type_change"),
        (3, "set_not_null"),
        (4, "index_without_concurrently"),
        (5, "constraint_without_not_valid"),
    ] {
        let needle = format!("cost: migration `20260301000000`, line {line}: {rule} on notes");
        assert!(out.contains(&needle), "{needle} in {out}");
    }
    assert_eq!(out.matches("cost:").count(), 5, "{out}");
    assert!(out.contains("instead: CREATE INDEX CONCURRENTLY"), "{out}");
    w.run(&db, &["lint_migrations", "--deny-costs"])
        .fails_with("5 statements in the tenant migrations whose cost grows");
}
