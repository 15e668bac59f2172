//! Reading and changing a tenant's life-cycle state in the built-in registry.

use diesel::prelude::*;

use crate::error::{Error, Result};
use crate::registry::model::{sql_types, workspaces, LifecycleState};
use crate::sql::own;
use crate::tenant::TenantId;

/// Sets the state of `tenant` in the built-in registry (`public.workspaces.status`) and returns
/// the state it had before, in one statement.
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
    status: LifecycleState,
) -> Result<LifecycleState> {
    let _span =
        tracing::info_span!("set_lifecycle_state", tenant = tenant.as_str(), status = ?status)
            .entered();
    // The old value comes from a self-join: `RETURNING` sees the new row only.
    let before = own(conn, |conn| {
        diesel::sql_query(
            "UPDATE public.workspaces AS w SET status = $2 FROM public.workspaces AS old \
             WHERE w.schema_name = $1 AND old.id = w.id RETURNING old.status",
        )
        .bind::<diesel::sql_types::Text, _>(tenant.as_str())
        .bind::<sql_types::WorkspaceStatus, _>(status)
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

/// The state of `tenant` in the built-in registry, or `None` when it is not registered.
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
    own(conn, |conn| {
        workspaces::table
            .filter(workspaces::schema_name.eq(tenant.as_str()))
            .select(workspaces::status)
            .get_result(conn)
            .optional()
    })
    .map_err(Error::Query)
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = sql_types::WorkspaceStatus)]
    status: LifecycleState,
}
