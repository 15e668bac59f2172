//! End-to-end tests of the `workspace-diesel` binary: each runs the real binary against a
//! database of its own and a temporary copy of the example migrations. One module per command group.

/// The shared support, under the name the suites use.
mod support {
    pub use workspace_diesel_tests::cli::*;
    pub use workspace_diesel_tests::*;
}

use workspace_diesel_tests::test_db;

/// The `print-schema` output for the example migrations, kept here so that it is compiled with
/// the tests (and used against a real database below).
#[rustfmt::skip]
mod generated_schema;

use std::fs;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{switch, TenantId};

use support::{Run, TestDb, Workdir};

const EXPECTED_SCHEMA: &str = include_str!("generated_schema.rs");

/// A second tenant migration adding `notes.x`.
fn add_column_migration(w: &Workdir) {
    w.add_migration(
        false,
        "2026-02-01-000000_add_x",
        "ALTER TABLE notes ADD COLUMN x INT;",
        "ALTER TABLE notes DROP COLUMN x;",
    );
}

fn has_x(db: &TestDb, tenant: &str) -> bool {
    db.check(&format!(
        "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{tenant}' \
         AND table_name = 'notes' AND column_name = 'x')"
    ))
}

mod citus;
mod config;
mod conventions;
mod create;
mod custom_registry;
mod errors;
mod fleet;
mod generate;
mod help;
mod json;
mod migrate;
mod plan;
mod pooler;
mod revert;
mod schema;
mod scripting;
mod setup;
mod spares;
mod status;
mod tenants;
mod terminal;
mod tracing;
mod trojans;
