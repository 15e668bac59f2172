//! The catalog queries behind [`Migrator::audit`](crate::Migrator::audit) and the hijack
//! checks of the migrator and the pool.

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use crate::error::Result;
use crate::hazard::{CatalogSize, Hazard};
use crate::sql::{quote_literal, SHARED_SCHEMA};

#[derive(QueryableByName)]
struct RoleRow {
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Bool)]
    superuser: bool,
}

#[derive(QueryableByName)]
struct GrantRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    role: String,
}

#[derive(QueryableByName)]
struct OverloadRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    signature: String,
}

/// The schemas on the library's search paths: the shared schema, and every schema holding a
/// Diesel ledger (the tenants and the spares), whether or not a registry names them.
const SEARCHED_SCHEMAS: &str = "SELECT n.oid, n.nspname, n.nspowner FROM pg_catalog.pg_namespace n \
     WHERE n.nspname OPERATOR(pg_catalog.=) $1::pg_catalog.name \
        OR EXISTS (SELECT FROM pg_catalog.pg_class c \
                   WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid \
                     AND c.relname OPERATOR(pg_catalog.=) '__diesel_schema_migrations'::pg_catalog.name)";

/// Create rights on the searched schemas held by a role other than the owner or its members,
/// superusers left out: `PUBLIC` once when every role holds them, else each role.
const CREATE_GRANTS: &str = "WITH s AS ({SEARCHED}) \
     SELECT s.nspname::pg_catalog.text AS schema, 'PUBLIC'::pg_catalog.text AS role FROM s \
     WHERE pg_catalog.has_schema_privilege('public', s.oid, 'CREATE') \
     UNION ALL \
     SELECT s.nspname::pg_catalog.text, r.rolname::pg_catalog.text FROM s \
     JOIN pg_catalog.pg_roles r ON NOT r.rolsuper \
       AND r.oid OPERATOR(pg_catalog.<>) s.nspowner \
       AND NOT pg_catalog.pg_has_role(r.oid, s.nspowner, 'MEMBER') \
       AND pg_catalog.has_schema_privilege(r.oid, s.oid, 'CREATE') \
     WHERE NOT pg_catalog.has_schema_privilege('public', s.oid, 'CREATE') \
     ORDER BY 1, 2";

/// Functions and operators outside the system schemas, not members of an extension, named like
/// a `pg_catalog` one (`function`, `operator`); and `SECURITY DEFINER` functions without a fixed
/// `search_path` in the searched schemas (`definer`).
const OVERLOADS: &str = "SELECT n.nspname::pg_catalog.text AS schema, 'function'::pg_catalog.text AS kind, \
       pg_catalog.format('%I.%s(%s)', n.nspname, p.proname, \
                         pg_catalog.pg_get_function_identity_arguments(p.oid)) AS signature \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
     WHERE NOT pg_catalog.starts_with(n.nspname::pg_catalog.text, 'pg_') \
       AND n.nspname OPERATOR(pg_catalog.<>) 'information_schema'::pg_catalog.name \
       AND EXISTS (SELECT FROM pg_catalog.pg_proc c \
                   WHERE c.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace \
                     AND c.proname OPERATOR(pg_catalog.=) p.proname) \
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d \
                       WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
                         AND d.objid OPERATOR(pg_catalog.=) p.oid \
                         AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog.\"char\") \
     UNION ALL \
     SELECT n.nspname::pg_catalog.text, 'operator'::pg_catalog.text, \
       pg_catalog.format('%I.%s(%s,%s)', n.nspname, o.oprname, \
                         CASE WHEN o.oprleft OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN 'NONE' \
                              ELSE pg_catalog.format_type(o.oprleft, NULL) END, \
                         pg_catalog.format_type(o.oprright, NULL)) \
     FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace \
     WHERE NOT pg_catalog.starts_with(n.nspname::pg_catalog.text, 'pg_') \
       AND n.nspname OPERATOR(pg_catalog.<>) 'information_schema'::pg_catalog.name \
       AND EXISTS (SELECT FROM pg_catalog.pg_operator c \
                   WHERE c.oprnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace \
                     AND c.oprname OPERATOR(pg_catalog.=) o.oprname) \
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d \
                       WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_operator'::pg_catalog.regclass \
                         AND d.objid OPERATOR(pg_catalog.=) o.oid \
                         AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog.\"char\") \
     UNION ALL \
     SELECT s.nspname::pg_catalog.text, 'definer'::pg_catalog.text, \
       pg_catalog.format('%I.%I(%s)', s.nspname, p.proname, \
                         pg_catalog.pg_get_function_identity_arguments(p.oid)) \
     FROM pg_catalog.pg_proc p JOIN ({SEARCHED}) s ON s.oid OPERATOR(pg_catalog.=) p.pronamespace \
     WHERE p.prosecdef \
       AND NOT EXISTS (SELECT FROM pg_catalog.unnest(p.proconfig) c \
                       WHERE pg_catalog.starts_with(c, 'search_path=')) \
     ORDER BY 1, 3";

