//! The paths the generated code names, shared by [`expand`](super::expand) (the table module)
//! and [`column`](super::column) (one column's items).

use proc_macro2::TokenStream;
use quote::quote;

/// `::diesel_workspace::__private::diesel`: the one path generated code reaches Diesel by.
pub(super) fn diesel() -> TokenStream {
    quote!(::diesel_workspace::__private::diesel)
}

/// PostgreSQL's `ONLY` and `TABLESAMPLE` wrappers of this table (generics, wrapper type): the
/// same table in the `FROM` clause, which `allow_tables_to_appear_in_same_query!` relies on.
pub(super) fn pg_wrappers() -> Vec<(TokenStream, TokenStream)> {
    let d = diesel();
    let qb = quote!(#d::query_builder);
    vec![
        (quote!(), quote!(#qb::Only<table>)),
        (
            quote!(M: #qb::TablesampleMethod),
            quote!(#qb::Tablesample<table, M>),
        ),
    ]
}
