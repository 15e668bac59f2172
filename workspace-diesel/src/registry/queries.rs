//! Every statement on the registry table, in one place: the library's engine, the life-cycle
//! state, the reporting views, the web crate's check, its cache trigger and its user lookup
//! all take their registry SQL from here (each tenant's record from `records.rs` beside it),
//! so a custom [`Registry`] works wherever the built-in one does.
//!
//! The functions that run a query expect the library's own path (run them inside
//! [`own`](crate::sql::own)); the ones that return SQL text return it for such a transaction.

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use crate::error::Result;
use crate::registry::model::{LifecycleState, Registry};
use crate::sql::{quote_ident, quote_literal, CENTRAL_RECORD, SPARES_TABLE, SPARE_PREFIX};
use crate::tenant::TenantId;

/// How many registry rows a bulk call ([`create_tenants`](crate::Migrator::create_tenants),
/// [`fill_spares`](crate::Migrator::fill_spares)) must add before it analyzes the registry's
/// tables: 200.
pub(crate) const ANALYZE_AFTER_ROWS: usize = 200;

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

/// What the registry and the catalog say about a name, read in one statement.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub(crate) struct Presence {
    /// The registry has a row for it.
    #[diesel(sql_type = Bool)]
    pub(crate) registered: bool,
    /// Its schema exists.
    #[diesel(sql_type = Bool)]
    pub(crate) schema: bool,
}

/// What a rename finds, under both tenants' locks.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub(crate) struct RenameCheck {
    #[diesel(sql_type = Bool)]
    pub(crate) from_row: bool,
    #[diesel(sql_type = Bool)]
    pub(crate) to_row: bool,
    #[diesel(sql_type = Bool)]
    pub(crate) from_schema: bool,
    #[diesel(sql_type = Bool)]
    pub(crate) to_schema: bool,
}

impl Registry {
    /// The registered names as a derived table with one text column, `name`, for joins:
    /// `(SELECT "<identifier>"::pg_catalog.text AS name FROM "<schema>"."<table>")`.
    pub(crate) fn names_sql(&self) -> String {
        format!(
            "(SELECT {}::pg_catalog.text AS name FROM {})",
            self.quoted_identifier_column(),
            self.qualified_table()
        )
    }

    /// The registered names with their life-cycle state as a derived table with two text
    /// columns, `name` and `state` (`active` for every row of a registry without a
    /// [`status_column`](Registry::status_column)).
    pub(crate) fn states_sql(&self) -> String {
        let state = match &self.status_column {
            Some(column) => format!("{}::pg_catalog.text", quote_ident(column)),
            None => "'active'::pg_catalog.text".to_owned(),
        };
        format!(
            "(SELECT {}::pg_catalog.text AS name, {state} AS state FROM {})",
            self.quoted_identifier_column(),
            self.qualified_table()
        )
    }

    /// With a [`status_column`](Registry::status_column): the `INSERT` of `tenant` as a new
    /// row in state `provisioning`, what `create_tenant` commits before it builds the schema.
    pub(crate) fn insert_provisioning_sql(&self, tenant: &TenantId) -> Option<String> {
        let status = self.status_column.as_ref()?;
        Some(format!(
            "INSERT INTO {} ({}, {}) VALUES ({}, 'provisioning')",
            self.qualified_table(),
            self.quoted_identifier_column(),
            quote_ident(status),
            quote_literal(tenant.as_str()),
        ))
    }

    /// [`insert_sql`](Self::insert_sql) of `tenant_sql` in state `provisioning` that does
    /// nothing when the row is there: what the provisioning transaction runs for a row committed
    /// before it, so a drop in between cannot leave a schema without its row.
    pub(crate) fn ensure_provisioning_sql(&self, tenant_sql: &str) -> Option<String> {
        let status = self.status_column.as_ref()?;
        Some(format!(
            "INSERT INTO {} ({id}, {}) VALUES ({tenant_sql}, 'provisioning') ON CONFLICT ({id}) DO NOTHING",
            self.qualified_table(),
            quote_ident(status),
            id = self.quoted_identifier_column(),
        ))
    }

