//! The validated tenant identifier.

use std::fmt;
use std::sync::Arc;

/// The longest schema name PostgreSQL keeps without truncating it (`NAMEDATALEN - 1`).
pub const MAX_TENANT_ID_LEN: usize = 63;

/// Schema names no tenant may take: PostgreSQL's own and the library's.
const RESERVED_SCHEMAS: &[&str] = &["public", "information_schema"];

/// PostgreSQL 15's reserved key words, including those that may only be function or type names
/// (appendix C of the PostgreSQL documentation, columns "reserved" and "reserved (can be function or
/// type)"). Kept sorted for the binary search.
const RESERVED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// A tenant's identifier, which is also the name of its PostgreSQL schema.
///
/// A `TenantId` can only be built from a name that passes [`TenantId::new`]'s checks, so every
/// value of this type is safe to use as a schema name. The library still quotes it at every use.
/// Cloning is cheap (a reference count).
///
/// The rules, checked on bytes:
/// - matches `^[a-z_][a-z0-9_]{0,62}$`: lower-case ASCII letters, digits and `_`, not starting with a
///   digit, 1 to 63 bytes. Nothing is truncated or case-folded: `Acme` is rejected, not turned into
///   `acme`;
/// - is not `public` or `information_schema`, does not start with `pg_` (PostgreSQL reserves those);
/// - is not a reserved SQL key word (`select`, `user`, `table`, ...).
///
/// ```
/// use diesel_workspace::TenantId;
///
/// let acme: TenantId = "acme".parse()?;
/// assert_eq!(acme.as_str(), "acme");
/// assert_eq!(acme.quoted(), "\"acme\"");
///
/// let err = TenantId::new("a,public").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid tenant name `a,public`: only lower-case ASCII letters, digits and `_` are allowed"
/// );
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// `name` as a tenant id when it passes [`check`]; the error is the reason it does not
    /// ([`TenantId::new`] turns it into an `Error`).
    pub(crate) fn parse(name: &str) -> Result<Self, &'static str> {
        check(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// The schema name, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The schema name as a quoted SQL identifier, ready to splice into SQL: `"acme"`.
    ///
    /// Validation already rules out every character that would need escaping, so this only adds
    /// the quotes.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// Checks a schema name against the rules of [`TenantId`]; the error is the reason.
pub(crate) fn check(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err("a tenant name cannot be empty");
    };
    if bytes.len() > MAX_TENANT_ID_LEN {
        return Err("a tenant name is at most 63 bytes long");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
    {
        return Err("only lower-case ASCII letters, digits and `_` are allowed");
    }
    if first.is_ascii_digit() {
        return Err("a tenant name cannot start with a digit");
    }
    if name.starts_with("pg_") {
        return Err("names starting with `pg_` are reserved by PostgreSQL");
    }
    if RESERVED_SCHEMAS.contains(&name) {
        return Err("this schema is reserved for shared data");
    }
    if RESERVED_KEYWORDS.binary_search(&name).is_ok() {
        return Err("a reserved SQL key word cannot be a tenant name");
    }
    Ok(())
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TenantId").field(&&*self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn keywords_are_sorted() {
        let mut sorted = RESERVED_KEYWORDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, RESERVED_KEYWORDS);
    }

    #[test]
    fn accepts_plain_names() {
        for ok in ["acme", "_x", "a1", "tenant_42", &"a".repeat(63)] {
            assert_eq!(TenantId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_hostile_names() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "Acme",
            "a\"b",
            "a'b",
            "a,public",
            "$user",
            "pg_catalog",
            "pg_temp",
            "public",
            "information_schema",
            "select",
            "user",
            "1abc",
            "a b",
            "a\0b",
            "é",
            "ａ",
            long.as_str(),
        ] {
            let err = TenantId::new(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidTenantName { name, .. } if name == bad),
                "{bad:?} gave {err:?}"
            );
        }
    }
}
