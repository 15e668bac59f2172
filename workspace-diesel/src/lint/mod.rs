//! The lints of tenant migrations, read from their SQL: what a Citus distributed schema cannot
//! hold (this file), which lock each statement takes (`locks`), and which statements cost more
//! the larger the table or the fleet (`cost`); `tokens` reads a statement for all three.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::statements::split_statements;

mod cost;
mod locks;
mod tokens;

pub use self::tokens::LintError;
use self::tokens::{name_at, references, tokens, Tok, CONSTRAINT_WORDS, SERIAL_TYPES};

pub(crate) use self::cost::statement_costs;
pub use self::cost::{CostFinding, CostLint, CostRule, FLEET_SCALE_TENANTS};
pub use self::locks::{statement_locks, LockLevel, StatementLocks, TableLock};

/// A rule of the [`CitusLint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CitusRule {
    /// `CREATE TRIGGER`: Citus refuses triggers on distributed tables.
    Trigger,
    /// `ALTER TABLE ... ADD COLUMN ... serial`: Citus cannot add a serial column to a
    /// distributed table.
    SerialColumnAdded,
    /// A foreign key to a table of another schema than the tenant's own or the shared one
    /// (another tenant's, most likely).
    ForeignKeyToOtherSchema,
    /// A foreign key to a shared table that is not a reference table.
    ForeignKeyToNonReferenceTable,
    /// A table without a primary key: Citus cannot move it to another node.
    NoPrimaryKey,
}

/// What the lint found: the migration, the line of the statement, the rule and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintFinding {
    version: String,
    line: usize,
    rule: CitusRule,
    message: String,
}

impl LintFinding {
    /// The migration's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The line (1-based, in the migration's `up.sql`) of the offending statement.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The rule it breaks.
    pub fn rule(&self) -> CitusRule {
        self.rule
    }

    /// What is wrong and what to do instead.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for LintFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migration `{}`, line {}: {}",
            self.version, self.line, self.message
        )
    }
}

/// Checks tenant migrations for what Citus cannot do in a distributed schema: triggers,
/// `ADD COLUMN ... serial`, foreign keys to another schema or to a shared table that is not a
/// reference table, and tables without a primary key (one added by a later `ALTER TABLE ... ADD
/// PRIMARY KEY` of the same set counts).
///
/// It reads the SQL only (statements split with PostgreSQL's lexical rules); the reference tables
/// come from the caller (`Migrator::lint_citus` reads them from Citus's metadata).
///
/// ```
/// use diesel_workspace::{citus::CitusLint, citus::CitusRule};
///
/// let lint = CitusLint::new().reference_table("plans");
/// let ok = "CREATE TABLE notes (id INT PRIMARY KEY, plan_id INT REFERENCES public.plans (id))";
/// assert!(lint.check([("2026-01-01-000001", ok)])?.is_empty());
///
/// let bad = "CREATE TABLE notes (id INT PRIMARY KEY, user_id INT REFERENCES public.users (id))";
/// let findings = lint.check([("2026-01-01-000001", bad)])?;
/// assert_eq!(findings[0].rule(), CitusRule::ForeignKeyToNonReferenceTable);
/// # Ok::<(), diesel_workspace::citus::LintError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CitusLint {
    shared_schema: String,
    reference_tables: BTreeSet<String>,
}

impl Default for CitusLint {
    fn default() -> Self {
        Self::new()
    }
}

impl CitusLint {
    /// A lint with the shared schema `public` and no reference table.
    pub fn new() -> Self {
        Self {
            shared_schema: "public".to_owned(),
            reference_tables: BTreeSet::new(),
        }
    }

    /// The shared schema (default `public`).
    pub fn shared_schema(mut self, schema: impl Into<String>) -> Self {
        self.shared_schema = schema.into();
        self
    }

