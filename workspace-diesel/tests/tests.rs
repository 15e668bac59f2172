//! Integration tests against a real PostgreSQL (`DATABASE_URL`); each test uses a database of its own.

mod support;

mod fleet;
mod ids;
mod lifecycle;
mod pool;
mod routing;
mod tenancy;
