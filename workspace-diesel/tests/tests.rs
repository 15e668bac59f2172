//! Integration tests against a real PostgreSQL (`DATABASE_URL`); each test uses a database of its own.

mod support;

mod audit;
mod compiletest;
mod custom_registry;
mod fleet;
mod guards;
mod ids;
mod lifecycle;
mod multi_table;
mod pool;
mod registry;
mod routing;
mod tenancy;
