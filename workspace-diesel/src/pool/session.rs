//! Which SQL sets a pooled connection's session defaults once, restores them at every checkout
//! (with the backend check folded in), and starts a tenant transaction in pooler mode?

use std::sync::Arc;
use std::time::Duration;

use crate::pooler::{pid_check_expr, Pooler};
use crate::sql::{escape_literal, quote_ident, work_path};

/// The default [`application_name`](super::TenantPoolBuilder::application_name).
pub const DEFAULT_APPLICATION_NAME: &str = "workspace-diesel";

/// The default
/// [`idle_in_transaction_session_timeout`](super::TenantPoolBuilder::idle_in_transaction_session_timeout):
/// 10 minutes.
pub const DEFAULT_IDLE_IN_TRANSACTION_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// The builder's settings the session SQL is written from
/// ([`TenantPoolBuilder`](super::TenantPoolBuilder)'s session settings and its pooler).
pub(super) struct SessionSettings<'a> {
    pub(super) shared_schema: &'a str,
    pub(super) application_name: &'a str,
    pub(super) statement_timeout: Option<Duration>,
    pub(super) lock_timeout: Option<Duration>,
    pub(super) idle_in_transaction_session_timeout: Option<Duration>,
    pub(super) session_cleanup: bool,
    pub(super) pooler: Pooler,
}

/// The SQL that sets the session defaults, and the SQL that restores them on checkout.
#[derive(Debug)]
pub(super) struct SessionDefaults {
    /// Sent once per physical connection.
    pub(super) acquire: String,
    /// Sent on every checkout, in place of Diesel's ping. Not in pooler mode, it starts with
    /// `SELECT ` and the backend check is folded into that first statement (see `checked_reset`).
    pub(super) reset: String,
    /// In pooler mode: the `SET LOCAL` statements every tenant transaction starts with.
    pub(super) local: Option<Arc<str>>,
}

impl SessionDefaults {
    pub(super) fn new(b: &SessionSettings<'_>) -> Self {
        let timeout = |set: &str, name: &str, value: Option<Duration>| match value {
            Some(d) => Some(format!("{set} {name} TO {}", millis(d))),
            None if set == "SET" => Some(format!("RESET {name}")),
            None => None,
        };
        let application_name = format!(
            "SET application_name TO {}",
            escape_literal(b.application_name)
        );
        let timeouts = |set: &str| {
            [
                timeout(set, "statement_timeout", b.statement_timeout),
                timeout(set, "lock_timeout", b.lock_timeout),
                timeout(
                    set,
                    "idle_in_transaction_session_timeout",
                    b.idle_in_transaction_session_timeout,
                ),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
        };
        if b.pooler.is_transaction() {
            // PgBouncer tracks `application_name` per client; nothing else may be session state.
            // What another client left on the server connection is made harmless for the
            // transaction: its cursors here, its role in the check that ends the `BEGIN` batch
            // (`connection::begin_sql`).
            let mut local = vec!["CLOSE ALL".to_owned()];
            local.extend(timeouts("SET LOCAL"));
            let local = local.join("; ");
            return Self {
                acquire: application_name,
                reset: "SELECT 1".to_owned(),
                local: Some(Arc::from(local)),
            };
        }
        let mut acquire = vec![
            format!(
                "SET search_path TO {}",
                work_path(&quote_ident(b.shared_schema))
            ),
            application_name,
        ];
        acquire.extend(timeouts("SET"));
        let acquire = acquire.join("; ");
        let reset = if b.session_cleanup {
            format!(
                "SELECT pg_catalog.pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; \
                 SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; DISCARD TEMP; {acquire}"
            )
        } else {
            format!("SELECT 0; {acquire}")
        };
        Self {
            acquire,
            reset,
            local: None,
        }
    }

    /// The reset batch of a connection served by backend `pid`, its first statement also checking
    /// that the backend is still that one (the same round trip, and before anything else runs).
    pub(super) fn checked_reset(&self, pid: i32) -> String {
        let rest = self.reset.strip_prefix("SELECT ").unwrap_or(&self.reset);
        format!("SELECT {}, {rest}", pid_check_expr(pid))
    }
}

/// A duration as PostgreSQL milliseconds: rounded up, at most `i32::MAX`.
fn millis(d: Duration) -> u128 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::builder;

    #[test]
    fn timeouts_round_up_and_clamp() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX as u128);
    }

    #[test]
    fn session_sql() {
        let b = builder()
            .shared_schema("app\"x")
            .statement_timeout(Some(Duration::from_secs(5)));
        let s = SessionDefaults::new(&b.session_settings());
        assert_eq!(
            s.acquire,
            "SET search_path TO \"app\"\"x\", pg_temp; SET application_name TO E'workspace-diesel'; \
             SET statement_timeout TO 5000; RESET lock_timeout; \
             SET idle_in_transaction_session_timeout TO 600000"
        );
        assert!(s.reset.ends_with(&s.acquire));
        assert!(!s.reset.contains("DISCARD ALL") && !s.reset.contains("DEALLOCATE"));
        let checked = s.checked_reset(42);
        assert!(checked.starts_with("SELECT CASE WHEN pg_catalog.pg_backend_pid() = 42 THEN 0"));
        assert!(checked.contains(" END, pg_catalog.pg_advisory_unlock_all(); CLOSE ALL;"));
        let s = SessionDefaults::new(&builder().session_cleanup(false).session_settings());
        assert_eq!(s.reset, format!("SELECT 0; {}", s.acquire));
        assert!(s
            .checked_reset(7)
            .ends_with(&format!(" END, 0; {}", s.acquire)));
        let s = SessionDefaults::new(&builder().pooler(Pooler::Transaction).session_settings());
        assert_eq!(s.acquire, "SET application_name TO E'workspace-diesel'");
        assert_eq!(s.reset, "SELECT 1");
        assert_eq!(
            s.local.as_deref(),
            Some("CLOSE ALL; SET LOCAL idle_in_transaction_session_timeout TO 600000")
        );
    }
}
