//! Each costly form flagged, each cheap form not.

use super::*;

fn rules(lint: &CostLint, sql: &str) -> Vec<CostRule> {
    lint.check([("v1", sql)])
        .unwrap()
        .iter()
        .map(|f| f.rule)
        .collect()
}

#[test]
fn costly_forms() {
    let lint = CostLint::new();
    for (sql, rule) in [
        (
            "ALTER TABLE notes ADD COLUMN u UUID DEFAULT gen_random_uuid()",
            CostRule::VolatileDefault,
        ),
        (
            "ALTER TABLE notes ADD COLUMN at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()",
            CostRule::VolatileDefault,
        ),
        (
            "ALTER TABLE notes ADD COLUMN r FLOAT8 DEFAULT app.score(1)",
            CostRule::VolatileDefault,
        ),
        (
            "ALTER TABLE notes ADD COLUMN seq BIGSERIAL",
            CostRule::VolatileDefault,
        ),
        (
            "ALTER TABLE notes ADD COLUMN k INT GENERATED ALWAYS AS IDENTITY",
            CostRule::VolatileDefault,
        ),
        (
            "ALTER TABLE notes ADD COLUMN t2 INT GENERATED ALWAYS AS (n * 2) STORED",
            CostRule::VolatileDefault,
        ),
        (
            "ALTER TABLE notes ALTER COLUMN n TYPE BIGINT",
            CostRule::TypeChange,
        ),
        (
            "ALTER TABLE notes ALTER n SET DATA TYPE TEXT",
            CostRule::TypeChange,
        ),
        (
            "ALTER TABLE notes ALTER COLUMN n SET NOT NULL",
            CostRule::SetNotNull,
        ),
        (
            "CREATE INDEX notes_n ON notes (n)",
            CostRule::IndexWithoutConcurrently,
        ),
        (
            "CREATE UNIQUE INDEX notes_u ON notes (u)",
            CostRule::IndexWithoutConcurrently,
        ),
        (
            "ALTER TABLE notes ADD CONSTRAINT pos CHECK (n > 0)",
            CostRule::ConstraintWithoutNotValid,
        ),
        (
            "ALTER TABLE notes ADD FOREIGN KEY (a) REFERENCES authors (id)",
            CostRule::ConstraintWithoutNotValid,
        ),
        (
            "ALTER TABLE notes ADD CONSTRAINT u UNIQUE (u)",
            CostRule::UniqueWithoutIndex,
        ),
        (
            "ALTER TABLE notes ADD PRIMARY KEY (id)",
            CostRule::UniqueWithoutIndex,
        ),
    ] {
        assert_eq!(rules(&lint, sql), [rule], "{sql}");
    }
}

#[test]
fn cheap_forms() {
    let lint = CostLint::new();
    for sql in [
        "ALTER TABLE notes ADD COLUMN n INTEGER",
        "ALTER TABLE notes ADD COLUMN n INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE notes ADD COLUMN at TIMESTAMPTZ DEFAULT now()",
        "ALTER TABLE notes ADD COLUMN meta JSONB DEFAULT '{}'::jsonb",
        "ALTER TABLE notes ADD COLUMN p NUMERIC DEFAULT CAST(1 AS numeric(10, 2))",
        "ALTER TABLE notes ADD COLUMN a INT REFERENCES authors (id)",
        "CREATE INDEX CONCURRENTLY notes_n ON notes (n)",
        "ALTER TABLE notes ADD CONSTRAINT pos CHECK (n > 0) NOT VALID",
        "ALTER TABLE notes VALIDATE CONSTRAINT pos",
        "ALTER TABLE notes ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES authors (id) NOT VALID",
        "ALTER TABLE notes ADD CONSTRAINT u UNIQUE USING INDEX notes_u",
        "ALTER TABLE notes ALTER COLUMN n SET DEFAULT 0",
        "ALTER TABLE notes ALTER COLUMN n DROP NOT NULL",
        // A table created earlier in the same migration is empty for every tenant.
        "CREATE TABLE tags (id INT, n INT); CREATE INDEX tags_n ON tags (n); \
         ALTER TABLE tags ALTER COLUMN n TYPE BIGINT, ALTER n SET NOT NULL, \
         ADD PRIMARY KEY (id), ADD COLUMN u UUID DEFAULT gen_random_uuid()",
    ] {
        assert_eq!(rules(&lint, sql), [], "{sql}");
    }
}

#[test]
fn a_table_created_in_an_earlier_migration_is_not_exempt() {
    let findings = CostLint::new()
        .check([
            ("v1", "CREATE TABLE tags (id INT, n INT)"),
            ("v2", "SELECT 1;\nCREATE INDEX tags_n ON tags (n)"),
        ])
        .unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!((findings[0].version.as_str(), findings[0].line), ("v2", 2));
    assert_eq!(findings[0].table, (None, "tags".to_owned()));
    assert!(findings[0]
        .to_string()
        .contains("CREATE INDEX CONCURRENTLY"));
}

#[test]
fn any_default_at_fleet_scale() {
    let sql = "ALTER TABLE notes ADD COLUMN n INTEGER NOT NULL DEFAULT 0";
    assert_eq!(
        rules(&CostLint::new().fleet_size(FLEET_SCALE_TENANTS - 1), sql),
        []
    );
    assert_eq!(
        rules(&CostLint::new().fleet_size(FLEET_SCALE_TENANTS), sql),
        [CostRule::DefaultAtFleetScale]
    );
    // Without a default, the fleet size does not matter.
    let plain = "ALTER TABLE notes ADD COLUMN n INTEGER";
    assert_eq!(rules(&CostLint::new().fleet_size(50_000), plain), []);
    // A volatile default is reported once, as the rewrite.
    let volatile = "ALTER TABLE notes ADD COLUMN u UUID DEFAULT gen_random_uuid()";
    assert_eq!(
        rules(&CostLint::new().fleet_size(50_000), volatile),
        [CostRule::VolatileDefault]
    );
}
