//! The tenant registry's model: where it lives ([`Registry`]), the built-in tables, their row
//! and the life-cycle state.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::error::Result;
use crate::sql::quote_ident;
use crate::tenant::TenantId;

/// Diesel's SQL types of the registry.
pub mod sql_types {
    /// The PostgreSQL enum `public.workspace_status`.
    ///
    /// Kept in the shared schema with an explicit schema: Diesel caches type OIDs per connection by
    /// name, so one enum per tenant schema would break.
    #[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
    #[diesel(postgres_type(name = "workspace_status", schema = "public"))]
    pub struct WorkspaceStatus;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::WorkspaceStatus;

    /// The registry of tenants (`public.workspaces`), created by the registry migration.
    public.workspaces (id) {
        /// Surrogate key.
        id -> Int8,
        /// The tenant's schema name ([`TenantId`](crate::TenantId)); unique.
        schema_name -> Text,
        /// A name for people.
        display_name -> Text,
        /// The tenant's life-cycle state.
        status -> WorkspaceStatus,
        /// When the row was inserted.
        created_at -> Timestamptz,
        /// When the row last changed, kept by a trigger.
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// The central record of applied tenant migrations (`public.workspace_migrations`), written in
    /// the same transaction as each tenant's own `__diesel_schema_migrations` row.
    public.workspace_migrations (schema_name, version) {
        /// The tenant.
        schema_name -> Text,
        /// The migration version, as in Diesel's ledger.
        version -> Varchar,
        /// When it was applied.
        run_on -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(workspaces, workspace_migrations);

/// A tenant's life-cycle state (`public.workspace_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, diesel_derive_enum::DbEnum)]
#[ExistingTypePath = "crate::registry::model::sql_types::WorkspaceStatus"]
pub enum LifecycleState {
    /// Being created.
    Provisioning,
    /// In use.
    Active,
    /// Kept, but not to be served.
    Suspended,
    /// Kept for the record only.
    Archived,
}

impl LifecycleState {
    /// Every state, in the enum's order.
    pub const ALL: [LifecycleState; 4] = [
        LifecycleState::Provisioning,
        LifecycleState::Active,
        LifecycleState::Suspended,
        LifecycleState::Archived,
    ];

    /// The state's name in the database (`provisioning`, `active`, `suspended`, `archived`).
    ///
    /// ```
    /// use diesel_workspace::registry::LifecycleState;
    ///
    /// assert_eq!(LifecycleState::Suspended.as_str(), "suspended");
    /// assert_eq!("archived".parse::<LifecycleState>(), Ok(LifecycleState::Archived));
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Provisioning => "provisioning",
            LifecycleState::Active => "active",
            LifecycleState::Suspended => "suspended",
            LifecycleState::Archived => "archived",
        }
    }
}

impl std::str::FromStr for LifecycleState {
    type Err = String;

    /// A state from its name in the database; the error names the four states.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!("unknown state `{s}`: expected provisioning, active, suspended or archived")
            })
    }
}

impl std::fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a web service holds about a registered tenant: its life-cycle state and the latest
/// tenant migration version the central record
/// ([`workspace_migrations`](crate::registry::workspace_migrations)) says it has applied, read
/// together in one statement ([`Registry::tenant_record`], [`Registry::tenant_records`]).
///
/// Versions are compared as Diesel orders them (byte order of the version string, as in its
/// ledger: `2026-03-01-000001_add_priority` is `20260301000001`).
///
/// ```
/// use diesel_workspace::registry::{LifecycleState, TenantRecord};
///
/// let record = TenantRecord {
///     state: LifecycleState::Active,
///     version: Some("20260101000001".into()),
/// };
/// assert!(record.is_behind("20260301000001"));
/// assert!(!record.is_behind("20260101000001"));
/// assert!(TenantRecord { state: LifecycleState::Active, version: None }.is_behind("1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantRecord {
    /// The tenant's life-cycle state.
    pub state: LifecycleState,
    /// The latest applied tenant migration version, `None` when none is recorded.
    pub version: Option<String>,
}

impl TenantRecord {
    /// Whether the tenant's latest applied version is older than `expected` (or nothing is
    /// applied): its schema lacks what a binary built with `expected` needs.
    pub fn is_behind(&self, expected: &str) -> bool {
        self.version
            .as_deref()
            .is_none_or(|v| v.as_bytes() < expected.as_bytes())
    }
}

