//! Trojans (CVE-2018-1058): operators, function shadows and look-alike tables planted in the
//! shared schema and in tenant schemas, each logging its calls, to prove that the library's own
//! SQL never reaches them.
//!
//! Every planted object returns what the built-in one would (so a hijacked query still gives the
//! right answer and only the log tells), and logs into schema `trojan_log`, which is on no
//! `search_path`: a sequence (not rolled back with the caller's transaction, so a call in a
//! failed or rolled-back statement still counts) and a table of the objects called.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// The schema of the call log.
pub const LOG_SCHEMA: &str = "trojan_log";

/// The types the library's SQL compares, concatenates or matches (its tables' columns, the
/// catalogs' `name`, binds and literals).
const TYPES: [&str; 5] = [
    "pg_catalog.text",
    "pg_catalog.varchar",
    "pg_catalog.name",
    "pg_catalog.bpchar",
    "pg_catalog.\"char\"",
];

/// The operators planted for every pair of [`TYPES`] (`= ANY` and `IN` use `=`; `NOT IN` uses
/// `<>`), with the built-in they delegate to and their result type.
const OPERATORS: [(&str, &str); 4] = [
    ("=", "boolean"),
    ("<>", "boolean"),
    ("||", "text"),
    ("~~", "boolean"),
];

/// Every function the library, its CLI and Diesel's migration harness call, by name: each
/// `pg_catalog` overload is shadowed with the same argument types, and with `varchar` for `text`.
pub const FUNCTIONS: [&str; 24] = [
    "count",
    "current_setting",
    "format",
    "format_type",
    "has_schema_privilege",
    "hashtext",
    "pg_advisory_lock",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_xact_lock",
    "pg_get_function_identity_arguments",
    "pg_has_role",
    "quote_ident",
    "quote_literal",
    "set_config",
    "starts_with",
    "to_regclass",
    "to_regnamespace",
    "unnest",
    "now",
    "pg_backend_pid",
    "array_agg",
    "max",
    "string_agg",
];

/// Catalog relations shadowed by logging views of the same name.
const CATALOGS: [&str; 9] = [
    "pg_namespace",
    "pg_class",
    "pg_roles",
    "pg_proc",
    "pg_operator",
    "pg_depend",
    "pg_locks",
    "pg_type",
    "pg_tables",
];

/// The library's shared tables, shadowed by logging views in tenant schemas.
const SHARED_TABLES: [&str; 3] = ["workspaces", "workspace_migrations", "workspace_spares"];

/// Creates the call log. Once per database, before [`plant`].
pub fn create_log(conn: &mut PgConnection) {
    conn.batch_execute(&format!(
        "CREATE SCHEMA {LOG_SCHEMA}; \
         CREATE SEQUENCE {LOG_SCHEMA}.calls; \
         CREATE TABLE {LOG_SCHEMA}.detail (what pg_catalog.text NOT NULL); \
         CREATE FUNCTION {LOG_SCHEMA}.hit(what pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$ \
           BEGIN PERFORM pg_catalog.nextval('{LOG_SCHEMA}.calls'); \
                 BEGIN INSERT INTO {LOG_SCHEMA}.detail VALUES (what); \
                 EXCEPTION WHEN OTHERS THEN NULL; END; \
                 RETURN true; END $$; \
         CREATE FUNCTION {LOG_SCHEMA}.count_step(n pg_catalog.int8) RETURNS pg_catalog.int8 \
           LANGUAGE plpgsql AS $$ BEGIN PERFORM {LOG_SCHEMA}.hit('count(*)'); \
           RETURN n OPERATOR(pg_catalog.+) 1::pg_catalog.int8; END $$; \
         GRANT USAGE ON SCHEMA {LOG_SCHEMA} TO PUBLIC; \
         GRANT ALL ON ALL TABLES IN SCHEMA {LOG_SCHEMA} TO PUBLIC; \
         GRANT ALL ON ALL SEQUENCES IN SCHEMA {LOG_SCHEMA} TO PUBLIC"
    ))
    .expect("create the trojan log");
}

