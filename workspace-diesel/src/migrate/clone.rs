//! Cloning a tenant from a template tenant: the new tenant's schema a current warm spare
//! claimed, or built from the template's blueprint (`blueprint`: learned by the template's first
//! clone), or by the migration set as `create_tenant` provisions; the template's shape checked
//! against it, the template's ledger copied, and, with data, every row copied and every sequence
//! set where the template's stands; all in one tenant transaction sent as one batch, so the
//! clone appears complete or not at all.

use std::collections::{BTreeMap, BTreeSet};

use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{Nullable, Text};

use crate::dialect::Dialect;
use crate::error::engine_changed;
use crate::error::{Error, Result};
use crate::migrate::blueprint::{self, shape_check_sql, DIFFERS};
use crate::migrate::door::Op;
use crate::migrate::failure::{classify_create_error, db_message, unretryable};
use crate::migrate::migrator::Migrator;
use crate::migrate::set::Compiled;
use crate::migrate::tenants::Provision;
use crate::migrate::tx::{self, Claim, Failed, Opening, Plan};
use crate::options::CloneData;
use crate::sql::{
    array_literal, in_schema, own, quote_ident, quote_literal, tenant_lock, CENTRAL_RECORD, LEDGER,
};
use crate::tenant::TenantId;

/// Raised when the template's ledger is not the migration set's versions.
const NOT_CURRENT: &str = "workspace-diesel: clone template not current";
/// One row of the template's structure, read in one catalog query: a table (`t`: its name and
/// the columns a copy writes, not generated ones, quoted and joined), a foreign key (`f`: child
/// and parent) or a sequence (`s`: its name).
#[derive(QueryableByName)]
struct CatalogRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    other: Option<String>,
}

/// A foreign key between two tables of a schema, child to parent (also read by the export).
#[derive(QueryableByName)]
pub(crate) struct Edge {
    #[diesel(sql_type = Text)]
    pub(crate) child: String,
    #[diesel(sql_type = Text)]
    pub(crate) parent: String,
}

