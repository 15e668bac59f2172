//! Resolvers: from a request to the name of its tenant.

use std::future::Future;
use std::pin::Pin;

use diesel::prelude::*;
use diesel_workspace::registry::Registry;
use diesel_workspace::TenantId;
use http::request::Parts;

use crate::bridge::DieselPool;
use crate::rejection::TenantRejection;

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
                    input: name.to_owned(),
                    reason: reason.to_owned(),
                })
            }
            Err(e) => Self::Reject(TenantRejection::Malformed {
                input: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
}

/// The future a [`Resolver`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = Resolution> + Send + 'a>>;

/// Finds the tenant a request is for: request parts in, a [`Resolution`] out.
///
/// Resolvers compose with [`or`](Self::or) (first match wins) and
/// [`agreeing_with`](Self::agreeing_with) (a logged-in user's workspace refuses any other
/// workspace the request names). The resolved name is then checked against the registry by
/// [`Routing`](crate::Routing).
///
/// ```
/// use diesel_workspace_axum::{Header, Resolution, ResolveFuture, Resolver, Subdomain};
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
/// let resolver = Subdomain::new(["localhost"]).or(Header::new("x-tenant")).or(Fixed("acme"));
/// # let _ = resolver;
/// ```
pub trait Resolver: Send + Sync + 'static {
    /// Looks at the request (and, for some resolvers, the database).
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a>;

    /// Asks `next` when this resolver finds no tenant: the first match wins, and a rejection
    /// stops the chain.
    fn or<R: Resolver>(self, next: R) -> FirstMatch<Self, R>
    where
        Self: Sized,
    {
        FirstMatch(self, next)
    }

    /// This resolver decides, and `other` must not contradict it: when both name a tenant and
    /// they differ, the request is refused with [`TenantRejection::Forbidden`]. When this one
    /// finds nothing, `other` decides.
    ///
    /// Used with [`UserWorkspace`]: a logged-in user is routed to their workspace, and a request
    /// of theirs naming another workspace (by subdomain or header) gets 403.
    fn agreeing_with<R: Resolver>(self, other: R) -> Agreeing<Self, R>
    where
        Self: Sized,
    {
        Agreeing(self, other)
    }
}

/// Two resolvers, the first match winning (see [`Resolver::or`]).
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

fn ready<'a>(r: Resolution) -> ResolveFuture<'a> {
    Box::pin(std::future::ready(r))
}

/// The tenant is the first label of the host under one of the apex hosts:
/// `acme.example.com` and `acme.localhost:3000` are tenant `acme` with apex hosts
/// `example.com` and `localhost`.
///
/// The host comes from the `Host` header (HTTP/1.1), else the request URI's authority
/// (HTTP/2). It is normalised before matching: ASCII case folded, port and a trailing dot
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
                    input: label.to_owned(),
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
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        ready(match host {
            Some(host) => self.resolve_host(host),
            None => Resolution::NoMatch,
        })
    }
}

/// The tenant is the value of a request header (e.g. `x-tenant: acme`).
///
/// **Trust it only behind an authenticating proxy** that sets the header itself and strips it
/// from client requests: anyone who can reach the service directly can put any tenant's name in
/// a header. The value is taken as it is (surrounding whitespace trimmed, no case folding); a
/// missing header is no match, anything else that is no valid tenant name is
/// [`TenantRejection::Malformed`].
///
/// ```
/// use diesel_workspace_axum::Header;
///
/// let resolver = Header::new("x-tenant");
/// # let _ = resolver;
/// ```
#[derive(Debug, Clone)]
pub struct Header {
    name: http::HeaderName,
}

impl Header {
    /// Reads the tenant from header `name`.
    ///
    /// # Panics
    /// When `name` is not a valid header name (a programming error).
    pub fn new(name: &str) -> Self {
        Self {
            name: http::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|e| panic!("invalid header name `{name}`: {e}")),
        }
    }
}

