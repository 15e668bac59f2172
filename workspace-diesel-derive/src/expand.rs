//! Code generation for `#[derive(TenantModel)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::Model;

pub(crate) fn expand(model: &Model) -> TokenStream {
    let name = &model.name;
    let table = &model.table;
    let (impl_generics, ty_generics, where_clause) = model.generics.split_for_impl();
    // The associated type's bound (`TenantTable`) reports a stock table at the user's table path.
    let table_ty = quote_spanned! {table.span()=> #table::table };
    quote! {
        const _: () = {
            impl #impl_generics ::diesel_workspace::TenantModel for #name #ty_generics #where_clause {
                type Table = #table_ty;
            }
        };
    }
}
