//! The warm pool: spare schemas with every tenant migration applied, which
//! [`Migrator::create_tenant`] claims (a rename) instead of provisioning from scratch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};

use crate::connection::in_raw_transaction;
use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::migrate::tenants::Provision;
use crate::options::MigrateParams;
use crate::sql::{
    own, own_batch, quote_ident, quote_literal, BEGIN, CENTRAL_RECORD, SPARES_LOCK_KEY,
    SPARES_TABLE, SPARE_PREFIX,
};
use crate::tenant::TenantId;

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

impl Migrator {
    /// Tops the warm pool up to `target` spare schemas and returns how many it created.
    ///
    /// A spare is a schema named `_spare_<hex>` with every tenant migration applied, listed in
    /// `public.workspace_spares` and recorded in the central record under its own name. Spares
    /// are not tenants: they are not listed and [`migrate_all`](Self::migrate_all) does not
    /// migrate them. [`create_tenant`](Self::create_tenant) claims only a spare that is current;
    /// this call first brings stale spares (made before new tenant migrations were added) up to
    /// date, then creates the missing ones.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// migrator.fill_spares(conn, 10)?; // e.g. from a periodic job
    /// migrator.create_tenant(conn, &TenantId::new("acme")?)?; // a rename, no table DDL
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::TenantMigration`] when a spare's migrations fail; [`Error::Query`].
    pub fn fill_spares(&self, conn: &mut PgConnection, target: usize) -> Result<usize> {
        let _span = self.enter(
            conn,
            crate::trace::op_span!("spares.fill", target),
            Op::Fleet,
        )?;
        if self.pooler().is_transaction() {
            // Behind a transaction pooler a session lock would stay on whichever server
            // connection took it. Without it, the count is read again before every spare: two
            // concurrent callers may each create one of the last missing spares.
            let created = self.fill_spares_locked(conn, target)?;
            own(conn, |conn| self.registry.analyze_after_bulk(conn, created))?;
            return Ok(created);
        }
        // One filler at a time (a session lock: the work spans several transactions), so two
        // concurrent calls do not both top up from the same count.
        own_batch(
            conn,
            &format!("SELECT pg_catalog.pg_advisory_lock({SPARES_LOCK_KEY}, 0)"),
        )?;
        let result = self.fill_spares_locked(conn, target);
        let unlocked = own_batch(
            conn,
            &format!("SELECT pg_catalog.pg_advisory_unlock({SPARES_LOCK_KEY}, 0)"),
        );
        let created = crate::trace::finish_with(result, |n| Some(*n))?;
        unlocked?;
        own(conn, |conn| self.registry.analyze_after_bulk(conn, created))?;
        Ok(created)
    }

    /// [`fill_spares`](Self::fill_spares) under the warm pool's lock (in pooler mode: with no
    /// lock, counting the spares again after each one it creates).
    fn fill_spares_locked(&self, conn: &mut PgConnection, target: usize) -> Result<usize> {
        let expected = self.tenant_versions();
        let mut spares = self.spares(conn)?.len();
        let stale = own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT s.schema_name AS name FROM {SPARES_TABLE} s \
             WHERE (SELECT pg_catalog.count(*) FROM {CENTRAL_RECORD} m \
             WHERE m.schema_name = s.schema_name AND m.version = ANY ($1)) < $2"
            ))
            .bind::<Array<Text>, _>(expected)
            .bind::<BigInt, _>(expected.len() as i64)
            .load::<NameRow>(conn)
        })?;
        // Each upgrade locks the spare's row: a claim skips a spare being upgraded, and an
        // upgrade skips a spare claimed (or drained) meanwhile.
        let params = MigrateParams {
            spare: true,
            ..MigrateParams::default()
        };
        for s in stale {
            let spare = TenantId::new(&s.name)?;
            match self.migrate_schema(conn, &spare, None, &params) {
                Ok(_) => {}
                // Claimed (renamed to a tenant), being claimed, or dropped since the query: not
                // a spare any more.
                Err(Error::SchemaMissing(_)) => spares = spares.saturating_sub(1),
                Err(e) => {
                    if self.is_spare(conn, &spare)? {
                        return Err(e);
                    }
                    spares = spares.saturating_sub(1);
                }
            }
        }
        let mut created = 0;
        while spares + created < target {
            let name = TenantId::new(spare_name())?;
            self.provision(conn, &name, Provision::Spare)?;
            tracing::debug!(spare = %name, "spare created");
            created += 1;
            if self.pooler().is_transaction() {
                spares = self.spares(conn)?.len().saturating_sub(created);
            }
        }
        Ok(created)
    }

    /// The spare schemas of the warm pool, oldest first.
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails (also when the library's tables are not installed:
    /// see [`is_installed`](Self::is_installed)).
    pub fn spares(&self, conn: &mut PgConnection) -> Result<Vec<TenantId>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT schema_name AS name FROM {SPARES_TABLE} ORDER BY created_at, 1"
            ))
            .load::<NameRow>(conn)?
            .into_iter()
            .map(|r| TenantId::new(r.name))
            .collect()
        })
    }

    /// Whether `spare` is still listed in the warm pool and has its schema.
    fn is_spare(&self, conn: &mut PgConnection, spare: &TenantId) -> Result<bool> {
        #[derive(QueryableByName)]
        struct Flag {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            flag: bool,
        }
        own(conn, |conn| {
            let row: Flag = diesel::sql_query(format!(
                "SELECT EXISTS (SELECT 1 FROM {SPARES_TABLE} WHERE schema_name = $1) \
                 AND pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL AS flag"
            ))
            .bind::<Text, _>(spare.as_str())
            .get_result(conn)?;
            Ok(row.flag)
        })
    }

    /// Drops every spare schema of the warm pool (e.g. before changing the tenant set in a way
    /// that cannot be migrated); returns how many were dropped.
    ///
    /// # Errors
    /// [`Error::Query`] when a statement fails.
    pub fn drain_spares(&self, conn: &mut PgConnection) -> Result<usize> {
        let _span = self.enter(conn, tracing::info_span!("spares.drain"), Op::Fleet)?;
        let mut n = 0;
        for spare in self.spares(conn)? {
            let dropped = in_raw_transaction(conn, |conn| {
                conn.batch_execute(BEGIN)?;
                let rows = diesel::sql_query(format!(
                    "DELETE FROM {SPARES_TABLE} WHERE schema_name IN \
                     (SELECT schema_name FROM {SPARES_TABLE} WHERE schema_name = $1 \
                     FOR UPDATE SKIP LOCKED)"
                ))
                .bind::<Text, _>(spare.as_str())
                .execute(conn)?;
                if rows > 0 {
                    conn.batch_execute(&format!(
                        "DELETE FROM {CENTRAL_RECORD} WHERE schema_name = {}; \
                         DROP SCHEMA IF EXISTS {} CASCADE",
                        quote_literal(spare.as_str()),
                        quote_ident(spare.as_str())
                    ))?;
                }
                conn.batch_execute("COMMIT")?;
                Ok(rows)
            })?;
            n += dropped;
        }
        tracing::info!(dropped = n, "done");
        Ok(n)
    }
}

/// A fresh spare name: `_spare_` and a hex time stamp with a process-wide counter.
fn spare_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{SPARE_PREFIX}{nanos:x}_{:x}_{n:x}", std::process::id())
}
