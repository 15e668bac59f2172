//! `tenant_table!`: `table!`'s syntax, with rows in the active tenant's schema.
//!
//! The pipeline is [`parse`] (one or more declarations, read with `diesel_table_macro_syntax`,
//! the grammar diesel's own `table!` uses) → [`model`] (every check, each error spanned at the
//! user's token) → [`expand`] (the table module) and [`column`] (one column's items).
//!
//! A tenant table differs from a stock one in three places only: its `FROM` clause renders
//! `"<active tenant>"."<table>"` at run time (and fails when no tenant is active), its query id
//! is not static (so Diesel's statement cache keys its queries by SQL text, never reusing one
//! tenant's statement for another), and it implements `TenantTable`. Columns render
//! `"<table>"."<column>"`, which PostgreSQL resolves to the schema-qualified table of the same
//! statement.

mod column;
mod expand;
mod model;
mod parse;
mod paths;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

/// Parses, checks and expands one `tenant_table!` invocation.
pub(crate) fn tenant_table(input: TokenStream) -> TokenStream {
    syn::parse2::<parse::Invocation>(input)
        .and_then(model::Table::from_invocation)
        .map(|tables| tables.iter().map(expand::expand).collect())
        .unwrap_or_else(syn::Error::into_compile_error)
}