    /// With a [`status_column`](Registry::status_column): the `UPDATE` that makes a
    /// `provisioning` row of `tenant` `active`, and the `DELETE` of such a row (a creation that
    /// failed), without a trailing `;`.
    pub(crate) fn provisioning_end_sql(&self, tenant: &TenantId) -> Option<(String, String)> {
        let status = quote_ident(self.status_column.as_ref()?);
        let filter = format!(
            "WHERE {} = {} AND {status} = 'provisioning'",
            self.quoted_identifier_column(),
            quote_literal(tenant.as_str()),
        );
        Some((
            format!(
                "UPDATE {} SET {status} = 'active' {filter}",
                self.qualified_table()
            ),
            format!("DELETE FROM {} {filter}", self.qualified_table()),
        ))
    }

    /// With a [`status_column`](Registry::status_column): the `UPDATE` of `tenant`'s state.
    pub(crate) fn set_state_sql(&self, tenant: &TenantId, state: LifecycleState) -> Option<String> {
        let status = quote_ident(self.status_column.as_ref()?);
        Some(format!(
            "UPDATE {} SET {status} = '{}' WHERE {} = {}",
            self.qualified_table(),
            state.as_str(),
            self.quoted_identifier_column(),
            quote_literal(tenant.as_str()),
        ))
    }

