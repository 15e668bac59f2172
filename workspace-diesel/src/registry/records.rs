//! Each tenant's record, read from the registry and the central record: its life-cycle state
//! and its latest applied version, for one tenant, some or all (what a web service holds).

use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text};

use crate::error::{Error, Result};
use crate::registry::model::{sql_types, LifecycleState, Registry, TenantRecord};
use crate::sql::{own, quote_ident, CENTRAL_RECORD};
use crate::tenant::TenantId;

#[derive(QueryableByName)]
struct RecordRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = sql_types::WorkspaceStatus)]
    status: LifecycleState,
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

impl Registry {
    /// `tenant`'s [`TenantRecord`] (its life-cycle state and its latest applied version in the
    /// central record), or `None` when it is not registered: one statement under the library's
    /// own path, what a web service reads for a name it does not hold.
    ///
    /// ```no_run
    /// use diesel::prelude::*;
    /// use diesel_workspace::{registry::Registry, TenantId};
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// if let Some(record) = Registry::default().tenant_record(conn, &TenantId::new("acme")?)? {
    ///     println!("{} at {:?}", record.state, record.version);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn tenant_record(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<Option<TenantRecord>> {
        let mut rows = self.tenant_records_of(conn, std::slice::from_ref(tenant))?;
        Ok(rows.pop().map(|(_, record)| record))
    }

    /// Every registered tenant's [`TenantRecord`], in one statement under the library's own path:
    /// what a web service holds in memory. Names the registry holds that are not valid tenant
    /// names are left out.
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn tenant_records(&self, conn: &mut PgConnection) -> Result<Vec<(TenantId, TenantRecord)>> {
        self.records(conn, None)
    }

    /// The [`TenantRecord`]s of those of `tenants` that are registered, in one statement (what a
    /// listener reads after notifications named them).
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn tenant_records_of(
        &self,
        conn: &mut PgConnection,
        tenants: &[TenantId],
    ) -> Result<Vec<(TenantId, TenantRecord)>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
        self.records(conn, Some(&names))
    }

    fn records(
        &self,
        conn: &mut PgConnection,
        names: Option<&[&str]>,
    ) -> Result<Vec<(TenantId, TenantRecord)>> {
        let status = match &self.status_column {
            Some(column) => format!("w.{}", quote_ident(column)),
            None => "'active'::public.workspace_status".to_owned(),
        };
        // The latest version in byte order (`COLLATE "C"`), as Diesel sorts its versions.
        let sql = format!(
            "SELECT w.{id}::pg_catalog.text AS name, {status} AS status, \
             (SELECT pg_catalog.max(m.version::pg_catalog.text COLLATE \"C\") FROM {CENTRAL_RECORD} m \
              WHERE m.schema_name OPERATOR(pg_catalog.=) w.{id}::pg_catalog.text) AS version \
             FROM {reg} w{filter}",
            id = self.quoted_identifier_column(),
            reg = self.qualified_table(),
            filter = if names.is_some() {
                format!(
                    " WHERE w.{}::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1)",
                    self.quoted_identifier_column()
                )
            } else {
                String::new()
            },
        );
        let rows: Vec<RecordRow> = own(conn, |conn| match names {
            Some(names) => diesel::sql_query(&sql)
                .bind::<Array<Text>, _>(names)
                .load(conn),
            None => diesel::sql_query(&sql).load(conn),
        })
        .map_err(Error::Query)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                TenantId::new(r.name).ok().map(|t| {
                    (
                        t,
                        TenantRecord {
                            state: r.status,
                            version: r.version,
                        },
                    )
                })
            })
            .collect())
    }
}
