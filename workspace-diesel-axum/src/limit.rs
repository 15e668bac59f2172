//! The bulkheads: at most so many requests of one tenant in flight, and tenant work on a pool
//! shared with the registry and membership checks leaving some connections to them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        acquire_until(&semaphore, Instant::now() + wait).await
    }
}

/// How many of a shared pool's `max_size` connections tenant work leaves to the registry and
/// membership checks: an eighth, at least 1 (0 for a pool of one connection, which cannot be
/// split).
pub(crate) fn reserved_for_checks(max_size: usize) -> usize {
    if max_size < 2 {
        0
    } else {
        (max_size / 8).max(1)
    }
}

/// A permit of `semaphore`, waiting until `deadline` at most (no timer when one is free).
pub(crate) async fn acquire_until(
    semaphore: &Arc<Semaphore>,
    deadline: Instant,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = semaphore.clone().try_acquire_owned() {
        return Some(permit);
    }
    let deadline = tokio::time::Instant::from_std(deadline);
    match tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Some(permit),
        _ => None,
    }
}
