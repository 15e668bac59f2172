//! The database engine behind a connection, and what it can do.
//!
//! Everything in the crate that depends on the engine asks this module; nothing else looks at
//! `version()` or at extensions. The engines:
//!
//! - **PostgreSQL** (13 and later): everything works as documented.
//! - **Citus** (an extension of PostgreSQL): tenant schemas become distributed schemas
//!   (schema-based sharding), each placed on one node; provisioning, migrations and placement
//!   take the Citus path.
//! - **CockroachDB** and **YugabyteDB** speak PostgreSQL's protocol but lack what tenant
//!   provisioning and migrations rely on; they are recognised from `version()` and refused with
//!   [`Error::UnsupportedEngine`].

use std::fmt;

use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer, Nullable, Text};

use crate::error::{Error, Result, ENGINE_CHANGED};
use crate::sql::{quote_ident, quote_literal, SNAPSHOT_PREFIX};
use crate::tenant::TenantId;

/// The engine behind a connection, as [`Dialect::detect`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// PostgreSQL itself (or a fork that reports itself as PostgreSQL).
    PostgreSql,
    /// PostgreSQL with the Citus extension installed in the connected database.
    Citus(CitusInfo),
    /// CockroachDB (refused: DDL in a transaction is not atomic, advisory locks are no-ops).
    CockroachDb,
    /// YugabyteDB YSQL (refused: transactional DDL is off by default, advisory locks are not
    /// available by default).
    YugabyteDb,
}

/// What [`Dialect::detect`] learnt about a Citus database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitusInfo {
    /// The extension's version (`12.1-1` style, from `pg_extension`).
    pub extension_version: String,
    /// `citus_version()`, e.g. `Citus 12.1.12 on x86_64-pc-linux-gnu, ...`.
    pub version: String,
    /// Whether `citus.enable_schema_based_sharding` is on for this session. Provisioning turns it
    /// on for its own transaction either way.
    pub schema_sharding: bool,
    /// The primary nodes registered in the database's metadata, coordinator included, in node
    /// id order.
    pub nodes: Vec<CitusNode>,
}

impl CitusInfo {
    /// The nodes that may hold tenant schemas (`shouldhaveshards`), in node id order.
    pub fn workers(&self) -> impl Iterator<Item = &CitusNode> {
        self.nodes.iter().filter(|n| n.should_have_shards)
    }
}

/// A primary node of a Citus cluster, from `pg_dist_node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitusNode {
    /// The node's id.
    pub node_id: i32,
    /// The node's group (0 is the coordinator).
    pub group_id: i32,
    /// The host name the cluster knows the node by.
    pub host: String,
    /// Its port.
    pub port: i32,
    /// Whether the node may hold shards (tenant schemas).
    pub should_have_shards: bool,
    /// Whether the node is active.
    pub is_active: bool,
}

impl CitusNode {
    /// Whether this node is the coordinator (group 0).
    pub fn is_coordinator(&self) -> bool {
        self.group_id == 0
    }
}

impl fmt::Display for CitusNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The engine behind a connection and its `version()` string.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel_workspace::{citus::Dialect, citus::Engine};
///
/// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
/// let dialect = Dialect::detect(conn)?;
/// dialect.ensure_supported()?;
/// if let Engine::Citus(citus) = dialect.engine() {
///     println!("Citus {} with {} workers", citus.extension_version, citus.workers().count());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    engine: Engine,
    version: String,
}

#[derive(QueryableByName)]
struct ServerRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Nullable<Text>)]
    citus: Option<String>,
}

#[derive(QueryableByName)]
struct CitusRow {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Nullable<Text>)]
    sharding: Option<String>,
}

#[derive(QueryableByName)]
struct NodeRow {
    #[diesel(sql_type = Integer)]
    nodeid: i32,
    #[diesel(sql_type = Integer)]
    groupid: i32,
    #[diesel(sql_type = Text)]
    nodename: String,
    #[diesel(sql_type = Integer)]
    nodeport: i32,
    #[diesel(sql_type = Bool)]
    shouldhaveshards: bool,
    #[diesel(sql_type = Bool)]
    isactive: bool,
}

