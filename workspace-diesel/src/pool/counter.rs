//! What does the pool know about one of its connections: the [`StatementCounter`](super::StatementCounter) installed as
//! its instrumentation (the statements it holds, its backend, its checkout reset, its
//! pooler-mode transaction settings), and the reads of it the crate makes.

use std::fmt;
use std::sync::Arc;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::{Connection, PgConnection};

use crate::pooler::LiveBackend;

/// The [`Instrumentation`] a [`TenantPool`](super::TenantPool) installs on each connection: it counts the prepared
/// statements Diesel caches on the connection and forwards every event to the instrumentation
/// configured with [`TenantPoolBuilder::instrumentation`](super::TenantPoolBuilder::instrumentation). It also carries what the pool knows
/// about the connection (its backend, its checkout reset, its pooler-mode transaction settings).
///
/// Reach it on a checked-out connection with [`cached_statements`], or with
/// `conn.instrumentation().downcast_mut::<StatementCounter>()`.
pub struct StatementCounter {
    pub(super) cached: usize,
    pub(super) inner: Option<Box<dyn Instrumentation>>,
    pub(super) backend: Option<LiveBackend>,
    pub(super) reset: Arc<str>,
    pub(super) local: Option<Arc<str>>,
    pub(super) check_begin: bool,
    pub(super) checkins: u32,
    /// This connection's statement cap (none: `usize::MAX`).
    pub(super) cap: usize,
    /// This connection's backend memory limit, when its backend's memory is measured.
    pub(super) memory_limit: Option<u64>,
}

impl fmt::Debug for StatementCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementCounter")
            .field("cached", &self.cached)
            .field("forwards", &self.inner.is_some())
            .field(
                "backend_pid",
                &self.backend.as_ref().map(|b| b.backend().pid),
            )
            .finish()
    }
}

impl StatementCounter {
    /// The number of prepared statements the connection holds (those Diesel prepared while
    /// connecting, plus every statement Diesel cached since).
    pub fn cached_statements(&self) -> usize {
        self.cached
    }

    /// The instrumentation events are forwarded to, if any.
    pub fn inner_mut(&mut self) -> Option<&mut dyn Instrumentation> {
        self.inner.as_deref_mut()
    }
}

impl Instrumentation for StatementCounter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::CacheQuery { .. } = event {
            self.cached += 1;
        }
        if let Some(inner) = self.inner.as_deref_mut() {
            inner.on_connection_event(event);
        }
    }
}

/// In pooler mode, the statements a tenant transaction on this pooled connection starts with
/// (every cursor closed, the pool's timeouts as `SET LOCAL`); `None` otherwise. Its presence also
/// makes the transaction put the role back (see `connection::begin_sql`).
pub(crate) fn transaction_settings(conn: &mut PgConnection) -> Option<Arc<str>> {
    conn.instrumentation()
        .downcast_ref::<StatementCounter>()
        .and_then(|c| c.local.clone())
        .filter(|l| !l.is_empty())
}

/// The backend pid a pooled connection of a pool declared for a session pooler
/// ([`Pooler::Session`]) was opened on, for the check in a tenant transaction's `BEGIN`; `None`
/// otherwise (a direct connection's startup setting settled it when it opened).
pub(crate) fn begin_check_pid(conn: &mut PgConnection) -> Option<i32> {
    conn.instrumentation()
        .downcast_ref::<StatementCounter>()
        .filter(|c| c.check_begin)
        .and_then(|c| c.backend.as_ref().map(|b| b.backend().pid))
}

/// The number of prepared statements a pooled connection holds, as counted by its
/// [`StatementCounter`](super::StatementCounter); `None` for a connection that did not come from a [`TenantPool`](super::TenantPool).
///
/// ```no_run
/// let pool = diesel_workspace::pool::new("postgres://localhost/app")?;
/// let mut conn = pool.get()?;
/// let held = diesel_workspace::pool::cached_statements(&mut conn);
/// assert!(held.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn cached_statements(conn: &mut PgConnection) -> Option<usize> {
    conn.instrumentation()
        .downcast_ref::<StatementCounter>()
        .map(StatementCounter::cached_statements)
}
