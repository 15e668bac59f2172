//! The arguments of the commands on named tenants: creating them, reverting one or all, and
//! the life-cycle states they take.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cli::fleet::FleetArgs;

/// `create_tenant_schema`'s arguments: one or several names, or a file of names.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The tenants' identifiers, which are also their schema names: lower-case ASCII letters,
    /// digits and _, not starting with a digit, at most 63 bytes
    #[arg(value_name = "IDENTIFIER", required_unless_present = "file")]
    pub(crate) identifiers: Vec<String>,
    /// Also create the tenants named in this file, one per line (blank lines and # comments
    /// ignored)
    #[arg(long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// How many tenants to create at once, one connection each, when creating several [default:
    /// the number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) parallel: Option<u16>,
    /// Go on with the other tenants when one cannot be created (default: stop starting new ones)
    #[arg(long)]
    pub(crate) continue_on_error: bool,
}

/// One tenant, or `--all` of them.
#[derive(Debug, Args)]
pub(crate) struct TenantOrAll {
    /// The tenant
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) identifier: Option<String>,
    /// Every registered tenant
    #[arg(long)]
    pub(crate) all: bool,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}

/// `revert_tenant`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct RevertArgs {
    #[command(flatten)]
    pub(crate) target: TenantOrAll,
    /// Revert this version only, and only where it is the last applied migration; where it is not applied, do nothing (so a rerun after an interruption reverts nothing twice)
    #[arg(long, value_name = "VERSION")]
    pub(crate) version: Option<String>,
}

/// A tenant's life-cycle state, as `set_tenant_status` and `--state` take it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum TenantState {
    /// Being created: web requests get 503
    Provisioning,
    /// Served
    Active,
    /// Kept, not served: web requests get 403
    Suspended,
    /// Kept for the record: web requests get 410
    Archived,
    /// Being restored from a snapshot: web requests get 503
    Restoring,
}
