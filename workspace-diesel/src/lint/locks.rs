//! Which lock a statement takes on which table: PostgreSQL's documented table-level lock modes
//! (the "Explicit Locking" chapter and each command's reference page), read from the SQL alone.

use std::fmt;
use std::str::FromStr;

use super::tokens::{
    alter_table, index_target, name_at, references, skip_if_exists, tokens, Tok, CONSTRAINT_WORDS,
};
use crate::statements::SplitError;

/// A table-level lock mode of PostgreSQL, weakest first (the order is their strength: each
/// conflicts with at least the modes the one before it conflicts with).
///
/// ```
/// use diesel_workspace::LockLevel;
///
/// let level: LockLevel = "access_exclusive".parse()?;
/// assert_eq!(level, LockLevel::AccessExclusive);
/// assert_eq!(level.to_string(), "ACCESS EXCLUSIVE");
/// assert!(LockLevel::Share.blocks_writes() && !LockLevel::Share.blocks_reads());
/// assert!(!LockLevel::ShareUpdateExclusive.blocks_writes());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockLevel {
    /// `ACCESS SHARE`: `SELECT`.
    AccessShare,
    /// `ROW SHARE`: `SELECT ... FOR UPDATE`.
    RowShare,
    /// `ROW EXCLUSIVE`: `INSERT`, `UPDATE`, `DELETE`.
    RowExclusive,
    /// `SHARE UPDATE EXCLUSIVE`: `CREATE INDEX CONCURRENTLY`, `VALIDATE CONSTRAINT`, `ANALYZE`;
    /// reads and writes go on.
    ShareUpdateExclusive,
    /// `SHARE`: `CREATE INDEX`; blocks writes.
    Share,
    /// `SHARE ROW EXCLUSIVE`: `CREATE TRIGGER`, `ADD FOREIGN KEY` (on both tables); blocks writes.
    ShareRowExclusive,
    /// `EXCLUSIVE`: `REFRESH MATERIALIZED VIEW CONCURRENTLY`; blocks writes.
    Exclusive,
    /// `ACCESS EXCLUSIVE`: most `ALTER TABLE` forms, `DROP`, `TRUNCATE`; blocks reads too.
    AccessExclusive,
}

impl LockLevel {
    /// Every level, weakest first.
    pub const ALL: [LockLevel; 8] = [
        LockLevel::AccessShare,
        LockLevel::RowShare,
        LockLevel::RowExclusive,
        LockLevel::ShareUpdateExclusive,
        LockLevel::Share,
        LockLevel::ShareRowExclusive,
        LockLevel::Exclusive,
        LockLevel::AccessExclusive,
    ];

    /// PostgreSQL's name of the mode (`ACCESS EXCLUSIVE`).
    pub fn name(self) -> &'static str {
        match self {
            LockLevel::AccessShare => "ACCESS SHARE",
            LockLevel::RowShare => "ROW SHARE",
            LockLevel::RowExclusive => "ROW EXCLUSIVE",
            LockLevel::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockLevel::Share => "SHARE",
            LockLevel::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockLevel::Exclusive => "EXCLUSIVE",
            LockLevel::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// Whether the mode makes `INSERT`, `UPDATE` and `DELETE` on the table wait (`SHARE` and
    /// stronger: it conflicts with `ROW EXCLUSIVE`).
    pub fn blocks_writes(self) -> bool {
        self >= LockLevel::Share
    }

    /// Whether the mode makes plain `SELECT`s on the table wait (`ACCESS EXCLUSIVE` only).
    pub fn blocks_reads(self) -> bool {
        self == LockLevel::AccessExclusive
    }
}

impl fmt::Display for LockLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LockLevel {
    type Err = String;

    /// A mode's name in any case, words separated by spaces, `_` or `-`, with or without a
    /// trailing `LOCK` (`share`, `ACCESS_EXCLUSIVE`, `share-row-exclusive`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<String> = s
            .split([' ', '_', '-'])
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_uppercase)
            .collect();
        let words = match words.split_last() {
            Some((last, rest)) if last == "LOCK" => rest,
            _ => &words[..],
        };
        let name = words.join(" ");
        LockLevel::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown lock level `{s}` (one of: {})",
                    LockLevel::ALL.map(|l| l.name()).join(", ")
                )
            })
    }
}