impl Resolver for Header {
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        ready(match parts.headers.get(&self.name) {
            None => Resolution::NoMatch,
            Some(value) => match value.to_str() {
                Ok(v) => Resolution::parse(v.trim()),
                Err(_) => Resolution::Reject(TenantRejection::Malformed {
                    input: String::from_utf8_lossy(value.as_bytes()).into_owned(),
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

/// The authenticated user's workspace: a user table in the shared schema with a foreign key to
/// the registry, read with one query per request.
///
/// The user comes from the request through `user` (typically an extension your authentication
/// middleware inserted); no user is no match. The query is
/// `SELECT w.schema_name FROM <users> u JOIN public.workspaces w ON w.id = u.<workspace column>
/// WHERE u.<id column> = $1` (with a custom [`registry`](Self::registry), its table, identifier
/// and key column), on the pool, in a blocking task. A user that is not in the table
/// gets [`TenantRejection::Required`]; a database failure is [`TenantRejection::Unavailable`].
///
/// The default table is `public.users (id BIGINT, workspace_id BIGINT REFERENCES
/// public.workspaces (id))`; name yours with [`table`](Self::table).
///
/// ```no_run
/// use diesel_workspace_axum::{Header, Resolver, Subdomain, UserWorkspace};
///
/// #[derive(Clone)]
/// struct UserId(i64); // inserted by the authentication middleware
///
/// # fn run(pool: diesel_workspace::pool::TenantPool) {
/// let resolver = UserWorkspace::new(pool, |parts: &http::request::Parts| {
///     parts.extensions.get::<UserId>().map(|u| u.0)
/// })
/// .agreeing_with(Subdomain::new(["localhost"]).or(Header::new("x-tenant")));
/// # let _ = resolver;
/// # }
/// ```
pub struct UserWorkspace<P, F> {
    pool: P,
    user: F,
    sql: String,
    registry: Registry,
    /// The user table: schema, table, id column, workspace column.
    users: [String; 4],
}

impl<P, F> std::fmt::Debug for UserWorkspace<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserWorkspace")
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

impl<P, F> UserWorkspace<P, F>
where
    P: DieselPool,
    F: Fn(&Parts) -> Option<i64> + Send + Sync + 'static,
{
    /// Looks the user given by `user` up in `public.users (id, workspace_id)`.
    pub fn new(pool: P, user: F) -> Self {
        Self {
            pool,
            user,
            sql: Registry::default().user_workspace_sql("public", "users", "id", "workspace_id"),
            registry: Registry::default(),
            users: ["public", "users", "id", "workspace_id"].map(str::to_owned),
        }
    }

    /// The user table `schema.table`, its key column and its foreign key to
    /// `public.workspaces (id)`.
    pub fn table(
        mut self,
        schema: &str,
        table: &str,
        id_column: &str,
        workspace_column: &str,
    ) -> Self {
        self.users = [schema, table, id_column, workspace_column].map(str::to_owned);
        self.sql = self.query();
        self
    }

    /// The registry the user table refers to (its [`key_column`](Registry::key_column)), when it
    /// is not the built-in `public.workspaces (id)`: the migrator's ([`Registry::new`]).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self.sql = self.query();
        self
    }

    /// The lookup, spelled by the registry ([`Registry::user_workspace_sql`]).
    fn query(&self) -> String {
        let [schema, table, id, workspace] = &self.users;
        self.registry
            .user_workspace_sql(schema, table, id, workspace)
    }
}

#[derive(QueryableByName)]
struct SchemaName {
    #[diesel(sql_type = diesel::sql_types::Text)]
    schema_name: String,
}

impl<P, F> Resolver for UserWorkspace<P, F>
where
    P: DieselPool,
    F: Fn(&Parts) -> Option<i64> + Send + Sync + 'static,
{
    fn resolve<'a>(&'a self, parts: &'a Parts) -> ResolveFuture<'a> {
        let Some(user) = (self.user)(parts) else {
            return ready(Resolution::NoMatch);
        };
        let sql = self.sql.clone();
        let pool = self.pool.clone();
        Box::pin(async move {
            let found = pool
                .interact(move |conn| {
                    diesel::sql_query(sql)
                        .bind::<diesel::sql_types::BigInt, _>(user)
                        .get_result::<SchemaName>(conn)
                        .optional()
                })
                .await;
            match found {
                Ok(Ok(Some(row))) => Resolution::parse(&row.schema_name),
                Ok(Ok(None)) => Resolution::Reject(TenantRejection::Required),
                Ok(Err(e)) => Resolution::Reject(TenantRejection::Unavailable(e.to_string())),
                Err(e) => Resolution::Reject(TenantRejection::Unavailable(e.to_string())),
            }
        })
    }
}
