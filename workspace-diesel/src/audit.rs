//! A check of the database's set-up for what would weaken tenant isolation.

use std::fmt;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use crate::error::Result;
use crate::migrate::Migrator;
use crate::sql::{quote_literal, SHARED_SCHEMA};

/// Something in the database's set-up that weakens tenant isolation, found by
/// [`Migrator::audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hazard {
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
    /// On Citus, a registered tenant's schema is not a distributed schema, or some of its tables
    /// are plain local tables of the coordinator (created by hand, or inside a PL/pgSQL block).
    NotDistributed {
        /// The tenant's identifier, as stored in the registry.
        tenant: String,
        /// The local tables (empty: the schema itself is not distributed).
        local_tables: Vec<String>,
    },
    /// The connection goes through a transaction pooler (its backend changed between two of the
    /// audit's queries) that the migrator was not told about: set
    /// [`Pooler::Transaction`](crate::Pooler::Transaction).
    UndeclaredPooler {
        /// What showed it.
        evidence: crate::PoolerEvidence,
    },
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
            Hazard::MissingSchema { tenant } => {
                write!(f, "the schema of registered tenant `{tenant}` does not exist")
            }
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
            Hazard::UndeclaredPooler { evidence } => write!(
                f,
                "connected through a transaction pooler that is not declared ({evidence}): \
                 set `pooler(Pooler::Transaction)` (CLI: `--pooler transaction`)"
            ),
        }
    }
}

#[derive(QueryableByName)]
struct RoleRow {
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Bool)]
    superuser: bool,
    #[diesel(sql_type = Bool)]
    open_to_all: bool,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

impl Migrator {
    /// Checks the database for what would weaken tenant isolation: a superuser connection, a
    /// shared schema where every role may create objects (CVE-2018-1058), shared tables named
    /// like tenant tables, registered tenants without a schema, an undeclared transaction pooler
    /// (when the connection's backend changes between the audit's queries), and on Citus, tenants
    /// that are not fully distributed. Four queries (five on Citus) whatever the number of
    /// tenants, after the engine's detection on the migrator's first use; run it at start-up and
    /// log what it returns.
    ///
    /// ```no_run
    /// # fn run(migrator: &diesel_workspace::Migrator, conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// for hazard in migrator.audit(conn)? {
    ///     eprintln!("warning: {hazard}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`](crate::Error::Query) when the catalog or the registry cannot be read.
    pub fn audit(&self, conn: &mut PgConnection) -> Result<Vec<Hazard>> {
        self.ready(conn);
        let mut hazards = Vec::new();
        let role: RoleRow = diesel::sql_query(
            "SELECT r.rolname::pg_catalog.text AS role, r.rolsuper AS superuser, \
             pg_catalog.has_schema_privilege('public', $1, 'CREATE') AS open_to_all, \
             pg_catalog.pg_backend_pid() AS pid \
             FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER",
        )
        .bind::<Text, _>(SHARED_SCHEMA)
        .get_result(conn)?;
        if role.superuser {
            hazards.push(Hazard::Superuser { role: role.role });
        }
        if role.open_to_all {
            hazards.push(Hazard::SharedSchemaOpenToAll {
                schema: SHARED_SCHEMA.to_owned(),
            });
        }
        let registry = self.registry().qualified_table();
        let column = self.registry().quoted_identifier_column();
        let shadowing: Vec<NameRow> = diesel::sql_query(format!(
            "SELECT DISTINCT s.relname::pg_catalog.text AS name \
             FROM pg_catalog.pg_class s \
             JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_catalog.pg_class t ON t.relname = s.relname AND t.relkind IN ('r', 'p', 'v', 'm', 'f') \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace \
             JOIN {registry} reg ON reg.{column} = tn.nspname::pg_catalog.text \
             WHERE sn.nspname = {shared} AND s.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND s.relname <> '__diesel_schema_migrations' \
             ORDER BY 1",
            shared = quote_literal(SHARED_SCHEMA),
        ))
        .load(conn)?;
        hazards.extend(
            shadowing
                .into_iter()
                .map(|r| Hazard::SharedTableNamedLikeTenantTable { table: r.name }),
        );
        let missing: Vec<NameRow> = diesel::sql_query(format!(
            "SELECT reg.{column}::pg_catalog.text AS name FROM {registry} reg \
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n \
                               WHERE n.nspname::pg_catalog.text = reg.{column}) \
             ORDER BY 1"
        ))
        .load(conn)?;
        hazards.extend(
            missing
                .into_iter()
                .map(|r| Hazard::MissingSchema { tenant: r.name }),
        );
        if self.dialect(conn)?.distributes_schemas() {
            hazards.extend(
                crate::dialect::undistributed_tenants(conn, &registry, &column)?
                    .into_iter()
                    .map(|(tenant, local_tables)| Hazard::NotDistributed {
                        tenant,
                        local_tables,
                    }),
            );
        }
        let now: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "pg_catalog.pg_backend_pid()",
        ))
        .get_result(conn)?;
        if now != role.pid && !self.pooler().is_transaction() {
            hazards.push(Hazard::UndeclaredPooler {
                evidence: crate::PoolerEvidence::BackendChanged { was: role.pid, now },
            });
        }
        Ok(hazards)
    }
}
