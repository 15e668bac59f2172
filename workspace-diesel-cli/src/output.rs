//! The JSON documents of `--format json`: one per command run, on stdout (an error's on
//! stderr). Each carries `"format": FORMAT`, the version of these documents. Their fields are
//! part of the tool's interface (documented in the CLI's reference); fields are added without a
//! new version, and a renamed or removed field would bump it.

use diesel_workspace::{MigrationReport, TenantId, TenantOutcome};
use serde::Serialize;

mod plan;
mod snapshot;
pub(crate) use plan::*;
pub(crate) use snapshot::*;

/// The version of the JSON documents, their `format` field.
pub(crate) const FORMAT: u32 = 1;

/// A document with its `format` field first.
#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    format: u32,
    #[serde(flatten)]
    doc: &'a T,
}

/// `doc` as one line of JSON, with its `format` field.
pub(crate) fn to_line<T: Serialize>(doc: &T) -> serde_json::Result<String> {
    serde_json::to_string(&Versioned {
        format: FORMAT,
        doc,
    })
}

/// Writes `doc` as one line of JSON on stdout.
pub(crate) fn print<T: Serialize>(doc: &T) -> anyhow::Result<()> {
    use std::io::Write as _;
    // Serialised first, so that a closed stdout is a plain I/O error (ended quietly by `main`).
    let text = to_line(doc)?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Writes the document of a command with no report of its own: `{"command", "ok": true}` and
/// the fields of `fields` (a JSON object).
pub(crate) fn done(command: &str, fields: serde_json::Value) -> anyhow::Result<()> {
    let mut doc = serde_json::json!({"command": command, "ok": true});
    if let (Some(doc), serde_json::Value::Object(fields)) = (doc.as_object_mut(), fields) {
        doc.extend(fields);
    }
    print(&doc)
}

/// One tenant's migration state (`list_tenants`, `status`, `pending`).
#[derive(Debug, Serialize)]
pub(crate) struct Tenant {
    /// The tenant's identifier (its schema name).
    pub(crate) tenant: String,
    /// The versions in the central record, in order.
    pub(crate) applied: Vec<String>,
    /// The versions not applied yet; `null` when unknown (no tenant migrations directory).
    pub(crate) pending: Option<Vec<String>>,
    /// How the tenant's own ledger disagrees with the central record, if it does.
    pub(crate) drift: Option<String>,
    /// `up_to_date`, `pending`, `drifted` or `unknown` (pending unknown, no drift).
    pub(crate) state: &'static str,
}

impl Tenant {
    /// From the library's status; `known` is false when the pending list means nothing.
    pub(crate) fn from_status(s: &diesel_workspace::TenantMigrations, known: bool) -> Self {
        let state = if s.drift.is_some() {
            "drifted"
        } else if !known {
            "unknown"
        } else if s.pending.is_empty() {
            "up_to_date"
        } else {
            "pending"
        };
        Self {
            tenant: s.tenant.to_string(),
            applied: s.applied.clone(),
            pending: known.then(|| s.pending.clone()),
            drift: s.drift.clone(),
            state,
        }
    }
}

/// `list_tenants` and `pending`.
#[derive(Debug, Serialize)]
pub(crate) struct TenantList {
    pub(crate) tenants: Vec<Tenant>,
}

/// `migration list`: every migration with where it is applied.
#[derive(Debug, Serialize)]
pub(crate) struct MigrationList {
    pub(crate) command: &'static str,
    /// The shared migrations, in order.
    pub(crate) shared: Vec<SharedMigration>,
    /// The tenant migrations, in order.
    pub(crate) tenant: Vec<TenantMigration>,
    /// How many tenants were looked at.
    pub(crate) tenants: usize,
}

/// One shared migration of [`MigrationList`].
#[derive(Debug, Serialize)]
pub(crate) struct SharedMigration {
    pub(crate) version: String,
    pub(crate) applied: bool,
}

/// One tenant migration of [`MigrationList`].
#[derive(Debug, Serialize)]
pub(crate) struct TenantMigration {
    pub(crate) version: String,
    /// Its directory name (`<version>_<name>`).
    pub(crate) name: String,
    /// `applied` (every tenant), `partial` (some) or `pending` (none; also with no tenant).
    pub(crate) state: &'static str,
    /// The tenants where it is applied (central record).
    pub(crate) applied: Vec<String>,
    /// The tenants where it is pending.
    pub(crate) pending: Vec<String>,
}

/// `status`.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) shared: Shared,
    pub(crate) tenant_migrations: TenantMigrations,
    pub(crate) tenants: TenantSummary,
    /// What `Migrator::audit` finds (also printed on stderr as `warning:` lines).
    pub(crate) warnings: Vec<String>,
    /// The catalog's size (`null` before the registry exists).
    pub(crate) catalog: Option<Catalog>,
    /// Every selected tenant's snapshots, by tenant then oldest first, with their sizes.
    pub(crate) snapshots: Vec<StatusSnapshot>,
}

