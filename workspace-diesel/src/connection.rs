//! Transactions that run raw SQL: inside a tenant's schema (`tenant_transaction`), and the
//! library's own batches that carry their own `BEGIN` and `COMMIT`.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::result::Error as DieselError;
use diesel::PgConnection;

use crate::context::current;
use crate::error::NoActiveTenant;
use crate::pooler::{pid_check_expr, pid_check_failure, registered_pid};
use crate::roles::TenantRoles;
use crate::sql::{quote_ident, work_path, SHARED_SCHEMA};
use crate::tenant::TenantId;

/// The statements that open a tenant transaction, sent as one batch (one round trip): `BEGIN`, a
/// transaction-local `search_path` of the tenant's schema then the shared schema `public` (so
/// extension functions, types and operators installed there keep resolving; never the session's
/// own path, which may name another tenant) then `pg_temp` (named last, so that no temporary
/// table left on the connection shadows the tenant's: [`work_path`]), and a cast that fails with
/// `schema "<tenant>" does not exist` when the schema is gone. `local` (a pooler-mode pool's
/// `CLOSE ALL` and timeouts as `SET LOCAL` statements) goes into the same batch, and with a
/// per-tenant `role`, a `SET LOCAL ROLE` too; in pooler mode without one, the check also puts
/// the role back to the login's for the transaction (`set_config('role', 'none', true)`, in the
/// same statement: another client's `SET ROLE` does not apply). With the `pid` of the backend the connection was opened on (a
/// connection the library opened for [`Pooler::Session`](crate::pooler::Pooler::Session)), the check
/// also fails when another backend answers: a transaction pooler nobody declared, caught before
/// any tenant statement.
pub(crate) fn begin_sql(
    tenant: &TenantId,
    local: Option<&str>,
    role: Option<&str>,
    pid: Option<i32>,
) -> String {
    let q = tenant.quoted();
    let path = work_path(&format!("{q}, {SHARED_SCHEMA}"));
    let local = local.map(|l| format!("{l}; ")).unwrap_or_default();
    let set_role = role
        .map(|r| format!("SET LOCAL ROLE {}; ", quote_ident(r)))
        .unwrap_or_default();
    let backend = pid
        .map(|pid| format!(", {}", pid_check_expr(pid)))
        .unwrap_or_default();
    let reset_role = if !local.is_empty() && role.is_none() {
        ", pg_catalog.set_config('role', 'none', true)"
    } else {
        ""
    };
    format!(
        "BEGIN; SET LOCAL search_path TO {path}; {local}{set_role}\
         SELECT '{q}'::pg_catalog.regnamespace{backend}{reset_role}"
    )
}

/// Fails when `conn` is inside a Diesel transaction: the library's batches carry their own
/// `BEGIN` and `COMMIT`.
pub(crate) fn no_outer_transaction(conn: &mut PgConnection) -> diesel::QueryResult<()> {
    match AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth() {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(DieselError::AlreadyInTransaction),
        Err(e) => Err(e),
    }
}

/// Runs `f`, which sends its own `BEGIN` and `COMMIT`; rolls back when it fails.
pub(crate) fn in_raw_transaction<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> diesel::QueryResult<T>,
) -> diesel::QueryResult<T> {
    let res = f(conn);
    if res.is_err() {
        rollback(conn);
    }
    res
}

/// Ends a failed raw transaction (a no-op warning when none is open; ignored when the
/// connection is gone).
pub(crate) fn rollback(conn: &mut PgConnection) {
    let _ = conn.batch_execute("ROLLBACK");
}

