//! Which tables `print-schema` prints: `--only-tables` / `--except-tables` (regular expressions
//! matched against the bare table name, as diesel's), from the flags or the config file, and the
//! `warning:` lines for what is skipped.

use anyhow::{Context as _, Result};
use diesel::prelude::*;
use diesel::sql_types::Text;
use regex::Regex;

/// The table filter of one `print-schema` run.
#[derive(Debug)]
pub(crate) enum TableFilter {
    /// Every table.
    All,
    /// Only the tables matching one of these.
    Only(Vec<Regex>),
    /// Every table but those matching one of these.
    Except(Vec<Regex>),
}

impl TableFilter {
    /// The filter from the flags when any is given, else from the config file's lists.
    ///
    /// # Errors
    /// An invalid regular expression, named; both lists given at once in the config file.
    pub(crate) fn new(
        only: &[String],
        except: &[String],
        config_only: &[String],
        config_except: &[String],
    ) -> Result<Self> {
        let (only, except, origin) = if only.is_empty() && except.is_empty() {
            if !config_only.is_empty() && !config_except.is_empty() {
                anyhow::bail!(
                    "the config file sets both print_schema.only_tables and print_schema.except_tables: keep one"
                );
            }
            (config_only, config_except, "print_schema.")
        } else {
            (only, except, "--")
        };
        if !only.is_empty() {
            Ok(Self::Only(compile(
                only,
                &format!("{origin}only{}", sep(origin)),
            )?))
        } else if !except.is_empty() {
            Ok(Self::Except(compile(
                except,
                &format!("{origin}except{}", sep(origin)),
            )?))
        } else {
            Ok(Self::All)
        }
    }

    /// Whether `table` is printed.
    pub(crate) fn keeps(&self, table: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(res) => res.iter().any(|re| re.is_match(table)),
            Self::Except(res) => !res.iter().any(|re| re.is_match(table)),
        }
    }

    /// Why `table` is not printed (for the warning), when the filter drops it.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::All => "",
            Self::Only(_) => "it matches no --only-tables pattern",
            Self::Except(_) => "it matches an --except-tables pattern",
        }
    }
}

fn sep(origin: &str) -> &'static str {
    if origin == "--" {
        "-tables"
    } else {
        "_tables"
    }
}

fn compile(patterns: &[String], option: &str) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p).with_context(|| format!("invalid regular expression `{p}` in {option}"))
        })
        .collect()
}

/// Warns, on stderr, about each view and materialized view of `schema` (`print-schema` does not
/// print them: Diesel's `table!` needs a primary key they do not have) and each partition (its
/// partitioned table is printed).
pub(crate) fn warn_views(conn: &mut PgConnection, schema: &str) -> Result<()> {
    #[derive(QueryableByName)]
    struct View {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        kind: String,
    }
    let views: Vec<View> = diesel::sql_query(
        "SELECT c.relname::pg_catalog.text AS name, \
                CASE WHEN c.relkind = 'm' THEN 'materialized view' \
                     WHEN c.relkind = 'v' THEN 'view' \
                     ELSE 'partition' END AS kind \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 \
           AND (c.relkind IN ('v', 'm') OR (c.relkind IN ('r', 'p') AND c.relispartition)) \
         ORDER BY c.relname::pg_catalog.text COLLATE \"C\"",
    )
    .bind::<Text, _>(schema)
    .load(conn)
    .with_context(|| format!("could not read the views of schema `{schema}`"))?;
    for v in views {
        let why = if v.kind == "partition" {
            "its partitioned table is printed instead"
        } else {
            "print-schema does not print views"
        };
        eprintln!("warning: skipping {} `{schema}.{}`: {why}", v.kind, v.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let f = TableFilter::new(&strings(&["^notes$"]), &[], &[], &strings(&["notes"])).unwrap();
        assert!(f.keeps("notes") && !f.keeps("tags") && !f.keeps("notes_archive"));
        let f = TableFilter::new(&[], &[], &[], &strings(&["^audit_", "tmp"])).unwrap();
        assert!(f.keeps("notes") && !f.keeps("audit_log") && !f.keeps("a_tmp_b"));
        assert!(TableFilter::new(&[], &[], &[], &[]).unwrap().keeps("x"));
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = TableFilter::new(&strings(&["("]), &[], &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid regular expression `(` in --only-tables"
        );
        let e = TableFilter::new(&[], &[], &[], &strings(&["["])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid regular expression `[` in print_schema.except_tables"
        );
        assert!(TableFilter::new(&[], &[], &strings(&["a"]), &strings(&["b"])).is_err());
    }
}
