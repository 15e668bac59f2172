//! The module `tenant_table!` generates for one table.
//!
//! Its shape is the one Diesel's `table!` gives (`notes::table`, `notes::columns::*` re-exported
//! as `notes::title`, `notes::dsl`, `all_columns`, `SqlType`, `BoxedQuery`), so Diesel's derives,
//! `joinable!`, `allow_tables_to_appear_in_same_query!` and `alias!` accept it. Every path is
//! absolute, through `::diesel_workspace::__private`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use super::column;
use super::model::Table;
use super::paths::{diesel, pg_wrappers};

pub(crate) fn expand(table: &Table) -> TokenStream {
    let d = diesel();
    let attrs = &table.attrs;
    let module = &table.name;
    let names: Vec<_> = table.columns.iter().map(|c| &c.name).collect();
    let sql_types = table.columns.iter().map(|c| &c.sql_type);
    let imports = if table.imports.is_empty() {
        quote!(use #d::sql_types::*;)
    } else {
        let imports = &table.imports;
        quote!(#(#imports)*)
    };
    let structs = table.columns.iter().map(column::definition);
    let column_items = table.columns.iter().map(|c| column::items(table, c));
    let grouping = column::grouping(table);
    let table_items = table_items(table);
    let width = width_check(table);
    let star = star(table);
    let doc_table = format!(
        " The tenant table `{0}`: queries on it read and write `\"<active tenant>\".\"{0}\"`.",
        table.sql_name
    );

    quote! {
        #(#attrs)*
        #[allow(unused_imports, dead_code, unreachable_pub, unused_qualifications, missing_docs)]
        pub mod #module {
            #width
            use ::diesel_workspace::__private::diesel;
            #imports
            pub use self::columns::*;

            /// The table's columns, one unit struct each (re-exported by the table module).
            pub mod columns {
                #(#structs)*

                /// `"<table>".*` in SQL, as `table!` provides it; it cannot be selected (select
                /// `all_columns` instead).
                #[allow(non_camel_case_types)]
                #[derive(Debug, Clone, Copy, Default)]
                pub struct star;
            }

            /// The columns, and the table under the module's name, for glob imports.
            pub mod dsl {
                pub use super::columns::{#(#names),*};
                pub use super::table as #module;
            }

            /// Every column, in declaration order.
            #[allow(non_upper_case_globals)]
            pub const all_columns: (#(columns::#names,)*) = (#(columns::#names,)*);

            #[doc = #doc_table]
            #[allow(non_camel_case_types)]
            #[derive(Debug, Clone, Copy, Default)]
            pub struct table;

            impl table {
                /// `"<table>".*` in SQL.
                pub fn star(&self) -> columns::star {
                    columns::star
                }
            }

            /// The SQL types of `all_columns`.
            pub type SqlType = (#(#sql_types,)*);

            /// A boxed query on this table.
            pub type BoxedQuery<'a, DB, ST = SqlType> = #d::internal::table_macro::BoxedSelectStatement<
                'a,
                ST,
                #d::internal::table_macro::FromClause<table>,
                DB,
            >;

            #table_items
            #star
            #(#column_items)*
            #(#grouping)*
        }
    }
}

/// The table struct's traits.
fn table_items(table: &Table) -> TokenStream {
    let d = diesel();
    let qs = quote!(#d::query_source);
    let qb = quote!(#d::query_builder);
    let tm = quote!(#d::internal::table_macro);
    let sql_name = &table.sql_name;
    let names = table.columns.iter().map(|c| &c.name);
    let all = quote!((#(columns::#names,)*));
    let key = match table.primary_key.as_slice() {
        [one] => quote!(columns::#one),
        many => quote!((#(columns::#many,)*)),
    };
    let joins = join_sources()
        .into_iter()
        .map(|(generics, source, bounds)| {
            quote! {
                /// Joins with a composite source on the right go through that source's `JoinTo`.
                impl<#generics> #d::JoinTo<#source> for table
                where
                    #source: #d::JoinTo<table>,
                    #bounds
                {
                    type FromClause = #source;
                    type OnClause = <#source as #d::JoinTo<table>>::OnClause;

                    fn join_target(rhs: #source) -> (Self::FromClause, Self::OnClause) {
                        let (_, on) = <#source as #d::JoinTo<table>>::join_target(table);
                        (rhs, on)
                    }
                }
            }
        });
    let wrappers = pg_wrappers().into_iter().map(|(generics, wrapper)| {
        quote! {
            impl<#generics> #qs::AppearsInFromClause<#wrapper> for table {
                type Count = #qs::Once;
            }
            impl<#generics> #qs::AppearsInFromClause<table> for #wrapper {
                type Count = #qs::Once;
            }
        }
    });

    quote! {
        /// Its SQL depends on the active tenant, so its query id is never static: Diesel then
        /// keys its prepared statements by SQL text, one per tenant and query shape.
        impl #qb::QueryId for table {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }

        impl<DB: #d::backend::Backend> #qb::QueryFragment<DB> for table {
            fn walk_ast<'b>(&'b self, out: #qb::AstPass<'_, 'b, DB>) -> #d::QueryResult<()> {
                ::diesel_workspace::__private::walk_tenant_table(#sql_name, out)
            }
        }

        impl ::diesel_workspace::TenantTable for table {
            const SQL_NAME: &'static str = #sql_name;
        }

        impl #qs::QuerySource for table {
            type FromClause = Self;
            type DefaultSelection = #all;

            fn from_clause(&self) -> Self::FromClause {
                table
            }

            fn default_selection(&self) -> Self::DefaultSelection {
                all_columns
            }
        }

        impl #qs::Table for table {
            type PrimaryKey = #key;
            type AllColumns = #all;

            fn primary_key(&self) -> Self::PrimaryKey {
                #key
            }

            fn all_columns() -> Self::AllColumns {
                all_columns
            }
        }

        impl #qb::AsQuery for table {
            type SqlType = SqlType;
            type Query = #tm::SelectStatement<#tm::FromClause<Self>>;

            fn as_query(self) -> Self::Query {
                #tm::SelectStatement::simple(self)
            }
        }

        impl #d::associations::HasTable for table {
            type Table = Self;

            fn table() -> Self::Table {
                table
            }
        }

        impl #qb::IntoUpdateTarget for table {
            type WhereClause =
                <<Self as #qb::AsQuery>::Query as #qb::IntoUpdateTarget>::WhereClause;

            fn into_update_target(self) -> #qb::UpdateTarget<Self, Self::WhereClause> {
                #qb::IntoUpdateTarget::into_update_target(#qb::AsQuery::as_query(self))
            }
        }

        /// `INSERT INTO ... SELECT * FROM` this table.
        impl<Target> #d::insertable::Insertable<Target> for table
        where
            <Self as #qb::AsQuery>::Query: #d::insertable::Insertable<Target>,
        {
            type Values =
                <<Self as #qb::AsQuery>::Query as #d::insertable::Insertable<Target>>::Values;

            fn values(self) -> Self::Values {
                #d::insertable::Insertable::values(#qb::AsQuery::as_query(self))
            }
        }

        impl<Target> #d::insertable::Insertable<Target> for &table
        where
            table: #d::insertable::Insertable<Target>,
        {
            type Values = <table as #d::insertable::Insertable<Target>>::Values;

            fn values(self) -> Self::Values {
                #d::insertable::Insertable::values(*self)
            }
        }

        impl #qs::AppearsInFromClause<table> for table {
            type Count = #qs::Once;
        }

        impl #qs::AppearsInFromClause<table> for #tm::NoFromClause {
            type Count = #qs::Never;
        }

        /// What a `RETURNING` clause of a statement on this table selects from: this table,
        /// once, and no other table.
        impl<StmtKind> #qs::AppearsInFromClause<table> for #tm::returning::ReturningQuerySource<StmtKind, table> {
            type Count = #qs::Once;
        }

        impl<StmtKind, T> #qs::AppearsInFromClause<#tm::returning::ReturningQuerySource<StmtKind, T>> for table {
            type Count = #qs::Never;
        }

        /// An alias of this table is another source than the table itself.
        impl<S> #qs::AppearsInFromClause<#qs::Alias<S>> for table
        where
            S: #qs::AliasSource,
        {
            type Count = #qs::Never;
        }

        impl<S> #tm::AliasAppearsInFromClause<S, table> for table
        where
            S: #qs::AliasSource<Target = table>,
        {
            type Count = #qs::Never;
        }

        /// Two aliases of this table: `alias!` says whether they are the same one.
        impl<S1, S2> #tm::AliasAliasAppearsInFromClause<table, S2, S1> for table
        where
            S1: #qs::AliasSource<Target = table> + #tm::AliasAliasAppearsInFromClauseSameTable<S2, table>,
            S2: #qs::AliasSource<Target = table>,
        {
            type Count = <S1 as #tm::AliasAliasAppearsInFromClauseSameTable<S2, table>>::Count;
        }

        /// A column of this table, seen through an alias of it.
        impl<S, C> #tm::FieldAliasMapperAssociatedTypesDisjointnessTrick<table, S, C> for table
        where
            S: #qs::AliasSource<Target = table> + ::core::clone::Clone,
            C: #qs::Column<Table = table>,
        {
            type Out = #qs::AliasedField<S, C>;

            fn map(column: C, alias: &#qs::Alias<S>) -> Self::Out {
                alias.field(column)
            }
        }

        #(#joins)*
        #(#wrappers)*
    }
}

