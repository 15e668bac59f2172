//! Resolvers: from a request to the name of its tenant.

use std::future::Future;
use std::pin::Pin;

use diesel_workspace::TenantId;
use http::request::Parts;

use crate::rejection::{capped, TenantRejection};

/// What a [`Resolver`] found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The request names this tenant (still to be checked against the registry).
    Tenant(TenantId),
    /// This resolver finds no tenant in the request; the next one (if any) is asked.
    NoMatch,
    /// The request is refused (a malformed name, a forbidden tenant, …).
    Reject(TenantRejection),
}

impl Resolution {
    /// `Tenant` when `name` is a valid tenant name, `Reject(Malformed)` otherwise.
    ///
    /// ```
    /// use diesel_workspace_axum::Resolution;
    ///
    /// assert!(matches!(Resolution::parse("acme"), Resolution::Tenant(_)));
    /// assert!(matches!(Resolution::parse("Acme!"), Resolution::Reject(_)));
    /// ```
    pub fn parse(name: &str) -> Self {
        match TenantId::new(name) {
            Ok(id) => Self::Tenant(id),
            Err(diesel_workspace::Error::InvalidTenantName { reason, .. }) => {
                Self::Reject(TenantRejection::Malformed {
                    input: capped(name),
                    reason: reason.to_owned(),
                })
            }
            Err(e) => Self::Reject(TenantRejection::Malformed {
                input: capped(name),
                reason: e.to_string(),
            }),
        }
    }
}

/// The future a [`Resolver`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = Resolution> + Send + 'a>>;

/// Finds the tenant a request is for: request parts in, a [`Resolution`] out.
///
/// Resolvers compose with [`or`](Self::or) (either may name the tenant; when both do, they must
/// agree, else 400), [`or_first`](Self::or_first) (an explicit precedence: the first match
/// wins) and [`agreeing_with`](Self::agreeing_with) (a logged-in user's workspace refuses any
/// other workspace the request names). The resolved name is then checked against the registry
/// by [`Routing`](crate::Routing).
///
/// ```
/// use diesel_workspace_axum::{Resolution, ResolveFuture, Resolver, Subdomain};
/// use http::request::Parts;
///
/// /// Every request goes to one tenant (e.g. a single-tenant deployment).
/// struct Fixed(&'static str);
///
/// impl Resolver for Fixed {
///     fn resolve<'a>(&'a self, _parts: &'a Parts) -> ResolveFuture<'a> {
///         Box::pin(std::future::ready(Resolution::parse(self.0)))
///     }
/// }
///
/// let resolver = Subdomain::new(["localhost"]).or_first(Fixed("acme"));
/// # let _ = resolver;
/// ```
pub trait Resolver: Send + Sync + 'static {
    /// Looks at the request (and, for some resolvers, the database).
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a>;

    /// Either resolver may name the tenant: when both name one and they differ, the request is
    /// refused with [`TenantRejection::Ambiguous`] (400), so `Host: t1.example.com` with the
    /// path `/t/t0/items` is served by neither. A rejection by either stops the request.
    fn or<R: Resolver>(self, next: R) -> Either<Self, R>
    where
        Self: Sized,
    {
        Either(self, next)
    }

    /// Asks `next` only when this resolver finds no tenant: the first match wins, whatever
    /// `next` would say, and a rejection stops the chain. Use it when one source is meant to
    /// override another; [`or`](Self::or) is the safe default.
    fn or_first<R: Resolver>(self, next: R) -> FirstMatch<Self, R>
    where
        Self: Sized,
    {
        FirstMatch(self, next)
    }

    /// This resolver decides, and `other` must not contradict it: when both name a tenant and
    /// they differ, the request is refused with [`TenantRejection::Forbidden`]. When this one
    /// finds nothing, `other` decides.
    ///
    /// Used with [`UserWorkspace`](crate::UserWorkspace): a logged-in user is routed to their
    /// workspace, and a request of theirs naming another workspace (by subdomain or header)
    /// gets 403.
    fn agreeing_with<R: Resolver>(self, other: R) -> Agreeing<Self, R>
    where
        Self: Sized,
    {
        Agreeing(self, other)
    }
}

/// Two resolvers that must agree when both name a tenant (see [`Resolver::or`]).
#[derive(Debug, Clone)]
pub struct Either<A, B>(A, B);

impl<A: Resolver, B: Resolver> Resolver for Either<A, B> {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        Box::pin(async move {
            match self.0.resolve(parts).await {
                Resolution::Tenant(first) => match self.1.resolve(parts).await {
                    Resolution::Tenant(second) if second != first => {
                        Resolution::Reject(TenantRejection::Ambiguous(format!(
                            "one source names `{first}`, another `{second}`"
                        )))
                    }
                    Resolution::Reject(r) => Resolution::Reject(r),
                    _ => Resolution::Tenant(first),
                },
                Resolution::NoMatch => self.1.resolve(parts).await,
                rejected => rejected,
            }
        })
    }
}