/// A lock a statement takes: on which relation (schema when the statement qualifies it), in
/// which mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLock {
    /// The schema the statement names, if any (unqualified: the tenant's own).
    pub schema: Option<String>,
    /// The table (or, for `DROP INDEX` and `ALTER INDEX`, the index).
    pub table: String,
    /// The lock mode.
    pub lock: LockLevel,
}

/// What a statement locks, and the table it creates (`CREATE TABLE`), if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementLocks {
    /// The locks on existing relations, one per relation (the strongest when the statement
    /// takes several on it), in the order the statement names them.
    pub locks: Vec<TableLock>,
    /// The table the statement creates: `(schema if qualified, name)`.
    pub creates: Option<(Option<String>, String)>,
}

impl StatementLocks {
    /// The strongest lock of the statement, if it takes any.
    pub fn strongest(&self) -> Option<LockLevel> {
        self.locks.iter().map(|l| l.lock).max()
    }

    fn take(&mut self, name: (Option<String>, String), lock: LockLevel) {
        let (schema, table) = name;
        match self
            .locks
            .iter_mut()
            .find(|l| l.schema == schema && l.table == table)
        {
            Some(l) => l.lock = l.lock.max(lock),
            None => self.locks.push(TableLock {
                schema,
                table,
                lock,
            }),
        }
    }
}

/// The locks one statement takes on existing tables, from PostgreSQL's documented lock levels:
/// `CREATE INDEX` takes `SHARE` (`CONCURRENTLY`: `SHARE UPDATE EXCLUSIVE`), most `ALTER TABLE`
/// forms `ACCESS EXCLUSIVE`, `ADD FOREIGN KEY` `SHARE ROW EXCLUSIVE` on both tables, `VALIDATE
/// CONSTRAINT` `SHARE UPDATE EXCLUSIVE`, `CREATE TRIGGER` `SHARE ROW EXCLUSIVE`, `DROP` and
/// `TRUNCATE` `ACCESS EXCLUSIVE`, `INSERT` / `UPDATE` / `DELETE` `ROW EXCLUSIVE`, `LOCK` its
/// mode. A form the classifier does not know counts as `ACCESS EXCLUSIVE` on the table it
/// names; a statement on no table (`CREATE FUNCTION`, `SET`, …) takes none.
///
/// ```
/// use diesel_workspace::{statement_locks, LockLevel};
///
/// let index = statement_locks("CREATE INDEX notes_at ON notes (created_at)")?;
/// assert_eq!(index.strongest(), Some(LockLevel::Share));
/// let fk = statement_locks("ALTER TABLE notes ADD FOREIGN KEY (a) REFERENCES authors (id)")?;
/// assert_eq!(fk.locks.len(), 2);
/// assert!(fk.locks.iter().all(|l| l.lock == LockLevel::ShareRowExclusive));
/// # Ok::<(), diesel_workspace::statements::SplitError>(())
/// ```
///
/// # Errors
/// [`SplitError`] when the statement holds an unterminated string, identifier or comment.
pub fn statement_locks(sql: &str) -> Result<StatementLocks, SplitError> {
    Ok(classify(&tokens(sql)?))
}

