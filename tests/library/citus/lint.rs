//! The Citus lint, rule by rule: a passing and a failing migration for each, checked by the lint
//! and, on the cluster, by Citus itself in a distributed schema (the failing one is refused, or
//! for a missing primary key, the tenant cannot be moved).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{citus::CitusLint, citus::CitusRule};
use workspace_diesel_tests::citus_db;

/// Each rule: a migration Citus accepts, one it cannot do, and what Citus says about the latter.
const CASES: &[(CitusRule, &str, &str, &str)] = &[
    (
        CitusRule::Trigger,
        "CREATE TABLE a (id INT PRIMARY KEY, n INT NOT NULL DEFAULT 0); \
         CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.n := NEW.n + 1; RETURN NEW; END $$",
        "CREATE TABLE a (id INT PRIMARY KEY, n INT NOT NULL DEFAULT 0); \
         CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.n := NEW.n + 1; RETURN NEW; END $$; \
         CREATE TRIGGER a_bump BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION bump()",
        "triggers are not supported on distributed tables",
    ),
    (
        CitusRule::SerialColumnAdded,
        "CREATE TABLE a (id SERIAL PRIMARY KEY); ALTER TABLE a ADD COLUMN n INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE a (id INT PRIMARY KEY); ALTER TABLE a ADD COLUMN n SERIAL",
        "involving serial pseudotypes",
    ),
    (
        CitusRule::ForeignKeyToOtherSchema,
        "CREATE TABLE a (id INT PRIMARY KEY); CREATE TABLE b (id INT PRIMARY KEY, a_id INT REFERENCES a (id))",
        "CREATE TABLE b (id INT PRIMARY KEY, a_id INT REFERENCES other_tenant.a (id))",
        "not colocated or not referencing a reference table",
    ),
    (
        CitusRule::ForeignKeyToNonReferenceTable,
        "CREATE TABLE b (id INT PRIMARY KEY, plan_id INT REFERENCES public.lint_plans (id))",
        "CREATE TABLE b (id INT PRIMARY KEY, user_id INT REFERENCES public.lint_users (id))",
        "must be a distributed table or a reference table",
    ),
    (
        CitusRule::NoPrimaryKey,
        "CREATE TABLE log (id BIGINT, at TIMESTAMPTZ NOT NULL DEFAULT now()); \
         ALTER TABLE log ADD PRIMARY KEY (id); INSERT INTO log (id) VALUES (1)",
        "CREATE TABLE log (id BIGINT, at TIMESTAMPTZ NOT NULL DEFAULT now()); INSERT INTO log (id) VALUES (1)",
        "doesn't have a REPLICA IDENTITY or PRIMARY KEY",
    ),
];

fn lint() -> CitusLint {
    CitusLint::new().reference_table("lint_plans")
}

#[test]
fn each_rule_passes_and_fails_in_the_lint() {
    for &(rule, pass, fail, _) in CASES {
        assert_eq!(
            lint().check([("20260101000001", pass)]).unwrap(),
            [],
            "{rule:?}: {pass}"
        );
        let findings = lint().check([("20260101000001", fail)]).unwrap();
        assert_eq!(findings.len(), 1, "{rule:?}: {findings:?}");
        assert_eq!(findings[0].rule(), rule);
        assert_eq!(findings[0].version(), "20260101000001");
        assert!(
            findings[0]
                .to_string()
                .starts_with("migration `20260101000001`, line 1: "),
            "{}",
            findings[0]
        );
    }
}

/// Runs `sql` statement by statement in a new distributed schema `schema`, in one transaction.
fn apply(conn: &mut PgConnection, schema: &str, sql: &str) -> Result<(), String> {
    conn.batch_execute(&format!(
        "BEGIN; SET LOCAL citus.enable_schema_based_sharding = on; CREATE SCHEMA {schema}; \
         SET LOCAL search_path TO {schema}"
    ))
    .map_err(|e| e.to_string())?;
    for statement in diesel_workspace::statements::split_statements(sql).unwrap() {
        if let Err(e) = conn.batch_execute(statement.sql()) {
            conn.batch_execute("ROLLBACK").unwrap();
            return Err(e.to_string());
        }
    }
    conn.batch_execute("COMMIT").map_err(|e| e.to_string())
}

#[test]
fn citus_agrees_with_each_rule() {
    let db = citus_db!("citus_agrees_with_each_rule");
    let _moves = workspace_diesel_tests::citus::move_lock();
    let mut conn = db.conn();
    conn.batch_execute(
        "CREATE TABLE public.lint_plans (id INT PRIMARY KEY); \
         SELECT create_reference_table('public.lint_plans'); \
         CREATE TABLE public.lint_users (id INT PRIMARY KEY)",
    )
    .unwrap();
    apply(
        &mut conn,
        "other_tenant",
        "CREATE TABLE a (id INT PRIMARY KEY)",
    )
    .unwrap();
    let target = &db.workers()[1];
    for (i, &(rule, pass, fail, says)) in CASES.iter().enumerate() {
        let ok = format!("pass_{i}");
        apply(&mut conn, &ok, pass).unwrap_or_else(|e| panic!("{rule:?} passing migration: {e}"));
        let bad = format!("fail_{i}");
        let refused = match apply(&mut conn, &bad, fail) {
            Err(e) => e,
            // Citus takes a table without a primary key, but cannot move it.
            Ok(()) => {
                assert_eq!(rule, CitusRule::NoPrimaryKey, "Citus accepted {fail}");
                let moved = |schema: &str, conn: &mut PgConnection| {
                    let here = workspace_diesel_tests::citus::check_on(
                        conn,
                        &format!(
                            "(SELECT nodeport FROM pg_catalog.citus_shards \
                             WHERE table_name::text LIKE '{schema}.%' LIMIT 1) = {}",
                            target.port
                        ),
                    );
                    let port = if here {
                        db.workers()[0].port
                    } else {
                        target.port
                    };
                    conn.batch_execute(&format!(
                        "SELECT citus_schema_move('{schema}', '{}', {port})",
                        target.host
                    ))
                };
                moved(&ok, &mut conn).expect("a table with a primary key moves");
                moved(&bad, &mut conn)
                    .expect_err("a table without one does not")
                    .to_string()
            }
        };
        assert!(refused.contains(says), "{rule:?}: {refused}");
    }
}
