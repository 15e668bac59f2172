//! How the library opens a connection: [`connect`] for the application, and the migrator's
//! own worker connections, each checked against an undeclared pooler.

use diesel::prelude::*;

use crate::error::{Error, Result};
use crate::pooler::{refused_option, register, Pooler};
use crate::startup::{refuse_statement_pooling, startup_url};

/// Opens a connection for `pooler`, as the library's own connections are opened.
///
/// - [`Pooler::Transaction`]: Diesel's statement cache is turned off on it, and a pooler in
///   statement mode is refused ([`Error::StatementPooling`](crate::Error::StatementPooling); one
///   transaction opened and ended, two round trips).
/// - [`Pooler::Direct`]: it carries the startup setting (`options=-c workspace_diesel.client=…`),
///   read back in its first query; its backend is registered for as long as it lives, and a
///   second connection opened beside it (and closed again) must have another backend. Any
///   pooler is refused.
/// - [`Pooler::Session`]: as `Direct`, without the startup setting.
///
/// ```no_run
/// let mut conn = diesel_workspace::connect("postgres://localhost/app", diesel_workspace::pooler::Pooler::Direct)?;
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
///
/// # Errors
/// [`Error::Connection`](crate::Error::Connection) when a connection cannot be opened;
/// [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared) when `pooler` is not
/// [`Pooler::Transaction`] and a transaction pooler is found;
/// [`Error::StatementPooling`](crate::Error::StatementPooling) behind a statement pooler.
pub fn connect(database_url: &str, pooler: Pooler) -> Result<PgConnection> {
    let conn = open(database_url, pooler)?;
    if !pooler.is_transaction() {
        // Both are open: on a direct connection they cannot share a backend.
        drop(open(database_url, pooler)?);
    }
    Ok(conn)
}

/// Opens one connection for `pooler` (statement cache off, or backend registered).
pub(crate) fn open(database_url: &str, pooler: Pooler) -> Result<PgConnection> {
    let mut conn =
        match pooler {
            Pooler::Direct => PgConnection::establish(&startup_url(database_url)).map_err(|e| {
                match refused_option(&e) {
                    Some(detected) => Error::PoolerNotDeclared(detected),
                    None => Error::Connection(e),
                }
            })?,
            _ => PgConnection::establish(database_url)?,
        };
    if pooler.is_transaction() {
        conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        refuse_statement_pooling(&mut conn)?;
    } else {
        register(&mut conn, pooler)?;
    }
    Ok(conn)
}