/// [`statement_locks`] of a statement's tokens.
pub(super) fn classify(t: &[Tok]) -> StatementLocks {
    use LockLevel::*;
    let mut out = StatementLocks::default();
    let word = |i: usize, w: &str| t.get(i).is_some_and(|x| x.is(w));
    let Some(first) = t.first() else { return out };
    let first = match first {
        Tok::Word(w) => w.as_str(),
        _ => return out,
    };
    match first {
        "create" => {
            if let Some((name, concurrently)) = index_target(t) {
                out.take(
                    name,
                    if concurrently {
                        ShareUpdateExclusive
                    } else {
                        Share
                    },
                );
            } else if let Some(created) = created_relation(t) {
                out.creates = Some(created);
            } else if let Some(i) = trigger_on(t) {
                if let Some((s, n, _)) = name_at(t, i) {
                    out.take((s, n), ShareRowExclusive);
                }
            }
            for r in references(t) {
                out.take(r, ShareRowExclusive);
            }
        }
        "alter" if word(1, "table") => {
            if let Some((table, actions)) = alter_table(t) {
                for action in actions {
                    for (name, lock) in action_locks(&table, action) {
                        out.take(name, lock);
                    }
                }
            }
        }
        "alter" if word(1, "index") || word(1, "materialized") || word(1, "view") => {
            let mut i = if word(1, "materialized") { 3 } else { 2 };
            i += skip_if_exists(t, i);
            if let Some((s, n, after)) = name_at(t, i) {
                let lock = if word(after, "rename")
                    || word(after, "set") && t.get(after + 1) == Some(&Tok::Punct(b'('))
                {
                    ShareUpdateExclusive
                } else {
                    AccessExclusive
                };
                out.take((s, n), lock);
            }
        }
        "drop" if word(1, "table") || word(1, "index") || word(1, "materialized") => {
            let mut i = if word(1, "materialized") { 3 } else { 2 };
            let lock = if word(i, "concurrently") {
                i += 1;
                ShareUpdateExclusive
            } else {
                AccessExclusive
            };
            i += skip_if_exists(t, i);
            for name in name_list(t, i) {
                out.take(name, lock);
            }
        }
        "drop" if word(1, "trigger") => {
            if let Some(i) = (2..t.len()).find(|&i| word(i, "on")) {
                if let Some((s, n, _)) = name_at(t, i + 1) {
                    out.take((s, n), AccessExclusive);
                }
            }
        }
        "truncate" => {
            let mut i = 1;
            if word(i, "table") {
                i += 1;
            }
            if word(i, "only") {
                i += 1;
            }
            for name in name_list(t, i) {
                out.take(name, AccessExclusive);
            }
        }
        "insert" | "delete" if word(1, "into") || word(1, "from") => {
            if let Some((s, n, _)) = name_at(t, 2) {
                out.take((s, n), RowExclusive);
            }
        }
        "update" => {
            let i = if word(1, "only") { 2 } else { 1 };
            if let Some((s, n, _)) = name_at(t, i) {
                out.take((s, n), RowExclusive);
            }
        }
        "copy" => {
            if let Some((s, n, after)) = name_at(t, 1) {
                let lock = if (after..t.len()).any(|i| word(i, "from")) {
                    RowExclusive
                } else {
                    AccessShare
                };
                out.take((s, n), lock);
            }
        }
        "lock" => {
            let mut i = if word(1, "table") { 2 } else { 1 };
            if word(i, "only") {
                i += 1;
            }
            let mode = (i..t.len())
                .find(|&j| word(j, "in"))
                .map(|j| {
                    let words: Vec<&str> = t[j + 1..]
                        .iter()
                        .filter_map(Tok::name)
                        .take_while(|w| *w != "mode")
                        .collect();
                    words.join(" ").parse().unwrap_or(AccessExclusive)
                })
                .unwrap_or(AccessExclusive);
            for name in name_list(t, i) {
                out.take(name, mode);
            }
        }
        "refresh" if word(1, "materialized") => {
            let concurrently = word(3, "concurrently");
            let i = if concurrently { 4 } else { 3 };
            if let Some((s, n, _)) = name_at(t, i) {
                out.take(
                    (s, n),
                    if concurrently {
                        Exclusive
                    } else {
                        AccessExclusive
                    },
                );
            }
        }
        "reindex" => {
            let mut i = 1;
            while t.get(i) == Some(&Tok::Punct(b'(')) || word(i, "index") || word(i, "table") {
                i += 1;
            }
            let concurrently = word(i, "concurrently");
            if concurrently {
                i += 1;
            }
            if word(1, "table") || word(1, "index") {
                if let Some((s, n, _)) = name_at(t, i) {
                    out.take(
                        (s, n),
                        if concurrently {
                            ShareUpdateExclusive
                        } else {
                            Share
                        },
                    );
                }
            }
        }
        "cluster" | "vacuum" | "analyze" | "comment" => {
            let lock = if first == "cluster" {
                AccessExclusive
            } else {
                ShareUpdateExclusive
            };
            let i = if first == "comment" {
                // COMMENT ON TABLE name IS ...
                if !(word(1, "on") && word(2, "table")) {
                    return out;
                }
                3
            } else {
                (1..t.len())
                    .find(|&i| {
                        matches!(t.get(i), Some(Tok::Ident(_)) | Some(Tok::Word(_)))
                            && !["verbose", "full", "freeze", "analyze"]
                                .iter()
                                .any(|k| word(i, k))
                    })
                    .unwrap_or(t.len())
            };
            if let Some((s, n, _)) = name_at(t, i) {
                out.take((s, n), lock);
            }
        }
        _ => {}
    }
    out
}