impl Migrator {
    /// Creates `tenant` as a copy of `template`, an existing tenant (a template per kind of
    /// tenant, kept current by the fleet runs like any other): the schema the migration set
    /// builds, the template's ledger (and central record), and with [`CloneData::WithData`]
    /// every row of the template's tables and every sequence set where the template's stands,
    /// so the next insert gets the next id. One transaction under both tenants' locks, reading
    /// the template as of one snapshot: the clone, its registry row included, appears complete
    /// or not at all, and the template is only read. On Citus the clone is a distributed schema
    /// like any tenant.
    ///
    /// The schema comes from a warm spare when one is free. Otherwise the template's first clone
    /// (on this migrator) replays the migrations and then learns the template's *blueprint*:
    /// its final schema as statements (each table created `LIKE` the template's, then its keys,
    /// indexes and foreign keys). The next clones of that template run the blueprint instead of
    /// the history, which is faster when the history rewrote tables or replaced indexes (see
    /// the cost section of `docs/mobility.md`). Whichever way, the clone commits only if its
    /// schema (every relation, column, default, constraint, index and sequence, and the count of
    /// any other object) is the template's, and the template's is what the migrations built:
    /// anything else rolls back. A template holding what a blueprint does not rebuild (a
    /// function, a trigger, a policy, a comment, a grant) is always cloned by its migrations, as
    /// is a schema-only clone of a set whose migrations write rows; so is every clone on Citus
    /// and with [`TenantRoles`](crate::TenantRoles).
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{CloneData, Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// // One migrator for the process (it keeps what its clones learn), built at start-up.
    /// # fn start() -> diesel_workspace::Result<Migrator> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// # Ok(migrator)
    /// # }
    /// # fn sign_up(migrator: &Migrator, conn: &mut PgConnection, plan: &str, name: &str) -> diesel_workspace::Result<()> {
    /// // One template per kind of tenant, holding its seed data.
    /// let template = TenantId::new(format!("template_{plan}"))?;
    /// migrator.clone_tenant(conn, &template, &TenantId::new(name)?, CloneData::WithData)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::TenantNotFound`] when `template` is not registered;
    /// - [`Error::TenantExists`] when `tenant` is registered or its schema exists;
    /// - [`Error::CloneRefused`] when the template's ledger is not the migration set's versions
    ///   (migrate it first), its schema differs from what its migrations build (a table, a
    ///   column, a default, a constraint, an index or a sequence changed by hand), its tables
    ///   reference each other in a cycle, or the set has migrations that run outside a
    ///   transaction;
    /// - [`Error::TenantMigration`] when a migration fails on the new schema.
    pub fn clone_tenant(
        &self,
        conn: &mut PgConnection,
        template: &TenantId,
        tenant: &TenantId,
        data: CloneData,
    ) -> Result<()> {
        let span = crate::trace::op_span!("tenant.clone", tenant = %tenant, template = %template);
        let _span = self.enter(conn, span, Op::NewTenant(tenant))?;
        let cloned = self.clone_entered(conn, template, tenant, data);
        // A template dropped or renamed meanwhile is reported as such.
        let cloned = self.or_gone(conn, template, cloned);
        crate::trace::finish(cloned)
    }

    fn clone_entered(
        &self,
        conn: &mut PgConnection,
        template: &TenantId,
        tenant: &TenantId,
        data: CloneData,
    ) -> Result<()> {
        self.admit(conn, template)?;
        if template == tenant {
            return Err(Error::TenantExists(tenant.clone()));
        }
        let in_tx: Vec<&Compiled> = self.set.migrations.iter().take_while(|m| m.in_tx).collect();
        if in_tx.len() < self.set.migrations.len() {
            return Err(refused(
                template,
                "the migration set has migrations that run outside a transaction",
            ));
        }
        // Rows the migrations wrote (reference data) are the template's to give: a clone built
        // by them (or a claimed spare) is emptied before the copy.
        let writes_rows = self.set.writes_rows;
        let copy = match data {
            CloneData::WithData => own(conn, |conn| copy_sql(conn, template, tenant, writes_rows))?,
            CloneData::SchemaOnly => String::new(),
        };
        let role = match &self.tenant_roles {
            Some(roles) => format!("{}; ", roles.create_sql(tenant)?),
            None => String::new(),
        };
        // A blueprint is used only without tenant roles (each clone grants its own role), and
        // for a schema-only clone only when the migrations write no rows (it holds no rows).
        let fit = self.tenant_roles.is_none() && (data == CloneData::WithData || !writes_rows);
        let known = if fit {
            self.blueprints.get(template)
        } else {
            Some(None)
        };
        let opening = Opening {
            provisioning: true,
            one_snapshot: true,
            ..self.opening()
        };
        // A current warm spare, when there is one, is claimed (renamed to the clone, with no
        // table DDL); otherwise the schema is built from the template's blueprint when one is
        // known, or else by the migrations. Every way, the closing statements check the
        // template and the clone's shape and copy the rows.
        let claim_sql = |tag: &str, otherwise: &str| self.claim_sql(tenant, tag, otherwise, true);
        let claimed =
            |conn: &mut PgConnection| -> Result<bool> { Ok(self.registry.contains(conn, tenant)?) };
        let close = |expected: Option<&str>| {
            format!(
                "{}{}{}{copy}{role}",
                self.template_check_sql(template),
                ledger_sql(template, tenant),
                shape_check_sql(template, tenant, expected)
            )
        };
        // Either plan: the migrations' steps (none for a blueprint), the claim, the library's
        // rows and the clone's central record rows, then `close`.
        let plan_of = |replay: bool, close: String| {
            let steps = if replay { &in_tx[..] } else { &[] };
            let mut plan = Plan::new(tenant, opening).apply(steps, false);
            plan.claim = Some(Claim {
                sql: &claim_sql,
                claimed: &claimed,
            });
            plan.create = self.create_sql(tenant, Provision::Tenant);
            plan.records = central_sql(template, tenant);
            plan.close = close;
            plan
        };
        let mut plan = plan_of(true, close(None));
        let learnable = self.with_dialect(conn, |conn, dialect| {
            // Blueprints are PostgreSQL's: on Citus the migrations build every clone.
            let plain = dialect.citus().is_none();
            if let (Some(Some(blueprint)), true) = (&known, plain) {
                let mut built = plan_of(false, close(Some(&blueprint.fingerprint)));
                built
                    .create
                    .push_str(&in_schema(&tenant.quoted(), &blueprint.ddl));
                match self.send_clone(conn, dialect, &mut built, template, tenant, false) {
                    Ok(()) => return Ok(false),
                    // Anything but a refusal that replaying would meet too: the blueprint is
                    // forgotten, and the migrations build the clone (and tell what differs).
                    Err(Failed::Batch(e))
                        if !unretryable(&e)
                            && engine_changed(&e).is_none()
                            && !self.is_tenant_exists(tenant, &e)
                            && !db_message(&e).contains(NOT_CURRENT) =>
                    {
                        tracing::debug!(template = %template, error = %e, "clone: blueprint not used");
                        self.blueprints.forget(template);
                    }
                    Err(failed) => return Err(self.clone_error(template, tenant, failed)),
                }
            }
            self.send_clone(conn, dialect, &mut plan, template, tenant, true)
                .map_err(|failed| self.clone_error(template, tenant, failed))?;
            Ok(plain)
        })?;
        if learnable && fit && known.is_none() {
            // Learned once, for the clones of this template to come; a failure to learn leaves
            // them replaying the migrations.
            match blueprint::learn(conn, template, tenant) {
                Ok(blueprint) => self.blueprints.put(template, blueprint),
                Err(e) => tracing::debug!(template = %template, error = %e, "clone: no blueprint"),
            }
        }
        Ok(())
    }

    /// Sends a clone's `plan`, again after a serialization failure (a spare claimed
    /// concurrently) and, with `rewrap`, once more with each migration wrapped so that a failure
    /// names it.
    fn send_clone(
        &self,
        conn: &mut PgConnection,
        dialect: &Dialect,
        plan: &mut Plan<'_>,
        template: &TenantId,
        tenant: &TenantId,
        rewrap: bool,
    ) -> std::result::Result<(), Failed> {
        let mut conflicts = 0;
        loop {
            match tx::send(conn, dialect, plan, false) {
                Ok(()) => return Ok(()),
                // A spare claimed by a concurrent creation after this transaction's snapshot:
                // the claim is tried again with a new one.
                Err(Failed::Batch(diesel::result::Error::DatabaseError(
                    DatabaseErrorKind::SerializationFailure,
                    _,
                ))) if conflicts < 3 => conflicts += 1,
                Err(Failed::Batch(e))
                    if rewrap
                        && !plan.wrapped
                        && !unretryable(&e)
                        && !self.is_tenant_exists(tenant, &e)
                        && refusal(template, &db_message(&e)).is_none() =>
                {
                    plan.wrapped = true;
                }
                Err(failed) => return Err(failed),
            }
        }
    }

    /// The error a failed clone reports.
    fn clone_error(&self, template: &TenantId, tenant: &TenantId, failed: Failed) -> Error {
        let e = failed.classify(|e| classify_create_error(tenant, e));
        classify_refusal(template, e)
    }

    /// The template's lock, then a `DO` block that fails unless the template's ledger holds
    /// exactly the migration set's versions. Ends in `; `.
    fn template_check_sql(&self, template: &TenantId) -> String {
        let mut versions = self.set.versions.clone();
        versions.sort();
        let ledger = format!("{}.{LEDGER}", template.quoted());
        format!(
            "{lock}; DO $wd_template$ BEGIN \
             IF pg_catalog.to_regclass({ledger_lit}) IS NULL THEN \
               RAISE EXCEPTION '{NOT_CURRENT}' USING ERRCODE = 'object_not_in_prerequisite_state'; \
             END IF; \
             IF (SELECT pg_catalog.array_agg(version::pg_catalog.text ORDER BY version::pg_catalog.text COLLATE \"C\") \
                 FROM {ledger}) IS DISTINCT FROM {versions}::pg_catalog.text[] THEN \
               RAISE EXCEPTION '{NOT_CURRENT}' USING ERRCODE = 'object_not_in_prerequisite_state'; \
             END IF; END $wd_template$; ",
            lock = tenant_lock(template.as_str()),
            ledger_lit = quote_literal(&ledger),
            versions = quote_literal(&array_literal(&versions)),
        )
    }
}

/// [`Error::CloneRefused`] for `template`.
fn refused(template: &TenantId, reason: &str) -> Error {
    Error::CloneRefused {
        template: template.clone(),
        reason: reason.to_owned(),
    }
}

/// The refusal a server message raised by the clone's checks stands for.
fn refusal(template: &TenantId, message: &str) -> Option<Error> {
    if message.contains(NOT_CURRENT) {
        Some(refused(
            template,
            "its ledger is not the migration set's versions (migrate it first)",
        ))
    } else if message.contains(DIFFERS) {
        Some(refused(
            template,
            "its tables differ from the ones its migrations build (changed by hand?)",
        ))
    } else {
        None
    }
}

/// `e`, or the refusal it carries.
fn classify_refusal(template: &TenantId, e: Error) -> Error {
    let message = match &e {
        Error::Query(q) => db_message(q),
        Error::TenantMigration { source, .. } => source.message().to_owned(),
        _ => return e,
    };
    refusal(template, &message).unwrap_or(e)
}

/// The clone's central record rows, as the template's ledger lists them. Ends in `; `.
fn central_sql(template: &TenantId, tenant: &TenantId) -> String {
    format!(
        "INSERT INTO {CENTRAL_RECORD} (schema_name, version) \
         SELECT {lit}, version FROM {f}.{LEDGER} ON CONFLICT DO NOTHING; ",
        f = template.quoted(),
        lit = quote_literal(tenant.as_str()),
    )
}

/// The clone's ledger made the template's (`run_on` included): emptied (a claimed spare's
/// ledger holds its own rows) and filled from the template's. Ends in `; `.
fn ledger_sql(template: &TenantId, tenant: &TenantId) -> String {
    format!(
        "DELETE FROM {t}.{LEDGER}; \
         INSERT INTO {t}.{LEDGER} (version, run_on) SELECT version, run_on FROM {f}.{LEDGER}; ",
        t = tenant.quoted(),
        f = template.quoted(),
    )
}

/// The statements that copy the template's rows into the clone, parents before children (by
/// their foreign keys), then set each sequence where the template's stands. The template's
/// tables, foreign keys and sequences are read in one catalog query, under the library's own
/// path. With `empty_first`, the clone's tables are emptied first (in one `TRUNCATE`). Ends in
/// `; ` (empty when there is nothing to copy).
fn copy_sql(
    conn: &mut PgConnection,
    template: &TenantId,
    tenant: &TenantId,
    empty_first: bool,
) -> Result<String> {
    // The schema's relations are found once (through their dependency on the schema, by
    // `pg_depend`'s index: no scan of `pg_class`, which grows with the fleet) and the tables,
    // foreign keys and sequences drawn from them.
    let rows: Vec<CatalogRow> = diesel::sql_query(format!(
        "WITH {cte} \
         SELECT 't' AS kind, r.relname::pg_catalog.text AS name, \
         (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) \
          FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS other \
         FROM rel r WHERE r.relkind IN ('r', 'p') AND r.relname <> {ledger} \
         UNION ALL \
         SELECT 'f', r.relname::pg_catalog.text, p.relname::pg_catalog.text \
         FROM rel r JOIN pg_catalog.pg_constraint k ON k.conrelid = r.oid AND k.contype = 'f' \
         JOIN rel p ON p.oid = k.confrelid WHERE r.oid <> p.oid \
         UNION ALL \
         SELECT 's', r.relname::pg_catalog.text, NULL FROM rel r WHERE r.relkind = 'S'",
        cte = blueprint::relations_cte(template, true),
        ledger = quote_literal(LEDGER),
    ))
    .load(conn)?;
    let mut columns = BTreeMap::new();
    let mut edges = Vec::new();
    let mut sequences = Vec::new();
    for row in rows {
        match (row.kind.as_str(), row.other) {
            ("t", Some(cols)) => {
                columns.insert(row.name, cols);
            }
            ("f", Some(parent)) => edges.push(Edge {
                child: row.name,
                parent,
            }),
            ("s", _) => sequences.push(row.name),
            _ => {}
        }
    }
    sequences.sort();
    let order = parents_first(&columns.keys().cloned().collect(), &edges)
        .ok_or_else(|| refused(template, "its tables reference each other in a cycle"))?;
    let (f, t) = (template.quoted(), tenant.quoted());
    let mut sql = String::new();
    if empty_first && !order.is_empty() {
        let tables: Vec<String> = order
            .iter()
            .map(|table| format!("{t}.{}", quote_ident(table)))
            .collect();
        sql.push_str(&format!("TRUNCATE ONLY {}; ", tables.join(", ")));
    }
    for table in order {
        let table_q = quote_ident(&table);
        let cols = &columns[&table];
        sql.push_str(&format!(
            "INSERT INTO {t}.{table_q} ({cols}) OVERRIDING SYSTEM VALUE \
             SELECT {cols} FROM ONLY {f}.{table_q}; "
        ));
    }
    for seq in sequences {
        let seq_q = quote_ident(&seq);
        sql.push_str(&format!(
            "SELECT pg_catalog.setval({}::pg_catalog.regclass, s.last_value, s.is_called) \
             FROM {f}.{seq_q} s; ",
            quote_literal(&format!("{t}.{seq_q}"))
        ));
    }
    Ok(sql)
}

/// `tables` ordered so that every table comes after the tables it references (`edges`, child
/// to parent), ties by name; `None` when they reference each other in a cycle.
pub(crate) fn parents_first(tables: &BTreeSet<String>, edges: &[Edge]) -> Option<Vec<String>> {
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = tables
        .iter()
        .map(|t| (t.as_str(), BTreeSet::new()))
        .collect();
    for e in edges {
        if tables.contains(&e.parent) {
            if let Some(p) = parents.get_mut(e.child.as_str()) {
                p.insert(e.parent.as_str());
            }
        }
    }
    let mut order = Vec::with_capacity(tables.len());
    while !parents.is_empty() {
        let ready: Vec<&str> = parents
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(t, _)| *t)
            .collect();
        if ready.is_empty() {
            return None;
        }
        for t in ready {
            parents.remove(t);
            for p in parents.values_mut() {
                p.remove(t);
            }
            order.push(t.to_owned());
        }
    }
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(child: &str, parent: &str) -> Edge {
        Edge {
            child: child.to_owned(),
            parent: parent.to_owned(),
        }
    }

    #[test]
    fn parents_come_first_and_cycles_are_refused() {
        let tables: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let order = parents_first(&tables, &[edge("a", "c"), edge("c", "b")]).unwrap();
        assert_eq!(order, ["b", "c", "a"]);
        assert!(parents_first(&tables, &[edge("a", "b"), edge("b", "a")]).is_none());
    }
}
