//! Connection poolers between the application and PostgreSQL: the setting that declares one, and
//! the check that refuses an undeclared transaction pooler.
//!
//! Behind a transaction pooler (PgBouncer with `pool_mode = transaction`), one client connection
//! is served by whichever server connection is free at each transaction, and one server
//! connection serves many clients in turn. Session state (settings, Diesel's named prepared
//! statements, session advisory locks) then stays with the server connection, not with the
//! client, and another client meets it. Two pieces of evidence are definitive, because neither can
//! happen on a direct connection: two client connections that are both open report the same
//! `pg_backend_pid()`, or one client connection reports a different backend pid than before.
//!
//! Those two depend on timing: a busy pooler may hand two connections two servers, and a held
//! connection may keep meeting the same one. The check that does not depend on timing is made
//! when a connection opens: in the default mode ([`Pooler::Direct`]) the library opens every
//! connection with a setting in the startup packet (`options=-c workspace_diesel.client=<token>`)
//! and reads it back in the connection's first query. PostgreSQL gives the backend the client's
//! startup options; a pooler serves the client with server connections it opened itself, so the
//! setting is missing there (PgBouncer ignores the option when told to, and otherwise refuses the
//! connection). Either way the connection is refused before any tenant statement.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

pub use crate::startup::StatementPooling;
use crate::startup::{client_token, is_statement_pooling, refuse_statement_pooling, CLIENT_COLUMN};

/// The environment variable the CLI reads for its `--pooler` flag.
pub const POOLER_ENV: &str = "WORKSPACE_DIESEL_POOLER";

/// What sits between the application and PostgreSQL.
///
/// Set it with [`pool::TenantPoolBuilder::pooler`](crate::pool::TenantPoolBuilder::pooler),
/// [`MigratorBuilder::pooler`](crate::MigratorBuilder::pooler), [`connect`](crate::connect) and the CLI's
/// `--pooler` flag (or the `WORKSPACE_DIESEL_POOLER` environment variable). It parses from
/// `direct`, `session` and `transaction`.
///
/// ```
/// use diesel_workspace::pooler::Pooler;
///
/// assert_eq!("transaction".parse::<Pooler>(), Ok(Pooler::Transaction));
/// assert_eq!("session".parse::<Pooler>(), Ok(Pooler::Session));
/// assert_eq!(Pooler::default(), Pooler::Direct);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pooler {
    /// Direct connections to PostgreSQL (the default). Session state is used (fail-closed
    /// session defaults, Diesel's statement cache, a reset on every checkout), and any pooler
    /// found behind the connection is refused with
    /// [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared): every connection the
    /// library opens carries a startup setting that only a direct connection delivers to its
    /// backend (`options=-c workspace_diesel.client=<token>`: a pooler's server connections never
    /// have it), checked in the connection's first query.
    #[default]
    Direct,
    /// A pooler in session mode (PgBouncer `pool_mode = session`): as [`Pooler::Direct`], without
    /// the startup setting (PgBouncer neither forwards nor, unless configured to ignore it,
    /// accepts it). A transaction pooler is still refused, by the backend checks at build, at
    /// every new connection, at every checkout and in every tenant transaction's `BEGIN`; those
    /// depend on what the pooler does at that moment, so declare a transaction pooler with
    /// [`Pooler::Transaction`] rather than rely on them.
    Session,
    /// A transaction pooler such as PgBouncer with `pool_mode = transaction`: Diesel's statement
    /// cache is off on every connection the library opens or hands out (unnamed statements,
    /// parsed on every execution), nothing relies on session state, and every advisory lock is
    /// transaction-scoped. Raw SQL that resolves names through the `search_path` is safe only
    /// inside [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction).
    Transaction,
}

impl Pooler {
    /// Whether connections go through a transaction pooler.
    pub fn is_transaction(self) -> bool {
        self == Pooler::Transaction
    }
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooler::Direct => "direct",
            Pooler::Session => "session",
            Pooler::Transaction => "transaction",
        })
    }
}