/// The catalog's size in `status`: `pg_namespace`, `pg_class` and `pg_attribute` rows, and the
/// estimated catalog cache of a backend that touches every tenant, in bytes.
#[derive(Debug, Serialize)]
pub(crate) struct Catalog {
    pub(crate) schemas: i64,
    pub(crate) relations: i64,
    pub(crate) attributes: i64,
    pub(crate) backend_bytes: u64,
}

/// The shared migrations of `status`.
#[derive(Debug, Serialize)]
pub(crate) struct Shared {
    pub(crate) applied: Vec<String>,
    pub(crate) pending: Vec<String>,
}

/// The tenant migration set of `status`.
#[derive(Debug, Serialize)]
pub(crate) struct TenantMigrations {
    /// The tenant migrations directory; `null` when it does not exist.
    pub(crate) directory: Option<String>,
    /// The versions of the migrations that hold SQL, in order.
    pub(crate) versions: Vec<String>,
    pub(crate) latest: Option<String>,
    /// Migrations (directory names) whose up.sql holds no statement yet: not counted anywhere
    /// else until they are written.
    pub(crate) empty: Vec<String>,
}

/// The tenant summary of `status`.
#[derive(Debug, Serialize)]
pub(crate) struct TenantSummary {
    pub(crate) total: usize,
    /// `null` when pending migrations are unknown (no tenant migrations directory).
    pub(crate) up_to_date: Option<usize>,
    pub(crate) with_pending: Option<usize>,
    pub(crate) drifted: usize,
    /// The tenants with pending migrations or drift.
    pub(crate) attention: Vec<Tenant>,
}

/// The report of `create_tenant_schema`, `setup`, `migrate_tenant`, `migrate_all`,
/// `revert_tenant` and `redo_tenant`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The command's snake_case name.
    pub(crate) command: &'static str,
    /// Whether everything succeeded (the exit code is 1 otherwise).
    pub(crate) ok: bool,
    /// The shared migrations applied by this run, in order.
    pub(crate) shared_applied: Vec<String>,
    /// One entry per tenant worked on.
    pub(crate) tenants: Vec<TenantResult>,
    /// Counts of `tenants` by outcome.
    pub(crate) summary: Summary,
    /// Wall time of the tenant phase, in seconds.
    pub(crate) elapsed_seconds: f64,
    /// The id of the run's record (see `runs`), when it was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run: Option<i64>,
    /// Why a run in waves started no further wave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stopped: Option<String>,
    /// The schema file (the config file's `print_schema.file`) written after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) schema_file: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `runs`: the recorded fleet runs, newest first.
#[derive(Debug, Serialize)]
pub(crate) struct Runs {
    pub(crate) runs: Vec<Run>,
}

/// One recorded fleet run.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) id: i64,
    pub(crate) kind: String,
    pub(crate) reverts: Option<i64>,
    pub(crate) started_by: String,
    pub(crate) started_at: String,
    pub(crate) finished_at: Option<String>,
    pub(crate) selection: String,
    /// `succeeded`, `failed`, `stopped`, or null (running, or killed).
    pub(crate) outcome: Option<String>,
    pub(crate) tenants: i64,
    pub(crate) changed: i64,
    pub(crate) failed: i64,
}

