//! What in a database's set-up weakens tenant isolation: the findings of the audit, as plain
//! data.

use std::fmt;

use crate::pooler::PoolerEvidence;

/// Something in the database's set-up that weakens tenant isolation, found by
/// [`Migrator::audit`](crate::Migrator::audit).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hazard {
    /// The connection goes through a transaction pooler (its backend changed between two of the
    /// audit's queries) that the migrator was not told about: set
    /// [`Pooler::Transaction`](crate::pooler::Pooler::Transaction).
    UndeclaredPooler {
        /// What showed it.
        evidence: PoolerEvidence,
    },
    /// The connected role is a superuser: it bypasses every privilege and row-level policy, so a
    /// bug in the application is not contained by the database.
    Superuser {
        /// The role.
        role: String,
    },
    /// Every role may create objects in the shared schema (the default of databases created
    /// before PostgreSQL 15). A role that can create a function or operator in a schema on the
    /// `search_path` can hijack unqualified calls of other roles (CVE-2018-1058). Fix with
    /// `REVOKE CREATE ON SCHEMA public FROM PUBLIC`.
    SharedSchemaOpenToAll {
        /// The shared schema.
        schema: String,
    },
    /// A table (or view) in the shared schema has the name of a tenant table. Raw SQL, triggers
    /// and functions that name the table without a schema reach the shared one whenever the
    /// tenant's schema is not first on the `search_path`.
    SharedTableNamedLikeTenantTable {
        /// The table's name.
        table: String,
    },
    /// A registered tenant has no schema (dropped by hand, or a failed restore).
    MissingSchema {
        /// The tenant's identifier, as stored in the registry.
        tenant: String,
    },
    /// A role other than the schema's owner (or a member of the owner role) may create objects
    /// in the shared schema or in a tenant schema: a function or operator it plants there can
    /// hijack SQL that resolves names through a `search_path` naming that schema (CVE-2018-1058).
    /// `role` is `PUBLIC` for a grant to every role on a tenant schema (the shared schema's is
    /// [`SharedSchemaOpenToAll`](Hazard::SharedSchemaOpenToAll)). Superusers are left out: they
    /// may do anything anyway.
    SchemaCreateGranted {
        /// The schema.
        schema: String,
        /// The role that may create objects in it.
        role: String,
    },
    /// A function or operator outside the system schemas, not part of an extension, has the
    /// name of a `pg_catalog` one. An overload for argument types that `pg_catalog` lacks (such
    /// as `=(character varying, text)`) is an exact match, so it wins over the built-in one
    /// whenever its schema is on the `search_path`, even after `pg_catalog`.
    CatalogNameOverloaded {
        /// The schema holding it.
        schema: String,
        /// `function` or `operator`.
        kind: &'static str,
        /// Its qualified signature, such as `public.=(character varying,text)`.
        signature: String,
    },
    /// A `SECURITY DEFINER` function in the shared schema or a tenant schema has no fixed
    /// `search_path` (`SET search_path = …` on the function): the names in its body resolve
    /// through the caller's path, so a caller that sets its own path, or leaves a temporary
    /// table, decides what it reads and writes with its owner's rights, another tenant's rows
    /// included, whatever role the caller runs as. Fix with
    /// `ALTER FUNCTION … SET search_path = pg_catalog, pg_temp` (and qualify the names).
    SecurityDefinerWithoutSearchPath {
        /// The schema holding it.
        schema: String,
        /// Its qualified signature, such as `public.peek()`.
        signature: String,
    },
    /// The catalog is past [`CATALOG_SCALE_RELATIONS`] relations (`pg_class` rows). PostgreSQL
    /// keeps a catalog cache entry for every relation a backend has touched and never evicts
    /// it, so a backend that serves every tenant holds about `catalog_bytes_per_backend`
    /// (estimated at [`CATALOG_BYTES_PER_RELATION`] per relation); catalog scans (`ADD COLUMN …
    /// DEFAULT`, `pg_dump`, autovacuum of `pg_attribute`) grow with it too. Bound the pool's
    /// backends with
    /// [`backend_memory_limit`](crate::pool::TenantPoolBuilder::backend_memory_limit), and
    /// consider a second database (or Citus) for more tenants.
    CatalogScale {
        /// Schemas in the database (`pg_namespace` rows).
        schemas: i64,
        /// Relations (`pg_class` rows: tables, indexes, sequences, TOAST tables).
        relations: i64,
        /// Columns (`pg_attribute` rows, system columns included).
        attributes: i64,
        /// The estimated catalog cache of a backend that has touched every relation.
        catalog_bytes_per_backend: u64,
    },
    /// On Citus, a registered tenant's schema is not a distributed schema, or some of its tables
    /// are plain local tables of the coordinator (created by hand, or inside a PL/pgSQL block).
    NotDistributed {
        /// The tenant's identifier, as stored in the registry.
        tenant: String,
        /// The local tables (empty: the schema itself is not distributed).
        local_tables: Vec<String>,
    },
}