/// The Rust form of a registry table's row: anything that names a tenant.
///
/// The library needs only the identifier; an application with its own registry table implements
/// this for its own model and points the [`Registry`] at that table.
///
/// ```
/// use diesel_workspace::{TenantId, registry::WorkspaceConfigInterface};
///
/// struct Customer {
///     slug: String,
/// }
///
/// impl WorkspaceConfigInterface for Customer {
///     fn schema_name(&self) -> &str {
///         &self.slug
///     }
/// }
///
/// let c = Customer { slug: "acme".into() };
/// assert_eq!(c.tenant_id()?, TenantId::new("acme")?);
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub trait WorkspaceConfigInterface {
    /// The value of the identifier column: the tenant's schema name.
    fn schema_name(&self) -> &str;

    /// The identifier, validated.
    ///
    /// # Errors
    /// [`Error::InvalidTenantName`](crate::Error::InvalidTenantName) when the stored name breaks
    /// the rules (a row written by hand).
    fn tenant_id(&self) -> Result<TenantId> {
        TenantId::new(self.schema_name())
    }
}

/// A row of the built-in registry table, `public.workspaces`.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel_workspace::{registry::workspaces, registry::Workspace, registry::LifecycleState};
///
/// # fn run(conn: &mut PgConnection) -> QueryResult<()> {
/// let active: Vec<Workspace> = workspaces::table
///     .filter(workspaces::status.eq(LifecycleState::Active))
///     .order(workspaces::schema_name)
///     .select(Workspace::as_select())
///     .load(conn)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = workspaces, check_for_backend(diesel::pg::Pg))]
pub struct Workspace {
    /// Surrogate key.
    pub id: i64,
    /// The tenant's schema name.
    pub schema_name: String,
    /// A name for people.
    pub display_name: String,
    /// The tenant's life-cycle state.
    pub status: LifecycleState,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the row last changed (kept by a trigger).
    pub updated_at: DateTime<Utc>,
}

impl WorkspaceConfigInterface for Workspace {
    fn schema_name(&self) -> &str {
        &self.schema_name
    }
}

/// Where the registry lives: a table in the shared schema, and its identifier column.
///
/// The default is the built-in `public.workspaces (schema_name)`. An application with its own
/// table names it here; that table needs a unique text identifier column, and every other column
/// needs a default (the library inserts the identifier only, then lets the application fill in
/// the rest in the same transaction).
///
/// ```
/// use diesel_workspace::registry::Registry;
///
/// let registry = Registry::new("app", "customers").identifier_column("slug");
/// assert_eq!(registry.qualified_table(), "\"app\".\"customers\"");
/// assert_eq!(Registry::default().qualified_table(), "\"public\".\"workspaces\"");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub(super) schema: String,
    pub(super) table: String,
    pub(super) identifier_column: String,
    pub(super) status_column: Option<String>,
    pub(super) key_column: String,
}

impl Default for Registry {
    /// The built-in registry: `public.workspaces`, identifier `schema_name`, life-cycle state
    /// `status`, key `id`.
    fn default() -> Self {
        Self::new("public", "workspaces").status_column("status")
    }
}

impl Registry {
    /// A registry table `schema.table`, with identifier column `schema_name`, no life-cycle
    /// state column (every registered tenant is served: see [`status_column`](Self::status_column))
    /// and key column `id`.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            table: table.into(),
            identifier_column: "schema_name".into(),
            status_column: None,
            key_column: "id".into(),
        }
    }

    /// Names the column holding each tenant's life-cycle state, of type
    /// `public.workspace_status` (which the registry migration creates): what
    /// [`lifecycle_state`](Self::lifecycle_state) reads and
    /// [`set_lifecycle_state`](Self::set_lifecycle_state) changes, and what a web service checks.
    /// Without one, every registered tenant is [`LifecycleState::Active`] and its state cannot be
    /// changed. [`Registry::default`] has `status`.
    pub fn status_column(mut self, column: impl Into<String>) -> Self {
        self.status_column = Some(column.into());
        self
    }

    /// Names the key column that an application's user table refers to (see
    /// [`user_workspace_sql`](Self::user_workspace_sql)). Defaults to `id`.
    pub fn key_column(mut self, column: impl Into<String>) -> Self {
        self.key_column = column.into();
        self
    }

    /// Names the identifier column. Defaults to `schema_name`.
    pub fn identifier_column(mut self, column: impl Into<String>) -> Self {
        self.identifier_column = column.into();
        self
    }

    /// The schema the registry table lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table, schema-qualified and quoted.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    /// The identifier column, quoted.
    pub fn quoted_identifier_column(&self) -> String {
        quote_ident(&self.identifier_column)
    }
}
