//! `print-schema`: Rust declarations of the shared and tenant tables, read from the database.
//!
//! Shared tables become stock `diesel::table!` blocks qualified with the shared schema
//! (`public.plans`), so they resolve whatever the `search_path`; tenant tables, read from one
//! tenant's schema, become `diesel_workspace::tenant_table!` blocks; foreign keys become
//! `diesel::joinable!`, and every table goes into one `allow_tables_to_appear_in_same_query!`.
//! Everything runs in a transaction that is rolled back: a scratch schema built when no tenant is
//! registered leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;

use anyhow::{bail, Context as _, Result};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Integer, Text};
use diesel_migrations::MigrationHarness;
use diesel_workspace::{Registry, TenantId};

use super::schema_filter::{warn_views, TableFilter};
use super::{tenant_id, Ctx};
use crate::cli::PrintSchemaArgs;

/// The scratch schema built from the tenant migrations when no tenant is registered.
const SCRATCH_SCHEMA: &str = "__workspace_diesel_print_schema";

/// Diesel's migration ledger, never printed.
const LEDGER: &str = "__diesel_schema_migrations";

/// The library's registry migration, whose tables `diesel_workspace` declares itself.
const REGISTRY_UP_SQL: &str =
    include_str!("../../../migrations_shared/00000000000000_workspace_registry/up.sql");

/// The tables the registry migration creates (`CREATE TABLE <name>` at the start of a line).
fn registry_tables() -> Vec<&'static str> {
    REGISTRY_UP_SQL
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("CREATE TABLE "))
        .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '(').next())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Runs `print-schema`.
