//! Procedural macros for [`workspace-diesel`](https://docs.rs/workspace-diesel): `tenant_table!`
//! and `#[derive(TenantModel)]`. Use them through `diesel_workspace`, which re-exports both.

mod attr;
mod expand;
mod model;
mod table;

use proc_macro::TokenStream;

/// Declares tenant tables: `table!`'s syntax (one or more tables), rendered in the active
/// tenant's schema.
///
/// See `diesel_workspace::tenant_table!` for the documentation.
#[proc_macro]
pub fn tenant_table(input: TokenStream) -> TokenStream {
    tenant_table_inner(input.into()).into()
}

fn tenant_table_inner(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    table::tenant_table(input)
}

/// Ties a model to its tenant table; fails to compile when the table is not a tenant table.
///
/// See `diesel_workspace::TenantModel` for the documentation.
#[proc_macro_derive(TenantModel, attributes(tenant))]
pub fn derive_tenant_model(input: TokenStream) -> TokenStream {
    derive_tenant_model_inner(input.into()).into()
}

fn derive_tenant_model_inner(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    syn::parse2(input)
        .and_then(|item| model::Model::from_item(&item))
        .map(|model| expand::expand(&model))
        .unwrap_or_else(syn::Error::into_compile_error)
}