/// Two resolvers, the first match winning (see [`Resolver::or_first`]).
#[derive(Debug, Clone)]
pub struct FirstMatch<A, B>(A, B);

impl<A: Resolver, B: Resolver> Resolver for FirstMatch<A, B> {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        Box::pin(async move {
            match self.0.resolve(parts).await {
                Resolution::NoMatch => self.1.resolve(parts).await,
                found => found,
            }
        })
    }
}

/// A resolver checked against another (see [`Resolver::agreeing_with`]).
#[derive(Debug, Clone)]
pub struct Agreeing<A, B>(A, B);

impl<A: Resolver, B: Resolver> Resolver for Agreeing<A, B> {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        Box::pin(async move {
            match self.0.resolve(parts).await {
                Resolution::Tenant(mine) => match self.1.resolve(parts).await {
                    Resolution::Tenant(other) if other != mine => {
                        Resolution::Reject(TenantRejection::Forbidden(other))
                    }
                    Resolution::Reject(r) => Resolution::Reject(r),
                    _ => Resolution::Tenant(mine),
                },
                Resolution::NoMatch => self.1.resolve(parts).await,
                rejected => rejected,
            }
        })
    }
}

impl<R: Resolver + ?Sized> Resolver for Box<R> {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        (**self).resolve(parts)
    }
}

impl<R: Resolver + ?Sized> Resolver for std::sync::Arc<R> {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        (**self).resolve(parts)
    }
}

pub(crate) fn ready<'a>(r: Resolution) -> ResolveFuture<'a> {
    Box::pin(std::future::ready(r))
}

/// The tenant is the first label of the host under one of the apex hosts:
/// `acme.example.com` and `acme.localhost:3000` are tenant `acme` with apex hosts
/// `example.com` and `localhost`.
///
/// The host comes from the `Host` header (HTTP/1.1), else the request URI's authority
/// (HTTP/2). Two `Host` headers, or a request target in absolute form (`GET http://a.example.com/`)
/// naming another host than `Host`, are [`TenantRejection::Ambiguous`] (400, as RFC 9112 asks).
/// The host is normalised before matching: ASCII case folded, port and a trailing dot
/// removed. An apex host itself is never a tenant (`example.com` → no match), nor are the
/// [`reserved`](Self::reserved) labels (`www.example.com` → no match). A host under no apex, an IP
/// address or no host at all is no match. A nested subdomain (`a.b.example.com`) or a label that
/// is no valid tenant name (`my-shop.example.com`) is [`TenantRejection::Malformed`].
///
/// ```
/// use diesel_workspace_axum::{Resolution, Resolver, Subdomain};
///
/// let resolver = Subdomain::new(["example.com", "localhost"]).reserved(["www", "api"]);
/// let resolve = |host: &str| {
///     let (parts, ()) = http::Request::get("/").header("host", host).body(()).unwrap().into_parts();
///     futures_lite_block_on(resolver.resolve(&parts))
/// };
/// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// assert_eq!(resolve("Acme.Example.COM."), Resolution::parse("acme"));
/// assert_eq!(resolve("acme.localhost:3000"), Resolution::parse("acme"));
/// assert_eq!(resolve("example.com:443"), Resolution::NoMatch);
/// assert_eq!(resolve("www.example.com"), Resolution::NoMatch);
/// assert_eq!(resolve("elsewhere.org"), Resolution::NoMatch);
/// assert!(matches!(resolve("a.b.example.com"), Resolution::Reject(_)));
/// ```
#[derive(Debug, Clone)]
pub struct Subdomain {
    /// `.apex` suffixes, longest first, so `eu.example.com` wins over `example.com`.
    apexes: Vec<String>,
    reserved: Vec<String>,
}

impl Subdomain {
    /// Tenants are subdomains of these apex hosts (normalised like request hosts).
    pub fn new<I, S>(apex_hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut apexes: Vec<String> = apex_hosts
            .into_iter()
            .map(|h| normalise_host(h.as_ref()).unwrap_or_default())
            .filter(|h| !h.is_empty())
            .collect();
        apexes.sort_by_key(|h| std::cmp::Reverse(h.len()));
        Self {
            apexes,
            reserved: Vec::new(),
        }
    }

    /// Labels that are never tenants (`www`, `api`, `admin`, …). None by default.
    pub fn reserved<I, S>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.reserved = labels
            .into_iter()
            .map(|l| l.as_ref().to_ascii_lowercase())
            .collect();
        self
    }

    fn resolve_host(&self, host: &str) -> Resolution {
        let Some(host) = normalise_host(host) else {
            return Resolution::NoMatch;
        };
        for apex in &self.apexes {
            if host == *apex {
                return Resolution::NoMatch;
            }
            let Some(label) = host
                .strip_suffix(apex.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
            else {
                continue;
            };
            if label.contains('.') {
                return Resolution::Reject(TenantRejection::Malformed {
                    input: capped(label),
                    reason: format!("only one subdomain level under `{apex}` names a tenant"),
                });
            }
            if self.reserved.iter().any(|r| r == label) {
                return Resolution::NoMatch;
            }
            return Resolution::parse(label);
        }
        Resolution::NoMatch
    }
}