pub(crate) fn print_schema(ctx: &Ctx, args: &PrintSchemaArgs) -> Result<()> {
    let tenant = args.tenant.as_deref().map(tenant_id).transpose()?;
    let config = ctx.config();
    let filter = TableFilter::new(
        &args.only_tables,
        &args.except_tables,
        config.only_tables(),
        config.except_tables(),
    )?;
    let with_registry = args.with_registry || config.with_registry();
    let output = args.output.clone().or_else(|| config.print_schema_file());
    let mut conn = ctx.connect()?;
    AnsiTransactionManager::begin_transaction(&mut conn).context("could not open a transaction")?;
    let result = read_and_render(ctx, &mut conn, tenant.as_ref(), with_registry, &filter);
    // Always roll back: the scratch schema (if any) goes away with the transaction.
    let rolled_back = AnsiTransactionManager::rollback_transaction(&mut conn);
    let text = result?;
    rolled_back.context("could not roll back the transaction")?;
    match &output {
        Some(path) => fs::write(path, text)
            .with_context(|| format!("could not write `{}`", path.display()))?,
        None => {
            use std::io::Write as _;
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn read_and_render(
    ctx: &Ctx,
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
    with_registry: bool,
    filter: &TableFilter,
) -> Result<String> {
    let registry = Registry::default();
    let shared_schema = registry.schema().to_owned();
    let tenant_schema = match tenant {
        Some(tenant) => {
            let migrator = ctx.migrator_or_default();
            super::ensure_registered(conn, &migrator, tenant)?;
            if !schema_exists(conn, tenant.as_str())? {
                bail!("the schema of tenant `{tenant}` does not exist");
            }
            tenant.as_str().to_owned()
        }
        None => match first_tenant(conn, &registry)? {
            Some(first) => first,
            None => {
                build_scratch(ctx, conn)?;
                SCRATCH_SCHEMA.to_owned()
            }
        },
    };

    let mut exclude: Vec<&str> = vec![LEDGER];
    if !with_registry {
        exclude.extend(registry_tables());
    }
    let shared = filtered(
        read_tables(conn, &shared_schema, &exclude)?,
        &shared_schema,
        filter,
    );
    let tenant_tables = filtered(
        read_tables(conn, &tenant_schema, &[LEDGER])?,
        &tenant_schema,
        filter,
    );
    warn_views(conn, &shared_schema)?;
    warn_views(conn, &tenant_schema)?;
    for t in &tenant_tables {
        if shared.iter().any(|s| s.name == t.name) {
            bail!(
                "table `{}` exists both in the shared schema `{shared_schema}` and in the tenant \
                 schema `{tenant_schema}`; one module cannot declare both",
                t.name
            );
        }
    }
    let foreign_keys = read_foreign_keys(conn, &[&shared_schema, &tenant_schema])?;
    Ok(render(&Schema {
        shared_schema: &shared_schema,
        tenant_schema: &tenant_schema,
        shared,
        tenant: tenant_tables,
        foreign_keys,
    }))
}

/// The tables `filter` keeps; a `warning:` naming each one it drops.
fn filtered(tables: Vec<Table>, schema: &str, filter: &TableFilter) -> Vec<Table> {
    tables
        .into_iter()
        .filter(|t| {
            let keep = filter.keeps(&t.name);
            if !keep {
                eprintln!(
                    "warning: skipping table `{schema}.{}`: {}",
                    t.name,
                    filter.reason()
                );
            }
            keep
        })
        .collect()
}

/// Inside the caller's transaction (rolled back later): the pending shared migrations, then a
/// scratch schema with every tenant migration, the scratch schema alone on the `search_path` (as
/// when a tenant is provisioned).
fn build_scratch(ctx: &Ctx, conn: &mut PgConnection) -> Result<()> {
    let migrator = ctx.migrator()?;
    migrator
        .run_shared(conn)
        .context("could not apply the shared migrations to a scratch copy")?;
    conn.batch_execute(&format!(
        "CREATE SCHEMA \"{SCRATCH_SCHEMA}\"; SET LOCAL search_path TO \"{SCRATCH_SCHEMA}\""
    ))
    .context("could not create a scratch schema")?;
    let tenant = diesel_migrations::FileBasedMigrations::from_path(ctx.tenant_dir()?)?;
    conn.run_pending_migrations(tenant)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("could not build a scratch schema from the tenant migrations")?;
    Ok(())
}

impl Ctx {
    /// The migrator when the migrations can be read, else one for the default registry (used only
    /// to look tenants up).
    fn migrator_or_default(&self) -> diesel_workspace::Migrator {
        self.migrator().unwrap_or_else(|_| {
            diesel_workspace::Migrator::builder(diesel_migrations::EmbeddedMigrations::new(&[]))
                .build()
        })
    }
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

fn schema_exists(conn: &mut PgConnection, schema: &str) -> Result<bool> {
    let row: Flag = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS flag",
    )
    .bind::<Text, _>(schema)
    .get_result(conn)
    .context("could not read the catalog")?;
    Ok(row.flag)
}

/// The first registered tenant (by identifier) whose schema exists.
fn first_tenant(conn: &mut PgConnection, registry: &Registry) -> Result<Option<String>> {
    let exists: Flag = diesel::sql_query("SELECT pg_catalog.to_regclass($1) IS NOT NULL AS flag")
        .bind::<Text, _>(registry.qualified_table())
        .get_result(conn)
        .context("could not look for the registry table")?;
    if !exists.flag {
        return Ok(None);
    }
    let rows: Vec<Name> = diesel::sql_query(format!(
        "SELECT r.{col}::pg_catalog.text AS name FROM {table} r \
         JOIN pg_catalog.pg_namespace n ON n.nspname = r.{col} ORDER BY 1 LIMIT 1",
        col = registry.quoted_identifier_column(),
        table = registry.qualified_table()
    ))
    .load(conn)
    .context("could not read the registry")?;
    Ok(rows.into_iter().next().map(|r| r.name))
}

/// A table as read from the catalog.
struct Table {
    name: String,
    comment: String,
    primary_key: Vec<String>,
    columns: Vec<Column>,
}

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Text)]
    type_name: String,
    #[diesel(sql_type = Text)]
    type_schema: String,
    /// `pg_type.typtype` of the (element) type: `b` base, `e` enum, `c` composite, `r` range...
    #[diesel(sql_type = Text)]
    type_kind: String,
    #[diesel(sql_type = Bool)]
    is_array: bool,
    #[diesel(sql_type = Integer)]
    typmod: i32,
    #[diesel(sql_type = Text)]
    comment: String,
}

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    comment: String,
    #[diesel(sql_type = Array<Text>)]
    primary_key: Vec<String>,
}