/// The names of a comma-separated list from `i` on (`DROP TABLE a, b`, `TRUNCATE a, b`).
fn name_list(t: &[Tok], mut i: usize) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    while let Some((s, n, after)) = name_at(t, i) {
        out.push((s, n));
        if t.get(after) != Some(&Tok::Punct(b',')) {
            break;
        }
        i = after + 1;
    }
    out
}

/// `CREATE [GLOBAL|LOCAL] [UNLOGGED] TABLE|MATERIALIZED VIEW [IF NOT EXISTS] name`, not
/// temporary: the relation created.
fn created_relation(t: &[Tok]) -> Option<(Option<String>, String)> {
    let mut i = 1;
    while t
        .get(i)
        .is_some_and(|w| w.is("global") || w.is("local") || w.is("unlogged"))
    {
        i += 1;
    }
    if t.get(i)?.is("materialized") {
        i += 1;
    }
    if !(t.get(i)?.is("table") || t.get(i)?.is("view")) {
        return None;
    }
    i += 1;
    if t.get(i)?.is("if") {
        i += 3;
    }
    name_at(t, i).map(|(s, n, _)| (s, n))
}

/// `CREATE [OR REPLACE] [CONSTRAINT] TRIGGER ... ON table`: the index of the table's name.
fn trigger_on(t: &[Tok]) -> Option<usize> {
    let at = (1..t.len().min(5)).find(|&i| t[i].is("trigger"))?;
    (at + 1..t.len()).find(|&i| t[i].is("on")).map(|i| i + 1)
}

/// The locks one `ALTER TABLE` action takes: on the table, and on a table it references.
fn action_locks(
    table: &(Option<String>, String),
    a: &[Tok],
) -> Vec<((Option<String>, String), LockLevel)> {
    use LockLevel::*;
    let w = |i: usize, x: &str| a.get(i).is_some_and(|t| t.is(x));
    let mut out = Vec::new();
    let lock = if w(0, "add") {
        let refs = references(a);
        let constraint = CONSTRAINT_WORDS.iter().any(|k| w(1, k));
        if constraint && a.iter().any(|t| t.is("foreign")) {
            // ADD FOREIGN KEY: SHARE ROW EXCLUSIVE on both tables.
            out.extend(refs.into_iter().map(|r| (r, ShareRowExclusive)));
            ShareRowExclusive
        } else {
            out.extend(refs.into_iter().map(|r| (r, ShareRowExclusive)));
            AccessExclusive
        }
    } else if w(0, "validate")
        || w(0, "cluster")
        || w(0, "reset")
        || (w(0, "set") && (a.get(1) == Some(&Tok::Punct(b'(')) || w(1, "without")))
    {
        ShareUpdateExclusive
    } else if w(0, "alter") {
        // ALTER [COLUMN] c SET STATISTICS / SET (...) / RESET (...): SHARE UPDATE EXCLUSIVE.
        let j = if w(1, "column") { 3 } else { 2 };
        if (w(j, "set") && (w(j + 1, "statistics") || a.get(j + 1) == Some(&Tok::Punct(b'('))))
            || w(j, "reset")
        {
            ShareUpdateExclusive
        } else {
            AccessExclusive
        }
    } else if (w(0, "enable") || w(0, "disable"))
        && (w(1, "trigger") || (w(2, "trigger") && (w(1, "always") || w(1, "replica"))))
    {
        ShareRowExclusive
    } else if w(0, "attach") {
        if let Some((s, n, _)) = name_at(a, 2) {
            out.push(((s, n), AccessExclusive));
        }
        ShareUpdateExclusive
    } else if w(0, "detach") {
        if a.iter().any(|t| t.is("concurrently")) {
            ShareUpdateExclusive
        } else {
            AccessExclusive
        }
    } else {
        AccessExclusive
    };
    out.insert(0, (table.clone(), lock));
    out
}

#[cfg(test)]
mod tests;