/// Transactions whose `search_path` starts with the active tenant's schema.
///
/// Tenant tables in Diesel's DSL need no transaction: they render their schema themselves. This is
/// for everything that resolves names through `search_path` instead: [`diesel::sql_query`],
/// triggers, functions, views. The `search_path` is `"<tenant>", public, pg_temp` (the
/// temporary schema named last, so a temporary table left on the connection never shadows a
/// tenant table), set with `SET LOCAL` in
/// the same round trip as `BEGIN`, so it ends with the transaction, whether it commits or rolls
/// back, and never leaks into the next use of a pooled connection. Whatever `search_path` the
/// session had before plays no part.
///
/// Behind a transaction pooler (PgBouncer `pool_mode = transaction`, see
/// [`Pooler`](crate::pooler::Pooler)), this is the only safe way to run raw SQL that names tenant tables
/// without a schema: the session `search_path` then belongs to whichever server connection
/// answers. On a connection of a pool in pooler mode, the same round trip also makes what another
/// client left on the server connection harmless for the transaction (the role goes back to the
/// login's, `CLOSE ALL` closes `WITH HOLD` cursors) and sets the pool's timeouts with
/// `SET LOCAL`. (A `SET SESSION AUTHORIZATION`, which only a superuser's session can run, is not
/// undone.) On a connection the library opened for a session
/// pooler ([`Pooler::Session`](crate::pooler::Pooler::Session): a
/// [`TenantPool`](crate::pool::TenantPool)'s, or [`connect`](crate::connect)'s), the check at
/// the end of the batch also compares the backend with the one the connection was opened on,
/// and fails with [`PoolerNotDeclared`](crate::Error::PoolerNotDeclared) before `f` runs when
/// they differ (a direct connection needs no such check: its startup setting settled it).
pub trait TenantConnectionExt {
    /// Runs `f` in a transaction under the active tenant's schema; commits when `f` returns `Ok`,
    /// rolls back when it returns `Err`.
    ///
    /// Fails before sending anything when no tenant is active, and fails with PostgreSQL's
    /// `schema "<tenant>" does not exist` (SQLSTATE `3F000`) when the tenant's schema is gone:
    /// raw SQL never falls through to the shared schema. Nested `conn.transaction(...)` calls
    /// inside `f` become savepoints, as usual.
    ///
    /// **Cost**: one round trip to open (`BEGIN`, the `SET LOCAL` and the check in one batch) and
    /// one to commit. Per-tenant roles ([`tenant_transaction_as`](Self::tenant_transaction_as))
    /// add no round trip; tenant tables in Diesel's DSL need no tenant transaction at all.
    ///
    /// ```no_run
    /// use diesel::prelude::*;
    /// use diesel::sql_types::BigInt;
    /// use diesel_workspace::prelude::*;
    /// use diesel_workspace::{switch, TenantId};
    ///
    /// #[derive(QueryableByName)]
    /// struct Count {
    ///     #[diesel(sql_type = BigInt)]
    ///     n: i64,
    /// }
    ///
    /// # fn run(conn: &mut PgConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// let acme = TenantId::new("acme")?;
    /// let count = switch(&acme, || {
    ///     conn.tenant_transaction(|conn| {
    ///         diesel::sql_query("SELECT count(*) AS n FROM notes").get_result::<Count>(conn)
    ///     })
    /// })?;
    /// println!("acme has {} notes", count.n);
    /// # Ok(())
    /// # }
    /// ```
    fn tenant_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DieselError>;

