//! Restoring a tenant from a snapshot: the tenant marked `restoring` (not served), then one
//! tenant transaction that rebuilds its schema with the migrations of the snapshot's versions,
//! puts its ledger and central record back, copies the snapshot's rows in (parents first),
//! sets each sequence, checks every table's row count and checksum against the snapshot's and
//! gives the tenant its state back; a restore that fails leaves the tenant as it was.
//!
//! The schema's DDL (dropped, made again, its migrations) is sent as the dialect sends any
//! tenant transaction (on Citus statement by statement, the schema made a distributed one);
//! the copy that follows is one PL/pgSQL block of DML and checks only, read from the rebuilt
//! schema's catalog inside the transaction (which columns are generated, which table is a
//! parent), so it runs as it is on both engines.
//!
//! On Citus the schema made again is placed by Citus (by its new colocation id alone), and a
//! schema cannot be moved in the transaction that creates its shards; so the restore reads the
//! tenant's node first, keeps it with the state before in the schema's comment, commits with
//! the tenant still `restoring`, then moves it back to that node (`citus_schema_move`) and
//! only then gives it its state back: a restore interrupted there is run again like one
//! interrupted before its commit.

use diesel::connection::SimpleConnection;
use diesel::migration::CREATE_MIGRATIONS_TABLE;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::failure::{classify_migrate_error, db_message};
use crate::migrate::migrator::Migrator;
use crate::migrate::set::Compiled;
use crate::migrate::snapshot::{read_snapshots, with_stable_text, Snapshot, MISMATCH, TABLE_SUM};
use crate::migrate::tx::{self, Opening, Plan};
use crate::registry::model::LifecycleState;
use crate::sql::{
    in_schema, own, quote_literal, CENTRAL_RECORD, LEDGER, LOCK_KEY, SNAPSHOTS_TABLE,
};
use crate::tenant::TenantId;

/// Raised when the snapshot was pruned between its read and the tenant's lock.
const GONE: &str = "workspace-diesel: snapshot pruned meanwhile";
/// The start of the comment a restore leaves on the tenant's schema while it is `restoring`,
/// followed by the state before it: what a restore run again after an interrupted one gives
/// the tenant back (the restore's `DROP SCHEMA` removes the comment with the schema).
const STATE_BEFORE: &str = "workspace-diesel restore; state before: ";
/// What follows the state before in that comment on Citus: the tenant's node before the
/// restore (`host:port`), the node a restore run again moves it back to.
const NODE_BEFORE: &str = "; node before: ";

/// A node of the cluster.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
struct Node {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Integer)]
    port: i32,
}

