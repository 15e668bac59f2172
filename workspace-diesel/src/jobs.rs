//! Background jobs that carry their tenant: the envelope ([`TenantJob`]), and running it under
//! its tenant after checking the tenant's state ([`TenantJob::run`]).
//!
//! The envelope is what a queue stores (serde): the tenant's name beside the job's payload. A job
//! is enqueued for the active tenant ([`TenantJob::for_current`], which refuses outside a
//! [`switch`]) or for a named one ([`TenantJob::new`]); there is no job without a tenant. When
//! it runs, [`TenantJob::run`] opens a transaction, reads the tenant's registry row `FOR SHARE`
//! (so a suspension, an archival or a drop waits until the job ends), refuses unless the tenant
//! is `active`, and runs the job with the tenant active. A payload deserialized without a tenant
//! (or with a name that is not valid) is accepted by serde and refused by `run`, so a queue
//! records the refusal like any failed job instead of losing the message.

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::context::{current, switch};
use crate::error::{Error, NoActiveTenant};
use crate::registry::model::{LifecycleState, Registry};
use crate::tenant::TenantId;

/// A job's payload with the tenant it runs in; serialize it into a queue, deserialize it in the
/// worker and [`run`](Self::run) it.
///
/// ```
/// use diesel_workspace::jobs::TenantJob;
/// use diesel_workspace::{switch, TenantId};
///
/// let acme = TenantId::new("acme")?;
/// let job = switch(&acme, || TenantJob::for_current("send the weekly digest"))?;
/// let json = serde_json::to_string(&job).unwrap();
/// assert_eq!(json, r#"{"tenant":"acme","payload":"send the weekly digest"}"#);
///
/// // Outside a switch there is no tenant to carry: refused.
/// assert!(TenantJob::for_current(()).is_err());
///
/// // A message without a tenant deserializes, and `run` refuses it.
/// let orphan: TenantJob<String> = serde_json::from_str(r#"{"payload":"x"}"#).unwrap();
/// assert_eq!(orphan.tenant_name(), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantJob<P> {
    #[serde(default)]
    tenant: Option<String>,
    payload: P,
}

/// Why a [`TenantJob`] was not run, or how it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError<E> {
    /// The envelope names no tenant; the job was not run.
    #[error("the job names no tenant: not run")]
    NoTenant,
    /// The envelope's tenant is not a valid tenant name; the job was not run.
    #[error("the job's tenant is not valid: not run")]
    InvalidTenant(#[source] Error),
    /// The tenant is not registered (dropped, or renamed away); the job was not run.
    #[error("tenant `{0}` does not exist: its job was not run")]
    TenantGone(TenantId),
    /// The tenant is registered but not `active` (suspended, archived, still provisioning); the
    /// job was not run.
    #[error("tenant `{tenant}` is {state:?}: its job was not run")]
    Inactive {
        /// The tenant.
        tenant: TenantId,
        /// Its state.
        state: LifecycleState,
    },
    /// Reading the tenant's state, or the transaction around the job, failed.
    #[error("the job's transaction failed")]
    Database(#[source] Error),
    /// The job ran and failed; its transaction was rolled back.
    #[error("the job failed in tenant `{tenant}`")]
    Failed {
        /// The tenant it ran in.
        tenant: TenantId,
        /// The job's error.
        #[source]
        source: E,
    },
}

impl<E> From<diesel::result::Error> for JobError<E> {
    fn from(e: diesel::result::Error) -> Self {
        JobError::Database(Error::from(e))
    }
}

impl<P> TenantJob<P> {
    /// A job for `tenant`.
    pub fn new(tenant: &TenantId, payload: P) -> Self {
        Self {
            tenant: Some(tenant.as_str().to_owned()),
            payload,
        }
    }

    /// A job for the active tenant.
    ///
    /// # Errors
    /// [`NoActiveTenant`] outside any [`switch`].
    pub fn for_current(payload: P) -> Result<Self, NoActiveTenant> {
        let tenant = current().ok_or_else(NoActiveTenant::operation)?;
        Ok(Self::new(&tenant, payload))
    }

    /// The tenant name the envelope carries, as given (`None` for a message deserialized
    /// without one); [`run`](Self::run) checks it.
    pub fn tenant_name(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The job's tenant, checked: [`JobError::NoTenant`] or [`JobError::InvalidTenant`] for an
    /// envelope deserialized without a valid one.
    fn tenant<E>(&self) -> Result<TenantId, JobError<E>> {
        match &self.tenant {
            None => Err(JobError::NoTenant),
            Some(name) => TenantId::new(name).map_err(JobError::InvalidTenant),
        }
    }

    /// The job's payload.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// Runs `job` in one transaction on `conn`, with the job's tenant active, after reading the
    /// tenant's registry row `FOR SHARE` in that transaction: only an `active` tenant's job runs,
    /// and the tenant cannot be suspended, archived, renamed or dropped until the job ends (those
    /// calls wait for its commit). The job's writes commit with that transaction, or roll back
    /// when it fails. `conn` must not be inside a transaction of the caller's (Diesel's
    /// savepoints would run the job, but the row lock would then last as long as the caller's).
    ///
    /// The built-in registry (`public.workspaces`) holds the states; the job queries tenant
    /// tables, which [`switch`] routes, or uses
    /// [`tenant_transaction`](crate::TenantConnectionExt::tenant_transaction) for raw SQL.
    ///
    /// # Errors
    /// [`JobError::NoTenant`], [`JobError::InvalidTenant`], [`JobError::TenantGone`] and
    /// [`JobError::Inactive`] without running the job; [`JobError::Failed`] with the job's own
    /// error; [`JobError::Database`] when the transaction fails.
    pub fn run<R, E>(
        &self,
        conn: &mut PgConnection,
        job: impl FnOnce(&mut PgConnection, &P) -> Result<R, E>,
    ) -> Result<R, JobError<E>> {
        self.run_in(&Registry::default(), conn, job)
    }

    /// [`run`](Self::run) with the tenant's state read from `registry` (a custom registry table
    /// with a [`status_column`](Registry::status_column); without one, every registered tenant
    /// counts as active).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_in<R, E>(
        &self,
        registry: &Registry,
        conn: &mut PgConnection,
        job: impl FnOnce(&mut PgConnection, &P) -> Result<R, E>,
    ) -> Result<R, JobError<E>> {
        let tenant = self.tenant()?;
        let _span = tracing::info_span!("job.run", tenant = tenant.as_str()).entered();
        conn.transaction(|conn| {
            let state = registry
                .lifecycle_state_for_share(conn, &tenant)
                .map_err(JobError::Database)?;
            match state {
                None => Err(JobError::TenantGone(tenant.clone())),
                Some(LifecycleState::Active) => switch(&tenant, || job(conn, &self.payload))
                    .map_err(|source| JobError::Failed {
                        tenant: tenant.clone(),
                        source,
                    }),
                Some(state) => Err(JobError::Inactive {
                    tenant: tenant.clone(),
                    state,
                }),
            }
        })
    }
}
