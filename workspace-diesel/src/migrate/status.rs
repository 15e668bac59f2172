//! Status and drift: what the central record says each tenant has applied, how each tenant's own
//! ledger disagrees with it, and where the shared migrations stand.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use crate::dialect::Dialect;
use crate::error::Result;
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::migrate::snapshot::read_snapshots;
use crate::migrate::tx::read_ledger;
use crate::registry::model::LifecycleState;
use crate::report::{TenantMigrations, TenantSnapshot};
use crate::selection::Selection;
use crate::sql::{own, quote_literal, CENTRAL_RECORD, LEDGER, SHARED_SCHEMA, SNAPSHOTS_TABLE};
use crate::tenant::TenantId;

/// Where the shared migrations stand (see [`Migrator::shared_status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedMigrations {
    /// The versions in the shared schema's ledger (`public.__diesel_schema_migrations`), sorted;
    /// empty before the first [`Migrator::run_shared`].
    pub applied: Vec<String>,
    /// The versions of the registry's migrations and the application's shared set that the
    /// ledger does not list, sorted.
    pub pending: Vec<String>,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Array<Text>)]
    versions: Vec<String>,
    #[diesel(sql_type = Bool)]
    has_ledger: bool,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// Every tenant's snapshots, oldest first, by tenant name (none before the snapshots' registry
/// migration has run).
fn tenant_snapshots(
    conn: &mut PgConnection,
    dialect: &Dialect,
) -> Result<HashMap<String, Vec<TenantSnapshot>>> {
    let recorded = diesel::sql_query(format!(
        "SELECT pg_catalog.to_regclass({}) IS NOT NULL AS flag",
        quote_literal(SNAPSHOTS_TABLE)
    ))
    .get_result::<Flag>(conn)?
    .flag;
    let mut by_tenant: HashMap<String, Vec<TenantSnapshot>> = HashMap::new();
    if recorded {
        for s in read_snapshots(conn, dialect, "true")? {
            by_tenant
                .entry(s.tenant.as_str().to_owned())
                .or_default()
                .push(TenantSnapshot {
                    name: s.name,
                    taken_at: s.taken_at,
                    expires_at: s.expires_at,
                    size_bytes: s.size_bytes,
                });
        }
    }
    Ok(by_tenant)
}

