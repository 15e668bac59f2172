//! Reading the catalog: the tables of a schema with their columns, primary keys and comments,
//! and the single-column foreign keys between the printed schemas.

use anyhow::{Context as _, Result};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Integer, Text};

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// Whether the schema `schema` exists.
pub(super) fn schema_exists(conn: &mut PgConnection, schema: &str) -> Result<bool> {
    let row: Flag = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS flag",
    )
    .bind::<Text, _>(schema)
    .get_result(conn)
    .context("could not read the catalog")?;
    Ok(row.flag)
}

/// A table as read from the catalog.
pub(super) struct Table {
    pub(super) name: String,
    pub(super) comment: String,
    pub(super) primary_key: Vec<String>,
    pub(super) columns: Vec<Column>,
}

#[derive(QueryableByName)]
pub(super) struct Column {
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    #[diesel(sql_type = Bool)]
    pub(super) not_null: bool,
    #[diesel(sql_type = Text)]
    pub(super) type_name: String,
    #[diesel(sql_type = Text)]
    pub(super) type_schema: String,
    /// `pg_type.typtype` of the (element) type: `b` base, `e` enum, `c` composite, `r` range...
    #[diesel(sql_type = Text)]
    pub(super) type_kind: String,
    #[diesel(sql_type = Bool)]
    pub(super) is_array: bool,
    #[diesel(sql_type = Integer)]
    pub(super) typmod: i32,
    #[diesel(sql_type = Text)]
    pub(super) comment: String,
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
pub(super) fn read_tables(
    conn: &mut PgConnection,
    schema: &str,
    exclude: &[&str],
) -> Result<Vec<Table>> {
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
pub(super) struct ForeignKey {
    #[diesel(sql_type = Text)]
    pub(super) child_schema: String,
    #[diesel(sql_type = Text)]
    pub(super) child_table: String,
    #[diesel(sql_type = Text)]
    pub(super) child_column: String,
    #[diesel(sql_type = Text)]
    pub(super) parent_schema: String,
    #[diesel(sql_type = Text)]
    pub(super) parent_table: String,
    #[diesel(sql_type = Text)]
    pub(super) parent_column: String,
}

pub(super) fn read_foreign_keys(
    conn: &mut PgConnection,
    schemas: &[&str],
) -> Result<Vec<ForeignKey>> {
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
