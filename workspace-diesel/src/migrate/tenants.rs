//! The tenant life cycle: create (provisioning, or claiming a warm spare), drop, rename, list,
//! and what the registry says about a name.

use diesel::connection::SimpleConnection;
use diesel::migration::CREATE_MIGRATIONS_TABLE;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{Bool, Text};

use crate::connect::open;
use crate::connection::no_outer_transaction;
use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::failure::{classify_create_error, db_message, unretryable};
use crate::migrate::migrator::Migrator;
use crate::migrate::set::Compiled;
use crate::migrate::tx::{self, Claim, Failed, Opening, Plan};
use crate::options::MigrateParams;
use crate::registry::queries::ANALYZE_AFTER_ROWS;
use crate::sql::{
    array_literal, in_schema, own, quote_ident, quote_literal, tenant_lock, CENTRAL_RECORD,
    LIBRARY_TABLES, LOCK_KEY, SHARED_SCHEMA, SPARES_TABLE,
};
use crate::tenant::TenantId;

/// Whether [`Migrator::provision`] registers a tenant or a spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provision {
    /// A tenant: its registry row is inserted with the schema.
    Tenant,
    /// A tenant whose registry row is already there (committed as `provisioning`).
    Registered,
    Spare,
}

/// What [`Migrator::claim_first`]'s claim raises when no current spare is free.
const NO_SPARE: &str = "workspace-diesel: no spare";

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

impl Migrator {
    /// Creates a tenant: its registry row, its schema and all tenant migrations, in one
    /// transaction. A failure leaves no row, no schema and no table behind.
    ///
    /// One round trip: `BEGIN`, the tenant's lock, then either the claim of a warm spare or the
    /// full provisioning, `COMMIT`. When the warm pool holds a spare schema that is current (see
    /// [`fill_spares`](Self::fill_spares)), it is claimed: renamed to the tenant, registered and
    /// its central record moved, with no table DDL. With a status column, the claim is tried
    /// first on its own; when no spare is free, the registry row is committed as `provisioning`
    /// before the schema is built, and made `active` with it. Otherwise: the registry row, `CREATE SCHEMA`,
    /// Diesel's ledger, the migrations, the ledger and central record rows. When that fails in a
    /// way a migration can fail (not a tenant that exists, not a lost connection), it is retried
    /// once with each migration wrapped so the error names its version and SQLSTATE.
    ///
    /// # Errors
    /// - [`Error::InvalidTenantName`] when `tenant` is the registry's schema or a spare's name;
    /// - [`Error::TenantExists`] when the row or the schema already exists;
    /// - [`Error::TenantMigration`] when a tenant migration fails (its source is a
    ///   [`MigrationFailure`](crate::MigrationFailure) with the version and SQLSTATE).
    pub fn create_tenant(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        let span = crate::trace::op_span!("tenant.create", tenant = %tenant);
        let _span = self.enter(conn, span, Op::NewTenant(tenant))?;
        let role = match &self.tenant_roles {
            Some(roles) => format!("{}; ", roles.create_sql(tenant)?),
            None => String::new(),
        };
        // With a status column, a current spare is claimed first, in one transaction (it is
        // complete: nothing half built is seen). Otherwise the row is committed first as
        // `provisioning`, so the tenant is seen (and not served) while its schema is built; the
        // provisioning transaction makes it `active`, and a failed creation deletes the row.
        let ends = match self.registry.insert_provisioning_sql(tenant) {
            Some(insert) => {
                match self.claim_first(conn, tenant, &role) {
                    Ok(false) => {}
                    claimed => return crate::trace::finish(claimed.map(|_| ())),
                }
                match self.mark_provisioning(conn, tenant, &insert) {
                    Ok(ends) => Some(ends),
                    Err(e) => return crate::trace::finish(Err(e)),
                }
            }
            None => None,
        };
        let pre_registered = ends.is_some();
        let in_tx_only = self.set.migrations.iter().all(|m| m.in_tx);
        let close = match &ends {
            Some((activate, _)) if in_tx_only => format!("{activate}; {role}"),
            _ => role,
        };
        // A current spare (one that no `fill_spares` is upgrading: its row and its lock are both
        // free) is claimed; otherwise the tenant is provisioned from scratch.
        let sql =
            |tag: &str, otherwise: &str| self.claim_sql(tenant, tag, otherwise, !pre_registered);
        let claimed = |conn: &mut PgConnection| -> Result<bool> {
            Ok(if pre_registered {
                self.registry.presence(conn, tenant)?.schema
            } else {
                self.registry.contains(conn, tenant)?
            })
        };
        let claim = Claim {
            sql: &sql,
            claimed: &claimed,
        };
        let as_ = if pre_registered {
            Provision::Registered
        } else {
            Provision::Tenant
        };
        let mut created = self.provision_as(conn, tenant, as_, Some(claim), close);
        if let Some((activate, delete)) = &ends {
            created = match created {
                Ok(()) if !in_tx_only => own(conn, |conn| Ok(conn.batch_execute(activate)?)),
                Ok(()) => Ok(()),
                Err(e) => {
                    // The schema is not there (the transaction rolled back): the row goes too.
                    let lock = tenant_lock(tenant.as_str());
                    let _ = own(conn, |conn| {
                        conn.batch_execute(&format!("{lock}; {delete}"))
                    });
                    Err(e)
                }
            };
        }
        crate::trace::finish(created)
    }