/// `runs --run ID`: one run's tenants.
#[derive(Debug, Serialize)]
pub(crate) struct RunDetail {
    pub(crate) run: Run,
    pub(crate) tenants: Vec<RunTenant>,
}

/// One tenant of a recorded run.
#[derive(Debug, Serialize)]
pub(crate) struct RunTenant {
    pub(crate) tenant: String,
    pub(crate) before: Vec<String>,
    pub(crate) versions: Vec<String>,
    /// `applied`, `up_to_date`, `failed` or `not_started`.
    pub(crate) outcome: String,
    pub(crate) sqlstate: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) duration_ms: Option<i64>,
}

impl From<&diesel_workspace::FleetRun> for Run {
    fn from(r: &diesel_workspace::FleetRun) -> Self {
        Self {
            id: r.id,
            kind: r.kind.clone(),
            reverts: r.reverts,
            started_by: r.started_by.clone(),
            started_at: r.started_at.to_rfc3339(),
            finished_at: r.finished_at.map(|t| t.to_rfc3339()),
            selection: r.selection.clone(),
            outcome: r.outcome.clone(),
            tenants: r.tenants,
            changed: r.changed,
            failed: r.failed,
        }
    }
}

impl From<&diesel_workspace::RunTenant> for RunTenant {
    fn from(t: &diesel_workspace::RunTenant) -> Self {
        Self {
            tenant: t.tenant.clone(),
            before: t.before.clone(),
            versions: t.versions.clone(),
            outcome: t.outcome.clone(),
            sqlstate: t.sqlstate.clone(),
            message: t.message.clone(),
            duration_ms: t.duration_ms,
        }
    }
}

/// What happened to one tenant.
#[derive(Debug, Serialize)]
pub(crate) struct TenantResult {
    pub(crate) tenant: String,
    /// `created`, `applied`, `reverted`, `redone`, `up_to_date`, `nothing_to_revert`, `failed`
    /// or `skipped`.
    pub(crate) outcome: &'static str,
    /// The versions applied (or reverted), in the order they ran.
    pub(crate) versions: Vec<String>,
    /// For `redone`: the version reverted before the migrations were applied again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reverted: Option<String>,
    /// For `redone` by `migration redo`: every version reverted, in the order they were.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) reverted_versions: Vec<String>,
    /// For `failed`: PostgreSQL's SQLSTATE when known, and the message (naming the version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    /// With `--snapshot`: the snapshot taken before the tenant's migrations (`restore_tenant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<String>,
}

impl TenantResult {
    /// A tenant with `outcome` and `versions`.
    pub(crate) fn new(tenant: &TenantId, outcome: &'static str, versions: Vec<String>) -> Self {
        Self {
            tenant: tenant.to_string(),
            outcome,
            versions,
            reverted: None,
            reverted_versions: Vec::new(),
            sqlstate: None,
            message: None,
            snapshot: None,
        }
    }
}

/// Counts by outcome.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) total: usize,
    /// Tenants that changed: created, applied, reverted or redone.
    pub(crate) changed: usize,
    /// Tenants with nothing to do (`up_to_date`, `nothing_to_revert`).
    pub(crate) unchanged: usize,
    pub(crate) failed: usize,
    pub(crate) skipped: usize,
    /// Tenants selected but left alone (`held`: their life-cycle state, or, for a revert of a
    /// run, moved on since); left out when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) held: usize,
}

impl Report {
    /// A report of `tenants`.
    pub(crate) fn new(
        command: &'static str,
        shared_applied: Vec<String>,
        tenants: Vec<TenantResult>,
        elapsed_seconds: f64,
    ) -> Self {
        let mut summary = Summary {
            total: tenants.len(),
            ..Summary::default()
        };
        for t in &tenants {
            match t.outcome {
                "failed" => summary.failed += 1,
                "skipped" => summary.skipped += 1,
                "held" => summary.held += 1,
                "up_to_date" | "nothing_to_revert" => summary.unchanged += 1,
                _ => summary.changed += 1,
            }
        }
        Self {
            command,
            ok: summary.failed == 0 && summary.skipped == 0,
            shared_applied,
            tenants,
            summary,
            elapsed_seconds,
            run: None,
            stopped: None,
            schema_file: None,
        }
    }

