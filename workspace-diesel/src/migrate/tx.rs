//! One tenant transaction: a [`Plan`] (how it opens, the rows it creates, its records, its steps,
//! how it closes), built by apply, revert and provisioning alike, and sent by [`send`]: one batch
//! on PostgreSQL, statement by statement when the dialect asks for it ([`split`]). [`send`],
//! [`begin`] and [`send_outside`] (the `run_in_transaction = false` path) are the only places
//! that ask the dialect whether to split: the engine builds plans and never branches on the
//! engine.
//!
//! The library's own SQL runs under its own path ([`BEGIN`] opens with it); each step (a
//! migration's `up.sql` or `down.sql`) runs with the tenant alone on the path.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::connection::rollback;
use crate::dialect::Dialect;
use crate::error::{engine_changed, Error, Result};
use crate::migrate::failure::{
    classify_migrate_error, dollar_tags, raise_if_schema_missing, wrap, SCHEMA_MISSING,
};
use crate::migrate::migrator::Migrator;
use crate::migrate::set::Compiled;
use crate::migrate::split::{self, Step};
#[cfg(feature = "archive")]
use crate::sql::OWN_PATH;
use crate::sql::{
    in_schema, quote_literal, tenant_lock, BEGIN, CENTRAL_RECORD, LEDGER, SPARES_TABLE,
};
use crate::statements::split_statements;
use crate::tenant::TenantId;

/// How a tenant transaction opens, after [`BEGIN`] and the tenant's lock (always first). Made
/// by [`Migrator::opening`] only (no `Default`): the role reset comes from the migrator's
/// pooler, in one place, for every site.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opening {
    /// In pooler mode: the role put back to the login's for the transaction (`SET LOCAL ROLE
    /// NONE`, in the opening batch), so that a session `SET ROLE` another client left on the
    /// shared server connection neither owns what the transaction creates nor lends it its
    /// privileges. Off in direct mode: a role the caller set on purpose is kept.
    pub(crate) reset_role: bool,
    /// `SET LOCAL lock_timeout` for the DDL (apply, revert).
    pub(crate) lock_timeout: Option<Duration>,
    /// The schema check (it must exist; for a spare, its row free): fails with
    /// [`Error::SchemaMissing`] otherwise.
    pub(crate) check: Option<Check>,
    /// The dialect's provisioning settings (on Citus, schema-based sharding).
    pub(crate) provisioning: bool,
    /// `REPEATABLE READ`: every statement reads one snapshot (a clone copies its template's
    /// tables as of one moment).
    pub(crate) one_snapshot: bool,
}

impl Migrator {
    /// The [`Opening`] every tenant transaction of this migrator starts from: nothing asked for
    /// but, in pooler mode, the role reset. Sites set the fields they need and take the rest
    /// from here (`..self.opening()`).
    pub(crate) fn opening(&self) -> Opening {
        Opening {
            reset_role: self.pooler().is_transaction(),
            lock_timeout: None,
            check: None,
            provisioning: false,
            one_snapshot: false,
        }
    }
}

/// The schema check of an [`Opening`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check {
    /// The schema is a spare: its `workspace_spares` row is locked too (skipped when a claim
    /// holds it), and a schema that is no spare any more counts as missing.
    pub(crate) spare: bool,
    /// Diesel's ledger is created when it is missing.
    pub(crate) create_ledger: bool,
}

/// A claim of a warm spare tried before provisioning (see `Migrator::create_tenant`).
pub(crate) struct Claim<'a> {
    /// The `DO` block (its dollar tag, what it runs when no spare is free) that claims one.
    pub(crate) sql: &'a dyn Fn(&str, &str) -> String,
    /// Whether the claim went through, read inside the transaction (the tenant is registered).
    pub(crate) claimed: &'a dyn Fn(&mut PgConnection) -> Result<bool>,
}

/// A tenant transaction, planned.
pub(crate) struct Plan<'a> {
    pub(crate) schema: &'a TenantId,
    pub(crate) opening: Opening,
    /// Tried first; when it claims a spare, nothing below but `close` runs.
    pub(crate) claim: Option<Claim<'a>>,
    /// The library's rows before the steps (provisioning: the registry or spares row, the
    /// schema, the ledger), ending in `; `.
    pub(crate) create: String,
    /// The ledger and central record rows, ending in `; `: before the steps in one batch when
    /// `records_first` (a version recorded meanwhile fails on the ledger's key before any DDL),
    /// after them otherwise; after them, in the closing batch, statement by statement.
    pub(crate) records: String,
    pub(crate) records_first: bool,
    /// The library's commands after `create` and before the steps (a snapshot's), each sent
    /// alone where the dialect sends statement by statement; no trailing `;`.
    pub(crate) before_steps: Vec<String>,
    /// The migrations' SQL, in order.
    pub(crate) steps: Vec<Step<'a>>,
    /// In one batch, each step wrapped so that a failure names its version and SQLSTATE.
    pub(crate) wrapped: bool,
    /// The library's SQL before `COMMIT` (a tenant role), ending in `; `.
    pub(crate) close: String,
}

