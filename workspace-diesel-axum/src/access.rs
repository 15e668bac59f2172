//! Who may enter a tenant: the access policy every [`Routing`](crate::Routing) is built with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_workspace::registry::Registry;
use diesel_workspace::TenantId;
use http::request::Parts;

type PrincipalFn = dyn Fn(&Parts) -> Option<i64> + Send + Sync;

/// One user's cached membership answers: tenant → (member, expires).
type Answers = HashMap<TenantId, (bool, Instant)>;

/// Who may enter a tenant's routes: a required setting of
/// [`RoutingBuilder::access`](crate::RoutingBuilder::access).
///
/// - [`Access::members`]: the request's authenticated principal (a user id your authentication
///   middleware puts into the request) must be a member of the resolved tenant. No principal is
///   401 `authentication_required`, a principal of another tenant 403 `tenant_forbidden`; in
///   both cases the route is never reached.
/// - [`Access::public_tenant_routes`]: anyone who names a registered, active tenant enters (a
///   public storefront, a status page). The name says what it does.
///
/// ```
/// use diesel_workspace_axum::Access;
///
/// #[derive(Clone, Copy)]
/// struct UserId(i64); // inserted by the authentication middleware
///
/// let members = Access::members(|parts: &http::request::Parts| {
///     parts.extensions.get::<UserId>().map(|u| u.0)
/// });
/// let public = Access::public_tenant_routes();
/// # let _ = (members, public);
/// ```
#[derive(Clone)]
pub struct Access {
    pub(crate) kind: AccessKind,
}

#[derive(Clone)]
pub(crate) enum AccessKind {
    Members(Arc<Members>),
    Public,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            AccessKind::Members(m) => f
                .debug_struct("Access::members")
                .field("sql", &m.sql)
                .field("ttl", &m.ttl)
                .finish_non_exhaustive(),
            AccessKind::Public => f.write_str("Access::public_tenant_routes"),
        }
    }
}

/// The membership check of [`Access::members`].
pub(crate) struct Members {
    principal: Box<PrincipalFn>,
    pub(crate) sql: String,
    /// The registry the membership table refers to.
    registry: Registry,
    /// The membership table: schema, table, user column, workspace column.
    table: [String; 4],
    ttl: Duration,
    capacity: usize,
    /// user → tenant → (member, expires)
    cache: Mutex<HashMap<i64, Answers>>,
}

impl Members {
    /// The membership query, spelled by the registry ([`Registry::membership_sql`]).
    fn respell(&mut self) {
        let [schema, table, user, workspace] = &self.table;
        self.sql = self.registry.membership_sql(schema, table, user, workspace);
    }
}

