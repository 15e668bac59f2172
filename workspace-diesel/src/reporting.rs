//! Reading across tenants in the database: generated `UNION ALL` views over a tenant table in a
//! reporting schema, rebuilt when a tenant is created, dropped or renamed, and readable by a
//! role that can write nowhere ([`install`], [`add_view`], [`refresh`]).
//!
//! Each view `<reporting schema>.<table>` is `SELECT '<tenant>' AS tenant, <columns> FROM
//! "<tenant>".<table> UNION ALL …` over every registered tenant whose table has those columns
//! (a tenant not yet migrated that far is left out). A deferred constraint trigger on the
//! registry rebuilds the views when a registry row is inserted, updated or deleted, at the
//! commit of that transaction (once per transaction), when the tenant's schema is in its final
//! state: a create (or a claimed spare), a drop and a rename show in the views with no manual
//! refresh (a state change rebuilds them too). Each rebuild is one pass over the registry and the
//! catalog and replaces every view: its cost grows with the fleet (see docs/application.md), and
//! concurrent changes take turns on an advisory lock. The life-cycle calls must run as the role
//! that owns the views. The views belong to the role that ran the change (the migrator's), so they read the
//! tenant tables with its rights; the reader role gets `USAGE` on the reporting schema and
//! `SELECT` on the views only: no right on any tenant schema, and no write on the views (an
//! `INSTEAD OF` trigger refuses any write through a view with SQLSTATE 42501, whoever tries).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::error::{Error, Result};
use crate::registry::model::Registry;
use crate::sql::{quote_ident, quote_literal};

/// The table (in the registry's schema) that lists the reporting views.
pub const VIEWS_TABLE: &str = "workspace_reporting_views";

/// Installs the reporting machinery on the built-in registry: the `reporting` schema (created
/// when missing), `reader` (an existing role) granted `USAGE` on it, the list of views
/// ([`VIEWS_TABLE`]), the rebuild function and the registry's deferred trigger. Idempotent.
///
/// ```no_run
/// use diesel_workspace::reporting;
///
/// # fn run(conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
/// reporting::install(conn, "reporting", "analyst")?;
/// reporting::add_view(conn, "reporting", "notes", &["id", "title"])?;
/// // analyst: SELECT tenant, count(*) FROM reporting.notes GROUP BY tenant;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Query`] when a statement fails (the registry is not installed, `reader` does not
/// exist, the role may not create schemas or triggers).
pub fn install(conn: &mut PgConnection, schema: &str, reader: &str) -> Result<()> {
    install_on(conn, &Registry::default(), schema, reader)
}

/// [`install`] on `registry` (a custom registry table).
///
/// # Errors
/// As [`install`].
pub fn install_on(
    conn: &mut PgConnection,
    registry: &Registry,
    schema: &str,
    reader: &str,
) -> Result<()> {
    let sql = install_sql(registry, schema, reader);
    conn.transaction(|conn| conn.batch_execute(&sql))
        .map_err(Error::Query)
}