/// The ordinary and partitioned tables of `schema` (partitions excluded), by name.
fn read_tables(conn: &mut PgConnection, schema: &str, exclude: &[&str]) -> Result<Vec<Table>> {
    let rows: Vec<TableRow> = diesel::sql_query(
        "SELECT c.relname::pg_catalog.text AS name, \
                COALESCE(pg_catalog.obj_description(c.oid, 'pg_class'), '') AS comment, \
                COALESCE((SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.ord) \
                          FROM pg_catalog.pg_index i \
                          CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                          JOIN pg_catalog.pg_attribute a \
                            ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS primary_key \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND c.relname::pg_catalog.text <> ALL ($2) \
         ORDER BY c.relname",
    )
    .bind::<Text, _>(schema)
    .bind::<Array<Text>, _>(exclude)
    .load(conn)
    .with_context(|| format!("could not read the tables of schema `{schema}`"))?;

    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        if row.primary_key.is_empty() {
            eprintln!(
                "warning: skipping table `{schema}.{}`: it has no primary key (Diesel needs one)",
                row.name
            );
            continue;
        }
        let columns = read_columns(conn, schema, &row.name)?;
        tables.push(Table {
            name: row.name,
            comment: row.comment,
            primary_key: row.primary_key,
            columns,
        });
    }
    Ok(tables)
}

fn read_columns(conn: &mut PgConnection, schema: &str, table: &str) -> Result<Vec<Column>> {
    // Domains are read as their base type; arrays as their element type plus `is_array`.
    diesel::sql_query(
        "SELECT a.attname::pg_catalog.text AS name, \
                a.attnotnull AS not_null, \
                et.typname::pg_catalog.text AS type_name, \
                etn.nspname::pg_catalog.text AS type_schema, \
                et.typtype::pg_catalog.text AS type_kind, \
                (t.typcategory = 'A' AND t.typelem <> 0 AND t.typlen = -1) AS is_array, \
                CASE WHEN t0.typtype = 'd' THEN t0.typtypmod ELSE a.atttypmod END AS typmod, \
                COALESCE(pg_catalog.col_description(a.attrelid, a.attnum), '') AS comment \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_type t0 ON t0.oid = a.atttypid \
         JOIN pg_catalog.pg_type t \
           ON t.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END \
         JOIN pg_catalog.pg_type et \
           ON et.oid = CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 AND t.typlen = -1 \
                            THEN t.typelem ELSE t.oid END \
         JOIN pg_catalog.pg_namespace etn ON etn.oid = et.typnamespace \
         WHERE a.attrelid = (pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2))::pg_catalog.regclass \
           AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind::<Text, _>(schema)
    .bind::<Text, _>(table)
    .load(conn)
    .with_context(|| format!("could not read the columns of `{schema}.{table}`"))
}

/// A single-column foreign key.
#[derive(QueryableByName)]
struct ForeignKey {
    #[diesel(sql_type = Text)]
    child_schema: String,
    #[diesel(sql_type = Text)]
    child_table: String,
    #[diesel(sql_type = Text)]
    child_column: String,
    #[diesel(sql_type = Text)]
    parent_schema: String,
    #[diesel(sql_type = Text)]
    parent_table: String,
    #[diesel(sql_type = Text)]
    parent_column: String,
}

fn read_foreign_keys(conn: &mut PgConnection, schemas: &[&str]) -> Result<Vec<ForeignKey>> {
    diesel::sql_query(
        "SELECT cn.nspname::pg_catalog.text AS child_schema, \
                cl.relname::pg_catalog.text AS child_table, \
                ca.attname::pg_catalog.text AS child_column, \
                pn.nspname::pg_catalog.text AS parent_schema, \
                pl.relname::pg_catalog.text AS parent_table, \
                pa.attname::pg_catalog.text AS parent_column \
         FROM pg_catalog.pg_constraint con \
         JOIN pg_catalog.pg_class cl ON cl.oid = con.conrelid \
         JOIN pg_catalog.pg_namespace cn ON cn.oid = cl.relnamespace \
         JOIN pg_catalog.pg_class pl ON pl.oid = con.confrelid \
         JOIN pg_catalog.pg_namespace pn ON pn.oid = pl.relnamespace \
         JOIN pg_catalog.pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attnum = con.conkey[1] \
         JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = con.confkey[1] \
         WHERE con.contype = 'f' AND pg_catalog.cardinality(con.conkey) = 1 \
           AND cn.nspname::pg_catalog.text = ANY ($1) \
         ORDER BY cl.relname, pl.relname, ca.attname",
    )
    .bind::<Array<Text>, _>(schemas)
    .load(conn)
    .context("could not read the foreign keys")
}

/// Everything `render` needs.
struct Schema<'a> {
    shared_schema: &'a str,
    tenant_schema: &'a str,
    shared: Vec<Table>,
    tenant: Vec<Table>,
    foreign_keys: Vec<ForeignKey>,
}