impl Access {
    /// Members only: `principal` reads the authenticated user's id from the request (typically
    /// an extension your authentication middleware inserted; `None` when nobody is
    /// authenticated), and the user must be a member of the resolved tenant.
    ///
    /// Membership is read from a table in the shared schema with one row per (user, workspace)
    /// and a foreign key to the registry; by default
    ///
    /// ```sql
    /// CREATE TABLE public.memberships (
    ///     user_id BIGINT NOT NULL,            -- your users' key
    ///     workspace_id BIGINT NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE,
    ///     PRIMARY KEY (user_id, workspace_id)
    /// );
    /// ```
    ///
    /// Name another table with [`members_table`](Self::members_table): a users table whose rows
    /// carry their one workspace (`public.users (id, workspace_id)`) has the same shape. The
    /// query is `SELECT EXISTS (SELECT 1 FROM <table> m JOIN public.workspaces w ON w.id =
    /// m.<workspace column> WHERE m.<user column> = $1 AND w.schema_name = $2)`, on the
    /// routing's registry pool, within its wait bound. Answers are cached per (user, tenant) for
    /// [`membership_ttl`](Self::membership_ttl) (5 seconds by default): a revoked membership is
    /// honoured within that time. A non-member is refused whether or not the tenant exists, so
    /// tenant names cannot be probed.
    pub fn members(principal: impl Fn(&Parts) -> Option<i64> + Send + Sync + 'static) -> Self {
        Self {
            kind: AccessKind::Members(Arc::new(Members {
                principal: Box::new(principal),
                sql: Registry::default().membership_sql(
                    "public",
                    "memberships",
                    "user_id",
                    "workspace_id",
                ),
                registry: Registry::default(),
                table: ["public", "memberships", "user_id", "workspace_id"].map(str::to_owned),
                ttl: Duration::from_secs(5),
                capacity: 10_000,
                cache: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// No membership check: any request naming a registered, active tenant reaches the routes.
    /// For tenant routes that are public by design; everything else wants [`members`](Self::members).
    pub fn public_tenant_routes() -> Self {
        Self {
            kind: AccessKind::Public,
        }
    }

    /// The membership table `schema.table`, its user column and its foreign key to
    /// `public.workspaces (id)` (see [`members`](Self::members)). No effect on
    /// [`public_tenant_routes`](Self::public_tenant_routes).
    pub fn members_table(
        self,
        schema: &str,
        table: &str,
        user_column: &str,
        workspace_column: &str,
    ) -> Self {
        self.map_members(|m| {
            m.table = [schema, table, user_column, workspace_column].map(str::to_owned);
            m.respell();
        })
    }

    /// The registry the membership table refers to (its
    /// [`key_column`](Registry::key_column) and identifier), when it is not the built-in
    /// `public.workspaces (id)`: the migrator's ([`Registry::new`]). No effect on
    /// [`public_tenant_routes`](Self::public_tenant_routes).
    pub fn registry(self, registry: Registry) -> Self {
        self.map_members(|m| {
            m.registry = registry;
            m.respell();
        })
    }

    /// How long a membership answer is cached (5 seconds by default; zero caches nothing).
    pub fn membership_ttl(self, ttl: Duration) -> Self {
        self.map_members(|m| m.ttl = ttl)
    }

    fn map_members(self, f: impl FnOnce(&mut Members)) -> Self {
        match self.kind {
            AccessKind::Members(members) => {
                let mut members = Arc::try_unwrap(members)
                    .unwrap_or_else(|_| unreachable!("configured before it is shared"));
                f(&mut members);
                Self {
                    kind: AccessKind::Members(Arc::new(members)),
                }
            }
            AccessKind::Public => self,
        }
    }
}

impl Members {
    pub(crate) fn principal(&self, parts: &Parts) -> Option<i64> {
        (self.principal)(parts)
    }

    pub(crate) fn cached(&self, user: i64, tenant: &TenantId) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(&user).and_then(|tenants| tenants.get(tenant)) {
            Some((member, expires)) if *expires > Instant::now() => Some(*member),
            _ => None,
        }
    }

    pub(crate) fn remember(&self, user: i64, tenant: TenantId, member: bool) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.capacity {
            cache.retain(|_, tenants| {
                tenants.retain(|_, (_, expires)| *expires > now);
                !tenants.is_empty()
            });
            if cache.len() >= self.capacity {
                cache.clear();
            }
        }
        cache
            .entry(user)
            .or_default()
            .insert(tenant, (member, now + self.ttl));
    }

    /// Reads the membership (blocking, on a registry connection).
    pub(crate) fn read(
        sql: &str,
        conn: &mut PgConnection,
        user: i64,
        tenant: &TenantId,
    ) -> QueryResult<bool> {
        #[derive(QueryableByName)]
        struct Found {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            member: bool,
        }
        diesel::sql_query(sql)
            .bind::<diesel::sql_types::BigInt, _>(user)
            .bind::<diesel::sql_types::Text, _>(tenant.as_str())
            .get_result::<Found>(conn)
            .map(|f| f.member)
    }
}

/// The credentials of an `Authorization: Bearer <token>` header, the scheme matched without
/// regard to case (`bearer`, `BEARER`; RFC 7235). `None` when there is no such header or it
/// uses another scheme (`Basic`).
///
/// ```
/// use diesel_workspace_axum::bearer_token;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("authorization", "bearer abc123".parse().unwrap());
/// assert_eq!(bearer_token(&headers), Some("abc123"));
/// headers.insert("authorization", "Basic YWxhZGRpbjpvcGVu".parse().unwrap());
/// assert_eq!(bearer_token(&headers), None);
/// ```
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