/// The error of parsing a [`Pooler`] from a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePoolerError(String);

impl fmt::Display for ParsePoolerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown pooler `{}`: expected `direct`, `session` or `transaction`",
            self.0
        )
    }
}

impl std::error::Error for ParsePoolerError {}

impl FromStr for Pooler {
    type Err = ParsePoolerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "direct" | "none" => Ok(Pooler::Direct),
            "session" => Ok(Pooler::Session),
            "transaction" | "pgbouncer" => Ok(Pooler::Transaction),
            _ => Err(ParsePoolerError(s.to_owned())),
        }
    }
}

/// Why a connection is known to go through a transaction pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolerEvidence {
    /// Two client connections that were both open reported the same backend.
    SharedBackend {
        /// The backend pid both reported.
        pid: i32,
    },
    /// One client connection reported another backend than when it was opened.
    BackendChanged {
        /// The backend pid when the connection was opened.
        was: i32,
        /// The backend pid now.
        now: i32,
    },
    /// The setting a direct connection passes to its backend in the startup packet was missing
    /// on the backend that answered: a pooler opened that server connection, not this client.
    StartupSettingLost,
    /// The pooler refused the startup setting a direct connection carries (PgBouncer:
    /// `unsupported startup parameter: options`).
    StartupOptionRefused,
}

impl fmt::Display for PoolerEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolerEvidence::SharedBackend { pid } => write!(
                f,
                "two open connections are served by the same backend (pid {pid})"
            ),
            PoolerEvidence::BackendChanged { was, now } => write!(
                f,
                "a connection's backend changed from pid {was} to pid {now}"
            ),
            PoolerEvidence::StartupSettingLost => f.write_str(
                "the backend that answered never received the connection's startup setting \
                 `workspace_diesel.client`",
            ),
            PoolerEvidence::StartupOptionRefused => f.write_str(
                "the pooler refused the connection's startup setting \
                 (`unsupported startup parameter: options`)",
            ),
        }
    }
}

/// A transaction pooler was found behind a connection that was not declared to go through one.
///
/// Its message names the setting; [`Error::from`](crate::Error) turns it into
/// [`Error::PoolerNotDeclared`](crate::Error::PoolerNotDeclared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolerDetected {
    /// What showed it.
    pub evidence: PoolerEvidence,
}

impl fmt::Display for PoolerDetected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connected through a transaction pooler (PgBouncer `pool_mode = transaction`?) without \
             declaring it: {}; set `pooler(Pooler::Transaction)` on the pool builder and the \
             migrator (CLI: `--pooler transaction` or {POOLER_ENV}=transaction), declare a \
             session pooler with `pooler(Pooler::Session)`, or connect directly",
            self.evidence
        )
    }
}

impl std::error::Error for PoolerDetected {}

impl From<PoolerDetected> for diesel::result::Error {
    fn from(e: PoolerDetected) -> Self {
        diesel::result::Error::QueryBuilderError(Box::new(e))
    }
}

/// The error for a pooler found behind a connection that was not declared to go through one:
/// [`StatementPooling`](crate::startup::StatementPooling) when the pooler also refuses
/// transactions (checked only now, on the way out), `detected` otherwise.
pub(crate) fn undeclared(
    conn: &mut PgConnection,
    detected: PoolerDetected,
) -> diesel::result::Error {
    match refuse_statement_pooling(conn) {
        Err(e) if is_statement_pooling(&e) => e,
        _ => detected.into(),
    }
}

/// Fails unless the backend that answered has this process's `workspace_diesel.client`.
pub(crate) fn check_client(client: Option<&str>) -> Result<(), PoolerDetected> {
    if client == Some(client_token()) {
        Ok(())
    } else {
        Err(PoolerDetected {
            evidence: PoolerEvidence::StartupSettingLost,
        })
    }
}

/// The evidence in a connection error when a pooler refused the startup setting.
pub(crate) fn refused_option(e: &diesel::ConnectionError) -> Option<PoolerDetected> {
    e.to_string()
        .contains("unsupported startup parameter")
        .then_some(PoolerDetected {
            evidence: PoolerEvidence::StartupOptionRefused,
        })
}