/// The composite sources a table can be joined to (generics, source type, extra bounds): each
/// already knows how to join this table, so the table forwards to it.
fn join_sources() -> Vec<(TokenStream, TokenStream, TokenStream)> {
    let d = diesel();
    let tm = quote!(#d::internal::table_macro);
    let qb = quote!(#d::query_builder);
    vec![
        (
            quote!(L, R, K),
            quote!(#tm::Join<L, R, K>),
            quote!(L: #d::QuerySource, R: #d::QuerySource,),
        ),
        (quote!(J, On), quote!(#tm::JoinOn<J, On>), quote!()),
        (
            quote!(F, S, Dist, W, O, LOf, G, H, Lock),
            quote!(#tm::SelectStatement<#tm::FromClause<F>, S, Dist, W, O, LOf, G, H, Lock>),
            quote!(F: #d::QuerySource,),
        ),
        (
            quote!('a, QS, ST, DB),
            quote!(#tm::BoxedSelectStatement<'a, ST, #tm::FromClause<QS>, DB>),
            quote!(QS: #d::QuerySource,),
        ),
        (quote!(S), quote!(#d::query_source::Alias<S>), quote!()),
        (quote!(S), quote!(#qb::Only<S>), quote!()),
        (
            quote!(S, M),
            quote!(#qb::Tablesample<S, M>),
            quote!(M: #qb::TablesampleMethod,),
        ),
    ]
}

/// `notes::star`: renders `"notes".*`, and is never selectable.
fn star(table: &Table) -> TokenStream {
    let d = diesel();
    let qb = quote!(#d::query_builder);
    let sql_name = &table.sql_name;
    let names = table.columns.iter().map(|c| &c.name);
    let all = quote!((#(columns::#names,)*));
    quote! {
        impl #d::Expression for columns::star {
            type SqlType = #d::expression::expression_types::NotSelectable;
        }

        impl #qb::QueryId for columns::star {
            type QueryId = Self;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl<GB> #d::expression::ValidGrouping<GB> for columns::star
        where
            #all: #d::expression::ValidGrouping<GB>,
        {
            type IsAggregate = <#all as #d::expression::ValidGrouping<GB>>::IsAggregate;
        }

        impl<DB: #d::backend::Backend> #qb::QueryFragment<DB> for columns::star {
            fn walk_ast<'b>(&'b self, mut out: #qb::AstPass<'_, 'b, DB>) -> #d::QueryResult<()> {
                if !out.should_skip_from() {
                    out.push_identifier(#sql_name)?;
                    out.push_sql(".");
                }
                out.push_sql("*");
                Ok(())
            }
        }

        impl #d::SelectableExpression<table> for columns::star {}
        impl #d::AppearsOnTable<table> for columns::star {}
    }
}

/// Diesel implements its traits for tuples up to the width its `*-column-tables` feature
/// selects. Past 16 columns (Diesel's width without any of them), a bound on a tuple of one `()`
/// per column checks the width Diesel was built with; it fails at the first column past the
/// limit, with a message naming the feature to enable. It comes first in the module, so that
/// message comes before the errors the too-wide tuples then cause.
fn width_check(table: &Table) -> TokenStream {
    let limits = [(16, "Within32"), (32, "Within64"), (64, "Within128")];
    let count = table.columns.len();
    let Some((limit, check)) = limits.iter().rev().find(|(limit, _)| count > *limit) else {
        return TokenStream::new();
    };
    let span = table.columns[*limit].name.span();
    let units = ::core::iter::repeat_n(quote_spanned!(span=> ()), count);
    let check = syn::Ident::new(check, span);
    let bound = quote_spanned! {span=>
        (#(#units,)*): ::diesel_workspace::__private::width::#check
    };
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn width() where #bound {}
        };
    }
}
