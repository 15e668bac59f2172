//! Splitting SQL into statements with PostgreSQL's lexical rules, and quoting an identifier
//! ([`quote_ident`]): what a tool that reads or writes SQL text needs of the library.
//!
//! Citus forwards the original query string of some DDL (`CREATE INDEX`, `ALTER TABLE ... ADD
//! CONSTRAINT`) to its workers, which refuse a string holding several commands, so on Citus a
//! migration is sent statement by statement. The lexer below knows what may hide a `;`:
//! standard strings (`'it''s'`, with `standard_conforming_strings` on, PostgreSQL's default),
//! escape strings (`E'\''`), dollar quotes with or without a tag (`$fn$ ... $fn$`), quoted
//! identifiers (`"a;b"`), `--` comments, nested `/* /* */ */` comments, and the bodies of
//! SQL-standard routines (`CREATE FUNCTION ... BEGIN ATOMIC ...; ...; END`).

pub use crate::sql::quote_ident;
use std::fmt;

/// One statement of a SQL text, without its terminating `;` and without the comments and
/// blank space before its first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    sql: &'a str,
    offset: usize,
    line: usize,
}

impl<'a> Statement<'a> {
    /// The statement's text.
    pub fn sql(&self) -> &'a str {
        self.sql
    }

    /// The byte offset of its first token in the whole text.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The line (1-based) of its first token in the whole text.
    pub fn line(&self) -> usize {
        self.line
    }
}

/// A SQL text that ends inside a string, a quoted identifier, a dollar quote or a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    what: &'static str,
    line: usize,
}

impl SplitError {
    /// What is left open: `string`, `escape string`, `quoted identifier`, `dollar-quoted string`
    /// or `comment`.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The line (1-based) where it starts.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unterminated {} starting at line {}",
            self.what, self.line
        )
    }
}

impl std::error::Error for SplitError {}

/// Splits `sql` into its statements, dropping empty ones (blank, or comments only).
///
/// ```
/// use diesel_workspace::statements::split_statements;
///
/// let sql = "CREATE TABLE t (id INT PRIMARY KEY, s TEXT DEFAULT 'a;b'); -- done;\n\
///            CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END $fn$;";
/// let statements: Vec<&str> = split_statements(sql)?.iter().map(|s| s.sql()).collect();
/// assert_eq!(statements, [
///     "CREATE TABLE t (id INT PRIMARY KEY, s TEXT DEFAULT 'a;b')",
///     "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END $fn$",
/// ]);
/// # Ok::<(), diesel_workspace::statements::SplitError>(())
/// ```
///
/// # Errors
/// [`SplitError`] when the text ends inside a string, quoted identifier, dollar quote or comment.
pub fn split_statements(sql: &str) -> Result<Vec<Statement<'_>>, SplitError> {
    let mut out = Vec::new();
    let mut routine = RoutineDepth::default();
    let mut first: Option<usize> = None;
    let mut last_end = 0;
    for token in Lexer::new(sql) {
        let token = token?;
        if token.kind == Kind::Punct(b';') && !routine.inside() {
            flush(sql, &mut first, last_end, &mut out);
            routine = RoutineDepth::default();
            continue;
        }
        routine.see(&token, sql);
        first.get_or_insert(token.start);
        last_end = token.end;
    }
    flush(sql, &mut first, last_end, &mut out);
    Ok(out)
}

fn flush<'a>(sql: &'a str, first: &mut Option<usize>, end: usize, out: &mut Vec<Statement<'a>>) {
    if let Some(start) = first.take() {
        out.push(Statement {
            sql: &sql[start..end],
            offset: start,
            line: line_of(sql, start),
        });
    }
}

