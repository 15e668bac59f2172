//! The enforcing roles mode: a pool per tenant that logs in as the tenant's own role
//! ([`TenantRolePools`]), so the database, not the application, keeps each tenant's connections
//! out of the other tenants' schemas.

use std::fmt;
use std::sync::{Arc, Mutex};

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::error::{Error, Result};
use crate::pool::{TenantPool, TenantPoolBuilder, TenantPooledConnection};
use crate::roles::TenantRoles;
use crate::startup::{conninfo_string, parse_conninfo};
use crate::tenant::TenantId;

type UrlFor = Arc<dyn Fn(&TenantId, &str) -> String + Send + Sync>;
type MakePool = Arc<dyn Fn() -> TenantPoolBuilder + Send + Sync>;

/// One [`TenantPool`] per tenant, each logging in as the tenant's role
/// ([`TenantRoles::login`]): the enforcing roles mode.
///
/// A connection of tenant A's pool *is* A's role: there is no other role to go back to. `RESET
/// ROLE`, `SET ROLE <B's role>`, `set_config('role', …)` and `SET SESSION AUTHORIZATION` fail
/// or leave it A's role, and every statement on it, Diesel's DSL included, raw SQL or not, inside
/// a tenant transaction or not, is refused with `permission denied` on B's tables. Session state
/// never crosses tenants either (temporary tables, `WITH HOLD` cursors, settings): A's
/// connections never serve B, and behind PgBouncer the server connections are pooled per role.
///
/// What roles do not stop: the rights the operator grants them (a shared table granted to every
/// tenant role is shared), members of the tenant roles (a role granted to the application can
/// assume any of them: keep the tenant pools the only way the application's tenant code reaches
/// the database), and `SECURITY DEFINER` functions, which run with their owner's rights: one
/// whose `search_path` its caller decides lets the caller point it at another tenant, so each
/// pool is built with [`refuse_hijack_hazards`](TenantPoolBuilder::refuse_hijack_hazards) and
/// refuses to start while [`Migrator::audit`](crate::Migrator::audit) finds such a function
/// ([`Hazard::SecurityDefinerWithoutSearchPath`](crate::Hazard::SecurityDefinerWithoutSearchPath)).
///
/// **Bounded**: at most [`max_pools`](TenantRolePoolsBuilder::max_pools) pools (default 32) are
/// kept; asking for another tenant drops the least recently used pool (its idle connections
/// close; a connection still checked out closes when it is returned). Each pool is built from
/// [`pool`](TenantRolePoolsBuilder::pool) (default: 2 connections, none kept idle), so the
/// open connections stay within `max_pools × max_size` plus the connections checked out of
/// dropped pools. **Cost**: a tenant's first request (and the first after its pool was
/// dropped) builds its pool: the pool's checks, a connection and the hazard queries, a few
/// milliseconds on loopback, during which other callers of [`get`](Self::get) wait; after that a
/// checkout is a [`TenantPool`] checkout.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel_workspace::{switch, TenantId, TenantRolePools, TenantRoles};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let roles = TenantRoles::new("app_t_")?.login(true);
/// let pools = TenantRolePools::builder("postgres://app@127.0.0.1/app", roles).build();
/// let acme = TenantId::new("acme")?;
/// let mut conn = pools.get(&acme)?; // logged in as app_t_acme
/// # let _ = &mut conn;
/// # Ok(())
/// # }
/// ```
pub struct TenantRolePools {
    roles: TenantRoles,
    url_for: Option<UrlFor>,
    make: MakePool,
    max_pools: usize,
    database_url: String,
    pools: Mutex<Vec<Entry>>,
}

struct Entry {
    tenant: TenantId,
    pool: TenantPool,
    used: u64,
}

impl fmt::Debug for TenantRolePools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantRolePools")
            .field("roles", &self.roles)
            .field("max_pools", &self.max_pools)
            .field("open_pools", &self.open_pools())
            .finish_non_exhaustive()
    }
}

/// Configures [`TenantRolePools`].
pub struct TenantRolePoolsBuilder {
    roles: TenantRoles,
    database_url: String,
    url_for: Option<UrlFor>,
    make: MakePool,
    max_pools: usize,
}

impl fmt::Debug for TenantRolePoolsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantRolePoolsBuilder")
            .field("roles", &self.roles)
            .field("max_pools", &self.max_pools)
            .finish_non_exhaustive()
    }
}

impl TenantRolePoolsBuilder {
    /// The most pools kept at once. Defaults to 32.
    ///
    /// # Panics
    /// When `max_pools` is 0.
    pub fn max_pools(mut self, max_pools: usize) -> Self {
        assert!(max_pools > 0, "max_pools must be at least 1");
        self.max_pools = max_pools;
        self
    }

    /// The builder each tenant's pool starts from (its size, timeouts, pooler…). Defaults to
    /// [`pool::builder()`](crate::pool::builder) with `max_size(2)`, `min_idle(Some(0))` and
    /// `shards(1)` (a pool serves one tenant: nothing to spread).
    /// [`refuse_hijack_hazards(true)`](TenantPoolBuilder::refuse_hijack_hazards) is set on top.
    pub fn pool(mut self, make: impl Fn() -> TenantPoolBuilder + Send + Sync + 'static) -> Self {
        self.make = Arc::new(make);
        self
    }

