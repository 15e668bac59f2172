//! The per-test tenant: claimed from the warm pool, dropped with the test.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use diesel_workspace::{switch, TenantFuture, TenantId};

use crate::database::Inner;

/// A tenant of its own for a test, from [`TestDatabase::tenant`](crate::TestDatabase::tenant).
///
/// Dropping it drops the tenant (its schema and registry row); when the test panics and its
/// database keeps failures ([`keep_on_failure`](crate::TestDatabaseBuilder::keep_on_failure)),
/// the tenant and the database are kept instead. It holds the database alive, so it may move to
/// another thread or into a `'static` future.
pub struct TestTenant {
    id: TenantId,
    db: Arc<Inner>,
}

impl std::fmt::Debug for TestTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TestTenant").field(&self.id).finish()
    }
}

impl TestTenant {
    pub(crate) fn new(id: TenantId, db: Arc<Inner>) -> Self {
        Self { id, db }
    }

    /// The tenant's name.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// Runs `f` with this tenant active ([`diesel_workspace::switch`]).
    pub fn switch<R>(&self, f: impl FnOnce() -> R) -> R {
        switch(&self.id, f)
    }

    /// `fut` with this tenant active whenever it is polled, for async tests
    /// ([`TenantFuture`]).
    ///
    /// ```no_run
    /// # fn run(tenant: &diesel_workspace_test::TestTenant) {
    /// let seen = futures_executor::block_on(tenant.scope(async { diesel_workspace::current() }));
    /// assert_eq!(seen.as_ref(), Some(tenant.id()));
    /// # }
    /// ```
    pub fn scope<F: Future>(&self, fut: F) -> TenantFuture<F> {
        TenantFuture::new(self.id.clone(), fut)
    }
}

impl Drop for TestTenant {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.db.failed.store(true, Ordering::Relaxed);
            if self.db.keep_on_failure {
                eprintln!("keeping tenant {} after a failure", self.id);
                return;
            }
        }
        let dropped = self
            .db
            .with_connection(|conn| self.db.migrator.drop_tenant(conn, &self.id));
        if let Err(e) = dropped {
            eprintln!("could not drop test tenant {}: {e}", self.id);
        }
    }
}