fn line_of(sql: &str, offset: usize) -> usize {
    1 + sql.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Tracks `BEGIN ATOMIC ... END` in `CREATE [OR REPLACE] FUNCTION | PROCEDURE`: inside such a
/// body (outside parentheses), `BEGIN` and `CASE` open a level that `END` closes, and a `;`
/// does not end the statement.
#[derive(Default)]
struct RoutineDepth {
    words: u8,
    shape: [u8; 4],
    parens: usize,
    depth: usize,
}

impl RoutineDepth {
    fn inside(&self) -> bool {
        self.depth > 0
    }

    fn is_routine(&self) -> bool {
        matches!(
            self.shape,
            [b'c', b'f' | b'p', ..] | [b'c', b'o', b'r', b'f' | b'p']
        )
    }

    fn see(&mut self, token: &Token, sql: &str) {
        match token.kind {
            Kind::Punct(b'(') => self.parens += 1,
            Kind::Punct(b')') => self.parens = self.parens.saturating_sub(1),
            Kind::Word => {
                let word = &sql[token.start..token.end];
                if (self.words as usize) < self.shape.len() {
                    let tag = ["create", "or", "replace", "function", "procedure"]
                        .iter()
                        .find(|k| word.eq_ignore_ascii_case(k))
                        .map_or(b'-', |k| k.as_bytes()[0]);
                    self.shape[self.words as usize] = tag;
                }
                self.words = self.words.saturating_add(1);
                if !self.is_routine() || self.parens > 0 {
                    return;
                }
                if word.eq_ignore_ascii_case("begin") {
                    self.depth += 1;
                } else if word.eq_ignore_ascii_case("case") {
                    if self.depth > 0 {
                        self.depth += 1;
                    }
                } else if word.eq_ignore_ascii_case("end") {
                    self.depth = self.depth.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
}

/// What a token is; strings, quoted identifiers and comments are single tokens, so nothing
/// inside them is seen as a `;`, a parenthesis or a key word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A key word or unquoted identifier (`[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*`).
    Word,
    /// `"..."` (or `U&"..."` after a `U&` word and `&`).
    QuotedIdent,
    /// Any string constant: standard, escape, dollar-quoted.
    String,
    /// A number, a parameter (`$1`) or an operator character.
    Other,
    /// One of `;`, `(`, `)`, `,`, `.`.
    Punct(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The tokens of a SQL text, comments and blank space skipped.
pub(crate) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Self { src, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.bytes().get(i).copied()
    }

    fn unterminated(&self, what: &'static str, start: usize) -> SplitError {
        SplitError {
            what,
            line: line_of(self.src, start),
        }
    }

    /// Skips blank space and comments; an unterminated `/*` is an error.
    fn skip_blank(&mut self) -> Result<(), SplitError> {
        loop {
            match (self.at(self.pos), self.at(self.pos + 1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    self.pos = match self.src[self.pos..].find('\n') {
                        Some(n) => self.pos + n + 1,
                        None => self.src.len(),
                    };
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.pos;
                    let mut depth = 0usize;
                    loop {
                        match (self.at(self.pos), self.at(self.pos + 1)) {
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.pos += 2;
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.pos += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            (Some(_), _) => self.pos += 1,
                            (None, _) => return Err(self.unterminated("comment", start)),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// From just after an opening `quote`, to just after its closing one; a doubled quote
    /// stands for itself, and with `backslash` a `\` escapes the next byte.
    fn quoted(
        &mut self,
        quote: u8,
        backslash: bool,
        what: &'static str,
        start: usize,
    ) -> Result<(), SplitError> {
        loop {
            match self.at(self.pos) {
                None => return Err(self.unterminated(what, start)),
                Some(b'\\') if backslash => self.pos += 2,
                Some(b) if b == quote => {
                    if self.at(self.pos + 1) == Some(quote) {
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        return Ok(());
                    }
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// At a `$`: the length of a dollar-quote opening tag (`$$`, `$tag$`) starting here, if any.
    fn dollar_tag(&self) -> Option<usize> {
        let b = self.bytes();
        let mut i = self.pos + 1;
        match b.get(i) {
            Some(b'$') => return Some(2),
            Some(&c) if is_ident_start(c) => {}
            _ => return None,
        }
        while let Some(&c) = b.get(i) {
            if c == b'$' {
                return Some(i + 1 - self.pos);
            }
            if !(is_ident_start(c) || c.is_ascii_digit()) {
                return None;
            }
            i += 1;
        }
        None
    }

    fn next_token(&mut self) -> Result<Option<Token>, SplitError> {
        self.skip_blank()?;
        let start = self.pos;
        let Some(b) = self.at(start) else {
            return Ok(None);
        };
        let kind = match b {
            b'\'' => {
                self.pos += 1;
                self.quoted(b'\'', false, "string", start)?;
                Kind::String
            }
            b'"' => {
                self.pos += 1;
                self.quoted(b'"', false, "quoted identifier", start)?;
                Kind::QuotedIdent
            }
            b'$' => match self.dollar_tag() {
                Some(len) => {
                    let tag = &self.src[start..start + len];
                    let body = start + len;
                    match self.src[body..].find(tag) {
                        Some(n) => self.pos = body + n + len,
                        None => return Err(self.unterminated("dollar-quoted string", start)),
                    }
                    Kind::String
                }
                None => {
                    self.pos += 1;
                    while self.at(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    Kind::Other
                }
            },
            b';' | b'(' | b')' | b',' | b'.' => {
                self.pos += 1;
                Kind::Punct(b)
            }
            b if is_ident_start(b) => {
                self.pos += 1;
                while self.at(self.pos).is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                if self.pos == start + 1
                    && (b == b'e' || b == b'E')
                    && self.at(self.pos) == Some(b'\'')
                {
                    self.pos += 1;
                    self.quoted(b'\'', true, "escape string", start)?;
                    Kind::String
                } else {
                    Kind::Word
                }
            }
            _ => {
                // Numbers and operators: one byte at a time is enough, nothing here hides a `;`.
                // Step over a whole UTF-8 sequence so offsets stay on character boundaries.
                self.pos += self.src[start..].chars().next().map_or(1, char::len_utf8);
                Kind::Other
            }
        };
        Ok(Some(Token {
            kind,
            start,
            end: self.pos,
        }))
    }
}

impl Iterator for Lexer<'_> {
    type Item = Result<Token, SplitError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_token() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.pos = self.src.len();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sql: &str) -> Vec<&str> {
        split_statements(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|s| s.sql())
            .collect()
    }

    #[test]
    fn plain_statements() {
        assert_eq!(split("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
        assert_eq!(split("SELECT 1;;; ;\n"), ["SELECT 1"]);
        assert!(split("").is_empty());
        assert!(split("  -- only a comment\n /* and another */ ;").is_empty());
    }

    #[test]
    fn standard_strings_and_identifiers() {
        assert_eq!(
            split(r"SELECT 'a;b''c;', '\'; SELECT 2"),
            [r"SELECT 'a;b''c;', '\'", "SELECT 2"]
        );
        assert_eq!(
            split(r#"CREATE TABLE "x;""y" (id INT); SELECT 1"#),
            [r#"CREATE TABLE "x;""y" (id INT)"#, "SELECT 1"]
        );
        assert_eq!(
            split("SELECT U&'d\\0061t;a', X'1F', B'01', N'n;'; SELECT 2"),
            ["SELECT U&'d\\0061t;a', X'1F', B'01', N'n;'", "SELECT 2"]
        );
    }

    #[test]
    fn escape_strings() {
        assert_eq!(
            split(r"SELECT E'it\'s;', e'\\'; SELECT 2"),
            [r"SELECT E'it\'s;', e'\\'", "SELECT 2"]
        );
        // `e` ending a longer word is not an escape-string prefix: `\` is literal here.
        assert_eq!(
            split(r"SELECT somee'\'; SELECT 2"),
            [r"SELECT somee'\'", "SELECT 2"]
        );
    }

    #[test]
    fn dollar_quotes() {
        assert_eq!(
            split("DO $$ BEGIN PERFORM 1; END $$; SELECT 2"),
            ["DO $$ BEGIN PERFORM 1; END $$", "SELECT 2"]
        );
        assert_eq!(
            split("SELECT $a$ $$; $b$ $a$, $1, a$b; SELECT 2"),
            ["SELECT $a$ $$; $b$ $a$, $1, a$b", "SELECT 2"]
        );
        assert_eq!(
            split("SELECT $_x1$;$_x1$; SELECT $q$'$q$"),
            ["SELECT $_x1$;$_x1$", "SELECT $q$'$q$"]
        );
    }

    #[test]
    fn comments() {
        assert_eq!(
            split("SELECT 1 -- a; comment\n, 2; /* x; /* nested; */ still; */ SELECT 3"),
            ["SELECT 1 -- a; comment\n, 2", "SELECT 3"]
        );
        assert_eq!(split("SELECT 1 --;"), ["SELECT 1"]);
        assert_eq!(split("SELECT 2 /* ; */ ;"), ["SELECT 2"]);
        // `-` and `/` alone are operators.
        assert_eq!(
            split("SELECT 4 - 2 / 1; SELECT 1"),
            ["SELECT 4 - 2 / 1", "SELECT 1"]
        );
    }

    #[test]
    fn begin_atomic_bodies() {
        let f = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC \
                 SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END; SELECT a; END";
        assert_eq!(split(&format!("{f}; SELECT 1")), [f, "SELECT 1"]);
        let p = "create or replace procedure p() begin atomic insert into t values (1); end";
        assert_eq!(split(&format!("{p};\n{p};")), [p, p]);
        // Outside a routine, BEGIN is a transaction.
        assert_eq!(split("BEGIN; SELECT 1; END;"), ["BEGIN", "SELECT 1", "END"]);
        // A CASE in parentheses does not count.
        let g =
            "CREATE FUNCTION g() RETURNS int BEGIN ATOMIC SELECT (CASE WHEN true THEN 1 END); END";
        assert_eq!(split(&format!("{g}; SELECT 2")), [g, "SELECT 2"]);
    }

    #[test]
    fn unterminated() {
        for (sql, what, line) in [
            ("SELECT 'a", "string", 1),
            ("SELECT 1;\nSELECT E'a\\'", "escape string", 2),
            ("SELECT \"a", "quoted identifier", 1),
            ("\n\nDO $x$ BEGIN END $y$", "dollar-quoted string", 3),
            ("SELECT /* /* */", "comment", 1),
        ] {
            let e = split_statements(sql).unwrap_err();
            assert_eq!((e.what(), e.line()), (what, line), "{sql}");
        }
    }

    #[test]
    fn offsets_and_lines() {
        let sql = "-- head\nSELECT 1;\n\n  SELECT 'é';";
        let s = split_statements(sql).unwrap();
        assert_eq!(s[0].line(), 2);
        assert_eq!(&sql[s[0].offset()..s[0].offset() + 8], "SELECT 1");
        assert_eq!(s[1].line(), 4);
        assert_eq!(s[1].sql(), "SELECT 'é'");
    }
}
