//! Reading and changing a tenant's life-cycle state in the registry.

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::error::{Error, Result};
use crate::registry::model::{sql_types, LifecycleState, Registry};
use crate::sql::{own, quote_ident};
use crate::tenant::TenantId;

/// Sets the state of `tenant` in the built-in registry (`public.workspaces.status`) and returns
/// the state it had before, in one statement: [`Registry::set_lifecycle_state`] on
/// [`Registry::default`].
///
/// A web service checks the state on every request (`active` is served; see the
/// `workspace-diesel-axum` crate), so this is how a tenant is suspended, archived or brought back.
/// The registry's `updated_at` trigger records the change.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel_workspace::registry::{set_lifecycle_state, LifecycleState};
/// use diesel_workspace::TenantId;
///
/// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
/// let acme = TenantId::new("acme")?;
/// let before = set_lifecycle_state(conn, &acme, LifecycleState::Suspended)?;
/// assert_eq!(before, LifecycleState::Active);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::TenantNotFound`] when the tenant is not registered; [`Error::Query`] when the
/// statement fails.
pub fn set_lifecycle_state(
    conn: &mut PgConnection,
    tenant: &TenantId,
    state: LifecycleState,
) -> Result<LifecycleState> {
    Registry::default().set_lifecycle_state(conn, tenant, state)
}

/// The state of `tenant` in the built-in registry, or `None` when it is not registered:
/// [`Registry::lifecycle_state`] on [`Registry::default`].
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel_workspace::{registry::lifecycle_state, TenantId};
///
/// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
/// let state = lifecycle_state(conn, &TenantId::new("acme")?)?;
/// println!("{state:?}");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Query`] when the query fails.
pub fn lifecycle_state(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Option<LifecycleState>> {
    Registry::default().lifecycle_state(conn, tenant)
}

impl Registry {
    /// Sets the state of `tenant` in this registry and returns the state it had before, in one
    /// statement under the library's own path.
    ///
    /// ```no_run
    /// use diesel::prelude::*;
    /// use diesel_workspace::registry::{LifecycleState, Registry};
    /// use diesel_workspace::TenantId;
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let customers = Registry::new("app", "customers")
    ///     .identifier_column("slug")
    ///     .status_column("state");
    /// customers.set_lifecycle_state(conn, &TenantId::new("acme")?, LifecycleState::Suspended)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::NoLifecycleState`] when the registry has no
    /// [`status_column`](Self::status_column); [`Error::TenantNotFound`] when the tenant is not
    /// registered; [`Error::Query`] when the statement fails.
    pub fn set_lifecycle_state(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        state: LifecycleState,
    ) -> Result<LifecycleState> {
        let _span =
            tracing::info_span!("set_tenant_status", tenant = tenant.as_str(), status = ?state)
                .entered();
        let Some(status) = &self.status_column else {
            return Err(Error::NoLifecycleState {
                registry: self.qualified_table(),
            });
        };
        // The old value comes from a self-join on the identifier: `RETURNING` sees the new row
        // only.
        let before = own(conn, |conn| {
            diesel::sql_query(format!(
                "UPDATE {reg} AS w SET {st} = $2 FROM {reg} AS old \
                 WHERE w.{id} = $1 AND old.{id} = w.{id} RETURNING old.{st} AS status",
                reg = self.qualified_table(),
                st = quote_ident(status),
                id = self.quoted_identifier_column(),
            ))
            .bind::<Text, _>(tenant.as_str())
            .bind::<sql_types::WorkspaceStatus, _>(state)
            .get_result::<StatusRow>(conn)
            .optional()
        })
        .map_err(Error::Query)?;
        match before {
            Some(row) => {
                tracing::info!(before = ?row.status, "tenant state changed");
                Ok(row.status)
            }
            None => Err(Error::TenantNotFound(tenant.clone())),
        }
    }

    /// The state of `tenant` in this registry, or `None` when it is not registered. Without a
    /// [`status_column`](Self::status_column), a registered tenant is
    /// [`LifecycleState::Active`].
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn lifecycle_state(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<Option<LifecycleState>> {
        let Some(status) = &self.status_column else {
            return Ok(own(conn, |conn| self.contains(conn, tenant))
                .map_err(Error::Query)?
                .then_some(LifecycleState::Active));
        };
        own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT {st} AS status FROM {reg} WHERE {id}::pg_catalog.text = $1",
                reg = self.qualified_table(),
                st = quote_ident(status),
                id = self.quoted_identifier_column(),
            ))
            .bind::<Text, _>(tenant.as_str())
            .get_result::<StatusRow>(conn)
            .optional()
        })
        .map(|row| row.map(|r| r.status))
        .map_err(Error::Query)
    }
}

impl Registry {
    /// As [`lifecycle_state`](Self::lifecycle_state), reading the tenant's row `FOR SHARE`: in
    /// the caller's transaction, the row stays locked until it ends, so a state change, a rename
    /// or a drop of the tenant waits for it (what a background job holds while it runs).
    #[cfg(feature = "jobs")]
    pub(crate) fn lifecycle_state_for_share(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<Option<LifecycleState>> {
        let status = match &self.status_column {
            Some(column) => quote_ident(column),
            None => "'active'::public.workspace_status".to_owned(),
        };
        own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT {status} AS status FROM {reg} WHERE {id}::pg_catalog.text = $1 FOR SHARE",
                reg = self.qualified_table(),
                id = self.quoted_identifier_column(),
            ))
            .bind::<Text, _>(tenant.as_str())
            .get_result::<StatusRow>(conn)
            .optional()
        })
        .map(|row| row.map(|r| r.status))
        .map_err(Error::Query)
    }

    /// Every registered tenant with its state (without a
    /// [`status_column`](Self::status_column), [`LifecycleState::Active`]), in one query under
    /// the library's own path: what a web service holds in memory. Names the registry holds
    /// that are not valid tenant names are left out.
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn lifecycle_states(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(TenantId, LifecycleState)>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            name: String,
            #[diesel(sql_type = sql_types::WorkspaceStatus)]
            status: LifecycleState,
        }
        let status = match &self.status_column {
            Some(column) => quote_ident(column),
            None => "'active'::public.workspace_status".to_owned(),
        };
        let rows: Vec<Row> = own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT {id}::pg_catalog.text AS name, {status} AS status FROM {reg}",
                id = self.quoted_identifier_column(),
                reg = self.qualified_table(),
            ))
            .load(conn)
        })
        .map_err(Error::Query)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| TenantId::new(r.name).ok().map(|t| (t, r.status)))
            .collect())
    }
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = sql_types::WorkspaceStatus)]
    status: LifecycleState,
}
