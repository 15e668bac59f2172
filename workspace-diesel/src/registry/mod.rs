//! The registry of tenants, for applications that read or keep it themselves: where it lives
//! ([`Registry`], the built-in `public.workspaces`), its rows ([`Workspace`]), a tenant's
//! life-cycle state ([`LifecycleState`], [`lifecycle_state`], [`set_lifecycle_state`]), and the
//! library's own tables ([`LIBRARY_TABLES`], [`REGISTRY_MIGRATIONS`], the spares'
//! [`SPARE_PREFIX`]).

mod lifecycle;
pub(crate) mod model;
pub(crate) mod queries;
mod records;
pub(crate) mod runs;

pub use self::lifecycle::{lifecycle_state, set_lifecycle_state};
pub use self::model::{
    sql_types, workspace_migrations, workspaces, LifecycleState, Registry, TenantRecord, Workspace,
    WorkspaceConfigInterface,
};
pub use crate::migrate::REGISTRY_MIGRATIONS;
pub use crate::sql::{LIBRARY_TABLES, SNAPSHOT_PREFIX, SPARE_PREFIX};
