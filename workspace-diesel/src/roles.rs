//! Per-tenant roles (opt-in): a role per tenant holding privileges on its own schema only,
//! assumed with `SET LOCAL ROLE` inside a tenant transaction.

use crate::error::{Error, Result};
use crate::sql::quote_ident;
use crate::tenant::{TenantId, MAX_TENANT_ID_LEN};

/// How per-tenant roles are named and who may assume them.
///
/// With per-tenant roles, each tenant has a role `<prefix><tenant>` (`NOLOGIN`) holding `USAGE`
/// on the tenant's schema and `SELECT`, `INSERT`, `UPDATE`, `DELETE` on its tables (`USAGE`,
/// `SELECT`, `UPDATE` on its sequences), now and for what later migrations create, and nothing
/// else: no `CREATE` on any schema. The [`Migrator`](crate::Migrator) built with
/// [`MigratorBuilder::tenant_roles`](crate::MigratorBuilder::tenant_roles) creates, renames and
/// drops the role with the tenant, and grants it to each [`member`](Self::member) (by default the
/// role the migrator runs as).
/// [`TenantConnectionExt::tenant_transaction_as`](crate::TenantConnectionExt::tenant_transaction_as)
/// assumes it, so raw SQL in tenant A's transaction that names tenant B's tables fails with
/// `permission denied`.
///
/// Roles belong to the whole PostgreSQL cluster, not to one database: give each database its own
/// prefix. A role name has at most 63 bytes, so the prefix shortens the longest tenant id usable.
///
/// ```
/// use diesel_workspace::{TenantId, TenantRoles};
///
/// let roles = TenantRoles::new("app_t_")?.member("app");
/// assert_eq!(roles.role_name(&TenantId::new("acme")?)?, "app_t_acme");
/// assert!(TenantRoles::new("App").is_err());
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoles {
    prefix: String,
    members: Vec<String>,
    login: bool,
}

