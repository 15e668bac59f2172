//! The one way into every public operation of the [`Migrator`]: its preamble, chosen by the
//! kind of operation ([`Op`]) and run in one fixed order: the span, the connection readied, the
//! outer-transaction check, the name check, the registry check, the hazards, the dialect. And the
//! way out of an operation on one tenant: a failure caused by the tenant being dropped or renamed
//! meanwhile is reported as such ([`Migrator::or_gone`]).
//!
//! | kind | outer transaction | names | registered | hazards | dialect |
//! | --- | --- | --- | --- | --- | --- |
//! | [`Op::Tenant`] (migrate, revert, move) | refused | checked | checked | checked | detected |
//! | [`Op::Tenants`] (drop, rename: one library transaction, joining the caller's) | joined | checked | read under the lock, in the body | checked | — |
//! | [`Op::NewTenant`] (create) | refused | checked | — | checked | detected |
//! | [`Op::Fleet`] (fleet runs, the warm pool) | refused | — | — | checked | per tenant, in the body |
//! | [`Op::Shared`] (the shared migrations: one library transaction, joining the caller's) | joined | — | — | checked | detected |
//! | [`Op::ReadOnly`] (status, lists, audit, lint, placement) | — | — | — | — | — |
//!
//! A tenant an operation learns of only after its preamble (the template of a clone, the
//! tenant of the snapshot a restore reads) is admitted by [`Migrator::admit`]: the preamble's
//! own name and registry checks, in its order.

use diesel::prelude::*;

use tracing::span::EnteredSpan;
use tracing::Span;

use crate::connection::no_outer_transaction;
use crate::error::{Error, Result};
use crate::migrate::migrator::Migrator;
use crate::sql::{own, SHARED_SCHEMA, SNAPSHOT_PREFIX, SPARE_PREFIX};
use crate::tenant::TenantId;

/// The kind of a public operation, which decides the checks of its preamble (see the module's
/// table).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    /// One registered tenant, changed in transactions of the library's own.
    Tenant(&'a TenantId),
    /// Registered tenants, changed in one transaction of the library's that joins the caller's:
    /// the registry is read under their locks, inside it.
    Tenants(&'a [&'a TenantId]),
    /// A tenant to create.
    NewTenant(&'a TenantId),
    /// Many tenants, or the warm pool, each in transactions of the library's own.
    Fleet,
    /// The shared migrations, in one transaction of the library's that joins the caller's.
    Shared,
    /// Reading only.
    ReadOnly,
}

impl Migrator {
    /// The preamble of every public operation: enters `span` (kept entered as long as the
    /// returned guard lives), then runs the checks `op` calls for, in this order: the connection
    /// readied ([`ready`](Self::ready)), the outer-transaction check, the names, the registry,
    /// the hazards, the dialect.
    ///
    /// # Errors
    /// The first check that fails: [`Error::OuterTransaction`],
    /// [`Error::InvalidTenantName`], [`Error::TenantNotFound`], [`Error::HijackHazards`],
    /// [`Error::UnsupportedEngine`].
    pub(crate) fn enter(
        &self,
        conn: &mut PgConnection,
        span: Span,
        op: Op<'_>,
    ) -> Result<EnteredSpan> {
        let entered = span.entered();
        self.ready(conn);
        let (outer, names, registered, hazards, dialect): (bool, &[&TenantId], _, bool, bool) =
            match &op {
                // Its name is checked with its registration ([`admit`](Self::admit)).
                Op::Tenant(t) => (true, &[], Some(*t), true, true),
                Op::Tenants(ts) => (false, ts, None, true, false),
                Op::NewTenant(t) => (true, std::slice::from_ref(t), None, true, true),
                Op::Fleet => (true, &[], None, true, false),
                Op::Shared => (false, &[], None, true, true),
                Op::ReadOnly => (false, &[], None, false, false),
            };
        if outer {
            // The operation commits transactions of its own: inside the caller's, it refuses
            // with the error that says so.
            no_outer_transaction(conn).map_err(|e| match e {
                diesel::result::Error::AlreadyInTransaction => Error::OuterTransaction,
                e => Error::Query(e),
            })?;
        }
        for name in names {
            self.check_tenant_name(name)?;
        }
        if let Some(tenant) = registered {
            self.admit(conn, tenant)?;
        }
        if hazards {
            self.refuse_hazards(conn)?;
        }
        if dialect {
            // Detected on the migrator's first use; then each transaction checks it.
            self.assumed_dialect(conn)?;
        }
        Ok(entered)
    }