    /// Claims a current warm spare for `tenant` in one transaction: the lock, the claim (its
    /// registry row, `active`; the rename; its central record), `close`, `COMMIT`. `false`, with
    /// nothing left behind, when no spare is free or the name is taken: the provisioning path
    /// then decides (a tenant that exists is refused, a killed creation's row taken over).
    fn claim_first(&self, conn: &mut PgConnection, tenant: &TenantId, close: &str) -> Result<bool> {
        let raise = format!("RAISE EXCEPTION '{NO_SPARE}';");
        let sql = |_: &str, _: &str| self.claim_sql(tenant, "$wd_take$", &raise, true);
        let claimed = |conn: &mut PgConnection| Ok(self.registry.contains(conn, tenant)?);
        let mut plan = Plan::new(tenant, self.opening());
        plan.claim = Some(Claim {
            sql: &sql,
            claimed: &claimed,
        });
        plan.close = close.to_owned();
        let no_spare = |e: &diesel::result::Error| db_message(e) == NO_SPARE;
        self.with_dialect(conn, |conn, dialect| {
            match tx::send(conn, dialect, &plan, false) {
                Ok(()) => Ok(true),
                Err(Failed::Batch(e)) if no_spare(&e) || self.is_tenant_exists(tenant, &e) => {
                    Ok(false)
                }
                Err(Failed::Classified(Error::TenantExists(_))) => Ok(false),
                Err(Failed::Classified(Error::Query(e))) if no_spare(&e) => Ok(false),
                Err(failed) => Err(failed.classify(|e| classify_create_error(tenant, e))),
            }
        })
    }

