//! A clone's schema built from its template's catalog, not replayed from the migrations.
//!
//! A long migration history replays every step of it: tables rewritten by `ALTER COLUMN …
//! TYPE`, indexes built and dropped, columns added and dropped. Every table, index and sequence
//! made is files created (and each index built is synced), so the history costs more than the
//! schema it ends in. A [`Blueprint`] is
//! the final schema of a template as statements (sequences, tables, constraints, indexes,
//! foreign keys), learned once from the catalog after a clone built by the migrations, and
//! replayed for the next clones of that template.
//!
//! What makes it safe is the [`shape_check_sql`]: every clone, however built, commits only when
//! its schema's [`fingerprint`](fingerprint_sql) (every relation, column, default, constraint,
//! index and sequence, and a count of every other kind of object in the schema) equals the
//! template's; a clone built from a blueprint, also the fingerprint the migrations built when
//! the blueprint was learned. Anything the blueprint does not rebuild (a function, a trigger, a
//! policy, a comment, a grant, …) makes the template unfit for one, and clones of it keep
//! replaying the migrations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use diesel::connection::SimpleConnection;
use diesel::migration::CREATE_MIGRATIONS_TABLE;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

use crate::error::Result;
use crate::sql::{in_schema, own, quote_ident, quote_literal, work_path, LEDGER, OWN_PATH};
use crate::tenant::TenantId;

/// Raised when a clone's tables differ from its template's.
pub(crate) const DIFFERS: &str = "workspace-diesel: clone template differs from its migrations";

/// How many templates' blueprints a migrator keeps.
const KEPT: usize = 64;

/// A template's final schema as statements that run with the clone first on the `search_path`
/// (they were read with the template first on it, so its own objects are named bare). Each table
/// is created `LIKE` the template's (its columns, `CHECK` constraints and defaults copied as the
/// server holds them, not re-parsed from text), its sequence defaults pointed at the clone's.
#[derive(Debug)]
pub(crate) struct Blueprint {
    /// The statements, ending in `; `; the ledger is left to provisioning.
    pub(crate) ddl: String,
    /// The template's [`fingerprint`](fingerprint_sql) when it was learned: the one the
    /// migrations built.
    pub(crate) fingerprint: String,
}

/// The blueprints a migrator learned, by template (`None`: the template is unfit for one), or
/// none at all when learning is off.
#[derive(Debug, Clone)]
pub(crate) struct Blueprints {
    learn: bool,
    known: Arc<Mutex<HashMap<TenantId, Option<Arc<Blueprint>>>>>,
}

impl Blueprints {
    /// An empty set, that learns when `learn`.
    pub(crate) fn new(learn: bool) -> Self {
        Self {
            learn,
            known: Arc::default(),
        }
    }

    /// What is known of `template`: `None` when nothing is, `Some(None)` when it is unfit (or
    /// learning is off).
    pub(crate) fn get(&self, template: &TenantId) -> Option<Option<Arc<Blueprint>>> {
        if !self.learn {
            return Some(None);
        }
        self.lock().get(template).cloned()
    }

    /// Records what was learned of `template`.
    pub(crate) fn put(&self, template: &TenantId, blueprint: Option<Blueprint>) {
        let mut map = self.lock();
        if map.len() >= KEPT && !map.contains_key(template) {
            map.clear();
        }
        map.insert(template.clone(), blueprint.map(Arc::new));
    }