    /// A fleet report of the library; `verb` names the outcomes.
    pub(crate) fn fleet(
        command: &'static str,
        shared_applied: Vec<String>,
        report: &MigrationReport,
        verb: Verb,
    ) -> Self {
        let reverting = verb == Verb::Revert;
        let mut tenants: Vec<TenantResult> = report
            .tenants
            .iter()
            .map(|(tenant, outcome)| match outcome {
                TenantOutcome::Applied(versions) => TenantResult::new(
                    tenant,
                    match verb {
                        Verb::Apply => "applied",
                        Verb::Revert => "reverted",
                        Verb::Create => "created",
                    },
                    versions.clone(),
                ),
                TenantOutcome::UpToDate => TenantResult::new(
                    tenant,
                    if reverting {
                        "nothing_to_revert"
                    } else {
                        "up_to_date"
                    },
                    Vec::new(),
                ),
                TenantOutcome::Skipped => TenantResult::new(tenant, "skipped", Vec::new()),
                TenantOutcome::Failed { sqlstate, message } => TenantResult {
                    sqlstate: sqlstate.clone(),
                    message: Some(message.clone()),
                    ..TenantResult::new(tenant, "failed", Vec::new())
                },
            })
            .collect();
        // The tenants their state held back: `message` names the state.
        tenants.extend(report.held.iter().map(|(tenant, state)| TenantResult {
            message: Some(state.clone()),
            ..TenantResult::new(tenant, "held", Vec::new())
        }));
        Self {
            run: report.run,
            stopped: report.stopped.clone(),
            ..Self::new(
                command,
                shared_applied,
                tenants,
                report.elapsed.as_secs_f64(),
            )
        }
    }
}

/// What a fleet run did to each tenant it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// `applied` (migrations applied).
    Apply,
    /// `reverted`.
    Revert,
    /// `created` (tenants created).
    Create,
}

/// `setup`.
#[derive(Debug, Serialize)]
pub(crate) struct Setup {
    pub(crate) command: &'static str,
    pub(crate) ok: bool,
    /// The database's name.
    pub(crate) database: String,
    /// Whether `setup` created it.
    pub(crate) created_database: bool,
    /// `database reset`: whether the database existed and was dropped first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dropped_database: Option<bool>,
    /// Migration directories `setup` created (they did not exist).
    pub(crate) created_directories: Vec<String>,
    /// The starter config file `setup` wrote (there was none), if it wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) created_config: Option<String>,
    pub(crate) shared_applied: Vec<String>,
}

/// The report of `export_tenant` and `import_tenant`.
#[derive(Debug, Serialize)]
pub(crate) struct Archive {
    pub(crate) command: &'static str,
    pub(crate) ok: bool,
    /// The tenant exported, or created by the import.
    pub(crate) tenant: String,
    /// The name the tenant had when it was exported.
    pub(crate) exported_as: String,
    /// The archive's path (`-`: stdout or stdin).
    pub(crate) file: String,
    /// The archive's size.
    pub(crate) bytes: u64,
    /// The versions of the tenant's ledger.
    pub(crate) versions: Vec<String>,
    /// Each table's rows and checksum (equal on both sides).
    pub(crate) tables: Vec<ArchiveTable>,
    pub(crate) elapsed_seconds: f64,
}

/// One table of an [`Archive`].
#[derive(Debug, Serialize)]
pub(crate) struct ArchiveTable {
    pub(crate) name: String,
    pub(crate) rows: i64,
    pub(crate) checksum: String,
}

impl Archive {
    pub(crate) fn new(
        command: &'static str,
        s: &diesel_workspace::ArchiveSummary,
        file: &str,
        elapsed_seconds: f64,
    ) -> Self {
        Self {
            command,
            ok: true,
            tenant: s.tenant.to_string(),
            exported_as: s.exported_as.clone(),
            file: file.to_owned(),
            bytes: s.bytes,
            versions: s.versions.clone(),
            tables: s
                .tables
                .iter()
                .map(|t| ArchiveTable {
                    name: t.name.clone(),
                    rows: t.rows,
                    checksum: t.checksum.clone(),
                })
                .collect(),
            elapsed_seconds,
        }
    }
}
