//! Scale-out on Citus (schema-based sharding), against the cluster of `../shared/citus`
//! (coordinator on 127.0.0.1:9700, two workers). Every test makes its own database on every
//! node; without a cluster the tests print why and return, unless
//! `WORKSPACE_DIESEL_REQUIRE_CITUS=1`, which makes them fail.

mod archive;
mod detection;
mod lint;
mod migrations;
mod servers;
mod snapshots;
mod tenants;