/// The hazards that let another role hijack SQL resolving names through a `search_path`
/// ([`Hazard::enables_hijack`]), registry-free: create rights on the shared schema and on every
/// schema holding a Diesel ledger, overloads of `pg_catalog` names, and `SECURITY DEFINER`
/// functions in those schemas whose `search_path` the caller decides. Two catalog queries.
pub(crate) fn hijack_hazards(conn: &mut PgConnection, shared: &str) -> Result<Vec<Hazard>> {
    let grants: Vec<GrantRow> =
        diesel::sql_query(CREATE_GRANTS.replace("{SEARCHED}", SEARCHED_SCHEMAS))
            .bind::<Text, _>(shared)
            .load(conn)?;
    let overloads: Vec<OverloadRow> =
        diesel::sql_query(OVERLOADS.replace("{SEARCHED}", SEARCHED_SCHEMAS))
            .bind::<Text, _>(shared)
            .load(conn)?;
    let mut hazards = Vec::with_capacity(grants.len() + overloads.len());
    for g in grants {
        hazards.push(if g.schema == shared && g.role == "PUBLIC" {
            Hazard::SharedSchemaOpenToAll { schema: g.schema }
        } else {
            Hazard::SchemaCreateGranted {
                schema: g.schema,
                role: g.role,
            }
        });
    }
    hazards.extend(overloads.into_iter().map(|o| match o.kind.as_str() {
        "definer" => Hazard::SecurityDefinerWithoutSearchPath {
            schema: o.schema,
            signature: o.signature,
        },
        kind => Hazard::CatalogNameOverloaded {
            schema: o.schema,
            kind: if kind == "operator" {
                "operator"
            } else {
                "function"
            },
            signature: o.signature,
        },
    }));
    Ok(hazards)
}

#[derive(QueryableByName)]
struct CatalogRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    schemas: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    relations: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    attributes: i64,
}

/// The catalog's size: `pg_namespace`, `pg_class` and `pg_attribute` rows, in one query.
pub(crate) fn catalog_size(conn: &mut PgConnection) -> QueryResult<CatalogSize> {
    let sizes: CatalogRow = diesel::sql_query(
        "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_namespace) AS schemas, \
                (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class) AS relations, \
                (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute) AS attributes",
    )
    .get_result(conn)?;
    Ok(CatalogSize::new(
        sizes.schemas,
        sizes.relations,
        sizes.attributes,
    ))
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Every hazard ([`Migrator::audit`](crate::Migrator::audit)), with the registered names in
/// `registry` (a table or derived table the registry spells) and their column `column`. Six catalog queries (seven when `distributes_schemas`: the Citus
/// check for tenants that are not fully distributed);
/// run under the library's own path.
pub(crate) fn audit(
    conn: &mut PgConnection,
    registry: &str,
    column: &str,
    distributes_schemas: bool,
) -> Result<Vec<Hazard>> {
    {
        {
            let mut hazards = Vec::new();
            let role: RoleRow = diesel::sql_query(
                "SELECT r.rolname::pg_catalog.text AS role, r.rolsuper AS superuser \
             FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER",
            )
            .get_result(conn)?;
            if role.superuser {
                hazards.push(Hazard::Superuser { role: role.role });
            }
            hazards.extend(hijack_hazards(conn, SHARED_SCHEMA)?);
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
            hazards.extend(catalog_size(conn)?.hazard());
            if distributes_schemas {
                hazards.extend(
                    undistributed_tenants(conn, registry, column)?
                        .into_iter()
                        .map(|(tenant, local_tables)| Hazard::NotDistributed {
                            tenant,
                            local_tables,
                        }),
                );
            }
            Ok(hazards)
        }
    }
}

/// On Citus, the registered tenants (`registry` and `column`, as [`audit`] takes them)
/// whose schema is not a distributed schema (with no tables listed) or holds local tables (listed):
/// one query.
pub(crate) fn undistributed_tenants(
    conn: &mut PgConnection,
    registry: &str,
    column: &str,
) -> Result<Vec<(String, Vec<String>)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        tenant: String,
        #[diesel(sql_type = diesel::sql_types::Array<Text>)]
        local: Vec<String>,
        #[diesel(sql_type = Bool)]
        distributed: bool,
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT reg.{column}::pg_catalog.text AS tenant, \
         COALESCE((SELECT pg_catalog.array_agg(c.relname::pg_catalog.text ORDER BY c.relname) \
           FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p') \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = c.oid)), \
           '{{}}'::pg_catalog.text[]) AS local, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_dist_schema d WHERE d.schemaid = n.oid) AS distributed \
         FROM {registry} reg \
         JOIN pg_catalog.pg_namespace n ON n.nspname::pg_catalog.text = reg.{column}::pg_catalog.text \
         ORDER BY 1"
    ))
    .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|r| !r.distributed || !r.local.is_empty())
        .map(|r| (r.tenant, if r.distributed { r.local } else { Vec::new() }))
        .collect())
}
