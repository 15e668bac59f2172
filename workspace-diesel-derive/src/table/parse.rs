//! Reading a `tenant_table!` invocation: one or more `table!` declarations, back to back.

use diesel_table_macro_syntax::TableDecl;
use syn::parse::{Parse, ParseStream};

/// The declarations of one invocation, in source order.
pub(crate) struct Invocation {
    pub(crate) decls: Vec<TableDecl>,
}

impl Parse for Invocation {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut decls = Vec::new();
        while !input.is_empty() {
            decls.push(input.parse()?);
        }
        if decls.is_empty() {
            return Err(input.error(
                "expected a table declaration\n\
                 help: declare at least one table, as in `tenant_table! { notes (id) { id -> Int4, } }`",
            ));
        }
        Ok(Self { decls })
    }
}