/// A custom SQL type (enum, composite, extension type) declared in the `sql_types` module.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct CustomType {
    rust_name: String,
    name: String,
    schema: Option<String>,
}

/// Writes the Rust file.
fn render(schema: &Schema<'_>) -> String {
    let mut custom: BTreeMap<String, CustomType> = BTreeMap::new();
    let mut blocks = Vec::new();
    for table in &schema.shared {
        blocks.push(render_table(
            "diesel::table!",
            Some(schema.shared_schema),
            schema.shared_schema,
            schema.tenant_schema,
            table,
            &mut custom,
        ));
    }
    for table in &schema.tenant {
        blocks.push(render_table(
            "diesel_workspace::tenant_table!",
            None,
            schema.tenant_schema,
            schema.tenant_schema,
            table,
            &mut custom,
        ));
    }

    let mut out = String::from("// @generated automatically by workspace-diesel print-schema.\n\n");
    if !custom.is_empty() {
        out.push_str("pub mod sql_types {\n");
        for (i, ty) in custom.values().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(
                "    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]\n",
            );
            match &ty.schema {
                Some(s) => writeln!(
                    out,
                    "    #[diesel(postgres_type(name = \"{}\", schema = \"{s}\"))]",
                    ty.name
                ),
                None => writeln!(out, "    #[diesel(postgres_type(name = \"{}\"))]", ty.name),
            }
            .expect("writing to a String");
            writeln!(out, "    pub struct {};", ty.rust_name).expect("writing to a String");
        }
        out.push_str("}\n\n");
    }
    out.push_str(&blocks.join("\n"));

    // Joins: one `joinable!` per (child, parent) pair whose single foreign key references the
    // parent's single-column primary key, both tables printed.
    let printed: BTreeMap<(&str, &str), &Table> = schema
        .shared
        .iter()
        .map(|t| ((schema.shared_schema, t.name.as_str()), t))
        .chain(
            schema
                .tenant
                .iter()
                .map(|t| ((schema.tenant_schema, t.name.as_str()), t)),
        )
        .collect();
    let mut pairs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for fk in &schema.foreign_keys {
        let (Some(_), Some(parent)) = (
            printed.get(&(fk.child_schema.as_str(), fk.child_table.as_str())),
            printed.get(&(fk.parent_schema.as_str(), fk.parent_table.as_str())),
        ) else {
            continue;
        };
        if parent.primary_key != [fk.parent_column.as_str()] || fk.child_table == fk.parent_table {
            continue;
        }
        pairs
            .entry((
                rust_ident(&fk.child_table).0,
                rust_ident(&fk.parent_table).0,
            ))
            .or_default()
            .push(rust_ident(&fk.child_column).0);
    }
    let joins: Vec<String> = pairs
        .into_iter()
        .filter_map(|((child, parent), columns)| match columns.as_slice() {
            [column] => Some(format!(
                "diesel::joinable!({child} -> {parent} ({column}));\n"
            )),
            _ => {
                eprintln!(
                    "warning: no `joinable!` for `{child}` -> `{parent}`: several foreign keys \
                     link them; write the join by hand"
                );
                None
            }
        })
        .collect();
    if !joins.is_empty() {
        out.push('\n');
        out.push_str(&joins.concat());
    }

    let names: BTreeSet<String> = printed.values().map(|t| rust_ident(&t.name).0).collect();
    if names.len() > 1 {
        out.push_str("\ndiesel::allow_tables_to_appear_in_same_query!(\n");
        for name in &names {
            writeln!(out, "    {name},").expect("writing to a String");
        }
        out.push_str(");\n");
    }
    out
}

