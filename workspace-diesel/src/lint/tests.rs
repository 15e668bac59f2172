//! The lint's rules, each passing and failing.

use super::*;

fn rules(lint: &CitusLint, sql: &str) -> Vec<CitusRule> {
    lint.check([("v1", sql)])
        .unwrap()
        .iter()
        .map(LintFinding::rule)
        .collect()
}

#[test]
fn each_rule() {
    let lint = CitusLint::new().reference_table("plans");
    let ok = "CREATE TABLE a (id SERIAL PRIMARY KEY, plan INT REFERENCES public.plans (id)); \
              CREATE TABLE b (id INT, a_id INT REFERENCES a (id), PRIMARY KEY (id)); \
              ALTER TABLE b ADD COLUMN n INTEGER NOT NULL DEFAULT 0, ADD CONSTRAINT c CHECK (n >= 0); \
              CREATE TEMP TABLE scratch (x INT); \
              CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                EXECUTE 'CREATE TRIGGER x'; RETURN NULL; END $$";
    assert_eq!(rules(&lint, ok), []);
    for (sql, rule) in [
        (
            "CREATE TRIGGER t AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION f()",
            CitusRule::Trigger,
        ),
        (
            "create or replace constraint trigger t after insert on a for each row execute function f()",
            CitusRule::Trigger,
        ),
        ("ALTER TABLE a ADD COLUMN n BIGSERIAL", CitusRule::SerialColumnAdded),
        (
            "ALTER TABLE ONLY a ADD x INT, ADD IF NOT EXISTS \"Seq\" serial",
            CitusRule::SerialColumnAdded,
        ),
        (
            "CREATE TABLE c (id INT PRIMARY KEY, o INT REFERENCES other_tenant.notes (id))",
            CitusRule::ForeignKeyToOtherSchema,
        ),
        (
            "ALTER TABLE a ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES \"public\".\"users\" (id)",
            CitusRule::ForeignKeyToNonReferenceTable,
        ),
        ("CREATE TABLE log (at TIMESTAMPTZ, what TEXT)", CitusRule::NoPrimaryKey),
    ] {
        assert_eq!(rules(&lint, sql), [rule], "{sql}");
    }
}

#[test]
fn a_later_primary_key_counts() {
    let lint = CitusLint::new();
    let findings = lint
        .check([
            ("v1", "CREATE TABLE log (id INT, what TEXT)"),
            (
                "v2",
                "ALTER TABLE log ADD CONSTRAINT log_pkey PRIMARY KEY (id)",
            ),
        ])
        .unwrap();
    assert_eq!(findings, []);
    let findings = lint
        .check([("v1", "SELECT 1;\nCREATE TABLE log (id INT, what TEXT)")])
        .unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!((findings[0].version(), findings[0].line()), ("v1", 2));
}

#[test]
fn strings_and_comments_do_not_count() {
    let lint = CitusLint::new();
    let sql = "CREATE TABLE a (id INT PRIMARY KEY, note TEXT DEFAULT 'REFERENCES x.y'); \
               -- CREATE TRIGGER t ...\n/* ALTER TABLE a ADD COLUMN s SERIAL */ SELECT 1";
    assert_eq!(rules(&lint, sql), []);
}

#[test]
fn shared_tables_referenced() {
    let sql = "CREATE TABLE a (id INT PRIMARY KEY, p INT REFERENCES public.plans (id), \
               q INT REFERENCES other.x (id), r INT REFERENCES a (id)); \
               ALTER TABLE a ADD FOREIGN KEY (p) REFERENCES \"public\".\"users\" (id)";
    assert_eq!(
        shared_references([sql, "SELECT 'a"], "public"),
        ["plans", "users"]
    );
}

#[test]
fn unreadable_migration() {
    let e = CitusLint::new().check([("v9", "SELECT 'a")]).unwrap_err();
    assert_eq!(e.version(), "v9");
    assert!(std::error::Error::source(&e)
        .unwrap()
        .to_string()
        .contains("unterminated string"));
}