    /// Forgets `template`'s blueprint (a clone from it failed: the next one replays the
    /// migrations and learns again).
    pub(crate) fn forget(&self, template: &TenantId) {
        self.lock().remove(template);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Option<Arc<Blueprint>>>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The relations of `schema`, found through their dependency on it (by `pg_depend`'s index, not
/// a scan of `pg_class`), with their indexes: a `rel` CTE; and the count of every other kind of
/// object in it: an `others` CTE (default privileges only with `acl`).
pub(crate) fn relations_cte(schema: &TenantId, acl: bool) -> String {
    let ns = format!(
        "pg_catalog.to_regnamespace({})",
        quote_literal(&schema.quoted())
    );
    let default_acl = if acl {
        format!(", (SELECT pg_catalog.count(*) FROM pg_catalog.pg_default_acl a WHERE a.defaclnamespace = {ns})")
    } else {
        String::new()
    };
    format!(
        "base AS MATERIALIZED (SELECT c.oid FROM pg_catalog.pg_depend d \
           JOIN pg_catalog.pg_class c ON c.oid = d.objid \
           WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = {ns} \
             AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0 \
             AND c.relnamespace = {ns}), \
         rel AS MATERIALIZED (SELECT c.* FROM pg_catalog.pg_class c WHERE c.oid IN ( \
           SELECT oid FROM base UNION ALL \
           SELECT i.indexrelid FROM pg_catalog.pg_index i WHERE i.indrelid IN (SELECT oid FROM base))), \
         others AS MATERIALIZED (SELECT pg_catalog.concat_ws(',', \
           (SELECT pg_catalog.string_agg(d.classid::pg_catalog.regclass::pg_catalog.text || ':' || d.n, ',' \
              ORDER BY d.classid::pg_catalog.regclass::pg_catalog.text COLLATE \"C\") \
            FROM (SELECT classid, pg_catalog.count(*) AS n FROM pg_catalog.pg_depend \
              WHERE refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND refobjid = {ns} \
                AND classid <> 'pg_catalog.pg_class'::pg_catalog.regclass \
                AND ({acl} OR classid <> 'pg_catalog.pg_default_acl'::pg_catalog.regclass) GROUP BY classid) d), \
           (SELECT pg_catalog.string_agg(d.classid::pg_catalog.regclass::pg_catalog.text || ':' || d.n, ',' \
              ORDER BY d.classid::pg_catalog.regclass::pg_catalog.text COLLATE \"C\") \
            FROM (SELECT classid, pg_catalog.count(*) AS n FROM pg_catalog.pg_depend \
              WHERE refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND refobjid IN (SELECT oid FROM rel) \
                AND deptype = 'a' AND classid NOT IN ('pg_catalog.pg_class'::pg_catalog.regclass, \
                  'pg_catalog.pg_constraint'::pg_catalog.regclass, 'pg_catalog.pg_attrdef'::pg_catalog.regclass, \
                  'pg_catalog.pg_type'::pg_catalog.regclass) GROUP BY classid) d), \
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rel)), \
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_description e WHERE e.objoid IN (SELECT oid FROM rel) \
              AND e.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass){default_acl}) AS counts)"
    )
}

/// A query of one row (`fingerprint`): an md5 of every relation of `schema` (kind, persistence,
/// options, row security, replica identity), every column in order (type, `NOT NULL`, identity,
/// generated, collation, default, statistics, options, storage), constraint and index (their
/// definitions), sequence (its parameters and owner) and a count of every other object in it
/// and of what depends on its relations. Privileges are not part of it: a grant is no shape (a
/// template with grants is never rebuilt from a blueprint, so a clone gets the grants its
/// migrations give). Names of the schema's own objects are printed as the `search_path` makes
/// them: run with the schema first on the path, two schemas built alike have the same
/// fingerprint.
pub(crate) fn fingerprint_sql(schema: &TenantId) -> String {
    format!(
        "WITH {cte} SELECT pg_catalog.md5(pg_catalog.string_agg(l, E'\\n' ORDER BY l COLLATE \"C\")) AS fingerprint FROM ( \
         SELECT pg_catalog.concat_ws('|', 'r', c.relname, c.relkind, c.relpersistence, c.reloptions::pg_catalog.text, \
           c.relispartition, c.relhassubclass, c.relrowsecurity, c.relforcerowsecurity, c.relreplident) AS l FROM rel c \
         UNION ALL \
         SELECT pg_catalog.concat_ws('|', 'c', c.relname, \
           pg_catalog.row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname, \
           pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated, \
           a.attcollation::pg_catalog.regcollation::pg_catalog.text, \
           pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attstattarget, {options}, \
           a.attcompression, a.attstorage, a.attinhcount) \
         FROM rel c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE c.relkind NOT IN ('i', 'I', 'S') \
         UNION ALL \
         SELECT pg_catalog.concat_ws('|', 'k', c.relname, k.conname, k.contype, \
           pg_catalog.pg_get_constraintdef(k.oid), k.convalidated) \
         FROM rel c JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid \
         UNION ALL \
         SELECT pg_catalog.concat_ws('|', 'i', c.relname, {indexdef}, \
           i.indisclustered, i.indisreplident, i.indisvalid) \
         FROM rel c JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid \
         UNION ALL \
         SELECT pg_catalog.concat_ws('|', 's', c.relname, pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, \
           s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle, o.deptype, o.owner) \
         FROM rel c JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid {owner} \
         UNION ALL \
         SELECT 'o|' || counts FROM others) x",
        cte = relations_cte(schema, false),
        owner = OWNER_JOIN,
        options = USER_OPTIONS,
        indexdef = index_def(schema),
    )
}

/// A column's options that a user set (`n_distinct`, …), as text: the server's own (named
/// `pg_…`, such as a version it keeps per column) are left out.
const USER_OPTIONS: &str = "(SELECT pg_catalog.array_agg(o ORDER BY o)::pg_catalog.text \
    FROM pg_catalog.unnest(a.attoptions) o WHERE o !~ '^pg_')";

/// The definition of the index `i.indexrelid`, its table named without `schema` (which
/// `pg_get_indexdef` always names, whatever the path).
fn index_def(schema: &TenantId) -> String {
    let q = format!("pg_catalog.quote_ident({})", quote_literal(schema.as_str()));
    format!(
        "pg_catalog.replace(pg_catalog.replace(pg_catalog.pg_get_indexdef(i.indexrelid), \
           ' ON ONLY ' || {q} || '.', ' ON ONLY '), ' ON ' || {q} || '.', ' ON ')"
    )
}

/// Joins a sequence `c` to its owning column (`o.deptype`: `a` for `OWNED BY`, `i` for an
/// identity; `o.owner`: the table and column, quoted and joined by a dot).
const OWNER_JOIN: &str = "LEFT JOIN LATERAL (SELECT d.deptype, \
      pg_catalog.quote_ident(t.relname) || '.' || pg_catalog.quote_ident(a.attname) AS owner \
    FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class t ON t.oid = d.refobjid \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid \
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') \
    LIMIT 1) o ON true";

/// A `DO` block that fails with [`DIFFERS`] unless the template's fingerprint (read with its
/// schema first on the path) is the one `expected`, or, with none expected, `tenant`'s (read
/// likewise). With one expected (a blueprint's), the clone is not read: built from a blueprint
/// whose trial built that fingerprint, `LIKE` a template that has it, or a spare the migrations
/// built, it has it too. Ends in `; `, with the library's own path set again.
pub(crate) fn shape_check_sql(
    template: &TenantId,
    tenant: &TenantId,
    expected: Option<&str>,
) -> String {
    let path = |schema: &TenantId| quote_literal(&work_path(&schema.quoted()));
    let other = match expected {
        Some(f) => format!("b := {};", quote_literal(f)),
        None => format!(
            "PERFORM pg_catalog.set_config('search_path', {cp}, true); b := ({fc});",
            cp = path(tenant),
            fc = fingerprint_sql(tenant),
        ),
    };
    format!(
        "DO $wd_shape$ DECLARE a text; b text; BEGIN \
         PERFORM pg_catalog.set_config('search_path', {tp}, true); \
         a := ({ft}); {other} \
         PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true); \
         IF a IS NULL OR a IS DISTINCT FROM b THEN \
           RAISE EXCEPTION '{DIFFERS}' USING ERRCODE = 'object_not_in_prerequisite_state'; \
         END IF; END $wd_shape$; {OWN_PATH}; ",
        tp = path(template),
        ft = fingerprint_sql(template),
    )
}

#[derive(QueryableByName)]
struct Fingerprint {
    #[diesel(sql_type = Nullable<Text>)]
    fingerprint: Option<String>,
}

/// One line of a blueprint read from the catalog (in order): whether the blueprint can rebuild
/// what it stands for (`fits`), the statement (empty for a line that only checks), and the text
/// the template's name must not appear in (an expression read from the catalog).
#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = BigInt)]
    rank: i64,
    #[diesel(sql_type = Bool)]
    fits: bool,
    #[diesel(sql_type = Text)]
    sql: String,
    #[diesel(sql_type = Nullable<Text>)]
    expr: Option<String>,
}

/// Reads `template`'s blueprint, after a clone built by the migrations (`clone`, committed),
/// and tries it once in a schema rolled back at once: `None` when the template holds anything a
/// blueprint does not rebuild, when the trial does not build the template's fingerprint (a
/// definition the server prints otherwise than it holds it), or when the template and the clone
/// differ (the clone changed meanwhile).
pub(crate) fn learn(
    conn: &mut PgConnection,
    template: &TenantId,
    clone: &TenantId,
) -> Result<Option<Blueprint>> {
    static TRIALS: AtomicU64 = AtomicU64::new(0);
    let trial = TenantId::new(format!(
        "wd_blueprint_trial_{}_{}",
        std::process::id(),
        TRIALS.fetch_add(1, Ordering::Relaxed)
    ))?;
    own(conn, |conn| {
        let fingerprint = |conn: &mut PgConnection, schema: &TenantId| -> QueryResult<_> {
            conn.batch_execute(&format!(
                "SET LOCAL search_path TO {}",
                work_path(&schema.quoted())
            ))?;
            Ok(diesel::sql_query(fingerprint_sql(schema))
                .get_result::<Fingerprint>(conn)?
                .fingerprint)
        };
        let theirs = fingerprint(conn, clone)?;
        let ours = fingerprint(conn, template)?;
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            return Ok(None);
        };
        if ours != theirs {
            return Ok(None);
        }
        // Still with the template first on the path: its own objects are named bare.
        let lines: Vec<Line> = diesel::sql_query(lines_sql(template)).load(conn)?;
        conn.batch_execute(OWN_PATH)?;
        let named = [
            format!("{}.", template.quoted()),
            format!("{}.", template.as_str()),
        ];
        // Tables (with their indexes) first, then what refers to them.
        let (mut tables, mut after) = (String::new(), String::new());
        for line in lines {
            let named_in = |text: &str| named.iter().any(|n| text.contains(n.as_str()));
            if !line.fits || line.expr.as_deref().is_some_and(named_in) {
                return Ok(None);
            }
            if !line.sql.is_empty() {
                let into = if line.rank <= 3 {
                    &mut tables
                } else {
                    &mut after
                };
                into.push_str(&line.sql);
                into.push_str("; ");
            }
        }
        let ours_indexes = index_names(conn, template)?;
        let q = trial.quoted();
        let tried = conn.batch_execute(&format!(
            "SAVEPOINT wd_trial; CREATE SCHEMA {q}; {}{}",
            in_schema(&q, CREATE_MIGRATIONS_TABLE),
            in_schema(&q, &tables),
        ));
        // `LIKE … INCLUDING INDEXES` names the indexes anew: they are renamed to the
        // template's, matched table by table in the order they were made.
        let mut ddl = None;
        if tried.is_ok() {
            let renames = renames(&ours_indexes, &index_names(conn, &trial)?);
            if let Some(renames) = renames {
                let rest = format!("{renames}{after}");
                if conn.batch_execute(&in_schema(&q, &rest)).is_ok()
                    && fingerprint(conn, &trial)?.as_deref() == Some(ours.as_str())
                {
                    ddl = Some(format!("{tables}{rest}"));
                }
            }
        }
        conn.batch_execute("ROLLBACK TO SAVEPOINT wd_trial")?;
        let Some(ddl) = ddl else {
            tracing::debug!(template = %template, "clone: the blueprint does not build the template");
            return Ok(None);
        };
        Ok(Some(Blueprint {
            ddl,
            fingerprint: ours,
        }))
    })
}

#[derive(QueryableByName)]
struct IndexName {
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = Text)]
    idx: String,
}