/// One `table!`/`tenant_table!` block.
fn render_table(
    macro_path: &str,
    qualifier: Option<&str>,
    schema: &str,
    tenant_schema: &str,
    table: &Table,
    custom: &mut BTreeMap<String, CustomType>,
) -> String {
    let mut uses = BTreeSet::new();
    let mut columns = String::new();
    for column in &table.columns {
        let ty = sql_type(schema, tenant_schema, &table.name, column, custom);
        if let Some(custom_name) = &ty.custom {
            uses.insert(custom_name.clone());
        }
        if !column.comment.is_empty() {
            doc_comment(&mut columns, "        ", &column.comment);
        }
        let (ident, renamed) = rust_ident(&column.name);
        if renamed {
            writeln!(
                columns,
                "        #[sql_name = \"{}\"]",
                escape(&column.name)
            )
            .expect("writing to a String");
        }
        if let Some(len) = ty.max_length {
            writeln!(columns, "        #[max_length = {len}]").expect("writing to a String");
        }
        writeln!(columns, "        {ident} -> {},", ty.text).expect("writing to a String");
    }

    let mut out = format!("{macro_path} {{\n");
    if !uses.is_empty() {
        out.push_str("    use diesel::sql_types::*;\n");
        for u in &uses {
            writeln!(out, "    use super::sql_types::{u};").expect("writing to a String");
        }
        out.push('\n');
    }
    if !table.comment.is_empty() {
        doc_comment(&mut out, "    ", &table.comment);
    }
    let (ident, renamed) = rust_ident(&table.name);
    if renamed {
        writeln!(out, "    #[sql_name = \"{}\"]", escape(&table.name))
            .expect("writing to a String");
    }
    let key: Vec<String> = table.primary_key.iter().map(|k| rust_ident(k).0).collect();
    let qualified = match qualifier {
        Some(q) => format!("{}.{ident}", rust_ident(q).0),
        None => ident,
    };
    writeln!(out, "    {qualified} ({}) {{", key.join(", ")).expect("writing to a String");
    out.push_str(&columns);
    out.push_str("    }\n}\n");
    out
}

