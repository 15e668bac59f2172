//! The per-tenant bulkhead: at most so many requests of one tenant in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_workspace::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One semaphore per tenant, made on first use.
#[derive(Debug)]
pub(crate) struct TenantLimiter {
    per_tenant: usize,
    slots: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

impl TenantLimiter {
    pub(crate) fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant: per_tenant.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// A slot for one request of `tenant`, waiting at most `wait` for one to free up; `None`
    /// when the tenant still has its share in flight after that.
    pub(crate) async fn acquire(
        &self,
        tenant: &TenantId,
        wait: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(tenant) {
                Some(s) => s.clone(),
                None => slots
                    .entry(tenant.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                    .clone(),
            }
        };
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        match tokio::time::timeout(wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }
}