/// The indexes of `schema`'s tables (the ledger's left out), table by table in the order they
/// were made.
fn index_names(conn: &mut PgConnection, schema: &TenantId) -> QueryResult<Vec<IndexName>> {
    diesel::sql_query(format!(
        "WITH {cte} SELECT t.relname::pg_catalog.text AS tbl, c.relname::pg_catalog.text AS idx \
         FROM rel c JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid \
         JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
         WHERE t.relname <> {ledger} ORDER BY t.relname COLLATE \"C\", c.oid",
        cte = relations_cte(schema, true),
        ledger = quote_literal(LEDGER),
    ))
    .load(conn)
}

/// The statements that rename the indexes `made` to the template's (`ours`, matched table by
/// table and in order), through names of their own so that no two collide on the way; `None`
/// when the two do not pair up.
fn renames(ours: &[IndexName], made: &[IndexName]) -> Option<String> {
    if ours.len() != made.len() || ours.iter().zip(made).any(|(o, m)| o.tbl != m.tbl) {
        return None;
    }
    let moved: Vec<(usize, &IndexName, &IndexName)> = ours
        .iter()
        .zip(made)
        .enumerate()
        .filter(|(_, (o, m))| o.idx != m.idx)
        .map(|(k, (o, m))| (k, o, m))
        .collect();
    let mut sql = String::new();
    for (k, _, m) in &moved {
        sql.push_str(&format!(
            "ALTER INDEX {} RENAME TO wd_blueprint_index_{k}; ",
            quote_ident(&m.idx)
        ));
    }
    for (k, o, _) in &moved {
        sql.push_str(&format!(
            "ALTER INDEX wd_blueprint_index_{k} RENAME TO {}; ",
            quote_ident(&o.idx)
        ));
    }
    Some(sql)
}