    /// Like [`tenant_transaction`](Self::tenant_transaction) for an explicit tenant, whatever
    /// tenant is active. The tenant is also active (as by [`switch`](crate::switch)) inside `f`.
    fn transaction_in<T, E, F>(&mut self, tenant: &TenantId, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DieselError>;

    /// Like [`tenant_transaction`](Self::tenant_transaction), also assuming the active tenant's
    /// own role ([`TenantRoles`]) with `SET LOCAL ROLE`: raw SQL inside `f` that names another
    /// tenant's tables fails with `permission denied` (SQLSTATE `42501`), whatever schema it
    /// qualifies. The role ends with the transaction.
    ///
    /// **Cost**: none in round trips (the `SET LOCAL ROLE` joins the `BEGIN` batch) and a role
    /// lookup on the server; tenant tables in Diesel's DSL outside a tenant transaction are not
    /// affected. **Limit**: the role is assumed, not logged in as: SQL that runs `RESET ROLE`
    /// or `SET ROLE` inside `f` gets the connection's own role back, so this contains mistakes
    /// (a wrong schema, a forgotten filter), not SQL written by an attacker. For a boundary the
    /// database enforces, log in as the tenant's role:
    /// [`TenantRolePools`](crate::TenantRolePools).
    ///
    /// Fails with `role "<prefix><tenant>" does not exist` (SQLSTATE `42704`) when the tenant has
    /// no role, and with `permission denied to set role` (`42501`) when the connection's role is
    /// not a member of it: never without the role.
    ///
    /// ```no_run
    /// use diesel::prelude::*;
    /// use diesel_workspace::prelude::*;
    /// use diesel_workspace::{switch, TenantId, TenantRoles};
    ///
    /// # fn run(conn: &mut PgConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// let roles = TenantRoles::new("app_t_")?;
    /// let acme = TenantId::new("acme")?;
    /// let denied = switch(&acme, || {
    ///     conn.tenant_transaction_as(&roles, |conn| {
    ///         diesel::sql_query("SELECT 1 FROM globex.notes").execute(conn)
    ///     })
    /// });
    /// assert!(denied.unwrap_err().to_string().contains("permission denied"));
    /// # Ok(())
    /// # }
    /// ```
    fn tenant_transaction_as<T, E, F>(&mut self, roles: &TenantRoles, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DieselError>;
}

impl TenantConnectionExt for PgConnection {
    fn tenant_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DieselError>,
    {
        let tenant = current().ok_or_else(|| DieselError::from(NoActiveTenant::operation()))?;
        run_in(self, &tenant, None, f)
    }

    fn transaction_in<T, E, F>(&mut self, tenant: &TenantId, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DieselError>,
    {
        crate::context::switch(tenant, || run_in(self, tenant, None, f))
    }

    fn tenant_transaction_as<T, E, F>(&mut self, roles: &TenantRoles, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E>,
        E: From<DieselError>,
    {
        let tenant = current().ok_or_else(|| DieselError::from(NoActiveTenant::operation()))?;
        let role = roles
            .role_name(&tenant)
            .map_err(|e| DieselError::QueryBuilderError(e.into()))?;
        run_in(self, &tenant, Some(&role), f)
    }
}

fn run_in<T, E, F>(
    conn: &mut PgConnection,
    tenant: &TenantId,
    role: Option<&str>,
    f: F,
) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E>,
    E: From<DieselError>,
{
    #[cfg(feature = "r2d2")]
    let (local, pid) = (
        crate::pool::transaction_settings(conn),
        crate::pool::begin_check_pid(conn).or_else(|| registered_pid(conn)),
    );
    #[cfg(not(feature = "r2d2"))]
    let (local, pid): (Option<std::sync::Arc<str>>, _) = (None, registered_pid(conn));
    let begin = begin_sql(tenant, local.as_deref(), role, pid);
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(conn, &begin) {
        // `BEGIN` may have succeeded before the check failed: end that transaction, which
        // Diesel's transaction manager does not know about.
        if AnsiTransactionManager::transaction_manager_status_mut(conn)
            .transaction_depth()
            .ok()
            .flatten()
            .is_none()
        {
            let _ = conn.batch_execute("ROLLBACK");
        }
        if let Some(detected) = pid.and_then(|was| pid_check_failure(was, &e)) {
            return Err(DieselError::from(detected).into());
        }
        return Err(e.into());
    }
    // The same protocol as `Connection::transaction`.
    match f(conn) {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(user_error) => match AnsiTransactionManager::rollback_transaction(conn) {
            Ok(()) | Err(DieselError::BrokenTransactionManager) => Err(user_error),
            Err(rollback_error) => Err(rollback_error.into()),
        },
    }
}
