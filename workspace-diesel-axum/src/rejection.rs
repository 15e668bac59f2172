//! Why a request gets no tenant, and the response it gets instead.

use axum::response::{IntoResponse, Response};
use diesel_workspace::TenantId;
use http::{header, HeaderValue, StatusCode};

/// Why a request was refused before reaching a tenant route. Each has a fixed status code and a
/// short machine-readable [`code`](Self::code); the default response is a JSON body
/// `{"error": "<code>", "message": "<text>"}`.
///
/// | variant | status | code |
/// | --- | --- | --- |
/// | [`Malformed`](Self::Malformed) | 400 | `tenant_malformed` |
/// | [`Required`](Self::Required) | 400 | `tenant_required` |
/// | [`Ambiguous`](Self::Ambiguous) | 400 | `tenant_ambiguous` |
/// | [`Unauthenticated`](Self::Unauthenticated) | 401 | `authentication_required` |
/// | [`Unknown`](Self::Unknown) | 404 | `tenant_unknown` |
/// | [`Forbidden`](Self::Forbidden) | 403 | `tenant_forbidden` |
/// | [`Suspended`](Self::Suspended) | 403 | `tenant_suspended` |
/// | [`Archived`](Self::Archived) | 410 | `tenant_archived` |
/// | [`Provisioning`](Self::Provisioning) | 503 | `tenant_provisioning` |
/// | [`Migrating`](Self::Migrating) | 503 | `tenant_migrating` |
/// | [`Busy`](Self::Busy) | 429 | `tenant_busy` |
/// | [`Unavailable`](Self::Unavailable) | 503 | `registry_unavailable` |
///
/// A refused request never reaches the route, so it never runs against the shared schema.
/// Echoed input is capped at [`ECHO_LIMIT`] characters, and the responses of `Unavailable` and
/// `Migrating` are fixed texts: the database's error and the versions go to the log only.
/// `Migrating` carries `Retry-After: 5` ([`MIGRATING_RETRY_AFTER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantRejection {
    /// The request names a tenant, but not a valid tenant name.
    Malformed {
        /// The name as the request gave it.
        input: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The route needs a tenant and no resolver found one.
    Required,
    /// The request names its tenant in ways that disagree, or twice (two `Host` headers, two
    /// tenant headers, a request target naming another host than `Host`, two resolvers naming
    /// different tenants).
    Ambiguous(String),
    /// The route admits members only and the request carries no authenticated principal.
    Unauthenticated,
    /// The name is valid but not a registered tenant.
    Unknown(TenantId),
    /// The request may not use this tenant: its principal is no member of it, or (with
    /// [`Resolver::agreeing_with`](crate::Resolver::agreeing_with)) a logged-in user asks for
    /// another workspace than their own.
    Forbidden(TenantId),
    /// The tenant already has its share of requests in flight (see
    /// [`RoutingBuilder::tenant_limit`](crate::RoutingBuilder::tenant_limit)).
    Busy(TenantId),
    /// The tenant is suspended.
    Suspended(TenantId),
    /// The tenant is archived.
    Archived(TenantId),
    /// The tenant is still being provisioned.
    Provisioning(TenantId),
    /// The tenant's schema is behind the version this service was built for (a rolling deploy
    /// has not migrated it yet; see
    /// [`RoutingBuilder::expect_version`](crate::RoutingBuilder::expect_version)), or migrating
    /// it on request did not finish within the bounded wait.
    Migrating(TenantId),
    /// The registry could not be read; the request is refused rather than guessed.
    Unavailable(String),
}

impl TenantRejection {
    /// The HTTP status of the default response.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed { .. } | Self::Required | Self::Ambiguous(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unknown(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) | Self::Suspended(_) => StatusCode::FORBIDDEN,
            Self::Archived(_) => StatusCode::GONE,
            Self::Provisioning(_) | Self::Migrating(_) | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The machine-readable code of the default response's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "tenant_malformed",
            Self::Required => "tenant_required",
            Self::Ambiguous(_) => "tenant_ambiguous",
            Self::Unauthenticated => "authentication_required",
            Self::Busy(_) => "tenant_busy",
            Self::Unknown(_) => "tenant_unknown",
            Self::Forbidden(_) => "tenant_forbidden",
            Self::Suspended(_) => "tenant_suspended",
            Self::Archived(_) => "tenant_archived",
            Self::Provisioning(_) => "tenant_provisioning",
            Self::Migrating(_) => "tenant_migrating",
            Self::Unavailable(_) => "registry_unavailable",
        }
    }

    /// The tenant the rejection is about, when the name was valid.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Self::Unknown(t)
            | Self::Forbidden(t)
            | Self::Suspended(t)
            | Self::Archived(t)
            | Self::Provisioning(t)
            | Self::Migrating(t)
            | Self::Busy(t) => Some(t),
            Self::Malformed { .. }
            | Self::Required
            | Self::Ambiguous(_)
            | Self::Unauthenticated
            | Self::Unavailable(_) => None,
        }
    }
}

impl std::fmt::Display for TenantRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed { input, reason } => {
                write!(f, "invalid tenant name `{input}`: {reason}")
            }
            Self::Required => f.write_str("this route needs a tenant and the request names none"),
            Self::Ambiguous(why) => write!(f, "the request names its tenant ambiguously: {why}"),
            Self::Unauthenticated => f.write_str("this route needs an authenticated user"),
            Self::Busy(t) => write!(f, "tenant `{t}` has too many requests in flight"),
            Self::Unknown(t) => write!(f, "tenant `{t}` does not exist"),
            Self::Forbidden(t) => write!(f, "tenant `{t}` is not open to this request"),
            Self::Suspended(t) => write!(f, "tenant `{t}` is suspended"),
            Self::Archived(t) => write!(f, "tenant `{t}` is archived"),
            Self::Provisioning(t) => write!(f, "tenant `{t}` is being provisioned"),
            Self::Migrating(t) => write!(f, "tenant `{t}` is behind this service's schema version"),
            Self::Unavailable(why) => write!(f, "the tenant registry could not be read: {why}"),
        }
    }
}

impl std::error::Error for TenantRejection {}

impl IntoResponse for TenantRejection {
    fn into_response(self) -> Response {
        let mut response = match &self {
            Self::Unavailable(_) => json_error(self.status(), self.code(), UNAVAILABLE_MESSAGE),
            Self::Migrating(_) => json_error(self.status(), self.code(), MIGRATING_MESSAGE),
            _ => json_error(self.status(), self.code(), &self.to_string()),
        };
        if matches!(self, Self::Migrating(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(MIGRATING_RETRY_AFTER.as_secs()),
            );
        }
        if matches!(self, Self::Unauthenticated) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The fixed message of every 503 about the database: its error text (hosts, ports, SQL) goes
/// to the log, never to the client.
pub(crate) const UNAVAILABLE_MESSAGE: &str = "the service is temporarily unavailable; try again";

/// The fixed message of the 503 `tenant_migrating`.
pub(crate) const MIGRATING_MESSAGE: &str =
    "this workspace is being upgraded to a new version; try again shortly";

/// The `Retry-After` of the 503 `tenant_migrating`: 5 seconds.
pub const MIGRATING_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The most characters of request input a rejection echoes.
pub const ECHO_LIMIT: usize = 64;

/// `input`, cut to [`ECHO_LIMIT`] characters (an ellipsis marks the cut).
pub(crate) fn capped(input: &str) -> String {
    match input.char_indices().nth(ECHO_LIMIT) {
        None => input.to_owned(),
        Some((at, _)) => format!("{}…", &input[..at]),
    }
}

/// A JSON error response `{"error": code, "message": message}`.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