    /// The preamble's name and registry checks of `tenant`, which must be registered: for a
    /// tenant an operation learns of after its preamble (a clone's template, a restored
    /// snapshot's tenant), and for [`Op::Tenant`]'s.
    ///
    /// # Errors
    /// [`Error::InvalidTenantName`], [`Error::TenantNotFound`].
    pub(crate) fn admit(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        self.check_tenant_name(tenant)?;
        if own(conn, |conn| self.registry.contains(conn, tenant))? {
            Ok(())
        } else {
            Err(Error::TenantNotFound(tenant.clone()))
        }
    }

    /// With [`MigratorBuilder::refuse_hijack_hazards`], fails with [`Error::HijackHazards`] when
    /// the database has hazards that let another role hijack SQL.
    fn refuse_hazards(&self, conn: &mut PgConnection) -> Result<()> {
        if !self.refuse_hijack_hazards {
            return Ok(());
        }
        let hazards = own(conn, |conn| {
            crate::audit::hijack_hazards(conn, SHARED_SCHEMA)
        })?;
        if hazards.is_empty() {
            Ok(())
        } else {
            Err(Error::HijackHazards(hazards))
        }
    }

    /// Whether `tenant` is registered and its schema exists, read in a statement of its own (so
    /// after a failure, with the catalog as it is now): what a failed operation on a tenant
    /// that was dropped or renamed meanwhile reports instead of the server's error.
    fn gone(&self, conn: &mut PgConnection, tenant: &TenantId) -> Option<Error> {
        let state = own(conn, |conn| self.registry.presence(conn, tenant)).ok()?;
        if !state.registered {
            Some(Error::TenantNotFound(tenant.clone()))
        } else if !state.schema {
            Some(Error::SchemaMissing(tenant.clone()))
        } else {
            None
        }
    }

    /// `result` of an operation on `tenant`, with a failure caused by the tenant being dropped
    /// or renamed meanwhile reported as [`Error::TenantNotFound`] or [`Error::SchemaMissing`].
    pub(crate) fn or_gone<T>(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        result: Result<T>,
    ) -> Result<T> {
        match result {
            Err(e @ (Error::TenantNotFound(_) | Error::SchemaMissing(_))) => Err(e),
            Err(e) => match self.gone(conn, tenant) {
                Some(gone) => Err(gone),
                None => Err(e),
            },
            ok => ok,
        }
    }

    /// Rejects the registry's schema, the spares' and the snapshots' prefixes as tenant names.
    pub(crate) fn check_tenant_name(&self, tenant: &TenantId) -> Result<()> {
        if tenant.as_str() == self.registry.schema() {
            return Err(Error::InvalidTenantName {
                name: tenant.to_string(),
                reason: "this schema is reserved for shared data",
            });
        }
        if tenant.as_str().starts_with(SPARE_PREFIX) {
            return Err(Error::InvalidTenantName {
                name: tenant.to_string(),
                reason: "names starting with `_spare_` are reserved for spare schemas",
            });
        }
        if tenant.as_str().starts_with(SNAPSHOT_PREFIX) {
            return Err(Error::InvalidTenantName {
                name: tenant.to_string(),
                reason: "names starting with `_snap_` are reserved for snapshot schemas",
            });
        }
        Ok(())
    }
}
