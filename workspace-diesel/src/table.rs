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

/// The width check `tenant_table!` emits for a table of more than 16 columns.
///
/// Diesel implements its traits for tuples only up to the width its `32-column-tables`,
/// `64-column-tables` or `128-column-tables` feature selects, so whether a tuple of `N` units
/// implements `QueryId` says whether Diesel was built for a table of `N` columns. The generated
/// code bounds such a tuple on the `Within*` trait of the next feature up; when Diesel lacks the
/// width, the compiler reports that trait's message, which names the feature to enable.
#[doc(hidden)]
pub mod width {
    use diesel::query_builder::QueryId;

    /// Diesel supports tables of 17 to 32 columns.
    #[diagnostic::on_unimplemented(
        message = "this table has more than 16 columns: enable diesel's `32-column-tables` feature",
        label = "the first column past the 16th",
        note = "Diesel is built without its default `32-column-tables` feature; \
                enable it on diesel in Cargo.toml: \
                `diesel = {{ version = \"2.4\", features = [\"32-column-tables\"] }}`"
    )]
    pub trait Within32 {}

    /// Diesel supports tables of 33 to 64 columns.
    #[diagnostic::on_unimplemented(
        message = "this table has more than 32 columns: enable diesel's `64-column-tables` feature",
        label = "the first column past the 32nd",
        note = "enable it on diesel in Cargo.toml: \
                `diesel = {{ version = \"2.4\", features = [\"64-column-tables\"] }}` \
                (it makes Diesel slower to compile)"
    )]
    pub trait Within64 {}

    /// Diesel supports tables of 65 to 128 columns.
    #[diagnostic::on_unimplemented(
        message = "this table has more than 64 columns: enable diesel's `128-column-tables` feature",
        label = "the first column past the 64th",
        note = "enable it on diesel in Cargo.toml: \
                `diesel = {{ version = \"2.4\", features = [\"128-column-tables\"] }}` \
                (it makes Diesel much slower to compile)"
    )]
    pub trait Within128 {}

    impl<T: QueryId> Within32 for T {}
    impl<T: QueryId> Within64 for T {}
    impl<T: QueryId> Within128 for T {}
}
