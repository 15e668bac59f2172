//! The snapshot documents (`snapshots`, `restore_tenant`, `prune_snapshots`).

use serde::Serialize;

use super::ArchiveTable;

/// One snapshot (`snapshots`, `restore_tenant`, `prune_snapshots`).
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    /// The snapshot's schema, which names it.
    pub(crate) name: String,
    pub(crate) tenant: String,
    /// RFC 3339, UTC.
    pub(crate) taken_at: String,
    /// RFC 3339, UTC; `null`: kept until pruned by age.
    pub(crate) expires_at: Option<String>,
    /// The tenant's ledger when it was taken.
    pub(crate) versions: Vec<String>,
    pub(crate) size_bytes: i64,
    /// Each table's rows and checksum when it was taken.
    pub(crate) tables: Vec<ArchiveTable>,
}

impl Snapshot {
    pub(crate) fn new(s: &diesel_workspace::Snapshot) -> Self {
        Self {
            name: s.name.clone(),
            tenant: s.tenant.to_string(),
            taken_at: s.taken_at.to_rfc3339(),
            expires_at: s.expires_at.map(|e| e.to_rfc3339()),
            versions: s.versions.clone(),
            size_bytes: s.size_bytes,
            tables: s
                .tables
                .iter()
                .map(|t| ArchiveTable {
                    name: t.name.clone(),
                    rows: t.rows,
                    checksum: t.checksum.clone(),
                })
                .collect(),
        }
    }
}

/// One snapshot in `status`: its tenant, name, times and size.
#[derive(Debug, Serialize)]
pub(crate) struct StatusSnapshot {
    pub(crate) tenant: String,
    pub(crate) name: String,
    /// RFC 3339, UTC.
    pub(crate) taken_at: String,
    /// RFC 3339, UTC; `null`: kept until pruned by age.
    pub(crate) expires_at: Option<String>,
    pub(crate) size_bytes: i64,
}

/// `snapshots`.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshots {
    pub(crate) snapshots: Vec<Snapshot>,
}

/// The report of `restore_tenant` (`restored`) and `prune_snapshots` (`removed`).
#[derive(Debug, Serialize)]
pub(crate) struct SnapshotReport {
    pub(crate) command: &'static str,
    pub(crate) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) restored: Option<Snapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) removed: Option<Vec<Snapshot>>,
    pub(crate) elapsed_seconds: f64,
}