/// A backend: its pid and its start time (so that a pid the system recycled for a new backend,
/// or the same pid on another server, is another backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Backend {
    pub(crate) pid: i32,
    started: i64,
}

/// The select list that identifies the backend: `pid` and `started` (microseconds since the epoch;
/// 0 when the current role may not see it), for `QueryableByName`.
pub(crate) const BACKEND_COLUMNS: &str = "pg_catalog.pg_backend_pid() AS pid, \
     COALESCE((SELECT (pg_catalog.date_part('epoch', a.backend_start) * 1000000)::pg_catalog.int8 \
      FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()), 0) AS started";

#[derive(QueryableByName)]
struct BackendRow {
    #[diesel(sql_type = Integer)]
    pid: i32,
    #[diesel(sql_type = BigInt)]
    started: i64,
    #[diesel(sql_type = Nullable<Text>)]
    client: Option<String>,
}

impl Backend {
    pub(crate) fn new(pid: i32, started: i64) -> Self {
        Self { pid, started }
    }

    /// Asks the connection which backend serves it, and that backend's [`CLIENT_SETTING`]
    /// (one round trip).
    pub(crate) fn query(conn: &mut PgConnection) -> QueryResult<(Self, Option<String>)> {
        let row: BackendRow =
            diesel::sql_query(format!("SELECT {BACKEND_COLUMNS}, {CLIENT_COLUMN}"))
                .get_result(conn)?;
        Ok((Self::new(row.pid, row.started), row.client))
    }
}

fn live() -> &'static Mutex<HashMap<Backend, usize>> {
    static LIVE: OnceLock<Mutex<HashMap<Backend, usize>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// The registration of an open connection's backend in this process; dropping it (with the
/// connection) removes it. Two live registrations of one backend prove a transaction pooler.
#[derive(Debug)]
pub(crate) struct LiveBackend {
    backend: Backend,
}

impl LiveBackend {
    /// Registers `backend` as served to a newly opened connection; fails when another open
    /// connection of this process already has it.
    pub(crate) fn register(backend: Backend) -> Result<Self, PoolerDetected> {
        let mut live = live().lock().unwrap_or_else(|p| p.into_inner());
        let count = live.entry(backend).or_insert(0);
        if *count > 0 {
            return Err(PoolerDetected {
                evidence: PoolerEvidence::SharedBackend { pid: backend.pid },
            });
        }
        *count += 1;
        Ok(Self { backend })
    }

    /// The registered backend.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for LiveBackend {
    fn drop(&mut self) {
        let mut live = live().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = live.get_mut(&self.backend) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.backend);
            }
        }
    }
}

/// The marker in the error of [`pid_check_sql`], followed by the backend's pid.
const PID_MARKER: &str = "workspace-diesel: backend pid now ";

/// An expression that fails when the connection is no longer served by backend `pid` (and is 0
/// otherwise): put it in the first statement of a batch, so that nothing after it runs on another
/// client's backend.
pub(crate) fn pid_check_expr(pid: i32) -> String {
    format!(
        "CASE WHEN pg_catalog.pg_backend_pid() = {pid} THEN 0 \
         ELSE pg_catalog.concat('{PID_MARKER}', pg_catalog.pg_backend_pid())::pg_catalog.int4 END"
    )
}

/// The evidence in the error of a batch that started with [`pid_check_expr`]`(was)`, if that check
/// failed.
pub(crate) fn pid_check_failure(was: i32, e: &diesel::result::Error) -> Option<PoolerDetected> {
    let message = e.to_string();
    let at = message.find(PID_MARKER)? + PID_MARKER.len();
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let now = digits.parse().ok()?;
    Some(PoolerDetected {
        evidence: PoolerEvidence::BackendChanged { was, now },
    })
}

