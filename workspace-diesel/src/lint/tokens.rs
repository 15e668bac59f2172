//! How a lint reads a statement: its tokens, identifiers normalised (unquoted, key words
//! lower-cased), qualified names and the tables after `REFERENCES`; and what a lint reports
//! about a migration it cannot read (`LintError`).

use std::fmt;

use crate::statements::{Kind, Lexer, SplitError};

/// A relation's name as a statement writes it: its schema when qualified, and its name.
pub(super) type Name = (Option<String>, String);

/// A migration the lint could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintError {
    pub(super) version: String,
    pub(super) source: SplitError,
}

impl LintError {
    /// The migration's version.
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl fmt::Display for LintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot split migration `{}` into statements",
            self.version
        )
    }
}

impl std::error::Error for LintError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One token of a statement, identifiers normalised (unquoted, key words lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Word(String),
    Ident(String),
    Punct(u8),
    Other,
}

impl Tok {
    pub(super) fn is(&self, word: &str) -> bool {
        matches!(self, Tok::Word(w) if w == word)
    }

    pub(super) fn name(&self) -> Option<&str> {
        match self {
            Tok::Word(w) | Tok::Ident(w) => Some(w),
            _ => None,
        }
    }
}

pub(super) fn tokens(sql: &str) -> Result<Vec<Tok>, SplitError> {
    Lexer::new(sql)
        .map(|t| {
            let t = t?;
            let text = &sql[t.start..t.end];
            Ok(match t.kind {
                Kind::Word => Tok::Word(text.to_ascii_lowercase()),
                Kind::QuotedIdent => Tok::Ident(text[1..text.len() - 1].replace("\"\"", "\"")),
                Kind::Punct(b) => Tok::Punct(b),
                Kind::String | Kind::Other => Tok::Other,
            })
        })
        .collect()
}

/// A name (`a` or `a.b`) at `i`: (schema, name, index after it).
pub(super) fn name_at(t: &[Tok], i: usize) -> Option<(Option<String>, String, usize)> {
    let first = t.get(i)?.name()?.to_owned();
    if t.get(i + 1) == Some(&Tok::Punct(b'.')) {
        let second = t.get(i + 2)?.name()?.to_owned();
        Some((Some(first), second, i + 3))
    } else {
        Some((None, first, i + 1))
    }
}

/// The tables named after every `REFERENCES`: (schema if qualified, table).
pub(super) fn references(t: &[Tok]) -> Vec<(Option<String>, String)> {
    t.iter()
        .enumerate()
        .filter(|(_, w)| w.is("references"))
        .filter_map(|(i, _)| name_at(t, i + 1).map(|(s, n, _)| (s, n)))
        .collect()
}

/// `IF EXISTS` at `i`: how many tokens it takes.
pub(super) fn skip_if_exists(t: &[Tok], i: usize) -> usize {
    if t.get(i).is_some_and(|w| w.is("if")) && t.get(i + 1).is_some_and(|w| w.is("exists")) {
        2
    } else {
        0
    }
}

/// `CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON [ONLY] table`: the table and
/// whether the build is concurrent.
pub(super) fn index_target(t: &[Tok]) -> Option<((Option<String>, String), bool)> {
    let mut i = 1;
    if t.get(i)?.is("unique") {
        i += 1;
    }
    if !t.get(i)?.is("index") {
        return None;
    }
    let concurrently = t.get(i + 1).is_some_and(|w| w.is("concurrently"));
    let on = (i + 1..t.len()).find(|&j| t[j].is("on"))?;
    let mut j = on + 1;
    if t.get(j)?.is("only") {
        j += 1;
    }
    let (s, n, _) = name_at(t, j)?;
    Some(((s, n), concurrently))
}

/// `ALTER TABLE [IF EXISTS] [ONLY] name action [, action ...]`: the table and each action's
/// tokens (split at the commas outside parentheses).
pub(super) fn alter_table(t: &[Tok]) -> Option<(Name, Vec<&[Tok]>)> {
    if !(t.first()?.is("alter") && t.get(1)?.is("table")) {
        return None;
    }
    let mut i = 2 + skip_if_exists(t, 2);
    if t.get(i)?.is("only") {
        i += 1;
    }
    let (s, n, after) = name_at(t, i)?;
    let first = if t.get(after) == Some(&Tok::Punct(b'*')) {
        after + 1
    } else {
        after
    };
    let mut start = first;
    let mut actions = Vec::new();
    let mut depth = 0usize;
    for j in first..t.len() {
        match t[j] {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth = depth.saturating_sub(1),
            Tok::Punct(b',') if depth == 0 => {
                actions.push(&t[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    actions.push(&t[start..]);
    Some(((s, n), actions))
}

/// The words that start a table constraint in `ADD`.
pub(super) const CONSTRAINT_WORDS: &[&str] = &[
    "constraint",
    "primary",
    "unique",
    "foreign",
    "check",
    "exclude",
];

/// Column types that draw from a sequence (a volatile default, and one Citus cannot add).
pub(super) const SERIAL_TYPES: &[&str] = &[
    "bigserial",
    "serial",
    "serial2",
    "serial4",
    "serial8",
    "smallserial",
];