    /// Commits `insert` (the tenant's registry row in state `provisioning`) and returns the
    /// statements that end the provisioning. A row that is still `provisioning` without a
    /// schema (a creation killed before its schema was built) is taken over.
    fn mark_provisioning(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        insert: &str,
    ) -> Result<(String, String)> {
        let ends = self
            .registry
            .provisioning_end_sql(tenant)
            .expect("a registry with a status column");
        // Under the tenant's lock, as every change of a tenant's row.
        let lock = tenant_lock(tenant.as_str());
        let inserted = own(conn, |conn| {
            conn.batch_execute(&format!("{lock}; {insert}"))
        });
        match inserted {
            Ok(()) => Ok(ends),
            Err(diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                let left_over = own(conn, |conn| {
                    let presence = self.registry.presence(conn, tenant)?;
                    let state = self.registry.lifecycle_state(conn, tenant)?;
                    Ok::<_, Error>(
                        !presence.schema
                            && state == Some(crate::registry::model::LifecycleState::Provisioning),
                    )
                })?;
                if left_over {
                    Ok(ends)
                } else {
                    Err(Error::TenantExists(tenant.clone()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A `DO` block that claims the oldest current warm spare for `tenant` (its registry row, the
    /// rename, its central record and spares rows) or, when there is none, runs `otherwise`. A
    /// spare that a `fill_spares` is upgrading (its row or its lock taken) is skipped. Runs under
    /// the library's own path.
    pub(crate) fn claim_sql(
        &self,
        tenant: &TenantId,
        tag: &str,
        otherwise: &str,
        register: bool,
    ) -> String {
        let t = quote_literal(tenant.as_str());
        let versions = &self.set.versions;
        format!(
            "DO {tag} DECLARE spare text; candidate record; BEGIN \
             FOR candidate IN SELECT sp.schema_name FROM {SPARES_TABLE} sp \
             WHERE pg_catalog.to_regnamespace(pg_catalog.quote_ident(sp.schema_name)) IS NOT NULL \
               AND (SELECT pg_catalog.count(*) FROM {CENTRAL_RECORD} m \
                    WHERE m.schema_name = sp.schema_name AND m.version = ANY ({versions}::pg_catalog.text[])) = {n} \
               AND (SELECT pg_catalog.count(*) FROM {CENTRAL_RECORD} m \
                    WHERE m.schema_name = sp.schema_name) = {n} \
             ORDER BY sp.created_at, sp.schema_name FOR UPDATE OF sp SKIP LOCKED LOOP \
               IF pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY}, pg_catalog.hashtext(candidate.schema_name)) THEN \
                 spare := candidate.schema_name; EXIT; \
               END IF; \
             END LOOP; \
             IF spare IS NULL THEN {otherwise} ELSE \
             {insert}\
             EXECUTE pg_catalog.format('ALTER SCHEMA %I RENAME TO %I', spare, {t}); \
             UPDATE {CENTRAL_RECORD} SET schema_name = {t} WHERE schema_name = spare; \
             DELETE FROM {SPARES_TABLE} WHERE schema_name = spare; \
             END IF; END {tag}",
            versions = quote_literal(&array_literal(versions)),
            n = versions.len(),
            insert = match self.registry.ensure_provisioning_sql(&t) {
                Some(ensure) if !register => format!("{ensure}; "),
                _ => format!("{}; ", self.registry.insert_active_sql(&t)),
            },
        )
    }

    /// Drops a tenant: its registry row, its central record rows and `DROP SCHEMA … CASCADE`, in
    /// one transaction under the tenant's lock. Its data is gone for good.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] when the tenant is not registered (nothing is dropped).
    pub fn drop_tenant(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        let span = crate::trace::op_span!("tenant.drop", tenant = %tenant);
        let _span = self.enter(conn, span, Op::Tenants(&[tenant]))?;
        let role = match &self.tenant_roles {
            Some(roles) => format!("; {}", roles.drop_sql(tenant)?),
            None => String::new(),
        };
        let dropped = own(conn, |conn| {
            conn.batch_execute(&tenant_lock(tenant.as_str()))?;
            let deleted = self.registry.delete(conn, tenant)?;
            if deleted == 0 {
                return Err(Error::TenantNotFound(tenant.clone()));
            }
            conn.batch_execute(&format!(
                "DELETE FROM {CENTRAL_RECORD} WHERE schema_name = {}; \
                 DROP SCHEMA IF EXISTS {} CASCADE{role}",
                quote_literal(tenant.as_str()),
                tenant.quoted()
            ))?;
            Ok(())
        });
        crate::trace::finish(dropped)
    }

    /// Renames a tenant: `ALTER SCHEMA … RENAME`, its registry row and its central record rows,
    /// in one transaction under both tenants' locks. Its ledger moves with the schema.
    ///
    /// # Errors
    /// - [`Error::TenantNotFound`] when `from` is not registered;
    /// - [`Error::TenantExists`] when `to` is registered or its schema exists;
    /// - [`Error::SchemaMissing`] when `from`'s schema is gone.
    pub fn rename_tenant(
        &self,
        conn: &mut PgConnection,
        from: &TenantId,
        to: &TenantId,
    ) -> Result<()> {
        let span = crate::trace::op_span!("tenant.rename", tenant = %from, to = %to);
        let _span = self.enter(conn, span, Op::Tenants(&[from, to]))?;
        let role = match &self.tenant_roles {
            Some(roles) => format!("; {}", roles.rename_sql(from, to)?),
            None => String::new(),
        };
        let renamed = own(conn, |conn| {
            let (a, b) = if from < to { (from, to) } else { (to, from) };
            conn.batch_execute(&format!(
                "{}; {}",
                tenant_lock(a.as_str()),
                tenant_lock(b.as_str())
            ))?;
            let e = self.registry.rename_check(conn, from, to)?;
            if !e.from_row {
                return Err(Error::TenantNotFound(from.clone()));
            }
            if e.to_row || e.to_schema {
                return Err(Error::TenantExists(to.clone()));
            }
            if !e.from_schema {
                return Err(Error::SchemaMissing(from.clone()));
            }
            conn.batch_execute(&format!(
                "ALTER SCHEMA {qf} RENAME TO {qt}; \
                 {rename}; \
                 UPDATE {CENTRAL_RECORD} SET schema_name = {lt} WHERE schema_name = {lf}{role}",
                qf = from.quoted(),
                qt = to.quoted(),
                rename = self.registry.rename_sql(from, to),
                lf = quote_literal(from.as_str()),
                lt = quote_literal(to.as_str()),
            ))?;
            Ok(())
        });
        crate::trace::finish(renamed)
    }

    /// Every registered tenant, sorted, from the registry (spares are not tenants and are not
    /// listed).
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails; [`Error::InvalidTenantName`] for a registry row
    /// written by hand with an invalid name.
    pub fn list_tenants(&self, conn: &mut PgConnection) -> Result<Vec<TenantId>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        own(conn, |conn| self.list_tenants_own(conn))
    }

    /// [`list_tenants`](Self::list_tenants), under the library's own path already.
    pub(crate) fn list_tenants_own(&self, conn: &mut PgConnection) -> Result<Vec<TenantId>> {
        self.registry.list(conn)
    }

    /// Whether the registry table exists (for the built-in registry: whether
    /// [`run_shared`](Self::run_shared) has run), so a tool can say "no tenants" on a fresh
    /// database instead of failing.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// if !migrator.is_registry_installed(conn)? {
    ///     migrator.run_shared(conn)?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn is_registry_installed(&self, conn: &mut PgConnection) -> Result<bool> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        Ok(own(conn, |conn| self.registry.exists(conn))?)
    }

    /// Whether the library's own tables ([`LIBRARY_TABLES`](crate::registry::LIBRARY_TABLES): the central
    /// record, the warm pool and the built-in registry) exist in `public`, that is whether
    /// [`run_shared`](Self::run_shared) has installed them.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let spares = if migrator.is_installed(conn)? { migrator.spares(conn)? } else { Vec::new() };
    /// # let _ = spares;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn is_installed(&self, conn: &mut PgConnection) -> Result<bool> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        let tables: Vec<String> = LIBRARY_TABLES
            .iter()
            .map(|t| format!("{SHARED_SCHEMA}.{}", quote_ident(t)))
            .collect();
        own(conn, |conn| {
            let row: Flag = diesel::sql_query(
                "SELECT pg_catalog.bool_and(pg_catalog.to_regclass(t) IS NOT NULL) AS flag \
                 FROM pg_catalog.unnest($1::pg_catalog.text[]) AS t",
            )
            .bind::<diesel::sql_types::Array<Text>, _>(&tables)
            .get_result(conn)?;
            Ok(row.flag)
        })
    }

    /// Whether `tenant` is in the registry; `false` when the registry table does not exist yet
    /// (see [`is_registry_installed`](Self::is_registry_installed)).
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let acme = TenantId::new("acme")?;
    /// if !migrator.is_registered(conn, &acme)? {
    ///     migrator.create_tenant(conn, &acme)?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when a query fails.
    pub fn is_registered(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<bool> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        if !self.is_registry_installed(conn)? {
            return Ok(false);
        }
        Ok(own(conn, |conn| self.registry.contains(conn, tenant))?)
    }

    /// After a bulk call that added `changed` registry (or spares) rows: analyzes the registry's
    /// tables on a connection of its own when they are enough
    /// ([`Registry::analyze_after_bulk`](crate::registry::Registry)).
    pub(crate) fn analyze_registry(&self, database_url: &str, changed: usize) -> Result<()> {
        if changed < ANALYZE_AFTER_ROWS {
            return Ok(());
        }
        let mut conn = open(database_url, self.pooler())?;
        own(&mut conn, |conn| {
            self.registry.analyze_after_bulk(conn, changed)
        })?;
        Ok(())
    }

    /// Creates `schema` with every tenant migration, in one transaction, and records it as a
    /// tenant (registry row) or as a spare (`public.workspace_spares`).
    pub(crate) fn provision(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        as_: Provision,
    ) -> Result<()> {
        no_outer_transaction(conn)?;
        self.provision_as(conn, schema, as_, None, String::new())
    }

    /// Provisions `schema` in one tenant transaction ([`Plan`]): `BEGIN`, the lock, the
    /// dialect's provisioning settings, the claim when given (which, when it claims a spare,
    /// leaves only `close`), the registry (or spares) row, `CREATE SCHEMA`, Diesel's ledger, the
    /// ledger and central record rows and the transactional migrations, `close`, `COMMIT`. A
    /// batch that fails in a way a migration can fail (not a tenant that exists, not a lost
    /// connection) is sent once more with each migration wrapped so the error names its version
    /// and SQLSTATE. The migrations marked `run_in_transaction = false` run afterwards on their
    /// own path.
    fn provision_as(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        as_: Provision,
        claim: Option<Claim<'_>>,
        close: String,
    ) -> Result<()> {
        let in_tx: Vec<&Compiled> = self.set.migrations.iter().take_while(|m| m.in_tx).collect();
        let opening = Opening {
            provisioning: true,
            ..self.opening()
        };
        let mut plan = Plan::new(schema, opening).apply(&in_tx, false);
        plan.claim = claim;
        plan.create = self.create_sql(schema, as_);
        plan.close = close;
        self.with_dialect(conn, |conn, dialect| {
            for wrapped in [false, true] {
                plan.wrapped = wrapped;
                match tx::send(conn, dialect, &plan, false) {
                    Ok(()) => break,
                    Err(Failed::Batch(e))
                        if !wrapped && !unretryable(&e) && !self.is_tenant_exists(schema, &e) => {}
                    Err(failed) => {
                        return Err(failed.classify(|e| classify_create_error(schema, e)))
                    }
                }
            }
            Ok(())
        })?;
        if in_tx.len() < self.set.migrations.len() {
            self.migrate_schema(conn, schema, None, &MigrateParams::default())?;
        }
        Ok(())
    }

    /// Whether a provisioning batch failed because `schema` is already taken: a unique violation
    /// on the registry or the spares table, or `CREATE SCHEMA` of a schema that exists. Not a
    /// migration's error, so the wrapped attempt would fail the same way.
    pub(crate) fn is_tenant_exists(&self, schema: &TenantId, e: &diesel::result::Error) -> bool {
        let diesel::result::Error::DatabaseError(kind, info) = e else {
            return false;
        };
        if matches!(kind, DatabaseErrorKind::UniqueViolation) {
            if let Some(table) = info.table_name() {
                return self.registry.is_table(self.registry.schema(), table)
                    || table == LIBRARY_TABLES[2];
            }
        }
        info.message() == format!("schema \"{}\" already exists", schema.as_str())
    }

    /// The rows that provision `schema`: the registry (or spares) row, `CREATE SCHEMA` and
    /// Diesel's ledger (with the tenant alone on the path).
    pub(crate) fn create_sql(&self, schema: &TenantId, as_: Provision) -> String {
        let lit = quote_literal(schema.as_str());
        let row = match as_ {
            Provision::Tenant => format!("{}; ", self.registry.insert_tenant_sql(schema)),
            Provision::Registered => match self.registry.ensure_provisioning_sql(&lit) {
                Some(ensure) => format!("{ensure}; "),
                None => String::new(),
            },
            Provision::Spare => {
                format!("INSERT INTO {SPARES_TABLE} (schema_name) VALUES ({lit}); ")
            }
        };
        format!(
            "{row}CREATE SCHEMA {}; {}",
            schema.quoted(),
            in_schema(&schema.quoted(), CREATE_MIGRATIONS_TABLE)
        )
    }
}
