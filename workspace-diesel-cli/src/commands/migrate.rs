//! Migration commands: `migrate_tenant`, `migrate_all`, `revert_tenant`, `status`.

use anyhow::{bail, Result};
use diesel::prelude::*;
use diesel_workspace::{Migrator, TenantId};

use super::Ctx;
use crate::cli::{FleetArgs, TenantOrAll};

/// A tenant's migration state.
pub(crate) struct Status {
    pub(crate) tenant: TenantId,
    pub(crate) applied: Vec<String>,
    pub(crate) pending: Vec<String>,
    pub(crate) drift: Option<String>,
}

impl Status {
    pub(crate) fn state(&self) -> String {
        match (&self.drift, self.pending.len()) {
            (Some(drift), _) => format!("drift: {drift}"),
            (None, 0) => "up to date".to_owned(),
            (None, n) => format!("{n} pending"),
        }
    }
}

pub(crate) fn statuses(_conn: &mut PgConnection, _migrator: &Migrator) -> Result<Vec<Status>> {
    bail!("not yet available")
}

pub(crate) fn drop_tenant(_conn: &mut PgConnection, _m: &Migrator, _t: &TenantId) -> Result<()> {
    bail!("not yet available")
}

pub(crate) fn rename_tenant(
    _conn: &mut PgConnection,
    _m: &Migrator,
    _from: &TenantId,
    _to: &TenantId,
) -> Result<()> {
    bail!("not yet available")
}

pub(crate) fn migrate_tenant(_ctx: &Ctx, _args: &TenantOrAll) -> Result<()> {
    bail!("not yet available")
}

pub(crate) fn migrate_all(_ctx: &Ctx, _args: &FleetArgs) -> Result<()> {
    bail!("not yet available")
}

pub(crate) fn revert_tenant(_ctx: &Ctx, _args: &TenantOrAll) -> Result<()> {
    bail!("not yet available")
}

pub(crate) fn status(_ctx: &Ctx) -> Result<()> {
    bail!("not yet available")
}