fn doc_comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            writeln!(out, "{indent}///").expect("writing to a String");
        } else {
            writeln!(out, "{indent}/// {line}").expect("writing to a String");
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A column's Diesel SQL type.
struct SqlType {
    text: String,
    max_length: Option<i32>,
    custom: Option<String>,
}

/// Maps a PostgreSQL type to a Diesel `sql_types` name, as `diesel print-schema` does.
fn sql_type(
    schema: &str,
    tenant_schema: &str,
    table: &str,
    column: &Column,
    custom: &mut BTreeMap<String, CustomType>,
) -> SqlType {
    let builtin = column.type_schema == "pg_catalog";
    let mut custom_name = None;
    let base = match builtin.then(|| builtin_type(&column.type_name)).flatten() {
        Some(name) => name.to_owned(),
        None if builtin => {
            eprintln!(
                "warning: column `{schema}.{table}.{}` has type `{}`, which has no Diesel type; \
                 printed as `{}`",
                column.name,
                column.type_name,
                camel_case(&column.type_name)
            );
            camel_case(&column.type_name)
        }
        None => {
            let rust_name = camel_case(&column.type_name);
            // A type in a tenant schema exists once per tenant: declare it by name only.
            let in_tenant = column.type_schema == tenant_schema;
            if in_tenant && column.type_kind == "e" {
                eprintln!(
                    "warning: column `{schema}.{table}.{}` uses the enum type `{}` of a tenant \
                     schema; Diesel caches type OIDs per connection by name, so keep enum types \
                     in the shared schema",
                    column.name, column.type_name
                );
            }
            let type_schema = (!in_tenant).then(|| column.type_schema.clone());
            custom
                .entry(rust_name.clone())
                .or_insert_with(|| CustomType {
                    rust_name: rust_name.clone(),
                    name: column.type_name.clone(),
                    schema: type_schema,
                });
            custom_name = Some(rust_name.clone());
            rust_name
        }
    };
    let max_length = (!column.is_array
        && matches!(column.type_name.as_str(), "varchar" | "bpchar")
        && column.typmod > 4)
        .then(|| column.typmod - 4);
    let mut text = if column.is_array {
        format!("Array<Nullable<{base}>>")
    } else {
        base
    };
    if !column.not_null {
        text = format!("Nullable<{text}>");
    }
    SqlType {
        text,
        max_length,
        custom: custom_name,
    }
}

fn builtin_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "int2" => "Int2",
        "int4" => "Int4",
        "int8" => "Int8",
        "float4" => "Float4",
        "float8" => "Float8",
        "numeric" => "Numeric",
        "money" => "Money",
        "oid" => "Oid",
        "bool" => "Bool",
        "text" => "Text",
        "varchar" => "Varchar",
        "bpchar" => "Bpchar",
        "char" => "CChar",
        "name" => "Text",
        "citext" => "Citext",
        "bytea" => "Bytea",
        "date" => "Date",
        "time" => "Time",
        "timestamp" => "Timestamp",
        "timestamptz" => "Timestamptz",
        "interval" => "Interval",
        "uuid" => "Uuid",
        "json" => "Json",
        "jsonb" => "Jsonb",
        "inet" => "Inet",
        "cidr" => "Cidr",
        "macaddr" => "MacAddr",
        "macaddr8" => "MacAddr8",
        "int4range" => "Int4range",
        "int8range" => "Int8range",
        "numrange" => "Numrange",
        "tsrange" => "Tsrange",
        "tstzrange" => "Tstzrange",
        "daterange" => "Daterange",
        "int4multirange" => "Int4multirange",
        "int8multirange" => "Int8multirange",
        "nummultirange" => "Nummultirange",
        "tsmultirange" => "Tsmultirange",
        "tstzmultirange" => "Tstzmultirange",
        "datemultirange" => "Datemultirange",
        "record" => "Record",
        _ => return None,
    })
}

/// `workspace_status` → `WorkspaceStatus`.
fn camel_case(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            match cs.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + cs.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// A Rust identifier for an SQL name, and whether it differs (then `#[sql_name]` is needed):
/// key words get a `_` suffix, as `diesel print-schema` does, other characters become `_`.
fn rust_ident(name: &str) -> (String, bool) {
    let mut ident: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    if RUST_KEYWORDS.contains(&ident.as_str()) {
        ident.push('_');
    }
    let renamed = ident != name;
    (ident, renamed)
}

const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield", "_",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_tables_are_found() {
        let tables = registry_tables();
        assert!(tables.contains(&"workspaces"), "{tables:?}");
        assert!(tables.contains(&"workspace_migrations"), "{tables:?}");
    }

    #[test]
    fn identifiers() {
        assert_eq!(rust_ident("notes"), ("notes".into(), false));
        assert_eq!(rust_ident("type"), ("type_".into(), true));
        assert_eq!(rust_ident("1st"), ("_1st".into(), true));
        assert_eq!(rust_ident("a-b"), ("a_b".into(), true));
        assert_eq!(camel_case("workspace_status"), "WorkspaceStatus");
    }
}