/// The `pg_class` rows past which the audit reports [`Hazard::CatalogScale`]: 100,000, about
/// 4,500 tenants of a schema of three tables and five indexes (22 relations per tenant with
/// their sequences, TOAST tables and the ledger, measured).
pub const CATALOG_SCALE_RELATIONS: i64 = 100_000;

/// The catalog cache a backend keeps per relation (`pg_class` row) of the tenants it has
/// touched, as the estimate of [`Hazard::CatalogScale`] counts it: 2,600 bytes. Measured on
/// PostgreSQL 15 with the example schema (three tables, five indexes: 22 relations per tenant
/// with sequences, TOAST tables and the ledger): a fresh backend that read every table of 2,000
/// tenants grew by 57 KB per tenant, 2,594 bytes per relation. A backend that reads fewer of each
/// tenant's tables holds less: reading one of the three (the scale benchmark's requests), 23 KB
/// per tenant, 1,050 bytes per relation. The library's test `the_catalog_estimate_matches_a_backend`
/// checks the constant against a backend.
pub const CATALOG_BYTES_PER_RELATION: u64 = 2_600;

/// How large a database's catalog is, and what that costs each backend: what
/// [`Migrator::catalog_size`](crate::Migrator::catalog_size) reads (three counts, one query) and
/// the CLI's `status` prints.
///
/// ```
/// use diesel_workspace::CatalogSize;
///
/// let size = CatalogSize::new(10_004, 220_435, 1_053_211);
/// assert_eq!(size.backend_bytes(), 220_435 * diesel_workspace::CATALOG_BYTES_PER_RELATION);
/// assert!(size.hazard().is_some());
/// assert!(CatalogSize::new(14, 400, 3_000).hazard().is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatalogSize {
    /// Schemas (`pg_namespace` rows).
    pub schemas: i64,
    /// Relations (`pg_class` rows: tables, indexes, sequences, TOAST tables).
    pub relations: i64,
    /// Columns (`pg_attribute` rows, system columns included).
    pub attributes: i64,
}

impl CatalogSize {
    /// A catalog of these sizes.
    pub fn new(schemas: i64, relations: i64, attributes: i64) -> Self {
        Self {
            schemas,
            relations,
            attributes,
        }
    }

    /// The estimated catalog cache of one backend that has touched every relation:
    /// `relations ×` [`CATALOG_BYTES_PER_RELATION`]. A backend that serves a share of the
    /// tenants (an [`AffinePool`](crate::affinity::AffinePool) shard) holds that share of it.
    pub fn backend_bytes(&self) -> u64 {
        u64::try_from(self.relations)
            .unwrap_or(0)
            .saturating_mul(CATALOG_BYTES_PER_RELATION)
    }

    /// [`Hazard::CatalogScale`] past [`CATALOG_SCALE_RELATIONS`], `None` under it.
    pub fn hazard(&self) -> Option<Hazard> {
        Hazard::catalog_scale(self.schemas, self.relations, self.attributes)
    }
}

impl fmt::Display for CatalogSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} schemas, {} relations, {} columns; a backend that touches every tenant keeps \
             about {} MiB of catalog cache",
            self.schemas,
            self.relations,
            self.attributes,
            self.backend_bytes().div_ceil(1 << 20)
        )
    }
}

