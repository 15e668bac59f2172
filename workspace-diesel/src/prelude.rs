//! The traits whose methods you call: `use diesel_workspace::prelude::*;`.

pub use crate::connection::TenantConnectionExt;
pub use crate::registry::WorkspaceConfigInterface;
pub use crate::table::{TenantModel, TenantTable};
pub use workspace_diesel_derive::TenantModel;