    /// Whether the registry has a row for `tenant`.
    pub(crate) fn contains(&self, conn: &mut PgConnection, tenant: &TenantId) -> QueryResult<bool> {
        let row: Flag = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM {reg} WHERE {col}::pg_catalog.text = $1) AS flag",
            col = self.quoted_identifier_column(),
            reg = self.qualified_table(),
        ))
        .bind::<Text, _>(tenant.as_str())
        .get_result(conn)?;
        Ok(row.flag)
    }

    /// Whether `tenant` is registered and whether its schema exists, in one statement.
    pub(crate) fn presence(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> QueryResult<Presence> {
        diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM {reg} WHERE {col}::pg_catalog.text = $1) AS registered, \
             pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL AS schema",
            col = self.quoted_identifier_column(),
            reg = self.qualified_table(),
        ))
        .bind::<Text, _>(tenant.as_str())
        .get_result(conn)
    }

    /// Every registered tenant, sorted by name (byte order).
    pub(crate) fn list(&self, conn: &mut PgConnection) -> Result<Vec<TenantId>> {
        diesel::sql_query(format!(
            "SELECT {col}::pg_catalog.text AS name FROM {reg} ORDER BY {col}::pg_catalog.text COLLATE \"C\"",
            col = self.quoted_identifier_column(),
            reg = self.qualified_table(),
        ))
        .load::<NameRow>(conn)?
        .into_iter()
        .map(|r| TenantId::new(r.name))
        .collect()
    }

    /// Whether the registry table exists.
    pub(crate) fn exists(&self, conn: &mut PgConnection) -> QueryResult<bool> {
        let row: Flag = diesel::sql_query("SELECT pg_catalog.to_regclass($1) IS NOT NULL AS flag")
            .bind::<Text, _>(self.qualified_table())
            .get_result(conn)?;
        Ok(row.flag)
    }

    /// After a bulk call that added or removed `changed` rows: when they are at least
    /// [`ANALYZE_AFTER_ROWS`], `ANALYZE` of the registry table and of the library's tables that
    /// exist (the central record, the spares), so the planner's statistics follow the fleet's
    /// size instead of waiting for autovacuum. A role that does not own a table gets
    /// PostgreSQL's warning and skips it. Returns whether it analyzed.
    pub(crate) fn analyze_after_bulk(
        &self,
        conn: &mut PgConnection,
        changed: usize,
    ) -> QueryResult<bool> {
        if changed < ANALYZE_AFTER_ROWS {
            return Ok(false);
        }
        let mut tables = vec![self.qualified_table()];
        for table in [CENTRAL_RECORD, SPARES_TABLE] {
            let row: Flag =
                diesel::sql_query("SELECT pg_catalog.to_regclass($1) IS NOT NULL AS flag")
                    .bind::<Text, _>(table)
                    .get_result(conn)?;
            if row.flag && !tables.iter().any(|t| t.as_str() == table) {
                tables.push(table.to_owned());
            }
        }
        diesel::sql_query(format!("ANALYZE {}", tables.join(", "))).execute(conn)?;
        Ok(true)
    }

    /// `INSERT` of `tenant_sql` (an SQL expression: a literal, or a PL/pgSQL variable) as a new
    /// row, without a trailing `;`.
    pub(crate) fn insert_sql(&self, tenant_sql: &str) -> String {
        format!(
            "INSERT INTO {} ({}) VALUES ({tenant_sql})",
            self.qualified_table(),
            self.quoted_identifier_column()
        )
    }

    /// [`insert_sql`](Self::insert_sql) of `tenant_sql` in state `active` with a
    /// [`status_column`](Registry::status_column) (whatever its default): a tenant registered
    /// complete, as a claimed spare is.
    pub(crate) fn insert_active_sql(&self, tenant_sql: &str) -> String {
        match &self.status_column {
            Some(status) => format!(
                "INSERT INTO {} ({}, {}) VALUES ({tenant_sql}, 'active')",
                self.qualified_table(),
                self.quoted_identifier_column(),
                quote_ident(status),
            ),
            None => self.insert_sql(tenant_sql),
        }
    }

    /// [`insert_sql`](Self::insert_sql) of `tenant`, as a literal.
    pub(crate) fn insert_tenant_sql(&self, tenant: &TenantId) -> String {
        self.insert_sql(&quote_literal(tenant.as_str()))
    }

    /// Deletes `tenant`'s row; returns how many rows went (0: not registered).
    pub(crate) fn delete(&self, conn: &mut PgConnection, tenant: &TenantId) -> QueryResult<usize> {
        diesel::sql_query(format!(
            "DELETE FROM {} WHERE {} = $1",
            self.qualified_table(),
            self.quoted_identifier_column()
        ))
        .bind::<Text, _>(tenant.as_str())
        .execute(conn)
    }

    /// What renaming `from` to `to` finds: their rows and their schemas.
    pub(crate) fn rename_check(
        &self,
        conn: &mut PgConnection,
        from: &TenantId,
        to: &TenantId,
    ) -> QueryResult<RenameCheck> {
        diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM {reg} WHERE {col} = $1) AS from_row, \
             EXISTS (SELECT 1 FROM {reg} WHERE {col} = $2) AS to_row, \
             pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL AS from_schema, \
             pg_catalog.to_regnamespace(pg_catalog.quote_ident($2)) IS NOT NULL AS to_schema",
            reg = self.qualified_table(),
            col = self.quoted_identifier_column()
        ))
        .bind::<Text, _>(from.as_str())
        .bind::<Text, _>(to.as_str())
        .get_result(conn)
    }

    /// The `UPDATE` that renames `from`'s row to `to`, without a trailing `;`.
    pub(crate) fn rename_sql(&self, from: &TenantId, to: &TenantId) -> String {
        format!(
            "UPDATE {reg} SET {col} = {lt} WHERE {col} = {lf}",
            reg = self.qualified_table(),
            col = self.quoted_identifier_column(),
            lf = quote_literal(from.as_str()),
            lt = quote_literal(to.as_str()),
        )
    }

    /// A `DO` block that adds, when the registry table has none of that name, the deferred
    /// constraint trigger `trigger` that runs `function` (schema-qualified, no arguments) at
    /// commit after any row of the registry was inserted, updated or deleted: what the
    /// reporting views' rebuild hangs on.
    #[cfg(feature = "reporting")]
    pub(crate) fn deferred_trigger_sql(&self, trigger: &str, function: &str) -> String {
        let table = self.qualified_table();
        format!(
            "DO $wdt$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger \
             WHERE tgrelid = {regclass}::pg_catalog.regclass AND tgname = {name}) THEN \
             CREATE CONSTRAINT TRIGGER {trigger_q} AFTER INSERT OR UPDATE OR DELETE ON {table} \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {function}(); \
             END IF; END $wdt$;",
            regclass = quote_literal(&table),
            name = quote_literal(trigger),
            trigger_q = quote_ident(trigger),
        )
    }

    /// Whether `schema.table` (unquoted, as a server error names them) is the registry table.
    pub(crate) fn is_table(&self, schema: &str, table: &str) -> bool {
        format!("{}.{}", quote_ident(schema), quote_ident(table)) == self.qualified_table()
    }
}