/// The query of a blueprint's [`Line`]s, in order (`rank`): what only checks (0), sequences (2),
/// tables `LIKE` the template's with their indexes and constraints but foreign keys (3),
/// `OWNED BY`, defaults that name a sequence and `NOT VALID` checks made again as such (4),
/// replica identities (6), foreign keys (7).
/// The ledger (with its key) is left out.
fn lines_sql(template: &TenantId) -> String {
    let ledger = quote_literal(LEDGER);
    format!(
        "WITH {cte} \
         SELECT 0::pg_catalog.int8 AS rank, others.counts ~ '^,?(0,)*0$' AS fits, '' AS sql, NULL AS expr FROM others \
         UNION ALL \
         SELECT 1, c.relkind IN ('r', 'S', 'i') AND c.relpersistence = 'p' AND NOT c.relispartition AND NOT c.relhassubclass \
           AND NOT c.relrowsecurity AND NOT c.relforcerowsecurity AND c.relreplident IN ('d', 'n') \
           AND c.relacl IS NULL, '', NULL FROM rel c \
         UNION ALL \
         SELECT 2, true, pg_catalog.format('CREATE SEQUENCE %I AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s \
           START WITH %s CACHE %s %sCYCLE', c.relname, pg_catalog.format_type(s.seqtypid, NULL), s.seqincrement, \
           s.seqmin, s.seqmax, s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN '' ELSE 'NO ' END), NULL \
         FROM rel c JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid {owner} \
         WHERE o.deptype IS DISTINCT FROM 'i' \
         UNION ALL \
         SELECT 3, COALESCE(pg_catalog.bool_and(a.attstattarget = -1 AND {options} IS NULL \
             AND a.attacl IS NULL AND a.attcompression = '' AND a.attstorage = t.typstorage AND a.attinhcount = 0), true), \
           pg_catalog.format('CREATE TABLE %I (LIKE {template}.%I INCLUDING CONSTRAINTS INCLUDING DEFAULTS \
             INCLUDING GENERATED INCLUDING IDENTITY INCLUDING INDEXES)%s', c.relname, c.relname, \
             ' WITH (' || pg_catalog.array_to_string(c.reloptions, ', ') || ')'), NULL \
         FROM rel c LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         WHERE c.relkind = 'r' AND c.relname <> {ledger} GROUP BY c.oid, c.relname, c.reloptions \
         UNION ALL \
         SELECT 4, true, pg_catalog.format('ALTER TABLE %I ALTER COLUMN %I SET DEFAULT %s', c.relname, a.attname, \
           pg_catalog.pg_get_expr(d.adbin, d.adrelid)), pg_catalog.pg_get_expr(d.adbin, d.adrelid) \
         FROM rel c JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
         WHERE c.relkind = 'r' AND a.attgenerated = '' AND c.relname <> {ledger} \
           AND EXISTS (SELECT FROM pg_catalog.pg_depend p \
             WHERE p.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND p.objid = d.oid \
               AND p.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) \
         UNION ALL \
         SELECT 4, true, pg_catalog.format('ALTER SEQUENCE %I OWNED BY %s', c.relname, o.owner), NULL \
         FROM rel c {owner} WHERE c.relkind = 'S' AND o.deptype = 'a' \
         UNION ALL \
         SELECT CASE WHEN k.contype = 'f' THEN 7 ELSE 0 END, k.contype IN ('p', 'u', 'x', 'f', 'c'), \
           CASE WHEN k.contype = 'f' THEN pg_catalog.format('ALTER TABLE %I ADD CONSTRAINT %I %s', c.relname, \
             k.conname, pg_catalog.pg_get_constraintdef(k.oid)) ELSE '' END, \
           CASE WHEN k.contype = 'f' THEN pg_catalog.pg_get_constraintdef(k.oid) END \
         FROM rel c JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid WHERE c.relname <> {ledger} \
         UNION ALL \
         SELECT 4, true, pg_catalog.format('ALTER TABLE %I DROP CONSTRAINT %I, ADD CONSTRAINT %I %s', c.relname, \
           k.conname, k.conname, pg_catalog.pg_get_constraintdef(k.oid)), pg_catalog.pg_get_constraintdef(k.oid) \
         FROM rel c JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid \
         WHERE c.relname <> {ledger} AND k.contype = 'c' AND NOT k.convalidated \
         UNION ALL \
         SELECT 0, i.indisvalid AND NOT i.indisclustered AND NOT i.indisreplident, '', NULL \
         FROM rel c JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid \
         UNION ALL \
         SELECT 6, true, pg_catalog.format('ALTER TABLE %I REPLICA IDENTITY NOTHING', c.relname), NULL \
         FROM rel c WHERE c.relkind = 'r' AND c.relreplident = 'n' \
         ORDER BY 1, 3",
        cte = relations_cte(template, true),
        template = template.quoted(),
        owner = OWNER_JOIN,
        options = USER_OPTIONS,
    )
}