impl Migrator {
    /// Every registered tenant's applied and pending versions, from one query over the registry
    /// and the central record (no tenant schema is read; `drift` is `None`), with each tenant's
    /// snapshots and their sizes from the snapshots' record. Sorted by tenant.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// for s in migrator.status(conn)? {
    ///     println!("{}: {} applied, {} pending", s.tenant, s.applied.len(), s.pending.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`](crate::Error::Query) when the query fails;
    /// [`Error::InvalidTenantName`](crate::Error::InvalidTenantName) for a registry row written
    /// by hand with an invalid name.
    pub fn status(&self, conn: &mut PgConnection) -> Result<Vec<TenantMigrations>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        Ok(self
            .status_rows(conn)?
            .into_iter()
            .map(|(status, _)| status)
            .collect())
    }

    /// [`status`](Self::status) of the tenants `selection` takes (by name, and by state when it
    /// names states: a status view shows every state otherwise).
    ///
    /// # Errors
    /// As [`status`](Self::status); [`Error::TenantNotFound`](crate::Error::TenantNotFound) when
    /// the selection names a tenant that is not registered.
    pub fn status_selected(
        &self,
        conn: &mut PgConnection,
        selection: &Selection,
    ) -> Result<Vec<TenantMigrations>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        let states: HashMap<TenantId, LifecycleState> =
            own(conn, |conn| self.registry.lifecycle_states(conn))?
                .into_iter()
                .collect();
        selection.check_named(&states.keys().collect())?;
        Ok(self
            .status_rows(conn)?
            .into_iter()
            .map(|(status, _)| status)
            .filter(|s| {
                states
                    .get(&s.tenant)
                    .is_some_and(|state| selection.matches(&s.tenant, *state))
            })
            .collect())
    }

    fn status_rows(&self, conn: &mut PgConnection) -> Result<Vec<(TenantMigrations, bool)>> {
        let dialect = self.dialect(conn)?;
        own(conn, |conn| {
            let expected = self.tenant_versions();
            let rows = diesel::sql_query(format!(
            "SELECT r.{col}::pg_catalog.text AS name, \
             ARRAY(SELECT m.version::pg_catalog.text FROM {CENTRAL_RECORD} m \
             WHERE m.schema_name = r.{col} ORDER BY m.version::pg_catalog.text COLLATE \"C\") AS versions, \
             pg_catalog.to_regclass(pg_catalog.quote_ident(r.{col}) || \
             '.{LEDGER}') IS NOT NULL AS has_ledger \
             FROM {reg} r ORDER BY r.{col}::pg_catalog.text COLLATE \"C\"",
            col = "name",
            reg = self.registry.names_sql(),
        ))
        .load::<StatusRow>(conn)?;
            let mut snapshots = tenant_snapshots(conn, &dialect)?;
            rows.into_iter()
                .map(|r| {
                    let pending = expected
                        .iter()
                        .filter(|v| !r.versions.contains(v))
                        .cloned()
                        .collect();
                    Ok((
                        TenantMigrations {
                            tenant: TenantId::new(&r.name)?,
                            applied: r.versions,
                            pending,
                            drift: None,
                            snapshots: snapshots.remove(&r.name).unwrap_or_default(),
                        },
                        r.has_ledger,
                    ))
                })
                .collect()
        })
    }

    /// [`status`](Self::status) with `drift` filled in for every tenant: the ledgers are read in
    /// batches of 500 tenants, each batch one query (a `UNION ALL` over its tenants'
    /// ledgers beside their central-record rows, so both are read from one snapshot) in a
    /// transaction of its own.
    ///
    /// Reading a ledger locks it and its index until the transaction ends: one transaction over
    /// the whole fleet would hold two locks per tenant and exhaust the server's lock table (`out
    /// of shared memory` past about 6,000 tenants with the default `max_locks_per_transaction`).
    /// A batch holds at most 1,000 relation locks.
    ///
    /// # Errors
    /// As [`status`](Self::status).
    pub fn status_with_drift(&self, conn: &mut PgConnection) -> Result<Vec<TenantMigrations>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        let rows = self.status_rows(conn)?;
        let with_ledger: Vec<&TenantId> = rows
            .iter()
            .filter(|(_, has)| *has)
            .map(|(s, _)| &s.tenant)
            .collect();
        // Per tenant: (ledger, central record), as one batch's statement saw them.
        let mut seen: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
        for batch in with_ledger.chunks(LEDGER_BATCH) {
            for row in own(conn, |conn| read_batch(conn, batch))? {
                let entry = seen.entry(row.name).or_default();
                if row.central {
                    entry.1.push(row.version);
                } else {
                    entry.0.push(row.version);
                }
            }
        }
        rows.into_iter()
            .map(|(mut status, has_ledger)| {
                status.drift = if has_ledger {
                    let (ledger, central) = seen.remove(status.tenant.as_str()).unwrap_or_default();
                    compare(&ledger, &central)
                } else {
                    Some(own(conn, |conn| {
                        missing_ledger_drift(conn, &status.tenant)
                    })?)
                };
                Ok(status)
            })
            .collect()
    }

    /// Checks one tenant's own ledger against the central record: `None` when they agree,
    /// otherwise what differs (`ledger has 2026… missing from the central record`, `the schema is
    /// missing`, …).
    ///
    /// # Errors
    /// [`Error::Query`](crate::Error::Query) when a query fails.
    pub fn drift(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<Option<String>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        own(conn, |conn| {
            let central: Vec<String> = diesel::sql_query(format!(
                "SELECT version::pg_catalog.text AS name FROM {CENTRAL_RECORD} \
             WHERE schema_name = $1 ORDER BY version::pg_catalog.text COLLATE \"C\""
            ))
            .bind::<Text, _>(tenant.as_str())
            .load::<NameRow>(conn)?
            .into_iter()
            .map(|r| r.name)
            .collect();
            let has_ledger = diesel::sql_query(format!(
                "SELECT $1 AS name WHERE pg_catalog.to_regclass(pg_catalog.quote_ident($1) || \
             '.{LEDGER}') IS NOT NULL"
            ))
            .bind::<Text, _>(tenant.as_str())
            .load::<NameRow>(conn)?;
            if has_ledger.is_empty() {
                return missing_ledger_drift(conn, tenant).map(Some);
            }
            let ledger = read_ledger(conn, tenant)?;
            Ok(compare(&ledger, &central))
        })
    }

    /// Where the shared migrations stand: the versions in the shared schema's ledger, and the
    /// versions of the registry's and the application's shared migrations it does not list.
    /// Reads the ledger only (one catalog check and one query); nothing is run.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const SHARED: EmbeddedMigrations = embed_migrations!("../migrations_shared");
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).shared(SHARED).build()?;
    /// let shared = migrator.shared_status(conn)?;
    /// if !shared.pending.is_empty() {
    ///     println!("shared migrations pending: {}", shared.pending.join(", "));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`](crate::Error::Query) when a query fails.
    pub fn shared_status(&self, conn: &mut PgConnection) -> Result<SharedMigrations> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        own(conn, |conn| {
            let ledger = format!("{SHARED_SCHEMA}.{LEDGER}");
            let exists = !diesel::sql_query(
                "SELECT $1 AS name WHERE pg_catalog.to_regclass($1) IS NOT NULL",
            )
            .bind::<Text, _>(&ledger)
            .load::<NameRow>(conn)?
            .is_empty();
            let applied: BTreeSet<String> = if exists {
                diesel::sql_query(format!(
                    "SELECT version::pg_catalog.text AS name FROM {ledger}"
                ))
                .load::<NameRow>(conn)?
                .into_iter()
                .map(|r| r.name)
                .collect()
            } else {
                BTreeSet::new()
            };
            let expected: BTreeSet<&str> = self
                .registry_set
                .versions()
                .chain(self.shared.iter().flat_map(|s| s.versions()))
                .collect();
            let pending = expected
                .into_iter()
                .filter(|v| !applied.contains(*v))
                .map(str::to_owned)
                .collect();
            Ok(SharedMigrations {
                applied: applied.into_iter().collect(),
                pending,
            })
        })
    }
}