    /// Declares `table` (of the shared schema) a reference table.
    pub fn reference_table(mut self, table: impl Into<String>) -> Self {
        self.reference_tables.insert(table.into());
        self
    }

    /// Declares several shared tables reference tables.
    pub fn reference_tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.reference_tables
            .extend(tables.into_iter().map(Into::into));
        self
    }

    /// Checks the migrations `(version, up.sql)`, in the order they apply. Returns every
    /// finding, in migration and line order; empty when Citus can apply them all.
    ///
    /// # Errors
    /// [`LintError`] when a migration cannot be split into statements (an unterminated string
    /// or comment).
    pub fn check<'a, I>(&self, migrations: I) -> Result<Vec<LintFinding>, LintError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut findings = Vec::new();
        // Tables created without a primary key, waiting for an `ADD PRIMARY KEY`.
        let mut without_key: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for (version, sql) in migrations {
            let err = |source| LintError {
                version: version.to_owned(),
                source,
            };
            for statement in split_statements(sql).map_err(err)? {
                let toks = tokens(statement.sql()).map_err(err)?;
                let mut found = |rule, message: String| {
                    findings.push(LintFinding {
                        version: version.to_owned(),
                        line: statement.line(),
                        rule,
                        message,
                    })
                };
                if is_trigger(&toks) {
                    found(
                        CitusRule::Trigger,
                        "CREATE TRIGGER: Citus refuses triggers on the tables of a distributed \
                         schema; do that work in the application"
                            .to_owned(),
                    );
                }
                if let Some((table, has_key)) = created_table(&toks) {
                    if !has_key {
                        without_key.insert(table, (version.to_owned(), statement.line()));
                    }
                }
                if let Some(table) = altered_table(&toks) {
                    for (column, ty) in added_columns(&toks) {
                        if SERIAL_TYPES.contains(&ty.as_str()) {
                            found(
                                CitusRule::SerialColumnAdded,
                                format!(
                                    "ALTER TABLE {table} ADD COLUMN {column} {ty}: Citus cannot add \
                                     a serial column to a distributed table; declare it in the \
                                     table's CREATE TABLE, or add a plain integer column"
                                ),
                            );
                        }
                    }
                    if adds_primary_key(&toks) {
                        without_key.remove(&table);
                    }
                }
                for (schema, table) in references(&toks) {
                    match schema {
                        None => {}
                        Some(s) if s == self.shared_schema => {
                            if self.reference_tables.contains(&table) {
                                continue;
                            }
                            found(
                                CitusRule::ForeignKeyToNonReferenceTable,
                                format!(
                                    "foreign key to shared table {s}.{table}, which is not a \
                                     reference table: make it one in a shared migration \
                                     (SELECT create_reference_table('{s}.{table}'))"
                                ),
                            );
                        }
                        Some(s) => found(
                            CitusRule::ForeignKeyToOtherSchema,
                            format!(
                                "foreign key to {s}.{table}: a tenant table may reference only \
                                 tables of its own schema and reference tables of the shared \
                                 schema `{}`",
                                self.shared_schema
                            ),
                        ),
                    }
                }
            }
        }
        for (table, (version, line)) in without_key {
            findings.push(LintFinding {
                version,
                line,
                rule: CitusRule::NoPrimaryKey,
                message: format!(
                    "table {table} has no primary key: Citus cannot move a tenant whose tables \
                     have none (citus_schema_move); add one"
                ),
            });
        }
        findings.sort_by(|a, b| (&a.version, a.line).cmp(&(&b.version, b.line)));
        Ok(findings)
    }
}

/// The tables of `shared_schema` that the migrations reference in foreign keys
/// (`REFERENCES public.plans`), sorted; migrations that cannot be split are skipped (the lint and
/// the server report them).
pub(crate) fn shared_references<'a>(
    migrations: impl IntoIterator<Item = &'a str>,
    shared_schema: &str,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    for sql in migrations {
        let Ok(toks) = tokens(sql) else { continue };
        for (schema, table) in references(&toks) {
            if schema.as_deref() == Some(shared_schema) {
                out.insert(table);
            }
        }
    }
    out.into_iter().collect()
}