impl Dialect {
    /// Detects the engine behind `conn`: one query on PostgreSQL (`version()` and the Citus
    /// extension's row in `pg_extension`), two more on Citus (its version, the sharding setting
    /// and the node list). It does not refuse anything: see [`Dialect::ensure_supported`].
    ///
    /// # Errors
    /// [`Error::Query`] when the catalog cannot be read.
    pub fn detect(conn: &mut PgConnection) -> Result<Self> {
        let server: ServerRow = diesel::sql_query(
            "SELECT pg_catalog.version() AS version, \
             (SELECT e.extversion::pg_catalog.text FROM pg_catalog.pg_extension e \
              WHERE e.extname = 'citus') AS citus",
        )
        .get_result(conn)?;
        let Some(extension_version) = server.citus else {
            return Ok(Self::from_version(&server.version));
        };
        let citus: CitusRow = diesel::sql_query(
            "SELECT pg_catalog.citus_version()::pg_catalog.text AS version, \
             pg_catalog.current_setting('citus.enable_schema_based_sharding', true) AS sharding",
        )
        .get_result(conn)?;
        let nodes: Vec<NodeRow> = diesel::sql_query(
            "SELECT nodeid, groupid, nodename::pg_catalog.text AS nodename, nodeport, \
             shouldhaveshards, isactive FROM pg_catalog.pg_dist_node \
             WHERE noderole = 'primary' ORDER BY nodeid",
        )
        .load(conn)?;
        Ok(Self {
            engine: Engine::Citus(CitusInfo {
                extension_version,
                version: citus.version,
                schema_sharding: citus.sharding.as_deref() == Some("on"),
                nodes: nodes
                    .into_iter()
                    .map(|n| CitusNode {
                        node_id: n.nodeid,
                        group_id: n.groupid,
                        host: n.nodename,
                        port: n.nodeport,
                        should_have_shards: n.shouldhaveshards,
                        is_active: n.isactive,
                    })
                    .collect(),
            }),
            version: server.version,
        })
    }

    /// The dialect of a server whose `version()` returned `version` and that has no Citus
    /// extension: CockroachDB (`CockroachDB CCL v23.1.11 ...`), YugabyteDB
    /// (`PostgreSQL 11.2-YB-2.20.1.0-b0 ...`) or else PostgreSQL.
    ///
    /// ```
    /// use diesel_workspace::{citus::Dialect, citus::Engine};
    ///
    /// let d = Dialect::from_version("PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu");
    /// assert_eq!(d.engine(), &Engine::YugabyteDb);
    /// assert!(d.ensure_supported().is_err());
    /// let d = Dialect::from_version("PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu");
    /// assert_eq!(d.engine(), &Engine::PostgreSql);
    /// ```
    pub fn from_version(version: &str) -> Self {
        let engine = if version.trim_start().starts_with("CockroachDB") {
            Engine::CockroachDb
        } else if version.contains("-YB-") {
            Engine::YugabyteDb
        } else {
            Engine::PostgreSql
        };
        Self {
            engine,
            version: version.to_owned(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What `version()` returned.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The Citus details, when the engine is Citus.
    pub fn citus(&self) -> Option<&CitusInfo> {
        match &self.engine {
            Engine::Citus(info) => Some(info),
            _ => None,
        }
    }

    /// Whether tenant schemas become distributed schemas (the engine is Citus).
    pub fn distributes_schemas(&self) -> bool {
        self.citus().is_some()
    }

    /// The engine's name, for messages.
    pub fn name(&self) -> &'static str {
        match self.engine {
            Engine::PostgreSql => "PostgreSQL",
            Engine::Citus(_) => "Citus",
            Engine::CockroachDb => "CockroachDB",
            Engine::YugabyteDb => "YugabyteDB",
        }
    }

    /// What the engine lacks that this crate needs, or `None` when it has everything.
    pub fn missing_capability(&self) -> Option<&'static str> {
        match self.engine {
            Engine::PostgreSql | Engine::Citus(_) => None,
            Engine::CockroachDb => Some(
                "transactional DDL (schema changes inside a transaction are not atomic) and \
                 advisory locks (pg_advisory_xact_lock is a no-op)",
            ),
            Engine::YugabyteDb => Some(
                "transactional DDL (off by default: a failed migration leaves its DDL behind) and \
                 advisory locks (not available by default)",
            ),
        }
    }

    /// Refuses the engines this crate cannot run on.
    ///
    /// # Errors
    /// [`Error::UnsupportedEngine`] naming the missing capability.
    pub fn ensure_supported(&self) -> Result<()> {
        match self.missing_capability() {
            None => Ok(()),
            Some(missing) => Err(Error::UnsupportedEngine {
                engine: self.name(),
                missing,
            }),
        }
    }

    /// What tells this engine from another in a database: `version()`, then ` citus ` and the
    /// Citus extension's version when it is installed. Two databases with the same identity take
    /// the same SQL (the nodes of two Citus clusters may differ: nothing sent depends on them).
    ///
    /// ```
    /// use diesel_workspace::citus::Dialect;
    ///
    /// let d = Dialect::from_version("PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu");
    /// assert_eq!(d.identity(), d.version());
    /// ```
    pub fn identity(&self) -> String {
        match self.citus() {
            Some(c) => format!("{} citus {}", self.version, c.extension_version),
            None => self.version.clone(),
        }
    }

    /// A statement that fails the transaction, with [`ENGINE_CHANGED`] and the identity found,
    /// unless the database behind the connection has this dialect's
    /// [`identity`](Self::identity): sent in the first batch of every transaction whose SQL
    /// depends on the engine, before anything that does, so that SQL planned for one engine is
    /// never run on another (see `Migrator::with_dialect`).
    pub(crate) fn guard(&self) -> String {
        format!(
            "DO $wd_engine$ DECLARE found text := pg_catalog.version() || COALESCE(' citus ' || \
             (SELECT e.extversion::pg_catalog.text FROM pg_catalog.pg_extension e \
              WHERE e.extname = 'citus'), ''); BEGIN \
             IF found IS DISTINCT FROM {} THEN RAISE EXCEPTION '%', '{ENGINE_CHANGED}' || found; \
             END IF; END $wd_engine$",
            quote_literal(&self.identity())
        )
    }

    /// Detects the engine and refuses the unsupported ones: what the pool does when it is built
    /// and the migrator does when it meets an engine.
    pub(crate) fn detect_supported(conn: &mut PgConnection) -> Result<Self> {
        let dialect = Self::detect(conn)?;
        dialect.ensure_supported()?;
        Ok(dialect)
    }
}

/// The start of the message the distribution check raises; the local tables follow.
pub(crate) const NOT_DISTRIBUTED_MESSAGE: &str =
    "workspace-diesel: not distributed; local tables: ";

impl Dialect {
    /// What a tenant transaction sends after `BEGIN` and its lock, before `CREATE SCHEMA`: on
    /// Citus, schema-based sharding for this transaction, so the schema becomes a distributed
    /// schema whatever the server's setting. Empty on PostgreSQL.
    pub(crate) fn provisioning_settings(&self) -> &'static str {
        if self.distributes_schemas() {
            "SET LOCAL citus.enable_schema_based_sharding = on; "
        } else {
            ""
        }
    }

