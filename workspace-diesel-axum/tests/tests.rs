//! Integration tests of the routing crate: real HTTP servers on loopback ports, real
//! PostgreSQL, one scratch database per test.

mod support;

mod access;
mod async_pools;
mod bounds;
mod bulkheads;
mod custom_registry;
mod gate;
mod readme;
mod resolvers;
mod restoring;
mod role_pools;
mod routing;
