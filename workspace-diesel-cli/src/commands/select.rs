//! `--tenants`, `--tenants-file`, `--pattern`, `--except`, `--state`, `--node`: the tenant
//! selection of the fleet commands and the status views, as the library's `Selection`.

use anyhow::{Context as _, Result};
use diesel::PgConnection;
use diesel_workspace::registry::LifecycleState;
use diesel_workspace::{Migrator, Selection, TenantId};

use super::tenant_id;
use crate::cli::{SelectArgs, TenantState};

/// The library's state for the command line's.
pub(crate) fn lifecycle(state: TenantState) -> LifecycleState {
    match state {
        TenantState::Provisioning => LifecycleState::Provisioning,
        TenantState::Active => LifecycleState::Active,
        TenantState::Suspended => LifecycleState::Suspended,
        TenantState::Archived => LifecycleState::Archived,
    }
}

/// Whether any selection option was given.
pub(crate) fn is_given(args: &SelectArgs) -> bool {
    !args.tenants.is_empty()
        || args.tenants_file.is_some()
        || !args.pattern.is_empty()
        || !args.except.is_empty()
        || !args.state.is_empty()
        || args.node.is_some()
}

/// The selection the options describe; `--node` is resolved from the cluster's placement (on
/// `conn`), narrows the other options, and fails when no tenant is placed there.
pub(crate) fn selection(
    conn: &mut PgConnection,
    migrator: &Migrator,
    args: &SelectArgs,
) -> Result<Selection> {
    let names = |list: &[String]| -> Result<Vec<TenantId>> {
        list.iter().map(|n| tenant_id(n.trim())).collect()
    };
    let mut selection = Selection::all();
    if !args.tenants.is_empty() {
        selection = selection.tenants(names(&args.tenants)?);
    }
    if let Some(file) = &args.tenants_file {
        selection = selection.tenants_from_file(file)?;
    }
    for pattern in &args.pattern {
        selection = selection.pattern(pattern)?;
    }
    selection = selection.except(names(&args.except)?);
    if !args.state.is_empty() {
        selection = selection.states(args.state.iter().map(|s| lifecycle(*s)));
    }
    if let Some(node) = &args.node {
        // The tenants placed elsewhere (or nowhere) are left out, so that `--node` narrows the
        // other options (`--tenants a --node n`: `a` only if it is on `n`) instead of adding to
        // them.
        let mut placed = 0usize;
        let mut elsewhere = Vec::new();
        for p in migrator
            .placement(conn)
            .context("reading the tenants' placement (--node needs Citus)")?
        {
            if p.node.as_deref() == Some(node.as_str()) {
                placed += 1;
            } else {
                elsewhere.push(tenant_id(&p.tenant)?);
            }
        }
        anyhow::ensure!(placed > 0, "no tenant is placed on node `{node}`");
        selection = selection.except(elsewhere);
    }
    Ok(selection)
}