    /// Whether a migration is sent statement by statement (Citus forwards the query string of
    /// some DDL to its workers, which refuse several commands in one string) rather than as one
    /// batch, and without a PL/pgSQL wrapper (tables created inside `DO ... EXECUTE` stay local
    /// on the coordinator).
    pub(crate) fn splits_statements(&self) -> bool {
        self.distributes_schemas()
    }

    /// On Citus, each snapshot schema's size now (`schema`, `size`), from its shards (its
    /// coordinator tables are empty shells); `None` on PostgreSQL, where the recorded one is.
    pub(crate) fn snapshot_sizes_sql(&self) -> Option<String> {
        self.distributes_schemas().then(|| {
            format!(
                "SELECT n.nspname::pg_catalog.text AS schema, pg_catalog.sum(s.shard_size)::pg_catalog.int8 \
                 AS size FROM pg_catalog.citus_shards s JOIN pg_catalog.pg_class c ON c.oid = s.table_name \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE pg_catalog.starts_with(n.nspname::pg_catalog.text, {}) GROUP BY 1",
                quote_literal(SNAPSHOT_PREFIX)
            )
        })
    }

    /// On Citus, a statement that fails the transaction with [`NOT_DISTRIBUTED_MESSAGE`] and the
    /// local tables when `schema` is not a distributed schema or one of its tables is not a tenant
    /// table of it; sent
    /// before `COMMIT`, so a tenant is never left half distributed. `None` on PostgreSQL.
    pub(crate) fn distribution_check(&self, schema: &TenantId) -> Option<String> {
        if !self.distributes_schemas() {
            return None;
        }
        let lit = quote_literal(&schema.quoted());
        Some(format!(
            "DO $wd_dist$ DECLARE local text; BEGIN \
             SELECT pg_catalog.string_agg(c.relname::pg_catalog.text, ', ' ORDER BY c.relname) INTO local \
             FROM pg_catalog.pg_class c \
             WHERE c.relnamespace = {lit}::pg_catalog.regnamespace AND c.relkind IN ('r', 'p') \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = c.oid); \
             IF local IS NOT NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_schema d \
                 WHERE d.schemaid = {lit}::pg_catalog.regnamespace) THEN \
               RAISE EXCEPTION '%', '{NOT_DISTRIBUTED_MESSAGE}' || COALESCE(local, ''); \
             END IF; END $wd_dist$"
        ))
    }

