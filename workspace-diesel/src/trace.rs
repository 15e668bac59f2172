//! The library's `tracing` instrumentation: the spans of its operations and the event that closes
//! each one, with the outcome recorded on the span. The names and fields are listed in the
//! repository's tracing guide (`docs/tracing.md`). Nothing here runs on the `switch` path.

use crate::error::Result;
use crate::report::{MigrationReport, TenantOutcome};

/// An info span for one library operation, with the caller's fields plus `applied` and `error`,
/// filled in by [`finish`] / [`finish_with`].
macro_rules! op_span {
    ($name:literal $(, $($fields:tt)+)?) => {
        ::tracing::info_span!(
            $name,
            $($($fields)+,)?
            applied = ::tracing::field::Empty,
            error = ::tracing::field::Empty
        )
    };
}
pub(crate) use op_span;

/// An info span for a fleet run: `tenants`, `applied`, `up_to_date` and `failed`, filled in by
/// [`finish_fleet`].
macro_rules! fleet_span {
    ($name:literal) => {
        ::tracing::info_span!(
            $name,
            tenants = ::tracing::field::Empty,
            applied = ::tracing::field::Empty,
            up_to_date = ::tracing::field::Empty,
            failed = ::tracing::field::Empty
        )
    };
}
pub(crate) use fleet_span;

/// The span of one tenant of a fleet run, a child of the run's span (`run`, captured on the
/// caller's thread) although it lives on a worker thread.
macro_rules! fleet_tenant_span {
    ($run:expr, $tenant:expr) => {
        ::tracing::info_span!(
            parent: $run,
            "fleet.tenant",
            tenant = %$tenant,
            applied = ::tracing::field::Empty,
            sqlstate = ::tracing::field::Empty,
            error = ::tracing::field::Empty
        )
    };
}
pub(crate) use fleet_tenant_span;

/// [`finish_with`] for an operation with no count to record.
pub(crate) fn finish<T>(result: Result<T>) -> Result<T> {
    finish_with(result, |_| None)
}

/// Records how the operation of the current span ended (`applied` from `applied` on success,
/// `error` on failure) and emits its closing info event, `done` or `failed`.
pub(crate) fn finish_with<T>(
    result: Result<T>,
    applied: impl FnOnce(&T) -> Option<usize>,
) -> Result<T> {
    let span = tracing::Span::current();
    match &result {
        Ok(value) => {
            if let Some(n) = applied(value) {
                span.record("applied", n);
            }
            tracing::info!("done");
        }
        Err(e) => {
            span.record("error", tracing::field::display(e));
            tracing::info!("failed");
        }
    }
    result
}

/// Records one tenant's outcome on the current `fleet.tenant` span and emits its closing event.
pub(crate) fn finish_tenant(outcome: &TenantOutcome) {
    let span = tracing::Span::current();
    match outcome {
        TenantOutcome::Applied(versions) => {
            span.record("applied", versions.len());
            tracing::info!("done");
        }
        TenantOutcome::UpToDate => tracing::info!("up to date"),
        TenantOutcome::Failed { sqlstate, message } => {
            if let Some(code) = sqlstate {
                span.record("sqlstate", code.as_str());
            }
            span.record("error", message.as_str());
            tracing::info!("failed");
        }
        TenantOutcome::Skipped => tracing::info!("skipped"),
    }
}

/// Records a fleet run's counts on the current fleet span and emits its closing event.
pub(crate) fn finish_fleet(report: &MigrationReport) {
    let span = tracing::Span::current();
    span.record("tenants", report.tenants.len());
    span.record("applied", report.applied().count());
    span.record("up_to_date", report.up_to_date().count());
    span.record("failed", report.failed().count());
    if report.is_success() {
        tracing::info!("done");
    } else {
        tracing::info!("failed");
    }
}