/// The instrumentation of a connection opened by [`connect`](crate::connect): it keeps the connection's backend
/// registered while the connection lives and forwards every event to Diesel's default
/// instrumentation.
struct Registered {
    backend: LiveBackend,
    check_begin: bool,
    inner: Option<Box<dyn diesel::connection::Instrumentation>>,
}

impl diesel::connection::Instrumentation for Registered {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let Some(inner) = self.inner.as_deref_mut() {
            inner.on_connection_event(event);
        }
    }
}

/// The backend pid a connection opened by [`connect`](crate::connect) with [`Pooler::Session`] was opened on,
/// for the check in a tenant transaction's `BEGIN`; `None` otherwise (a direct connection's
/// startup setting settled it when it opened).
pub(crate) fn registered_pid(conn: &mut PgConnection) -> Option<i32> {
    conn.instrumentation()
        .downcast_ref::<Registered>()
        .filter(|r| r.check_begin)
        .map(|r| r.backend.backend().pid)
}

/// Registers an opened connection's backend for as long as the connection lives; with `pooler`
/// [`Pooler::Direct`], the backend must also have this process's startup setting.
///
/// # Errors
/// [`PoolerDetected`] (as a query builder error) when another open connection of this process has
/// that backend, or the startup setting is missing.
pub(crate) fn register(conn: &mut PgConnection, pooler: Pooler) -> QueryResult<()> {
    let (backend, client) = Backend::query(conn)?;
    if pooler == Pooler::Direct {
        check_client(client.as_deref()).map_err(|d| undeclared(conn, d))?;
    }
    let backend = LiveBackend::register(backend)?;
    conn.set_instrumentation(Registered {
        backend,
        check_begin: pooler == Pooler::Session,
        inner: diesel::connection::get_default_instrumentation(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("direct".parse(), Ok(Pooler::Direct));
        assert_eq!(" Transaction ".parse(), Ok(Pooler::Transaction));
        assert_eq!("pgbouncer".parse(), Ok(Pooler::Transaction));
        assert!("statement".parse::<Pooler>().is_err());
        assert_eq!("session".parse(), Ok(Pooler::Session));
        assert_eq!(Pooler::Transaction.to_string(), "transaction");
    }

    #[test]
    fn shared_backends_are_refused_until_released() {
        let b = Backend::new(-7, 1);
        let first = LiveBackend::register(b).expect("first");
        let second = LiveBackend::register(b).unwrap_err();
        assert_eq!(second.evidence, PoolerEvidence::SharedBackend { pid: -7 });
        assert!(second.to_string().contains("pooler(Pooler::Transaction)"));
        drop(first);
        let again = LiveBackend::register(b).expect("released");
        assert_eq!(again.backend(), b);
        // A recycled pid (or the same pid on another server) is another backend.
        let _other = LiveBackend::register(Backend::new(-7, 2)).expect("other server");
    }

    #[test]
    fn the_startup_setting_must_be_this_process() {
        assert!(check_client(Some(client_token())).is_ok());
        assert_eq!(
            check_client(None).unwrap_err().evidence,
            PoolerEvidence::StartupSettingLost
        );
        assert_eq!(
            check_client(Some("p1t2")).unwrap_err().evidence,
            PoolerEvidence::StartupSettingLost
        );
        for evidence in [
            PoolerEvidence::StartupSettingLost,
            PoolerEvidence::StartupOptionRefused,
        ] {
            let message = PoolerDetected { evidence }.to_string();
            assert!(!message.contains("  "), "{message}");
            assert!(message.contains("startup setting"), "{message}");
        }
    }

    #[test]
    fn pid_check_failures_parse() {
        let e = diesel::result::Error::QueryBuilderError(
            format!("invalid input syntax for type integer: \"{PID_MARKER}4242\"").into(),
        );
        assert_eq!(
            pid_check_failure(7, &e).map(|d| d.evidence),
            Some(PoolerEvidence::BackendChanged { was: 7, now: 4242 })
        );
        assert!(pid_check_failure(7, &diesel::result::Error::NotFound).is_none());
        assert!(pid_check_expr(12).contains("= 12 THEN"));
    }
}
