//! Citus, for applications that scale out with schema-based sharding: the engine's detection
//! ([`Dialect`], [`Engine`], [`CitusInfo`]), the lint of a tenant migration set ([`CitusLint`]),
//! and where tenants live and how they move ([`TenantPlacement`], the rebalancer). A
//! [`Migrator`](crate::Migrator) detects Citus by itself; nothing here is needed to run on it.

pub use crate::dialect::{CitusInfo, CitusNode, Dialect, Engine};
pub use crate::lint::{CitusLint, CitusRule, LintError, LintFinding};
pub use crate::placement::{
    rebalance_status, start_rebalance, wait_rebalance, RebalanceStatus, TenantPlacement,
};