/// `CREATE [OR REPLACE] [CONSTRAINT] TRIGGER`.
fn is_trigger(t: &[Tok]) -> bool {
    let mut i = 0;
    if !t.first().is_some_and(|w| w.is("create")) {
        return false;
    }
    i += 1;
    if t.get(i).is_some_and(|w| w.is("or")) && t.get(i + 1).is_some_and(|w| w.is("replace")) {
        i += 2;
    }
    if t.get(i).is_some_and(|w| w.is("constraint")) {
        i += 1;
    }
    t.get(i).is_some_and(|w| w.is("trigger"))
}

/// `CREATE [GLOBAL|LOCAL] [UNLOGGED] TABLE [IF NOT EXISTS] name ...` (not temporary, not a
/// partition): the table's name and whether the statement declares a primary key.
fn created_table(t: &[Tok]) -> Option<(String, bool)> {
    if !t.first()?.is("create") {
        return None;
    }
    let mut i = 1;
    while t
        .get(i)
        .is_some_and(|w| w.is("global") || w.is("local") || w.is("unlogged"))
    {
        i += 1;
    }
    if !t.get(i)?.is("table") {
        return None;
    }
    i += 1;
    if t.get(i)?.is("if") {
        i += 3;
    }
    let (_, table, after) = name_at(t, i)?;
    if t.get(after).is_some_and(|w| w.is("partition"))
        && t.get(after + 1).is_some_and(|w| w.is("of"))
    {
        return None;
    }
    Some((table, has_primary_key(&t[after..])))
}

fn has_primary_key(t: &[Tok]) -> bool {
    t.windows(2).any(|w| w[0].is("primary") && w[1].is("key"))
}

/// `ALTER TABLE [IF EXISTS] [ONLY] name ...`: the table's name.
fn altered_table(t: &[Tok]) -> Option<String> {
    if !(t.first()?.is("alter") && t.get(1)?.is("table")) {
        return None;
    }
    let mut i = 2;
    if t.get(i)?.is("if") {
        i += 2;
    }
    if t.get(i)?.is("only") {
        i += 1;
    }
    name_at(t, i).map(|(_, name, _)| name)
}

/// The `ADD [COLUMN] [IF NOT EXISTS] name type` clauses of an `ALTER TABLE` (outside
/// parentheses): each column's name and its type's first word.
fn added_columns(t: &[Tok]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    for (i, tok) in t.iter().enumerate() {
        match tok {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if w == "add" && depth == 0 => {
                let mut j = i + 1;
                if t.get(j).is_some_and(|w| w.is("column")) {
                    j += 1;
                } else if t
                    .get(j)
                    .is_some_and(|w| CONSTRAINT_WORDS.iter().any(|k| w.is(k)))
                {
                    continue;
                }
                if t.get(j).is_some_and(|w| w.is("if")) {
                    j += 3;
                }
                let (Some(column), Some(Tok::Word(ty))) =
                    (t.get(j).and_then(Tok::name), t.get(j + 1))
                else {
                    continue;
                };
                out.push((column.to_owned(), ty.clone()));
            }
            _ => {}
        }
    }
    out
}

/// `ADD [CONSTRAINT name] PRIMARY KEY` in an `ALTER TABLE`.
fn adds_primary_key(t: &[Tok]) -> bool {
    t.iter().enumerate().any(|(i, w)| {
        w.is("add") && {
            let j = if t.get(i + 1).is_some_and(|c| c.is("constraint")) {
                i + 3
            } else {
                i + 1
            };
            t.get(j).is_some_and(|p| p.is("primary")) && t.get(j + 1).is_some_and(|k| k.is("key"))
        }
    })
}

#[cfg(test)]
mod tests;
