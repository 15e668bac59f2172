//! What the coordinator's catalog and Citus's metadata say about a tenant schema (its tables,
//! the distributed ones, their nodes and shards), and the check that a schema is distributed
//! as a tenant.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::{CitusDb, Node};

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

pub(super) fn names(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<NameRow>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// The tables (`r`, `p`) of `schema`, sorted.
pub fn tables(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    names(
        conn,
        &format!(
            "SELECT c.relname::text AS name FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p') ORDER BY 1"
        ),
    )
}

/// The tables of `schema` that Citus's metadata holds as tenant ("schema") tables, sorted.
pub fn distributed_tables(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    names(
        conn,
        &format!(
            "SELECT c.relname::text AS name FROM pg_catalog.pg_dist_partition p \
             JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_dist_schema s ON s.schemaid = n.oid \
             WHERE n.nspname = '{schema}' ORDER BY 1"
        ),
    )
}

/// The nodes (`host:port`) holding shards of `schema`'s tables.
pub fn nodes_of(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    names(
        conn,
        &format!(
            "SELECT DISTINCT s.nodename || ':' || s.nodeport AS name \
             FROM pg_catalog.citus_shards s \
             JOIN pg_catalog.pg_class c ON c.oid = s.table_name \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{schema}' ORDER BY 1"
        ),
    )
}

/// The shard tables (`acme.notes_102008`, ...) of `schema`'s tables, from the coordinator's
/// metadata, with the logical table each belongs to, sorted.
pub fn shards_of(conn: &mut PgConnection, schema: &str) -> Vec<(String, String)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        shard: String,
        #[diesel(sql_type = Text)]
        logical: String,
    }
    diesel::sql_query(format!(
        "SELECT s.shard_name::text AS shard, c.relname::text AS logical \
         FROM pg_catalog.citus_shards s JOIN pg_catalog.pg_class c ON c.oid = s.table_name \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{schema}' ORDER BY 2"
    ))
    .load::<Row>(conn)
    .unwrap_or_else(|e| panic!("shards of {schema}: {e}"))
    .into_iter()
    .map(|r| (r.shard, r.logical))
    .collect()
}

/// The tables of `schema` on a worker's copy of the database, shards included (Citus hides
/// shards from catalog queries unless `citus.override_table_visibility` is off).
pub fn shard_tables_on(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    conn.batch_execute("SET citus.override_table_visibility = off")
        .expect("show shards");
    names(
        conn,
        &format!(
            "SELECT c.relname::text AS name FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{schema}' AND c.relkind = 'r' ORDER BY 1"
        ),
    )
}

impl CitusDb {
    /// The migrator for the example schemas.
    pub fn migrator(&self) -> diesel_workspace::Migrator {
        crate::example_migrator()
    }

    /// The worker whose `host:port` is `node`.
    pub fn worker(&self, node: &str) -> &Node {
        self.workers
            .iter()
            .find(|w| format!("{}:{}", w.host, w.port) == node)
            .unwrap_or_else(|| panic!("{node} is not a worker"))
    }

    /// Asserts that every table of `schema` is a distributed tenant table placed on exactly one
    /// worker, and that this worker holds a shard of each; returns the worker.
    pub fn assert_distributed(&self, schema: &str) -> &Node {
        let mut conn = self.conn();
        let tables = tables(&mut conn, schema);
        assert!(!tables.is_empty(), "{schema} has tables");
        assert_eq!(
            distributed_tables(&mut conn, schema),
            tables,
            "every table of {schema} is distributed"
        );
        let nodes = nodes_of(&mut conn, schema);
        assert_eq!(nodes.len(), 1, "{schema} lives on one node: {nodes:?}");
        let worker = self.worker(&nodes[0]);
        let shards = shards_of(&mut conn, schema);
        let logical: Vec<String> = shards.iter().map(|(_, l)| l.clone()).collect();
        assert_eq!(logical, tables, "one shard per table of {schema}");
        let on_worker = shard_tables_on(&mut self.conn_on(worker), schema);
        for (shard, _) in &shards {
            let bare = shard.rsplit_once('.').map_or(shard.as_str(), |(_, t)| t);
            assert!(
                on_worker.iter().any(|t| t == bare),
                "{shard} is on {}:{}: {on_worker:?}",
                worker.host,
                worker.port
            );
        }
        worker
    }
}