/// Plants the trojans in `schema` (which must exist): operators for every pair of types, a
/// `count(*)` aggregate, shadows of every overload of [`FUNCTIONS`], views shadowing the catalogs
/// and, outside the shared schema, the library's shared tables. Returns how many objects it
/// planted.
pub fn plant(conn: &mut PgConnection, schema: &str) -> i64 {
    let types = TYPES
        .iter()
        .map(|t| format!("'{}'", t.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let ops = OPERATORS
        .iter()
        .map(|(o, r)| format!("('{o}', '{r}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let functions = FUNCTIONS
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let catalogs = CATALOGS
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let tables = if schema == "public" {
        String::new()
    } else {
        SHARED_TABLES
            .iter()
            .map(|f| format!("'{f}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let log = LOG_SCHEMA;
    let sql = format!(
        r#"
CREATE TEMP TABLE IF NOT EXISTS trojan_planted (n int);
DO $plant$
DECLARE
  s text := '{schema}';
  l text; r text; op record; p record; i int := 0; k int := 0; fn text; body text;
  args text; callargs text; sig text; tys text[];
BEGIN
  tys := ARRAY[{types}]::text[];
  IF pg_catalog.to_regtype('public.workspace_status') IS NOT NULL THEN
    tys := tys || 'public.workspace_status'::text;
  END IF;
  FOREACH l IN ARRAY tys LOOP
    FOREACH r IN ARRAY tys LOOP
      FOR op IN SELECT * FROM (VALUES {ops}) AS v(o, ret) LOOP
        i := i + 1;
        fn := 'trojan_op_' || i;
        sig := format('%s.%s(%s,%s)', s, op.o, l, r);
        EXECUTE format(
          'CREATE FUNCTION %I.%I(a %s, b %s) RETURNS %s LANGUAGE plpgsql AS %L',
          s, fn, l, r, op.ret,
          format('BEGIN PERFORM {log}.hit(%L); RETURN a::pg_catalog.text OPERATOR(pg_catalog.%s) b::pg_catalog.text; END',
                 sig, op.o));
        EXECUTE format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %I.%I)',
                       s, op.o, l, r, s, fn);
        k := k + 1;
      END LOOP;
    END LOOP;
  END LOOP;
  EXECUTE format('CREATE AGGREGATE %I.count(*) (SFUNC = {log}.count_step, STYPE = pg_catalog.int8, INITCOND = ''0'')', s);
  k := k + 1;
  FOR p IN
    SELECT pr.proname::text AS name, pr.proretset AS retset,
           pg_catalog.pg_get_function_identity_arguments(pr.oid) AS args,
           pg_catalog.pg_get_function_result(pr.oid) AS result, pr.pronargs AS nargs
    FROM pg_catalog.pg_proc pr
    WHERE pr.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
      AND pr.proname::text = ANY (ARRAY[{functions}]::text[]) AND pr.prokind = 'f'
  LOOP
    FOREACH args IN ARRAY ARRAY[p.args, pg_catalog.replace(p.args, 'text', 'character varying')] LOOP
      callargs := (SELECT coalesce(pg_catalog.string_agg('$' || g, ', '), '')
                   FROM pg_catalog.generate_series(1, p.nargs) g);
      sig := format('%s.%s(%s)', s, p.name, args);
      IF p.retset THEN
        body := format('BEGIN PERFORM {log}.hit(%L); RETURN QUERY SELECT * FROM pg_catalog.%I(%s); END', sig, p.name, callargs);
      ELSIF p.result = 'void' THEN
        body := format('BEGIN PERFORM {log}.hit(%L); PERFORM pg_catalog.%I(%s); END', sig, p.name, callargs);
      ELSE
        body := format('BEGIN PERFORM {log}.hit(%L); RETURN pg_catalog.%I(%s); END', sig, p.name, callargs);
      END IF;
      BEGIN
        EXECUTE format('CREATE FUNCTION %I.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
                       s, p.name, args, p.result, body);
        k := k + 1;
      EXCEPTION WHEN OTHERS THEN
        -- pseudo-types plpgsql cannot take ("any", internal, cstring), or the varchar twin
        -- of a function without text arguments: nothing to plant
        NULL;
      END;
    END LOOP;
  END LOOP;
  FOREACH fn IN ARRAY ARRAY[{catalogs}{comma}{tables}]::text[] LOOP
    IF fn = ANY (ARRAY[{catalogs}]::text[]) THEN
      EXECUTE format('CREATE VIEW %I.%I AS SELECT * FROM pg_catalog.%I WHERE {log}.hit(%L)',
                     s, fn, fn, s || '.' || fn);
    ELSE
      EXECUTE format('CREATE VIEW %I.%I AS SELECT * FROM public.%I WHERE {log}.hit(%L)',
                     s, fn, fn, s || '.' || fn);
    END IF;
    k := k + 1;
  END LOOP;
  INSERT INTO trojan_planted VALUES (k);
END
$plant$;
"#,
        comma = if tables.is_empty() { "" } else { ", " },
    );
    conn.batch_execute(&sql)
        .unwrap_or_else(|e| panic!("plant trojans in {schema}: {e}"));
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query("SELECT n::int8 AS n FROM pg_temp.trojan_planted")
        .get_result(conn)
        .expect("count planted");
    conn.batch_execute("DROP TABLE pg_temp.trojan_planted")
        .expect("drop the temp count");
    n.n
}

/// Calls of any trojan so far (rolled-back calls included) and the distinct objects called
/// (committed calls only).
pub fn calls(conn: &mut PgConnection) -> (i64, Vec<String>) {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    #[derive(QueryableByName)]
    struct W {
        #[diesel(sql_type = diesel::sql_types::Text)]
        what: String,
    }
    let n: N = diesel::sql_query(format!(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM {LOG_SCHEMA}.calls"
    ))
    .get_result(conn)
    .expect("read the trojan sequence");
    let what: Vec<W> = diesel::sql_query(format!(
        "SELECT DISTINCT what FROM {LOG_SCHEMA}.detail ORDER BY 1"
    ))
    .load(conn)
    .expect("read the trojan log");
    (n.n, what.into_iter().map(|w| w.what).collect())
}