impl TenantRoles {
    /// Roles named `<prefix><tenant>`.
    ///
    /// # Errors
    /// [`Error::InvalidTenantName`] when the prefix is empty, longer than 32 bytes, or not made
    /// of `[a-z0-9_]` starting with a letter or `_`.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let reason = if prefix.is_empty() {
            Some("a role prefix must not be empty")
        } else if prefix.len() > 32 {
            Some("a role prefix has at most 32 bytes")
        } else if !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || prefix.as_bytes()[0].is_ascii_digit()
        {
            Some("a role prefix is made of [a-z0-9_] and does not start with a digit")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidTenantName {
                name: prefix,
                reason,
            }),
            None => Ok(Self {
                prefix,
                members: Vec::new(),
                login: false,
            }),
        }
    }

    /// Adds a role that is granted each tenant role, so that it may assume them: the role the
    /// application connects as. When none is given, the role the migrator runs as
    /// (`CURRENT_USER`) is the member.
    pub fn member(mut self, role: impl Into<String>) -> Self {
        self.members.push(role.into());
        self
    }

    /// Creates the roles with `LOGIN`, so that a connection can log in as a tenant's role
    /// instead of assuming it: the enforcing mode of
    /// `TenantRolePools` (feature `r2d2`). The library sets no password: the
    /// server's authentication for these roles (`pg_hba.conf`, `ALTER ROLE … PASSWORD`) is the
    /// operator's. Defaults to `false` (`NOLOGIN`).
    ///
    /// ```
    /// let roles = diesel_workspace::TenantRoles::new("app_t_")?.login(true);
    /// assert!(roles.logs_in());
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn login(mut self, login: bool) -> Self {
        self.login = login;
        self
    }

    /// Whether the roles are created with `LOGIN` ([`login`](Self::login)).
    pub fn logs_in(&self) -> bool {
        self.login
    }

    /// The prefix of every role.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The role of `tenant`.
    ///
    /// # Errors
    /// [`Error::InvalidTenantName`] when `<prefix><tenant>` is longer than 63 bytes.
    pub fn role_name(&self, tenant: &TenantId) -> Result<String> {
        let name = format!("{}{}", self.prefix, tenant.as_ref());
        if name.len() > MAX_TENANT_ID_LEN {
            return Err(Error::InvalidTenantName {
                name: tenant.as_ref().to_owned(),
                reason: "too long for its per-tenant role: prefix and tenant id exceed 63 bytes",
            });
        }
        Ok(name)
    }

    fn members_sql(&self) -> String {
        if self.members.is_empty() {
            "CURRENT_USER".to_owned()
        } else {
            self.members
                .iter()
                .map(|m| quote_ident(m))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Creates `tenant`'s role with its privileges, in the transaction that creates (or claims)
    /// the schema, after the schema and its tables exist.
    pub(crate) fn create_sql(&self, tenant: &TenantId) -> Result<String> {
        let role = quote_ident(&self.role_name(tenant)?);
        Ok(format!(
            "CREATE ROLE {role} {login}; GRANT {role} TO {members}; {grants}",
            members = self.members_sql(),
            login = if self.login { "LOGIN" } else { "NOLOGIN" },
            grants = self.grants_sql(tenant)?,
        ))
    }

    /// The privileges `tenant`'s role holds on its schema, its tables and sequences, and the
    /// default privileges there (what a schema rebuilt by a restore gets again).
    pub(crate) fn grants_sql(&self, tenant: &TenantId) -> Result<String> {
        let role = quote_ident(&self.role_name(tenant)?);
        let schema = tenant.quoted();
        Ok(format!(
            "GRANT USAGE ON SCHEMA {schema} TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; \
             GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} \
               GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} \
               GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}"
        ))
    }

    /// Renames `from`'s role along with the schema (privileges follow the role's oid).
    pub(crate) fn rename_sql(&self, from: &TenantId, to: &TenantId) -> Result<String> {
        Ok(format!(
            "ALTER ROLE {} RENAME TO {}",
            quote_ident(&self.role_name(from)?),
            quote_ident(&self.role_name(to)?)
        ))
    }

    /// Drops `tenant`'s role, after its schema was dropped (which took the grants and default
    /// privileges on it along).
    pub(crate) fn drop_sql(&self, tenant: &TenantId) -> Result<String> {
        Ok(format!(
            "DROP ROLE IF EXISTS {}",
            quote_ident(&self.role_name(tenant)?)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_fit_in_63_bytes() {
        let roles = TenantRoles::new("p_").unwrap();
        let long = TenantId::new("a".repeat(61)).unwrap();
        assert_eq!(roles.role_name(&long).unwrap().len(), 63);
        let longer = TenantId::new("a".repeat(62)).unwrap();
        assert!(matches!(
            roles.role_name(&longer),
            Err(Error::InvalidTenantName { .. })
        ));
        assert!(TenantRoles::new("").is_err());
        assert!(TenantRoles::new("1x").is_err());
        assert!(TenantRoles::new("x".repeat(33)).is_err());
    }

    #[test]
    fn members_default_to_the_current_user_and_are_quoted() {
        let acme = TenantId::new("acme").unwrap();
        let sql = TenantRoles::new("t_").unwrap().create_sql(&acme).unwrap();
        assert!(
            sql.starts_with("CREATE ROLE \"t_acme\" NOLOGIN; GRANT \"t_acme\" TO CURRENT_USER;")
        );
        let sql = TenantRoles::new("t_")
            .unwrap()
            .member("app")
            .member("we\"b")
            .create_sql(&acme)
            .unwrap();
        assert!(
            sql.contains("GRANT \"t_acme\" TO \"app\", \"we\"\"b\";"),
            "{sql}"
        );
        let sql = TenantRoles::new("t_")
            .unwrap()
            .login(true)
            .create_sql(&acme)
            .unwrap();
        assert!(sql.starts_with("CREATE ROLE \"t_acme\" LOGIN;"), "{sql}");
    }
}