impl Node {
    /// `host:port` as a comment keeps it.
    fn parse(s: &str) -> Option<Self> {
        let (host, port) = s.rsplit_once(':')?;
        Some(Node {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

/// Where the tenant stood before the restore: its state (`None` without a status column) and
/// on Citus its node (`None` on PostgreSQL and for a schema with no distributed table).
struct Before {
    state: Option<LifecycleState>,
    node: Option<Node>,
}

impl Before {
    /// The comment that keeps it on the tenant's schema while it is `restoring`.
    fn comment(&self, state: LifecycleState) -> String {
        match &self.node {
            Some(n) => format!("{STATE_BEFORE}{state}{NODE_BEFORE}{}:{}", n.host, n.port),
            None => format!("{STATE_BEFORE}{state}"),
        }
    }

    /// On Citus with a status column: the restore commits with the tenant `restoring`, and
    /// gives it its state back once it is on its node again.
    fn pinned(&self) -> Option<LifecycleState> {
        self.state.filter(|_| self.node.is_some())
    }
}

#[derive(QueryableByName)]
struct Comment {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    comment: Option<String>,
}

impl Migrator {
    /// Brings the snapshot's tenant back to it, row for row: its schema as the migrations of
    /// the snapshot's versions build it, every row of the snapshot, each sequence where it
    /// stood, its ledger and central record as they were; checked table by table against the
    /// snapshot's row counts and checksums before it commits. While it runs the tenant is
    /// [`LifecycleState::Restoring`] (a web service refuses its requests, as the
    /// `workspace-diesel-axum` crate does with a 503), then gets its state before back, in the
    /// restore's transaction. A restore that fails changes nothing but puts the state back.
    /// A restore whose process was killed after the mark leaves the tenant as it was but
    /// `restoring`: run the restore again (of this snapshot or another), and it completes and
    /// gives the tenant its state before the first one back.
    /// The snapshot is kept (prune it with [`prune_snapshots`](Self::prune_snapshots)).
    ///
    /// On Citus the schema is made again as a distributed schema, its migrations' statements
    /// sent one by one as when it was created; the copy, the sequences and the check hold no
    /// DDL and run as on PostgreSQL; nothing commits unless every table of the schema is
    /// distributed. Citus places the new schema on a node of its choosing and cannot move it in
    /// the transaction that creates it, so the transaction commits with the tenant still
    /// `restoring` and its node before kept in the schema's comment; then the tenant is moved
    /// back to that node (`citus_schema_move`, when Citus put it elsewhere) and gets its state
    /// back. A restore that fails or is killed there leaves the tenant restored but
    /// `restoring` (not served): run it again, and it ends on the node the tenant was on.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let acme = TenantId::new("acme")?;
    /// if let Some(last) = migrator.snapshots(conn, Some(&acme))?.pop() {
    ///     migrator.restore_snapshot(conn, &last.name)?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::SnapshotNotFound`] when no snapshot has this name;
    /// - [`Error::TenantNotFound`] when its tenant is not registered any more;
    /// - [`Error::SnapshotRefused`] when the migration set does not know one of its versions
    ///   (or runs one outside a transaction), another restore of the tenant is running, or the
    ///   restored rows do not match the snapshot's checksums (nothing changed);
    /// - [`Error::TenantMigration`] when a migration fails on the rebuilt schema (nothing
    ///   changed);
    /// - [`Error::Query`] on Citus when the move back to the tenant's node fails (the tenant is
    ///   restored but still `restoring`: run the restore again).
    pub fn restore_snapshot(&self, conn: &mut PgConnection, snapshot: &str) -> Result<Snapshot> {
        let span = crate::trace::op_span!("tenant.restore", snapshot = snapshot);
        let _span = self.enter(conn, span, Op::Fleet)?;
        let filter = format!(
            "s.snapshot_name OPERATOR(pg_catalog.=) {}",
            quote_literal(snapshot)
        );
        let dialect = self.dialect(conn)?;
        let found = own(conn, |conn| read_snapshots(conn, &dialect, &filter))?;
        let Some(snap) = found.into_iter().next() else {
            return crate::trace::finish(Err(Error::SnapshotNotFound(snapshot.to_owned())));
        };
        let restored = self.restore_entered(conn, &snap);
        let restored = self.or_gone(conn, &snap.tenant, restored);
        crate::trace::finish(restored.map(|()| snap))
    }

    fn restore_entered(&self, conn: &mut PgConnection, snap: &Snapshot) -> Result<()> {
        let tenant = &snap.tenant;
        self.admit(conn, tenant)?;
        // Detected on this connection, not assumed (the plan's guard still checks it).
        let dialect = self.detect(conn)?;
        let migrations = self.migrations_of(snap)?;
        let before = self.mark_restoring(conn, &dialect, tenant)?;
        let plan_close = self.restore_close(snap, &before)?;
        // Provisioning: on Citus the schema made again is a distributed schema.
        let opening = Opening {
            provisioning: true,
            ..self.opening()
        };
        let mut plan = Plan::new(tenant, opening).apply(&migrations, true);
        plan.create = format!(
            "{check}DROP SCHEMA {t} CASCADE; CREATE SCHEMA {t}; {ledger}",
            check = gone_check(snap),
            t = tenant.quoted(),
            ledger = in_schema(&tenant.quoted(), CREATE_MIGRATIONS_TABLE),
        );
        plan.records = records_sql(snap);
        plan.close = plan_close;
        let sent = tx::send(conn, &dialect, &plan, false).map_err(|failed| {
            let e = failed.classify(|e| {
                refusal(snap, &db_message(&e)).unwrap_or_else(|| classify_migrate_error(tenant, e))
            });
            // Sent statement by statement, the failure comes classified already.
            match &e {
                Error::TenantMigration { source, .. } => {
                    refusal(snap, source.message()).unwrap_or(e)
                }
                _ => e,
            }
        });
        if let (Err(_), Some(state)) = (&sent, before.state) {
            // The transaction rolled back: the tenant is as it was but for its state.
            let _ = self.registry.set_lifecycle_state(conn, tenant, state);
        }
        sent?;
        self.back_to_node(conn, tenant, &before)
    }

    /// On Citus, after the restore's commit: moves the tenant back to the node it was on when
    /// Citus placed the new schema elsewhere (`citus_schema_move` in `block_writes` mode: the
    /// tenant is not served yet, and needs no replica identity so), then gives it its state
    /// before and drops the comment. Nothing to do on PostgreSQL.
    fn back_to_node(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        before: &Before,
    ) -> Result<()> {
        let Some(node) = &before.node else {
            return Ok(());
        };
        let t = tenant.quoted();
        let now = node_of(conn, &t)?;
        if now.as_ref().is_some_and(|now| now != node) {
            conn.batch_execute(&format!(
                "SELECT pg_catalog.citus_schema_move({}::pg_catalog.regnamespace, {}, {}, \
                 'block_writes')",
                quote_literal(&t),
                quote_literal(&node.host),
                node.port
            ))?;
        }
        if let Some(state) = before.pinned() {
            own(conn, |conn| {
                diesel::sql_query(format!("COMMENT ON SCHEMA {t} IS NULL")).execute(conn)
            })?;
            self.registry.set_lifecycle_state(conn, tenant, state)?;
        }
        Ok(())
    }

    /// Marks `tenant` `restoring` and returns its state before (`None` without a status
    /// column) and, on Citus, its node. Both are first written as a comment on the tenant's
    /// schema, so a restore interrupted after the mark (its process killed: its transaction
    /// rolled back, the tenant still `restoring`; on Citus, also after its commit, the comment
    /// then on the new schema) can be run again: it then reads them from the comment (`active`
    /// and the node now when there is none). A tenant that another restore holds (its lock
    /// taken) is refused.
    fn mark_restoring(
        &self,
        conn: &mut PgConnection,
        dialect: &Dialect,
        tenant: &TenantId,
    ) -> Result<Before> {
        let node = if dialect.distributes_schemas() {
            node_of(conn, &tenant.quoted())?
        } else {
            None
        };
        if self
            .registry
            .set_state_sql(tenant, LifecycleState::Active)
            .is_none()
        {
            // No status column: every registered tenant is served.
            return Ok(Before { state: None, node });
        }
        let Some(state) = self.registry.lifecycle_state(conn, tenant)? else {
            return Err(Error::TenantNotFound(tenant.clone()));
        };
        let schema = quote_literal(&tenant.quoted());
        if state == LifecycleState::Restoring {
            // Held by a restore in its transaction, or interrupted.
            let free = own(conn, |conn| {
                diesel::sql_query(format!(
                    "SELECT CASE WHEN pg_catalog.pg_try_advisory_lock({LOCK_KEY}, pg_catalog.hashtext({t})) \
                     THEN pg_catalog.pg_advisory_unlock({LOCK_KEY}, pg_catalog.hashtext({t})) END AS flag",
                    t = quote_literal(tenant.as_str()),
                ))
                .get_result::<Flag>(conn)
            })?
            .flag;
            if free != Some(true) {
                return Err(refused(tenant, "another restore of the tenant is running"));
            }
            let comment = own(conn, |conn| {
                diesel::sql_query(format!(
                    "SELECT pg_catalog.obj_description(pg_catalog.to_regnamespace({schema})::pg_catalog.oid, \
                     'pg_namespace') AS comment"
                ))
                .get_result::<Comment>(conn)
            })?
            .comment;
            let kept = comment
                .as_deref()
                .and_then(|c| c.strip_prefix(STATE_BEFORE));
            let (kept_state, kept_node) = match kept.map(|k| k.split_once(NODE_BEFORE)) {
                Some(Some((state, node))) => (Some(state), Node::parse(node)),
                Some(None) => (kept, None),
                None => (None, None),
            };
            let before = kept_state
                .and_then(|s| s.parse().ok())
                .filter(|s| *s != LifecycleState::Restoring)
                .unwrap_or(LifecycleState::Active);
            // A restore interrupted after its commit: the node it had not moved back to yet.
            return Ok(Before {
                state: Some(before),
                node: kept_node.filter(|_| node.is_some()).or(node),
            });
        }
        let before = Before {
            state: Some(state),
            node,
        };
        own(conn, |conn| {
            diesel::sql_query(format!(
                "COMMENT ON SCHEMA {} IS {}",
                tenant.quoted(),
                quote_literal(&before.comment(state))
            ))
            .execute(conn)
        })?;
        match self
            .registry
            .set_lifecycle_state(conn, tenant, LifecycleState::Restoring)?
        {
            // Marked by a restore that started meanwhile.
            LifecycleState::Restoring => {
                Err(refused(tenant, "another restore of the tenant is running"))
            }
            _ => Ok(before),
        }
    }

    /// The set's migrations of the snapshot's versions, in the set's order: every version must
    /// be in the set, and run in a transaction.
    fn migrations_of<'a>(&'a self, snap: &Snapshot) -> Result<Vec<&'a Compiled>> {
        for version in &snap.versions {
            match self.set.migrations.iter().find(|m| &m.version == version) {
                None => {
                    return Err(refused(
                        &snap.tenant,
                        &format!("version {version} is not in the migration set"),
                    ))
                }
                Some(m) if !m.in_tx => {
                    return Err(refused(
                        &snap.tenant,
                        &format!("version {version} runs outside a transaction"),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(self
            .set
            .migrations
            .iter()
            .filter(|m| snap.versions.contains(&m.version))
            .collect())
    }

    /// What the restore runs after the migrations: the rows, the sequences, the check, the
    /// state before (on Citus, the comment that keeps it and the node instead) and the tenant
    /// role's privileges. Ends in `; `.
    fn restore_close(&self, snap: &Snapshot, before: &Before) -> Result<String> {
        let tenant = &snap.tenant;
        let state = match before.pinned() {
            Some(state) => format!(
                "COMMENT ON SCHEMA {} IS {}; ",
                tenant.quoted(),
                quote_literal(&before.comment(state))
            ),
            None => (before.state)
                .and_then(|b| self.registry.set_state_sql(tenant, b))
                .map(|s| format!("{s}; "))
                .unwrap_or_default(),
        };
        let grants = match &self.tenant_roles {
            Some(roles) => format!("{}; ", roles.grants_sql(tenant)?),
            None => String::new(),
        };
        Ok(format!("{}{state}{grants}", copy_sql(snap)))
    }
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
    flag: Option<bool>,
}

/// The node holding the tables of the distributed schema `quoted` (its name as SQL spells
/// it), from Citus's metadata; `None` when it has none.
fn node_of(conn: &mut PgConnection, quoted: &str) -> Result<Option<Node>> {
    own(conn, |conn| {
        diesel::sql_query(format!(
            "SELECT n.nodename::pg_catalog.text AS host, n.nodeport AS port \
             FROM pg_catalog.pg_dist_schema d \
             JOIN pg_catalog.pg_dist_partition p ON p.colocationid OPERATOR(pg_catalog.=) d.colocationid \
             JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid OPERATOR(pg_catalog.=) p.logicalrelid \
             JOIN pg_catalog.pg_dist_placement pl ON pl.shardid OPERATOR(pg_catalog.=) s.shardid \
             JOIN pg_catalog.pg_dist_node n ON n.groupid OPERATOR(pg_catalog.=) pl.groupid \
             WHERE d.schemaid OPERATOR(pg_catalog.=) pg_catalog.to_regnamespace({}) \
               AND n.noderole OPERATOR(pg_catalog.=) 'primary' ORDER BY n.nodeid LIMIT 1",
            quote_literal(quoted)
        ))
        .get_result::<Node>(conn)
        .optional()
    })
    .map_err(Error::from)
}

/// [`Error::SnapshotRefused`] for `tenant`.
fn refused(tenant: &TenantId, reason: &str) -> Error {
    Error::SnapshotRefused {
        tenant: tenant.clone(),
        reason: reason.to_owned(),
    }
}

/// The refusal a server message raised by the restore's checks stands for.
fn refusal(snap: &Snapshot, message: &str) -> Option<Error> {
    if message.contains(MISMATCH) {
        Some(refused(
            &snap.tenant,
            &message.replace("workspace-diesel: ", ""),
        ))
    } else if message.contains(GONE) {
        Some(Error::SnapshotNotFound(snap.name.clone()))
    } else {
        None
    }
}

/// A `DO` block that fails unless the snapshot's record and schema are still there (read after
/// the tenant's lock, which a prune takes too). Ends in `; `.
fn gone_check(snap: &Snapshot) -> String {
    format!(
        "DO $wd_gone$ BEGIN IF NOT EXISTS (SELECT FROM {SNAPSHOTS_TABLE} \
         WHERE snapshot_name OPERATOR(pg_catalog.=) {name}) \
         OR pg_catalog.to_regnamespace(pg_catalog.quote_ident({name})) IS NULL THEN \
         RAISE EXCEPTION '{GONE}' USING ERRCODE = 'object_not_in_prerequisite_state'; \
         END IF; END $wd_gone$; ",
        name = quote_literal(&snap.name),
    )
}

/// The ledger and central record as the snapshot has them. Ends in `; `.
fn records_sql(snap: &Snapshot) -> String {
    let name = quote_literal(&snap.name);
    let lit = quote_literal(snap.tenant.as_str());
    format!(
        "DELETE FROM {CENTRAL_RECORD} WHERE schema_name OPERATOR(pg_catalog.=) {lit}; \
         INSERT INTO {t}.{LEDGER} (version, run_on) SELECT x.version, x.run_on \
         FROM {SNAPSHOTS_TABLE} s, pg_catalog.jsonb_to_recordset(s.ledger) \
           AS x(version pg_catalog.text, run_on pg_catalog.timestamp) \
         WHERE s.snapshot_name OPERATOR(pg_catalog.=) {name}; \
         INSERT INTO {CENTRAL_RECORD} (schema_name, version, run_on) SELECT {lit}, x.version, x.run_on \
         FROM {SNAPSHOTS_TABLE} s, pg_catalog.jsonb_to_recordset(s.central) \
           AS x(version pg_catalog.text, run_on pg_catalog.timestamptz) \
         WHERE s.snapshot_name OPERATOR(pg_catalog.=) {name}; ",
        t = snap.tenant.quoted(),
    )
}

/// A `DO` block that copies the snapshot's rows into the rebuilt tables, parents before
/// children (read from the rebuilt schema's foreign keys), the generated columns left to
/// compute; sets each sequence; then checks that the tables are the snapshot's and that each
/// one's row count and checksum are the snapshot's. Fails with [`MISMATCH`]. Ends in `; `.
fn copy_sql(snap: &Snapshot) -> String {
    let t = quote_literal(snap.tenant.as_str());
    let s = quote_literal(&snap.name);
    let ns = format!(
        "pg_catalog.to_regnamespace({})",
        quote_literal(&snap.tenant.quoted())
    );
    let rel = format!(
        "(SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) {ns} \
          AND c.relname OPERATOR(pg_catalog.=) r.rel)"
    );
    let check = format!(
        "FOR r IN SELECT e.key AS rel, e.value AS v FROM pg_catalog.jsonb_each(expected) e LOOP \
           EXECUTE pg_catalog.format({TABLE_SUM}, {t}, r.rel) INTO n, chk; \
           IF n OPERATOR(pg_catalog.<>) (r.v OPERATOR(pg_catalog.->>) 'rows')::pg_catalog.int8 \
              OR chk OPERATOR(pg_catalog.<>) (r.v OPERATOR(pg_catalog.->>) 'checksum') THEN \
             RAISE EXCEPTION '{MISMATCH}: table % has % rows (checksum %), the snapshot % (checksum %)', \
               r.rel, n, chk, r.v OPERATOR(pg_catalog.->>) 'rows', r.v OPERATOR(pg_catalog.->>) 'checksum' \
               USING ERRCODE = 'data_exception'; \
           END IF; \
         END LOOP; "
    );
    format!(
        "DO $wd_restore$ DECLARE r record; remaining pg_catalog.text[]; progress boolean; \
           cols pg_catalog.text; n pg_catalog.int8; chk pg_catalog.text; expected pg_catalog.jsonb; \
           seqs pg_catalog.jsonb; saved pg_catalog.text[]; \
         BEGIN \
         SELECT x.tables, x.sequences INTO expected, seqs FROM {SNAPSHOTS_TABLE} x \
           WHERE x.snapshot_name OPERATOR(pg_catalog.=) {s}; \
         remaining := ARRAY(SELECT c.relname::pg_catalog.text FROM pg_catalog.pg_class c \
           WHERE c.relnamespace OPERATOR(pg_catalog.=) {ns} AND c.relkind OPERATOR(pg_catalog.=) 'r' \
             AND c.relname OPERATOR(pg_catalog.<>) {ledger} ORDER BY c.relname::pg_catalog.text COLLATE \"C\"); \
         IF remaining IS DISTINCT FROM ARRAY(SELECT k FROM pg_catalog.jsonb_object_keys(expected) k \
             ORDER BY k COLLATE \"C\") THEN \
           RAISE EXCEPTION '{MISMATCH}: its migrations build the tables %, the snapshot has %', \
             remaining, ARRAY(SELECT pg_catalog.jsonb_object_keys(expected)) \
             USING ERRCODE = 'data_exception'; \
         END IF; \
         WHILE pg_catalog.cardinality(remaining) OPERATOR(pg_catalog.>) 0 LOOP \
           progress := false; \
           FOR r IN SELECT u AS rel FROM pg_catalog.unnest(remaining) u LOOP \
             CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_constraint k \
               JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) k.confrelid \
               WHERE k.contype OPERATOR(pg_catalog.=) 'f' AND k.conrelid OPERATOR(pg_catalog.=) {rel} \
                 AND k.confrelid OPERATOR(pg_catalog.<>) k.conrelid \
                 AND p.relnamespace OPERATOR(pg_catalog.=) {ns} \
                 AND p.relname::pg_catalog.text OPERATOR(pg_catalog.=) ANY (remaining)); \
             SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols \
               FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) {rel} \
                 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
                 AND a.attgenerated OPERATOR(pg_catalog.=) ''; \
             IF cols IS NOT NULL THEN \
               EXECUTE pg_catalog.format('INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %I.%I', \
                 {t}, r.rel, cols, cols, {s}, r.rel); \
             END IF; \
             remaining := pg_catalog.array_remove(remaining, r.rel); \
             progress := true; \
           END LOOP; \
           IF NOT progress THEN \
             RAISE EXCEPTION '{MISMATCH}: the tables % reference each other in a cycle', remaining \
               USING ERRCODE = 'data_exception'; \
           END IF; \
         END LOOP; \
         FOR r IN SELECT e.key AS rel, e.value AS v FROM pg_catalog.jsonb_each(seqs) e LOOP \
           IF pg_catalog.to_regclass(pg_catalog.format('%I.%I', {t}, r.rel)) IS NULL THEN \
             RAISE EXCEPTION '{MISMATCH}: its migrations build no sequence %', r.rel \
               USING ERRCODE = 'data_exception'; \
           END IF; \
           PERFORM pg_catalog.setval(pg_catalog.format('%I.%I', {t}, r.rel)::pg_catalog.regclass, \
             (r.v OPERATOR(pg_catalog.->>) 'last_value')::pg_catalog.int8, \
             (r.v OPERATOR(pg_catalog.->>) 'is_called')::boolean); \
         END LOOP; \
         {checked} \
         END $wd_restore$; ",
        ledger = quote_literal(LEDGER),
        checked = with_stable_text(&check),
    )
}