impl Registry {
    /// The SQL that installs, idempotently and under an advisory lock, a trigger on this
    /// registry table that sends `pg_notify(channel, <identifier>)` for every inserted, updated
    /// and deleted row (the old and the new identifier on an update) and `''` on `TRUNCATE`: what
    /// a web service's registry cache listens to. One trigger function,
    /// `public.workspace_notify_change()`, serves every registry: each table's triggers pass it
    /// their identifier column.
    ///
    /// The same function goes on the central record of applied tenant migrations
    /// ([`workspace_migrations`](crate::registry::workspace_migrations)), naming the tenant
    /// whose versions changed: every migration, revert, creation, drop and rename of a tenant
    /// is announced when it commits, so a listener holding each tenant's version
    /// ([`TenantRecord`](crate::registry::TenantRecord)) learns it without asking. Warm spares (names starting with
    /// [`SPARE_PREFIX`](crate::registry::SPARE_PREFIX)) are not announced. Each trigger is
    /// created when missing, so running the SQL again on a database installed by an older
    /// release adds the central record's.
    pub fn notify_trigger_sql(&self, channel: &str) -> String {
        let channel = quote_literal(channel);
        let table = self.qualified_table();
        let regclass = quote_literal(&table);
        let column = quote_literal(&self.identifier_column);
        let central = quote_literal(CENTRAL_RECORD);
        let spare = quote_literal(SPARE_PREFIX);
        let spare_len = SPARE_PREFIX.len();
        format!(
            r#"SELECT pg_catalog.pg_advisory_xact_lock(1463025665, 1);
CREATE OR REPLACE FUNCTION public.workspace_notify_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $wdn$
DECLARE
    col text := COALESCE(TG_ARGV[0], 'schema_name');
    name text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_catalog.pg_notify({channel}, '');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        name := pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.->>) col;
        IF pg_catalog.left(name, {spare_len}) OPERATOR(pg_catalog.<>) {spare} THEN
            PERFORM pg_catalog.pg_notify({channel}, name);
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        name := pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.->>) col;
        IF pg_catalog.left(name, {spare_len}) OPERATOR(pg_catalog.<>) {spare} THEN
            PERFORM pg_catalog.pg_notify({channel}, name);
        END IF;
    END IF;
    RETURN NULL;
END
$wdn$;
DO $wdn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                   WHERE tgrelid = {regclass}::pg_catalog.regclass
                     AND tgname = 'workspaces_notify_change') THEN
        CREATE TRIGGER workspaces_notify_change
            AFTER INSERT OR UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION public.workspace_notify_change({column});
        CREATE TRIGGER workspaces_notify_truncate
            AFTER TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION public.workspace_notify_change({column});
    END IF;
    IF pg_catalog.to_regclass({central}) IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                       WHERE tgrelid = {central}::pg_catalog.regclass
                         AND tgname = 'workspace_migrations_notify_change') THEN
            CREATE TRIGGER workspace_migrations_notify_change
                AFTER INSERT OR UPDATE OR DELETE ON {CENTRAL_RECORD}
                FOR EACH ROW EXECUTE FUNCTION public.workspace_notify_change('schema_name');
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                       WHERE tgrelid = {central}::pg_catalog.regclass
                         AND tgname = 'workspace_migrations_notify_truncate') THEN
            CREATE TRIGGER workspace_migrations_notify_truncate
                AFTER TRUNCATE ON {CENTRAL_RECORD}
                FOR EACH STATEMENT EXECUTE FUNCTION public.workspace_notify_change('schema_name');
        END IF;
    END IF;