    /// On Citus, makes the shared tables `tables` (names in the shared schema) reference tables
    /// when they exist and are not yet in Citus's metadata; `None` on PostgreSQL or when
    /// `tables` is empty.
    pub(crate) fn reference_tables_sql(
        &self,
        shared_schema: &str,
        tables: &[String],
    ) -> Option<String> {
        if !self.distributes_schemas() || tables.is_empty() {
            return None;
        }
        let names: Vec<String> = tables
            .iter()
            .map(|t| {
                quote_literal(&format!(
                    "{}.{}",
                    quote_ident(shared_schema),
                    quote_ident(t)
                ))
            })
            .collect();
        Some(format!(
            "SELECT pg_catalog.create_reference_table(t.oid) FROM \
             (SELECT pg_catalog.to_regclass(n) AS oid FROM pg_catalog.unnest(ARRAY[{}]::pg_catalog.text[]) AS n) t \
             WHERE t.oid IS NOT NULL AND NOT EXISTS \
               (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = t.oid)",
            names.join(", ")
        ))
    }

    /// `message` with the shard tables and shard indexes it names (`notes_102019`,
    /// `notes_pkey_102019`) given their logical names (`notes`, `notes_pkey`). Reads the shard ids
    /// of `schema` (and the range of ids allocated since the last shard that still exists, for
    /// tables created by a rolled-back transaction); unchanged on PostgreSQL, or when the ids
    /// cannot be read. For the error path only: call it outside any failed transaction.
    pub(crate) fn logical_message(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        message: &str,
    ) -> String {
        if !self.distributes_schemas() {
            return message.to_owned();
        }
        #[derive(QueryableByName)]
        struct Shards {
            #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::BigInt>)]
            own: Vec<i64>,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            max_kept: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            last: i64,
        }
        let shards = diesel::sql_query(
            "SELECT COALESCE((SELECT pg_catalog.array_agg(s.shardid) FROM pg_catalog.pg_dist_shard s \
               JOIN pg_catalog.pg_class c ON c.oid = s.logicalrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1), \
               '{}'::pg_catalog.int8[]) AS own, \
             COALESCE((SELECT pg_catalog.max(shardid) FROM pg_catalog.pg_dist_shard), 0) AS max_kept, \
             (SELECT last_value FROM pg_catalog.pg_dist_shardid_seq) AS last",
        )
        .bind::<Text, _>(schema.as_str())
        .get_result::<Shards>(conn);
        match shards {
            Ok(s) => strip_shard_ids(message, |id| {
                s.own.contains(&id) || (id > s.max_kept && id <= s.last)
            }),
            Err(_) => message.to_owned(),
        }
    }
}

/// Removes `_<id>` from the end of every identifier in `message` whose numeric suffix `id` is a
/// shard id (`is_shard`).
pub(crate) fn strip_shard_ids(message: &str, is_shard: impl Fn(i64) -> bool) -> String {
    let bytes = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < bytes.len() {
        // `_` followed by digits that end the identifier, after an identifier character.
        if bytes[i] == b'_'
            && i > 0
            && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')
        {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let end = i + 1 + digits;
            let ends_word = bytes
                .get(end)
                .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'));
            if digits > 0 && ends_word {
                if let Ok(id) = message[i + 1..end].parse::<i64>() {
                    if is_shard(id) {
                        i = end;
                        continue;
                    }
                }
            }
        }
        let ch = message[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.engine {
            Engine::Citus(c) => write!(
                f,
                "Citus {} (schema-based sharding {}, {} worker{})",
                c.extension_version,
                if c.schema_sharding { "on" } else { "off" },
                c.workers().count(),
                if c.workers().count() == 1 { "" } else { "s" },
            ),
            _ => f.write_str(self.name()),
        }
    }
}

#[cfg(test)]
mod tests;
