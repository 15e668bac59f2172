//! Run-time support for tenant tables and models.

use diesel::backend::Backend;
use diesel::query_builder::AstPass;
use diesel::QueryResult;

use crate::context::with_current;
use crate::error::NoActiveTenant;

/// A table declared with [`tenant_table!`](crate::tenant_table): its rows live in each tenant's
/// schema, and queries on it go to the schema of the active tenant.
///
/// Implemented by `tenant_table!` only. Bound on it to accept tenant tables and refuse shared ones
/// at compile time, as [`TenantModel`] does.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tenant table",
    label = "not declared with `tenant_table!`",
    note = "tenant tables are declared with `diesel_workspace::tenant_table!`; \
            a table declared with diesel's `table!` is a shared table"
)]
pub trait TenantTable: diesel::Table + Copy + Default + 'static {
    /// The table's name in SQL, without a schema.
    const SQL_NAME: &'static str;
}

/// A model whose rows live in a tenant table.
///
/// `#[derive(TenantModel)]` implements it from `#[diesel(table_name = ...)]` (or
/// `#[tenant(table = ...)]`), and refuses to compile when that table was declared with
/// diesel's `table!` instead of [`tenant_table!`](crate::tenant_table):
///
/// ```
/// use diesel::prelude::*;
/// use diesel_workspace::{tenant_table, TenantModel, TenantTable};
///
/// tenant_table! {
///     notes (id) {
///         id -> Int4,
///         title -> Text,
///     }
/// }
///
/// #[derive(Queryable, Selectable, TenantModel)]
/// #[diesel(table_name = notes)]
/// struct Note {
///     id: i32,
///     title: String,
/// }
///
/// assert_eq!(<<Note as TenantModel>::Table as TenantTable>::SQL_NAME, "notes");
/// ```
///
/// On a shared table it is a compile error:
///
/// ```compile_fail
/// use diesel::prelude::*;
/// use diesel_workspace::TenantModel;
///
/// diesel::table! {
///     public.users (id) {
///         id -> Int4,
///     }
/// }
///
/// #[derive(TenantModel)]
/// #[diesel(table_name = users)]
/// struct User {
///     id: i32,
/// }
/// ```
pub trait TenantModel {
    /// The tenant table the model's rows live in.
    type Table: TenantTable;

    /// The table, to start a query from: `Note::table().filter(...)`.
    fn table() -> Self::Table {
        Self::Table::default()
    }
}

/// Renders `"<active tenant>"."<table>"`, or fails before anything is sent when no tenant is
/// active. Called by the code `tenant_table!` generates.
#[doc(hidden)]
pub fn walk_tenant_table<DB: Backend>(
    table: &'static str,
    mut out: AstPass<'_, '_, DB>,
) -> QueryResult<()> {
    with_current(|tenant| match tenant {
        Some(tenant) => {
            out.push_identifier(tenant.as_str())?;
            out.push_sql(".");
            out.push_identifier(table)
        }
        None => Err(NoActiveTenant::table(table).into()),
    })
}