impl Hazard {
    /// [`Hazard::CatalogScale`] for a catalog of these sizes, or `None` under
    /// [`CATALOG_SCALE_RELATIONS`].
    ///
    /// ```
    /// use diesel_workspace::Hazard;
    ///
    /// assert!(Hazard::catalog_scale(10, 5_000, 40_000).is_none());
    /// let h = Hazard::catalog_scale(20_000, 150_000, 1_200_000).unwrap();
    /// assert!(h.to_string().contains("150000 relations"));
    /// ```
    pub fn catalog_scale(schemas: i64, relations: i64, attributes: i64) -> Option<Hazard> {
        (relations > CATALOG_SCALE_RELATIONS).then(|| Hazard::CatalogScale {
            schemas,
            relations,
            attributes,
            catalog_bytes_per_backend: u64::try_from(relations)
                .unwrap_or(0)
                .saturating_mul(CATALOG_BYTES_PER_RELATION),
        })
    }

    /// Whether this hazard lets another role change what SQL resolving names through a
    /// `search_path` does: create rights on the shared or a tenant schema held by a role other
    /// than its owner, a planted overload of a `pg_catalog` name, or a `SECURITY DEFINER`
    /// function whose `search_path` its caller decides.
    ///
    /// ```
    /// use diesel_workspace::Hazard;
    ///
    /// let h = Hazard::SharedSchemaOpenToAll { schema: "public".into() };
    /// assert!(h.enables_hijack());
    /// assert!(!Hazard::Superuser { role: "postgres".into() }.enables_hijack());
    /// ```
    pub fn enables_hijack(&self) -> bool {
        matches!(
            self,
            Hazard::SharedSchemaOpenToAll { .. }
                | Hazard::SchemaCreateGranted { .. }
                | Hazard::CatalogNameOverloaded { .. }
                | Hazard::SecurityDefinerWithoutSearchPath { .. }
        )
    }
}

impl fmt::Display for Hazard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hazard::Superuser { role } => write!(
                f,
                "the application connects as `{role}`, a superuser: privileges do not contain its mistakes"
            ),
            Hazard::SharedSchemaOpenToAll { schema } => write!(
                f,
                "every role may create objects in schema `{schema}` (CVE-2018-1058): \
                 run `REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC`"
            ),
            Hazard::SharedTableNamedLikeTenantTable { table } => write!(
                f,
                "shared table `{table}` has the name of a tenant table: unqualified names in raw SQL, \
                 triggers and functions may reach it"
            ),
            Hazard::UndeclaredPooler { evidence } => write!(
                f,
                "connected through a transaction pooler that is not declared ({evidence}): \
                 set `pooler(Pooler::Transaction)` (CLI: `--pooler transaction`)"
            ),
            Hazard::MissingSchema { tenant } => {
                write!(f, "the schema of registered tenant `{tenant}` does not exist")
            }
            Hazard::SchemaCreateGranted { schema, role } => write!(
                f,
                "role `{role}` may create objects in schema `{schema}`, which it does not own \
                 (CVE-2018-1058): run `REVOKE CREATE ON SCHEMA {schema} FROM {role}`"
            ),
            Hazard::CatalogNameOverloaded {
                schema,
                kind,
                signature,
            } => write!(
                f,
                "{kind} `{signature}` overloads a pg_catalog name: SQL resolving names through a \
                 search_path that includes `{schema}` may call it instead (CVE-2018-1058)"
            ),
            Hazard::SecurityDefinerWithoutSearchPath { signature, .. } => write!(
                f,
                "function `{signature}` is SECURITY DEFINER without a fixed search_path: its \
                 caller decides what it reads and writes with its owner's rights; run \
                 `ALTER FUNCTION {signature} SET search_path = pg_catalog, pg_temp`"
            ),
            Hazard::CatalogScale {
                schemas,
                relations,
                attributes,
                catalog_bytes_per_backend,
            } => write!(
                f,
                "the catalog holds {schemas} schemas, {relations} relations and {attributes} \
                 columns: a backend that touches every tenant keeps about {} MiB of catalog \
                 cache; set the pool's backend_memory_limit",
                catalog_bytes_per_backend >> 20
            ),
            Hazard::NotDistributed { tenant, local_tables } if local_tables.is_empty() => write!(
                f,
                "the schema of tenant `{tenant}` is not a Citus distributed schema: run \
                 `SELECT citus_schema_distribute('{tenant}')`"
            ),
            Hazard::NotDistributed { tenant, local_tables } => write!(
                f,
                "tenant `{tenant}` has tables that are local to the Citus coordinator ({}): run \
                 `SELECT citus_schema_distribute('{tenant}')`",
                local_tables.join(", ")
            ),
        }
    }
}
