//! Integration tests against a real PostgreSQL (`DATABASE_URL`); each test uses a database of its own.

mod support;

mod ids;
mod pool;
mod routing;
mod tenancy;
