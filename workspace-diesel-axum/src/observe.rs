//! What the web layer reports about each served request: one log line in the `request` span
//! (tower-http's `TraceLayer` conventions: the message `finished processing request`, `status`,
//! `latency` in milliseconds) and, with the `metrics` feature, the request metrics (see
//! docs/metrics.md).

use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// A latency as tower-http prints it: whole milliseconds and a unit.
struct Latency(Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// Reports one served request: `tenant` when one was resolved (or asked for, on a refusal).
pub(crate) fn served(tenant: Option<&str>, status: StatusCode, latency: Duration) {
    tracing::info!(
        latency = %Latency(latency),
        status = status.as_u16(),
        "finished processing request"
    );
    #[cfg(feature = "metrics")]
    {
        let tenant = diesel_workspace::metrics::tenant_label(tenant);
        metrics::counter!(
            "workspace_diesel_http_requests_total",
            "tenant" => tenant,
            "status" => status.as_u16().to_string()
        )
        .increment(1);
        metrics::histogram!("workspace_diesel_http_request_duration_seconds")
            .record(latency.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = tenant;
}