/// The host in lower case without port and trailing dot; `None` for an IPv6 literal.
fn normalise_host(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None;
    }
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

impl Resolver for Subdomain {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        ready(match request_host(parts) {
            Ok(Some(host)) => self.resolve_host(host),
            Ok(None) => Resolution::NoMatch,
            Err(rejection) => Resolution::Reject(rejection),
        })
    }
}

/// The one host a request names: its `Host` header and its target's authority, which must
/// agree when both are there.
fn request_host(parts: &Parts) -> Result<Option<&str>, TenantRejection> {
    let mut headers = parts.headers.get_all(http::header::HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(TenantRejection::Ambiguous(
            "the request has more than one Host header".into(),
        ));
    }
    let header = match header.map(|h| h.to_str()) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => {
            return Err(TenantRejection::Malformed {
                input: capped(&String::from_utf8_lossy(
                    header.map_or(&[][..], |h| h.as_bytes()),
                )),
                reason: "the Host header is not visible ASCII".into(),
            })
        }
    };
    let target = parts.uri.authority().map(|a| a.as_str());
    match (header, target) {
        (Some(h), Some(t)) if normalise_host(h) != normalise_host(t) => {
            Err(TenantRejection::Ambiguous(format!(
                "the request target names host `{}`, the Host header `{}`",
                capped(t),
                capped(h)
            )))
        }
        (Some(h), _) => Ok(Some(h)),
        (None, t) => Ok(t),
    }
}

/// The tenant is the value of a request header (e.g. `x-tenant: acme`) set by a trusted proxy.
///
/// There is no plain constructor: [`behind_trusted_proxy`](Self::behind_trusted_proxy) says in
/// the code that the service is reachable only through a proxy that sets the header itself and
/// strips any copy a client sent. On a directly exposed server anyone could name any tenant in
/// a header; use [`Subdomain`] or [`PathPrefix`] there. The value is taken as it is (surrounding
/// whitespace trimmed, no case folding); a missing header is no match, the header twice is
/// [`TenantRejection::Ambiguous`] (a proxy that appends its value rather than replacing the
/// client's), anything that is no valid tenant name is [`TenantRejection::Malformed`].
///
/// ```
/// use diesel_workspace_axum::Header;
///
/// // The service listens on a private address; the gateway sets `x-tenant`.
/// let resolver = Header::behind_trusted_proxy("x-tenant");
/// # let _ = resolver;
/// ```
#[derive(Debug, Clone)]
pub struct Header {
    name: http::HeaderName,
}

impl Header {
    /// Reads the tenant from header `name`, which a trusted proxy in front of the service sets
    /// (and strips from client requests).
    ///
    /// # Panics
    /// When `name` is not a valid header name (a programming error).
    pub fn behind_trusted_proxy(name: &str) -> Self {
        Self {
            name: http::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|e| panic!("invalid header name `{name}`: {e}")),
        }
    }
}

impl Resolver for Header {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        let mut values = parts.headers.get_all(&self.name).iter();
        let (first, second) = (values.next(), values.next());
        ready(match (first, second) {
            (None, _) => Resolution::NoMatch,
            (Some(_), Some(_)) => Resolution::Reject(TenantRejection::Ambiguous(format!(
                "the request has more than one `{}` header",
                self.name
            ))),
            (Some(value), None) => match value.to_str() {
                Ok(v) => Resolution::parse(v.trim()),
                Err(_) => Resolution::Reject(TenantRejection::Malformed {
                    input: capped(&String::from_utf8_lossy(value.as_bytes())),
                    reason: "the header is not visible ASCII".into(),
                }),
            },
        })
    }
}

/// The tenant is the path segment after a prefix: with prefix `/t`, `/t/acme/notes` is tenant
/// `acme`. A path outside the prefix is no match; `/t/` with an empty or invalid segment is
/// [`TenantRejection::Malformed`]. The route keeps its full path (declare it as
/// `/t/{tenant}/notes`).
///
/// ```
/// use diesel_workspace_axum::PathPrefix;
///
/// let resolver = PathPrefix::new("/t");
/// # let _ = resolver;
/// ```
#[derive(Debug, Clone)]
pub struct PathPrefix {
    /// `/<prefix>/`
    prefix: String,
}

impl PathPrefix {
    /// Reads the tenant from the segment after `prefix` (leading and trailing `/` optional).
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        };
        Self { prefix }
    }
}

impl Resolver for PathPrefix {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        let path = parts.uri.path();
        ready(match path.strip_prefix(self.prefix.as_str()) {
            None => Resolution::NoMatch,
            Some(rest) => Resolution::parse(rest.split('/').next().unwrap_or("")),
        })
    }
}