END
$wdn$;
"#
        )
    }

    /// The query that checks a membership: `SELECT EXISTS (SELECT 1 FROM <members> m JOIN
    /// <registry> w ON w.<key> = m.<workspace column> WHERE m.<user column> = $1 AND
    /// w.<identifier> = $2) AS member` (`$1` a `BIGINT`, `$2` the tenant's name), with the
    /// membership table `members_schema.members_table`. Every name is quoted.
    pub fn membership_sql(
        &self,
        members_schema: &str,
        members_table: &str,
        user_column: &str,
        workspace_column: &str,
    ) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{} m JOIN {reg} w ON w.{key} = m.{} \
             WHERE m.{} = $1 AND w.{ident}::pg_catalog.text = $2) AS member",
            quote_ident(members_schema),
            quote_ident(members_table),
            quote_ident(workspace_column),
            quote_ident(user_column),
            ident = self.quoted_identifier_column(),
            reg = self.qualified_table(),
            key = quote_ident(&self.key_column),
        )
    }

    /// Whether the triggers of [`notify_trigger_sql`](Self::notify_trigger_sql) are in place:
    /// on this registry table, and on the central record when it exists (one catalog query,
    /// under the library's own path). `false` on a database whose central record lacks its
    /// trigger (installed by an older release): run the SQL again.
    ///
    /// # Errors
    /// [`Error::Query`](crate::Error::Query) when the query fails (a registry table that does
    /// not exist).
    pub fn has_notify_trigger(&self, conn: &mut PgConnection) -> Result<bool> {
        let row: Flag = crate::sql::own(conn, |conn| {
            diesel::sql_query(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger \
                 WHERE tgrelid = $1::pg_catalog.regclass \
                   AND tgname = 'workspaces_notify_change') \
                 AND (pg_catalog.to_regclass($2) IS NULL OR EXISTS (\
                   SELECT 1 FROM pg_catalog.pg_trigger \
                   WHERE tgrelid = pg_catalog.to_regclass($2) \
                     AND tgname = 'workspace_migrations_notify_change')) AS flag",
            )
            .bind::<Text, _>(self.qualified_table())
            .bind::<Text, _>(CENTRAL_RECORD)
            .get_result(conn)
        })?;
        Ok(row.flag)
    }

    /// The query that finds a user's tenant: `SELECT <identifier> FROM <users> u JOIN <registry>
    /// w ON w.<key> = u.<workspace column> WHERE u.<id column> = $1` (`$1` a `BIGINT`), with the
    /// user table `users_schema.users_table`. Every name is quoted.
    pub fn user_workspace_sql(
        &self,
        users_schema: &str,
        users_table: &str,
        id_column: &str,
        workspace_column: &str,
    ) -> String {
        format!(
            "SELECT w.{ident}::pg_catalog.text AS schema_name FROM {}.{} u JOIN {reg} w ON w.{key} = u.{} WHERE u.{} = $1",
            quote_ident(users_schema),
            quote_ident(users_table),
            quote_ident(workspace_column),
            quote_ident(id_column),
            ident = self.quoted_identifier_column(),
            reg = self.qualified_table(),
            key = quote_ident(&self.key_column),
        )
    }
}
