//! Integration tests against a real PostgreSQL (`DATABASE_URL`); each test uses a database of its own.

/// The shared support, under the name the suites use.
mod support {
    pub use workspace_diesel_tests::*;
}

use workspace_diesel_tests::test_db;

mod across;
mod architecture;
mod archive;
mod archive_v1;
mod audit;
mod busy_pooler;
mod cache;
mod citus;
mod compiletest;
mod concurrency;
mod custom_registry;
mod docs;
mod enforcing_roles;
mod failure_paths;
mod fleet;
mod guards;
mod ids;
mod jobs;
mod leftovers;
mod lifecycle;
mod metadata;
mod mobility;
mod multi_table;
mod newcomer;
mod packaging;
mod plan;
mod pool;
mod pooler;
mod pooler_lifecycle;
mod quickstart;
mod registry;
mod revert;
mod roles;
mod routing;
mod runs;
mod scale;
mod selection;
mod snapshots;
mod statements;
mod temp_objects;
mod tenancy;
mod tracing;
mod trojans;