/// How many tenants' ledgers one statement of [`Migrator::status_with_drift`] reads, in a
/// transaction of its own (two relation locks per tenant until it ends).
pub(crate) const LEDGER_BATCH: usize = 500;

#[derive(QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    version: String,
    /// A central-record row (else a ledger row).
    #[diesel(sql_type = Bool)]
    central: bool,
}

/// The ledger rows of `batch`'s tenants and their central-record rows, in one statement.
fn read_batch(conn: &mut PgConnection, batch: &[&TenantId]) -> Result<Vec<LedgerRow>> {
    let mut sql = batch
        .iter()
        .map(|t| {
            format!(
                "SELECT {}::pg_catalog.text AS name, version::pg_catalog.text AS version, \
                 false AS central FROM {}.{LEDGER}",
                quote_literal(t.as_str()),
                t.quoted()
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    sql.push_str(&format!(
        " UNION ALL SELECT schema_name, version::pg_catalog.text, true FROM {CENTRAL_RECORD} \
         WHERE schema_name = ANY ($1)"
    ));
    let names: Vec<&str> = batch.iter().map(|t| t.as_str()).collect();
    Ok(diesel::sql_query(sql)
        .bind::<Array<Text>, _>(names)
        .load::<LedgerRow>(conn)?)
}

/// Describes how the ledger differs from the central record, if it does.
fn compare(ledger: &[String], central: &[String]) -> Option<String> {
    let ledger: BTreeSet<&String> = ledger.iter().collect();
    let central: BTreeSet<&String> = central.iter().collect();
    let only_ledger: Vec<&str> = ledger.difference(&central).map(|s| s.as_str()).collect();
    let only_central: Vec<&str> = central.difference(&ledger).map(|s| s.as_str()).collect();
    let mut parts = Vec::new();
    if !only_ledger.is_empty() {
        parts.push(format!(
            "the ledger has {} missing from the central record",
            only_ledger.join(", ")
        ));
    }
    if !only_central.is_empty() {
        parts.push(format!(
            "the central record has {} missing from the ledger",
            only_central.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The drift of a tenant without a ledger: its schema has none, or the schema is missing.
fn missing_ledger_drift(conn: &mut PgConnection, tenant: &TenantId) -> Result<String> {
    let schema_exists = !diesel::sql_query(
        "SELECT $1 AS name WHERE pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL",
    )
    .bind::<Text, _>(tenant.as_str())
    .load::<NameRow>(conn)?
    .is_empty();
    Ok(if schema_exists {
        "the schema has no ledger (__diesel_schema_migrations)".into()
    } else {
        "the schema is missing".into()
    })
}