    /// The URL of a tenant's pool, from the tenant and its role name. Defaults to the database
    /// URL with the user replaced by the role and the password removed (authentication by
    /// `pg_hba.conf`); give one that adds the role's password from your secret store.
    pub fn url_for(
        mut self,
        url_for: impl Fn(&TenantId, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.url_for = Some(Arc::new(url_for));
        self
    }

    /// The pools; none is built before its tenant is asked for.
    pub fn build(self) -> TenantRolePools {
        TenantRolePools {
            roles: self.roles,
            url_for: self.url_for,
            make: self.make,
            max_pools: self.max_pools,
            database_url: self.database_url,
            pools: Mutex::new(Vec::new()),
        }
    }
}

impl TenantRolePools {
    /// A builder for pools on `database_url` logging in as the roles of `roles` (which should
    /// be created with [`TenantRoles::login`]).
    pub fn builder(database_url: impl Into<String>, roles: TenantRoles) -> TenantRolePoolsBuilder {
        TenantRolePoolsBuilder {
            roles,
            database_url: database_url.into(),
            url_for: None,
            make: Arc::new(|| {
                crate::pool::builder()
                    .max_size(2)
                    .min_idle(Some(0))
                    .shards(1)
            }),
            max_pools: 32,
        }
    }

    /// A connection of `tenant`'s pool, logged in as its role; the pool is built first when it
    /// is not open.
    ///
    /// # Errors
    /// [`Error::InvalidTenantName`] when the role name is too long; what
    /// [`TenantPoolBuilder::build`] returns when the pool cannot be built (among them
    /// [`Error::HijackHazards`], and [`Error::Pool`] when the role cannot log in);
    /// [`Error::RoleLogin`] when the pool's connections are not logged in as the role (a
    /// [`url_for`](TenantRolePoolsBuilder::url_for) that ignores it); [`Error::Pool`] when no
    /// connection could be checked out.
    pub fn get(&self, tenant: &TenantId) -> Result<TenantPooledConnection> {
        Ok(self.pool(tenant)?.get()?)
    }

    /// `tenant`'s pool (built when it is not open), as [`get`](Self::get).
    pub fn pool(&self, tenant: &TenantId) -> Result<TenantPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let tick = pools.iter().map(|e| e.used).max().unwrap_or(0) + 1;
        if let Some(e) = pools.iter_mut().find(|e| &e.tenant == tenant) {
            e.used = tick;
            return Ok(e.pool.clone());
        }
        let role = self.roles.role_name(tenant)?;
        let url = match &self.url_for {
            Some(url_for) => url_for(tenant, &role),
            None => with_user(&self.database_url, &role),
        };
        let pool = (self.make)().refuse_hijack_hazards(true).build(url)?;
        check_login(&mut *pool.get()?, tenant, &role)?;
        if pools.len() >= self.max_pools {
            if let Some(oldest) = (0..pools.len()).min_by_key(|&i| pools[i].used) {
                pools.swap_remove(oldest);
            }
        }
        pools.push(Entry {
            tenant: tenant.clone(),
            pool: pool.clone(),
            used: tick,
        });
        Ok(pool)
    }

    /// How many pools are open.
    pub fn open_pools(&self) -> usize {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The roles the pools log in as.
    pub fn roles(&self) -> &TenantRoles {
        &self.roles
    }
}

#[derive(QueryableByName)]
struct Login {
    #[diesel(sql_type = Text)]
    login: String,
}

/// Fails unless the connection is logged in as `role`.
fn check_login(conn: &mut PgConnection, tenant: &TenantId, role: &str) -> Result<()> {
    let got: Login =
        diesel::sql_query("SELECT pg_catalog.session_user()::pg_catalog.text AS login")
            .get_result(conn)?;
    if got.login == role {
        Ok(())
    } else {
        Err(Error::RoleLogin {
            tenant: tenant.clone(),
            role: role.to_owned(),
            login: got.login,
        })
    }
}

/// `url` logging in as `user`, without a password: a `postgres://` URI's user information
/// replaced, or a `key=value` string's `user` set and `password` removed.
fn with_user(url: &str, user: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let host = match rest[..end].rsplit_once('@') {
                Some((_, host)) => host,
                None => &rest[..end],
            };
            return format!("{scheme}{user}@{host}{}", &rest[end..]);
        }
    }
    let mut pairs: Vec<(String, String)> = parse_conninfo(url)
        .into_iter()
        .filter(|(k, _)| k != "user" && k != "password")
        .collect();
    pairs.push(("user".to_owned(), user.to_owned()));
    conninfo_string(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_replaced() {
        assert_eq!(
            with_user("postgres://app:secret@db:5432/x?sslmode=require", "t_acme"),
            "postgres://t_acme@db:5432/x?sslmode=require"
        );
        assert_eq!(
            with_user("postgresql://db/x", "t_a"),
            "postgresql://t_a@db/x"
        );
        assert_eq!(
            with_user("host=db user=app password=s dbname=x", "t_a"),
            "host='db' dbname='x' user='t_a'"
        );
    }
}