/// How a [`send`] failed; the transaction is rolled back.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The one batch failed: the server's error, for the caller to classify.
    Batch(diesel::result::Error),
    /// A transaction sent statement by statement failed, already classified.
    Classified(Error),
}

impl Failed {
    /// The error, a batch's classified by `classify`.
    pub(crate) fn classify(self, classify: impl FnOnce(diesel::result::Error) -> Error) -> Error {
        match self {
            Failed::Batch(e) if engine_changed(&e).is_some() => e.into(),
            Failed::Batch(e) => classify(e),
            Failed::Classified(e) => e,
        }
    }
}

impl<'a> Plan<'a> {
    /// A plan that opens `schema`'s transaction as `opening` says, with nothing in it yet.
    pub(crate) fn new(schema: &'a TenantId, opening: Opening) -> Self {
        Self {
            schema,
            opening,
            claim: None,
            create: String::new(),
            records: String::new(),
            records_first: true,
            before_steps: Vec::new(),
            steps: Vec::new(),
            wrapped: false,
            close: String::new(),
        }
    }

    /// Applies `migrations`: their records first, then their `up.sql`.
    pub(crate) fn apply(mut self, migrations: &[&'a Compiled], wrapped: bool) -> Self {
        self.records = records(self.schema, migrations);
        self.records_first = true;
        self.steps = migrations
            .iter()
            .map(|m| Step::new(&m.version, &m.up))
            .collect();
        self.wrapped = wrapped;
        self
    }

    /// The SQL that opens the transaction: [`BEGIN`], the role reset when asked for, the lock,
    /// the dialect's guard (the transaction fails with [`Error::EngineChanged`] on another
    /// engine), then what `opening` asks for.
    /// The ledger, when created, is created inside the check's `DO` block in one batch, and as
    /// a top-level `CREATE TABLE IF NOT EXISTS` statement by statement (a table created inside
    /// `DO` would stay local on Citus).
    fn open_sql(&self, dialect: &Dialect) -> String {
        let schema = self.schema;
        let mut sql = format!("{BEGIN}; ");
        if self.opening.one_snapshot {
            sql.push_str("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; ");
        }
        if self.opening.reset_role {
            sql.push_str("SET LOCAL ROLE NONE; ");
        }
        sql.push_str(&format!(
            "{}; {}; ",
            tenant_lock(schema.as_str()),
            dialect.guard()
        ));
        if let Some(timeout) = self.opening.lock_timeout {
            sql.push_str(&format!(
                "SET LOCAL lock_timeout = '{}ms'; ",
                timeout.as_millis()
            ));
        }
        if self.opening.provisioning {
            sql.push_str(dialect.provisioning_settings());
        }
        let Some(check) = self.opening.check else {
            return sql;
        };
        let ledger = format!("{}.{LEDGER}", schema.quoted());
        let columns = "(version VARCHAR(50) PRIMARY KEY NOT NULL, \
                       run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)";
        let (inside, after) = match (check.create_ledger, dialect.splits_statements()) {
            (false, _) => (String::new(), String::new()),
            (true, false) => (
                format!(
                    "IF pg_catalog.to_regclass({}) IS NULL THEN CREATE TABLE {ledger} {columns}; END IF; ",
                    quote_literal(&ledger)
                ),
                String::new(),
            ),
            (true, true) => (
                String::new(),
                format!("; CREATE TABLE IF NOT EXISTS {ledger} {columns}"),
            ),
        };
        let spare = if check.spare {
            // A claim holds the row (or has deleted it): not ours to upgrade any more.
            format!(
                "PERFORM FROM {SPARES_TABLE} WHERE schema_name = {} FOR UPDATE SKIP LOCKED; \
                 IF NOT FOUND THEN RAISE EXCEPTION '{SCHEMA_MISSING}' USING ERRCODE = 'invalid_schema_name'; END IF; ",
                quote_literal(schema.as_str())
            )
        } else {
            String::new()
        };
        sql.push_str(&format!(
            "DO $wd_check$ BEGIN {spare}{} {inside}END $wd_check${after}",
            raise_if_schema_missing(schema),
        ));
        sql
    }

    /// Everything between the opening and `close` in one batch: the created rows, the records
    /// and the steps (each with the tenant alone on the path).
    fn body(&self) -> String {
        let mut sql = self.create.clone();
        for command in &self.before_steps {
            sql.push_str(command);
            sql.push_str("; ");
        }
        if self.records_first {
            sql.push_str(&self.records);
        }
        for step in &self.steps {
            let text = if self.wrapped {
                wrap(step.version, step.sql)
            } else {
                step.sql.to_owned()
            };
            sql.push_str(&in_schema(&self.schema.quoted(), &text));
        }
        if !self.records_first {
            sql.push_str(&self.records);
        }
        sql
    }
}

/// The whole of `plan` as the commands to send in order, its transaction left open (no
/// `COMMIT`: an import goes on with `COPY`); `None` with a claim. One batch on PostgreSQL;
/// where the dialect sends statement by statement, what [`send`] sends there: the opening with
/// the created rows, each of `before_steps`, the tenant alone on the path, each statement of the steps as a command of
/// its own, then the records and `close` under the library's path and the dialect's
/// distribution check.
///
/// # Errors
/// [`Error::TenantMigration`] naming a step whose SQL cannot be split.
#[cfg(feature = "archive")]
pub(crate) fn commands(dialect: &Dialect, plan: &Plan<'_>) -> Result<Option<Vec<String>>> {
    if plan.claim.is_some() {
        return Ok(None);
    }
    if !dialect.splits_statements() {
        return Ok(Some(vec![format!(
            "{}{}{}",
            plan.open_sql(dialect),
            plan.body(),
            plan.close
        )]));
    }
    let mut commands = vec![format!("{}{}", plan.open_sql(dialect), plan.create)];
    commands.extend(plan.before_steps.iter().cloned());
    if !plan.steps.is_empty() {
        commands.push(split::tenant_path(plan.schema));
    }
    for step in &plan.steps {
        commands.extend(
            split::statements(plan.schema, step)?
                .into_iter()
                .map(|s| s.sql.to_owned()),
        );
    }
    let check = dialect
        .distribution_check(plan.schema)
        .map(|c| format!("{c}; "))
        .unwrap_or_default();
    commands.push(format!("{OWN_PATH}; {}{}{check}", plan.records, plan.close));
    Ok(Some(commands))
}

/// The ledger and central record rows of `migrations` (nothing when empty), ending in `; `.
pub(crate) fn records(schema: &TenantId, migrations: &[&Compiled]) -> String {
    if migrations.is_empty() {
        return String::new();
    }
    let lit = quote_literal(schema.as_str());
    let versions: Vec<String> = migrations
        .iter()
        .map(|m| quote_literal(&m.version))
        .collect();
    let central: Vec<String> = versions.iter().map(|v| format!("({lit}, {v})")).collect();
    format!(
        "INSERT INTO {}.{LEDGER} (version) VALUES ({}); \
         INSERT INTO {CENTRAL_RECORD} (schema_name, version) VALUES {} ON CONFLICT DO NOTHING; ",
        schema.quoted(),
        versions.join("), ("),
        central.join(", ")
    )
}

/// Opens `plan`'s transaction and reads the tenant's ledger after the lock. The transaction
/// stays open on success and is rolled back on failure.
pub(crate) fn begin(
    conn: &mut PgConnection,
    dialect: &Dialect,
    plan: &Plan<'_>,
) -> Result<Vec<String>> {
    let open = plan.open_sql(dialect);
    if let Err(e) = conn.batch_execute(&open) {
        rollback(conn);
        return Err(classify_migrate_error(plan.schema, e));
    }
    read_ledger(conn, plan.schema).map_err(|e| {
        rollback(conn);
        e.into()
    })
}

/// Sends `plan` (after [`begin`] when `opened`) and commits. One batch on PostgreSQL: the
/// opening, the claim (which runs the rest through `EXECUTE` when no spare is free), the body,
/// `close`, `COMMIT`. Statement by statement where the dialect asks ([`split::run`]): the
/// opening (and the claim, then the created rows), each of `before_steps` alone, each statement
/// of the steps as a command of its own, then the records, `close`, the dialect's distribution
/// check and `COMMIT`.
pub(crate) fn send(
    conn: &mut PgConnection,
    dialect: &Dialect,
    plan: &Plan<'_>,
    opened: bool,
) -> std::result::Result<(), Failed> {
    if dialect.splits_statements() {
        return send_split(conn, dialect, plan, opened).map_err(Failed::Classified);
    }
    let mut sql = if opened {
        String::new()
    } else {
        plan.open_sql(dialect)
    };
    let body = plan.body();
    match &plan.claim {
        Some(claim) => {
            let [inner, outer] = dollar_tags(["wd_p", "wd_claim"], &body);
            sql.push_str(&(claim.sql)(
                &outer,
                &format!("EXECUTE {inner}{body}{inner};"),
            ));
            sql.push_str("; ");
        }
        None => sql.push_str(&body),
    }
    sql.push_str(&plan.close);
    sql.push_str("COMMIT");
    conn.batch_execute(&sql).map_err(|e| {
        rollback(conn);
        Failed::Batch(e)
    })
}

/// [`send`] statement by statement.
fn send_split(
    conn: &mut PgConnection,
    dialect: &Dialect,
    plan: &Plan<'_>,
    opened: bool,
) -> Result<()> {
    let schema = plan.schema;
    let check = dialect
        .distribution_check(schema)
        .map(|c| format!("{c}; "))
        .unwrap_or_default();
    let mut open = plan.open_sql(dialect);
    if !opened {
        let fail = |conn: &mut PgConnection, e| {
            rollback(conn);
            Err(crate::migrate::failure::classify_create_error(schema, e))
        };
        if let Some(claim) = &plan.claim {
            open.push_str(&(claim.sql)("$wd_claim$", "NULL;"));
            if let Err(e) = conn.batch_execute(&open) {
                return fail(conn, e);
            }
            match (claim.claimed)(conn) {
                Ok(true) => {
                    // The claim registered the tenant: the renamed spare is the tenant.
                    if let Err(e) = conn.batch_execute(&format!("{}{check}COMMIT", plan.close)) {
                        rollback(conn);
                        return Err(split::close_error(conn, dialect, schema, e));
                    }
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    rollback(conn);
                    return Err(e);
                }
            }
            open.push_str("; ");
            if !plan.create.is_empty() {
                if let Err(e) = conn.batch_execute(&plan.create) {
                    return fail(conn, e);
                }
            }
        } else if let Err(e) = conn.batch_execute(&format!("{open}{}", plan.create)) {
            return if plan.create.is_empty() {
                rollback(conn);
                Err(classify_migrate_error(schema, e))
            } else {
                fail(conn, e)
            };
        }
        open.push_str(&plan.create);
    }
    for command in &plan.before_steps {
        if let Err(e) = conn.batch_execute(command) {
            rollback(conn);
            return Err(split::close_error(conn, dialect, schema, e));
        }
    }
    let mut statements = Vec::new();
    for step in &plan.steps {
        match split::statements(schema, step) {
            Ok(s) => statements.extend(s),
            Err(e) => {
                rollback(conn);
                return Err(e);
            }
        }
    }
    let close = format!("{}{}{check}COMMIT", plan.records, plan.close);
    split::run(conn, dialect, schema, &open, &statements, &close)
}

/// Sends `sql`, a `run_in_transaction = false` migration, outside any transaction: as one batch
/// on PostgreSQL, statement by statement where the dialect asks.
pub(crate) fn send_outside(
    conn: &mut PgConnection,
    dialect: &Dialect,
    sql: &str,
) -> diesel::QueryResult<()> {
    if !dialect.splits_statements() {
        return conn.batch_execute(sql);
    }
    match split_statements(sql) {
        Ok(statements) => statements
            .iter()
            .try_for_each(|s| conn.batch_execute(s.sql())),
        Err(e) => Err(diesel::result::Error::QueryBuilderError(Box::new(e))),
    }
}

/// Reads the tenant's ledger (its own `__diesel_schema_migrations`).
pub(crate) fn read_ledger(conn: &mut PgConnection, schema: &TenantId) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct VersionRow {
        #[diesel(sql_type = Text)]
        version: String,
    }
    Ok(diesel::sql_query(format!(
        "SELECT version::pg_catalog.text AS version FROM {}.{LEDGER} \
         ORDER BY version::pg_catalog.text COLLATE \"C\"",
        schema.quoted()
    ))
    .load::<VersionRow>(conn)?
    .into_iter()
    .map(|r| r.version)
    .collect())
}
