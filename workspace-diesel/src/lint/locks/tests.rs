//! The lock classifier against PostgreSQL's documented lock levels.

use super::*;
use LockLevel::*;

fn locks(sql: &str) -> Vec<(String, LockLevel)> {
    statement_locks(sql)
        .unwrap()
        .locks
        .into_iter()
        .map(|l| {
            let name = match l.schema {
                Some(s) => format!("{s}.{}", l.table),
                None => l.table,
            };
            (name, l.lock)
        })
        .collect()
}

fn one(sql: &str) -> (String, LockLevel) {
    let all = locks(sql);
    assert_eq!(all.len(), 1, "{sql}: {all:?}");
    all.into_iter().next().unwrap()
}

#[test]
fn documented_levels() {
    for (sql, table, level) in [
        ("CREATE INDEX notes_at ON notes (at)", "notes", Share),
        (
            "create unique index if not exists i on only \"Notes\" using btree (a)",
            "Notes",
            Share,
        ),
        (
            "CREATE INDEX CONCURRENTLY i ON app.notes (a)",
            "app.notes",
            ShareUpdateExclusive,
        ),
        ("CREATE INDEX ON notes (a)", "notes", Share),
        (
            "ALTER TABLE notes ADD COLUMN n INT DEFAULT 0",
            "notes",
            AccessExclusive,
        ),
        (
            "ALTER TABLE notes ALTER COLUMN n TYPE BIGINT",
            "notes",
            AccessExclusive,
        ),
        (
            "ALTER TABLE notes ALTER n SET NOT NULL",
            "notes",
            AccessExclusive,
        ),
        ("ALTER TABLE notes DROP COLUMN n", "notes", AccessExclusive),
        (
            "ALTER TABLE notes RENAME TO memos",
            "notes",
            AccessExclusive,
        ),
        (
            "ALTER TABLE notes VALIDATE CONSTRAINT c",
            "notes",
            ShareUpdateExclusive,
        ),
        (
            "ALTER TABLE notes ALTER COLUMN n SET STATISTICS 500",
            "notes",
            ShareUpdateExclusive,
        ),
        (
            "ALTER TABLE notes SET (fillfactor = 70)",
            "notes",
            ShareUpdateExclusive,
        ),
        (
            "ALTER TABLE notes CLUSTER ON notes_pkey",
            "notes",
            ShareUpdateExclusive,
        ),
        (
            "ALTER TABLE notes DISABLE TRIGGER t",
            "notes",
            ShareRowExclusive,
        ),
        (
            "ALTER TABLE notes ADD CONSTRAINT c CHECK (n > 0) NOT VALID",
            "notes",
            AccessExclusive,
        ),
        (
            "ALTER TABLE notes DETACH PARTITION p CONCURRENTLY",
            "notes",
            ShareUpdateExclusive,
        ),
        (
            "CREATE TRIGGER t AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION f()",
            "notes",
            ShareRowExclusive,
        ),
        ("DROP TRIGGER t ON notes", "notes", AccessExclusive),
        (
            "DROP INDEX CONCURRENTLY IF EXISTS notes_at",
            "notes_at",
            ShareUpdateExclusive,
        ),
        ("TRUNCATE TABLE notes", "notes", AccessExclusive),
        ("INSERT INTO notes (n) VALUES (1)", "notes", RowExclusive),
        (
            "UPDATE notes SET n = 1 WHERE id < 100",
            "notes",
            RowExclusive,
        ),
        ("DELETE FROM notes WHERE n = 0", "notes", RowExclusive),
        (
            "LOCK TABLE notes IN SHARE ROW EXCLUSIVE MODE",
            "notes",
            ShareRowExclusive,
        ),
        ("LOCK notes", "notes", AccessExclusive),
        (
            "REFRESH MATERIALIZED VIEW CONCURRENTLY totals",
            "totals",
            Exclusive,
        ),
        (
            "REINDEX TABLE CONCURRENTLY notes",
            "notes",
            ShareUpdateExclusive,
        ),
        ("VACUUM (VERBOSE) notes", "notes", ShareUpdateExclusive),
        ("ANALYZE notes", "notes", ShareUpdateExclusive),
    ] {
        assert_eq!(one(sql), (table.to_owned(), level), "{sql}");
    }
}

#[test]
fn foreign_keys_lock_both_tables() {
    let sql = "ALTER TABLE notes ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES authors (id)";
    assert_eq!(
        locks(sql),
        [
            ("notes".to_owned(), ShareRowExclusive),
            ("authors".to_owned(), ShareRowExclusive)
        ]
    );
    let sql = "ALTER TABLE notes ADD COLUMN a INT REFERENCES public.authors (id)";
    assert_eq!(
        locks(sql),
        [
            ("notes".to_owned(), AccessExclusive),
            ("public.authors".to_owned(), ShareRowExclusive)
        ]
    );
    // A new table takes no lock of its own; the table it references is locked.
    let created =
        statement_locks("CREATE TABLE tags (id INT PRIMARY KEY, n INT REFERENCES notes (id))")
            .unwrap();
    assert_eq!(created.creates, Some((None, "tags".to_owned())));
    assert_eq!(created.locks.len(), 1);
    assert_eq!(created.strongest(), Some(ShareRowExclusive));
}

#[test]
fn several_actions_take_the_strongest() {
    let sql = "ALTER TABLE notes VALIDATE CONSTRAINT c, ALTER COLUMN n SET DEFAULT 0";
    assert_eq!(one(sql), ("notes".to_owned(), AccessExclusive));
    let sql = "ALTER TABLE notes SET (fillfactor = 70), VALIDATE CONSTRAINT c";
    assert_eq!(one(sql), ("notes".to_owned(), ShareUpdateExclusive));
}

#[test]
fn no_table_no_lock() {
    for sql in [
        "CREATE FUNCTION f() RETURNS INT LANGUAGE sql AS $$ SELECT 1 $$",
        "SET lock_timeout = '1s'",
        "CREATE TYPE mood AS ENUM ('a', 'b')",
        "SELECT 1",
        "-- ALTER TABLE notes DROP COLUMN n\nSELECT 'ALTER TABLE x'",
    ] {
        assert_eq!(locks(sql), [], "{sql}");
    }
}

#[test]
fn levels_parse_and_order() {
    for level in LockLevel::ALL {
        assert_eq!(level.name().parse::<LockLevel>(), Ok(level));
        assert_eq!(
            level
                .name()
                .replace(' ', "_")
                .to_lowercase()
                .parse::<LockLevel>(),
            Ok(level)
        );
    }
    assert_eq!("share row exclusive lock".parse(), Ok(ShareRowExclusive));
    assert!("sharp".parse::<LockLevel>().is_err());
    assert!(LockLevel::ALL.windows(2).all(|w| w[0] < w[1]));
    assert!(!RowExclusive.blocks_writes() && Share.blocks_writes() && !Exclusive.blocks_reads());
}
