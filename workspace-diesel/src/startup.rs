//! What a connection proves when it opens, spelled here: the setting a direct connection
//! carries in its startup packet (`options=-c workspace_diesel.client=<token>`, added to the
//! connection string's own options), and the transaction that a pooler in statement mode
//! refuses. Imports nothing from the crate.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::prelude::*;

/// The pooler in front refuses transaction blocks: PgBouncer with `pool_mode = statement`. The
/// library's transactions (tenant transactions, migrations, the registry) cannot run there.
///
/// [`Error::from`](crate::Error) turns it into
/// [`Error::StatementPooling`](crate::Error::StatementPooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementPooling;

impl fmt::Display for StatementPooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the connection goes through a pooler in statement pooling mode (PgBouncer \
             `pool_mode = statement`), which refuses transactions: use `pool_mode = transaction` \
             with `pooler(Pooler::Transaction)` (CLI: `--pooler transaction`), `pool_mode = \
             session`, or a direct connection",
        )
    }
}

impl std::error::Error for StatementPooling {}

impl From<StatementPooling> for diesel::result::Error {
    fn from(e: StatementPooling) -> Self {
        diesel::result::Error::QueryBuilderError(Box::new(e))
    }
}

/// PgBouncer's words when a client opens a transaction in statement pooling mode.
const STATEMENT_POOLING_MARKER: &str = "statement pooling mode";

/// Opens and ends a transaction, as two round trips (a pooler in statement mode sees the open
/// transaction after the first): fails with [`StatementPooling`] when the pooler refuses it.
/// Run once per connection opened in pooler mode.
pub(crate) fn refuse_statement_pooling(conn: &mut PgConnection) -> QueryResult<()> {
    use diesel::connection::SimpleConnection;
    let res = conn
        .batch_execute("BEGIN")
        .and_then(|()| conn.batch_execute("COMMIT"));
    match res {
        Err(e) if e.to_string().contains(STATEMENT_POOLING_MARKER) => Err(StatementPooling.into()),
        // PgBouncer sends its error and closes the connection; libpq may report only the close.
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            _,
        )) => Err(StatementPooling.into()),
        other => other,
    }
}

/// The custom setting a direct connection carries in its startup packet (`options=-c ...`).
pub(crate) const CLIENT_SETTING: &str = "workspace_diesel.client";

/// The select-list item that reads [`CLIENT_SETTING`] back (`client`, NULL when unset), for
/// `QueryableByName`.
pub(crate) const CLIENT_COLUMN: &str =
    "pg_catalog.current_setting('workspace_diesel.client', true) AS client";

/// This process's value of [`CLIENT_SETTING`]: its pid and start time, so that no setting made
/// elsewhere (`ALTER ROLE ... SET`, another process) stands in for it.
pub(crate) fn client_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("p{}t{:x}", std::process::id(), nanos as u64)
    })
}

/// `database_url` with `-c workspace_diesel.client=<token>` first in its `options` (a
/// `postgres://` URI or a `key=value` string); options it had (or, without any, the `PGOPTIONS`
/// that libpq would have used) follow.
pub(crate) fn startup_url(database_url: &str) -> String {
    let ours = format!("-c {CLIENT_SETTING}={}", client_token());
    let env = || {
        std::env::var("PGOPTIONS")
            .ok()
            .filter(|o| !o.trim().is_empty())
    };
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let (base, query) = match database_url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (database_url, ""),
        };
        let mut found = false;
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.strip_prefix("options=") {
                Some(theirs) => {
                    found = true;
                    format!("options={}%20{theirs}", percent_encode(&ours))
                }
                None => p.to_owned(),
            })
            .collect();
        if !found {
            let all = match env() {
                Some(theirs) => format!("{ours} {theirs}"),
                None => ours,
            };
            params.push(format!("options={}", percent_encode(&all)));
        }
        return format!("{base}?{}", params.join("&"));
    }
    let mut pairs = parse_conninfo(database_url);
    match pairs.iter_mut().find(|(k, _)| k == "options") {
        Some((_, theirs)) => *theirs = format!("{ours} {theirs}"),
        None => pairs.push((
            "options".to_owned(),
            match env() {
                Some(theirs) => format!("{ours} {theirs}"),
                None => ours,
            },
        )),
    }
    conninfo_string(&pairs)
}

/// A libpq `key=value` connection string of `pairs`, every value quoted.
pub(crate) fn conninfo_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every byte but unreserved URI characters as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `key = value` pairs of a libpq `key=value` connection string (values unquoted, with
/// libpq's backslash escapes), in order.
pub(crate) fn parse_conninfo(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            return out;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=');
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let quoted = chars.next_if_eq(&'\'').is_some();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '\'' if quoted => break,
                c if !quoted && c.is_whitespace() => break,
                c => value.push(c),
            }
        }
        out.push((key, value));
    }
}

pub(crate) fn is_statement_pooling(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::QueryBuilderError(inner) if inner.is::<StatementPooling>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_setting_joins_the_options() {
        let ours = format!("-c%20workspace_diesel.client%3D{}", client_token());
        assert_eq!(
            startup_url("postgres://u@h:5/db"),
            format!("postgres://u@h:5/db?options={ours}")
        );
        assert_eq!(
            startup_url("postgresql://u@h/db?sslmode=disable&options=-c%20x.y%3D1"),
            format!("postgresql://u@h/db?sslmode=disable&options={ours}%20-c%20x.y%3D1")
        );
        let kv = startup_url("host=h dbname = 'my db' options='-c a.b=it\\'s'");
        assert_eq!(
            parse_conninfo(&kv),
            [
                ("host".to_owned(), "h".to_owned()),
                ("dbname".to_owned(), "my db".to_owned()),
                (
                    "options".to_owned(),
                    format!("-c workspace_diesel.client={} -c a.b=it's", client_token())
                ),
            ]
        );
    }
}
