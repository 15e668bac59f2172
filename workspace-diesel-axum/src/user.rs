//! The user-workspace resolver: the authenticated user's workspace, read from the database.

use diesel::prelude::*;
use diesel_workspace::registry::Registry;
use http::request::Parts;

use crate::bridge::DieselPool;
use crate::rejection::TenantRejection;
use crate::resolve::{ready, Resolution, ResolveFuture, Resolver};

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
/// .agreeing_with(Subdomain::new(["localhost"]).or(Header::behind_trusted_proxy("x-tenant")));
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
                .interact(crate::layer::DEFAULT_WAIT, move |conn| {
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