/// Adds (or changes the columns of) the view `<schema>.<table>` over the tenant table `table`,
/// with the column `tenant` followed by `columns`, and builds it now.
///
/// # Errors
/// [`Error::Query`] when a statement fails (not [`install`]ed in `schema`).
pub fn add_view(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    columns: &[&str],
) -> Result<()> {
    let columns = columns
        .iter()
        .map(|c| quote_literal(c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO public.{VIEWS_TABLE} (view_schema, table_name, columns) \
         VALUES ({s}, {t}, ARRAY[{columns}]::pg_catalog.text[]) \
         ON CONFLICT (view_schema, table_name) DO UPDATE SET columns = EXCLUDED.columns, types = NULL; \
         SELECT public.workspace_reporting_refresh()",
        s = quote_literal(schema),
        t = quote_literal(table),
    );
    conn.transaction(|conn| conn.batch_execute(&sql))
        .map_err(Error::Query)
}

/// Rebuilds every reporting view now: after a tenant migration that adds a viewed table or
/// column (the registry does not change then, so nothing else rebuilds them).
///
/// # Errors
/// [`Error::Query`] when the rebuild fails.
pub fn refresh(conn: &mut PgConnection) -> Result<()> {
    conn.batch_execute("SELECT public.workspace_reporting_refresh()")
        .map_err(Error::Query)
}

fn install_sql(registry: &Registry, schema: &str, reader: &str) -> String {
    // The registered names (one text column, `name`) and the trigger, as the registry spells them.
    let names = registry.names_sql();
    let trigger =
        registry.deferred_trigger_sql("workspaces_reporting", "public.workspace_reporting_changed");
    let schema_q = quote_ident(schema);
    let reader_q = quote_ident(reader);
    let reader_l = quote_literal(reader);
    format!(
        r#"SELECT pg_catalog.pg_advisory_xact_lock(1463025665, 3);
CREATE SCHEMA IF NOT EXISTS {schema_q};
REVOKE ALL ON SCHEMA {schema_q} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema_q} TO {reader_q};
CREATE TABLE IF NOT EXISTS public.{VIEWS_TABLE} (
    view_schema text NOT NULL,
    table_name text NOT NULL,
    columns text[] NOT NULL,
    types text[],
    PRIMARY KEY (view_schema, table_name)
);
CREATE TABLE IF NOT EXISTS public.workspace_reporting_readers (
    view_schema text PRIMARY KEY,
    reader text NOT NULL
);
INSERT INTO public.workspace_reporting_readers VALUES ({schema_l}, {reader_l})
    ON CONFLICT (view_schema) DO UPDATE SET reader = EXCLUDED.reader;
CREATE OR REPLACE FUNCTION public.workspace_reporting_read_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $wdr$
BEGIN
    RAISE EXCEPTION 'reporting view %.% is read-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$wdr$;
CREATE OR REPLACE FUNCTION public.workspace_reporting_refresh() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog AS $wdr$
DECLARE
    v record;
    t record;
    chunk text[];
    chunks text[];
    cols text;
    found_types text[];
    body text;
    reader text;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(1463025665, 3);
    FOR v IN SELECT * FROM public.{VIEWS_TABLE} ORDER BY view_schema, table_name LOOP
        cols := (SELECT pg_catalog.string_agg(pg_catalog.format('%I', c), ', ' ORDER BY o)
                 FROM pg_catalog.unnest(v.columns) WITH ORDINALITY AS u(c, o));
        chunk := '{{}}';
        chunks := '{{}}';
        found_types := NULL;
        FOR t IN
            SELECT w.name AS tenant, c.oid AS rel
            FROM {names} w
            JOIN pg_catalog.pg_namespace n ON n.nspname = w.name
            JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = v.table_name
                                      AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            WHERE (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attname = ANY (v.columns)
                     AND a.attnum > 0 AND NOT a.attisdropped) = pg_catalog.cardinality(v.columns)
            ORDER BY 1
        LOOP
            IF found_types IS NULL THEN
                found_types := (SELECT pg_catalog.array_agg(
                                    pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY u.o)
                                FROM pg_catalog.unnest(v.columns) WITH ORDINALITY AS u(c, o)
                                JOIN pg_catalog.pg_attribute a ON a.attrelid = t.rel AND a.attname = u.c);
            END IF;
            chunk := chunk || pg_catalog.format('SELECT %L::text AS tenant, %s FROM %I.%I',
                                                 t.tenant, cols, t.tenant, v.table_name);
            -- Chunks of 100 in parentheses keep the statement's nesting shallow at any size.
            IF pg_catalog.cardinality(chunk) = 100 THEN
                chunks := chunks || ('(' || pg_catalog.array_to_string(chunk, ' UNION ALL ') || ')');
                chunk := '{{}}';
            END IF;
        END LOOP;
        IF pg_catalog.cardinality(chunk) > 0 THEN
            chunks := chunks || ('(' || pg_catalog.array_to_string(chunk, ' UNION ALL ') || ')');
        END IF;
        IF pg_catalog.cardinality(chunks) > 0 THEN
            body := pg_catalog.array_to_string(chunks, ' UNION ALL ');
            UPDATE public.{VIEWS_TABLE} SET types = found_types
                WHERE view_schema = v.view_schema AND table_name = v.table_name;
        ELSIF v.types IS NOT NULL THEN
            -- No tenant has the table: an empty view of the same columns.
            body := 'SELECT NULL::text AS tenant, ' ||
                    (SELECT pg_catalog.string_agg(pg_catalog.format('NULL::%s AS %I', ty, c), ', ' ORDER BY o)
                     FROM pg_catalog.unnest(v.columns, v.types) WITH ORDINALITY AS u(c, ty, o)) ||
                    ' WHERE false';
        ELSE
            EXECUTE pg_catalog.format('DROP VIEW IF EXISTS %I.%I', v.view_schema, v.table_name);
            CONTINUE;
        END IF;
        -- Replaced in place (views built on it keep working); dropped and created again only
        -- when the columns' types changed, which `CREATE OR REPLACE VIEW` refuses.
        BEGIN
            EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW %I.%I AS %s', v.view_schema, v.table_name, body);
        EXCEPTION WHEN invalid_table_definition OR datatype_mismatch OR wrong_object_type THEN
            EXECUTE pg_catalog.format('DROP VIEW IF EXISTS %I.%I', v.view_schema, v.table_name);
            EXECUTE pg_catalog.format('CREATE VIEW %I.%I AS %s', v.view_schema, v.table_name, body);
        END;
        -- A UNION ALL view is not updatable, which PostgreSQL reports (55000) before checking
        -- rights: with this trigger a write is refused as one, 42501, for every role.
        EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER read_only INSTEAD OF INSERT OR UPDATE OR DELETE '
                                  'ON %I.%I FOR EACH ROW EXECUTE FUNCTION public.workspace_reporting_read_only()',
                                  v.view_schema, v.table_name);
        reader := (SELECT r.reader FROM public.workspace_reporting_readers r
                   WHERE r.view_schema = v.view_schema);
        IF reader IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON %I.%I TO %I', v.view_schema, v.table_name, reader);
        END IF;
    END LOOP;
END
$wdr$;
CREATE OR REPLACE FUNCTION public.workspace_reporting_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $wdr$
BEGIN
    -- Deferred: runs at commit, once per transaction however many rows changed.
    IF pg_catalog.current_setting('workspace_diesel.reporting_rebuilt', true)
         IS DISTINCT FROM pg_catalog.txid_current()::text THEN
        PERFORM pg_catalog.set_config('workspace_diesel.reporting_rebuilt',
                                      pg_catalog.txid_current()::text, true);
        PERFORM public.workspace_reporting_refresh();
    END IF;
    RETURN NULL;
END
$wdr$;
{trigger}
"#,
        schema_l = quote_literal(schema),
    )
}
