//! How the library opens a connection: [`connect`] for the application, and the migrator's
//! own worker connections, each checked against an undeclared transaction pooler.

use diesel::prelude::*;

use crate::error::Result;
use crate::pooler::{register, Pooler};

/// Opens a connection for `pooler`, as the library's own connections are opened.
///
/// - [`Pooler::Transaction`]: Diesel's statement cache is turned off on it.
/// - [`Pooler::Direct`]: its backend is registered for as long as it lives, and a second
///   connection opened beside it (and closed again) must have another backend; a transaction
///   pooler is refused.
///
/// ```no_run
/// let mut conn = diesel_workspace::connect("postgres://localhost/app", diesel_workspace::pooler::Pooler::Direct)?;
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
///
/// # Errors
/// [`Error::Connection`](crate::Error::Connection) when a connection cannot be opened;
/// [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared) when `pooler` is
/// [`Pooler::Direct`] and the two connections share a backend.
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
    let mut conn = PgConnection::establish(database_url)?;
    if pooler.is_transaction() {
        conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    } else {
        register(&mut conn)?;
    }
    Ok(conn)
}
