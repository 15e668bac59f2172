//! The items of one column: its struct (in `columns`) and its traits (in the table module).
//!
//! A column renders `"<table>"."<column>"` whatever the tenant, so its query id is static; the
//! table in the same statement carries the non-static id.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};

use super::model::{Column, Table};
use super::paths::{diesel, pg_wrappers};

/// The unit struct, with the user's attributes and doc comments.
pub(crate) fn definition(column: &Column) -> TokenStream {
    let attrs = &column.attrs;
    let name = &column.name;
    quote! {
        #(#attrs)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct #name;
    }
}

/// The column's traits, written in the table module where the user's `use` items bring its SQL
/// type into scope.
pub(crate) fn items(table: &Table, column: &Column) -> TokenStream {
    let d = diesel();
    let qs = quote!(#d::query_source);
    let qb = quote!(#d::query_builder);
    let tm = quote!(#d::internal::table_macro);
    let ex = quote!(#d::expression);
    let name = &column.name;
    // Type errors about the column (an unknown SQL type, say) point at its declaration.
    let col = quote_spanned!(name.span()=> columns::#name);
    let sql_type = &column.sql_type;
    let table_sql = &table.sql_name;
    let column_sql = &column.sql_name;
    let wrappers = pg_wrappers().into_iter().map(|(generics, wrapper)| {
        quote! {
            impl<#generics> #d::SelectableExpression<#wrapper> for #col {}
        }
    });
    let max_length = column.max_length.as_ref().map(|max| {
        quote! {
            impl #qs::SizeRestrictedColumn for #col {
                const MAX_LENGTH: usize = #max;
            }
        }
    });
    let arithmetic = Arithmetic::of(sql_type)
        .ops()
        .iter()
        .map(|(op, method)| operator(&col, op, method));

    quote! {
        impl #d::Expression for #col {
            type SqlType = #sql_type;
        }

        impl #qb::QueryId for #col {
            type QueryId = Self;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl<DB: #d::backend::Backend> #qb::QueryFragment<DB> for #col {
            fn walk_ast<'b>(&'b self, mut out: #qb::AstPass<'_, 'b, DB>) -> #d::QueryResult<()> {
                if !out.should_skip_from() {
                    out.push_identifier(#table_sql)?;
                    out.push_sql(".");
                }
                out.push_identifier(#column_sql)
            }
        }

        impl #qs::Column for #col {
            type Table = table;
            const NAME: &'static str = #column_sql;
        }

        /// The column can be used wherever its table appears exactly once.
        impl<QS> #d::AppearsOnTable<QS> for #col
        where
            QS: #qs::AppearsInFromClause<table, Count = #qs::Once>,
        {
        }

        impl #d::SelectableExpression<table> for #col {}

        /// Selectable in the `RETURNING` clause of an `INSERT`, `UPDATE` or `DELETE` on its table.
        impl<StmtKind> #d::SelectableExpression<#tm::returning::ReturningQuerySource<StmtKind, table>> for #col {}

        /// Selectable from a left join only when the table is on the left; on the right it
        /// can be NULL, so only `.nullable()` of it is.
        impl<Left, Right> #d::SelectableExpression<#tm::Join<Left, Right, #tm::LeftOuter>> for #col
        where
            Self: #d::AppearsOnTable<#tm::Join<Left, Right, #tm::LeftOuter>>
                + #d::SelectableExpression<Left>,
            Left: #qs::QuerySource,
            Right: #qs::QuerySource + #qs::AppearsInFromClause<table, Count = #qs::Never>,
        {
        }

        /// Selectable from an inner join through the side the table is on.
        impl<Left, Right> #d::SelectableExpression<#tm::Join<Left, Right, #tm::Inner>> for #col
        where
            Self: #d::AppearsOnTable<#tm::Join<Left, Right, #tm::Inner>>
                + #d::SelectableExpression<
                    <(Left::Count, Right::Count) as #tm::Pick<Left, Right>>::Selection,
                >,
            Left: #qs::QuerySource + #qs::AppearsInFromClause<table>,
            Right: #qs::QuerySource + #qs::AppearsInFromClause<table>,
            (Left::Count, Right::Count): #tm::Pick<Left, Right>,
        {
        }

        impl<J, On> #d::SelectableExpression<#tm::JoinOn<J, On>> for #col
        where
            Self: #d::SelectableExpression<J> + #d::AppearsOnTable<#tm::JoinOn<J, On>>,
        {
        }

        /// Selectable from a subquery's source, for correlated subqueries.
        impl<From> #d::SelectableExpression<#tm::SelectStatement<#tm::FromClause<From>>> for #col
        where
            From: #qs::QuerySource,
            Self: #d::SelectableExpression<From>
                + #d::AppearsOnTable<#tm::SelectStatement<#tm::FromClause<From>>>,
        {
        }

        #(#wrappers)*

        /// Without `GROUP BY` a column is not an aggregate.
        impl #ex::ValidGrouping<()> for #col {
            type IsAggregate = #ex::is_aggregate::No;
        }

        /// With `GROUP BY`, valid when the grouping covers the column.
        impl<GB> #ex::ValidGrouping<GB> for #col
        where
            GB: #ex::IsContainedInGroupBy<Self, Output = #ex::is_contained_in_group_by::Yes>,
        {
            type IsAggregate = #ex::is_aggregate::Yes;
        }

        /// Inside a subquery's `WHERE` (`exists`, `eq_any`): a column of the subquery's own
        /// `FROM` is never an aggregate there; a column of an outer query keeps its grouping.
        impl<__GB, __F> #ex::ValidGrouping<#tm::SubselectGroupBy<__GB, __F>> for #col
        where
            __F: #qs::AppearsInFromClause<table>,
            __F::Count: #tm::SubselectFieldGrouping<Self, __GB>,
        {
            type IsAggregate = <__F::Count as #tm::SubselectFieldGrouping<Self, __GB>>::IsAggregate;
        }

        impl #ex::IsContainedInGroupBy<#col> for #col {
            type Output = #ex::is_contained_in_group_by::Yes;
        }

        impl<__Rhs> #d::expression_methods::EqAll<__Rhs> for #col
        where
            __Rhs: #ex::AsExpression<#sql_type>,
            #d::dsl::Eq<Self, __Rhs::Expression>: #d::Expression<SqlType = #d::sql_types::Bool>,
        {
            type Output = #d::dsl::Eq<Self, __Rhs::Expression>;

            fn eq_all(self, rhs: __Rhs) -> Self::Output {
                #d::ExpressionMethods::eq(self, rhs)
            }
        }

        #max_length
        #(#arithmetic)*
    }
}

/// `GROUP BY a` covers `b` when `a` alone is the primary key: one impl per ordered pair of
/// distinct columns.
pub(crate) fn grouping(table: &Table) -> Vec<TokenStream> {
    let d = diesel();
    let ex = quote!(#d::expression);
    let mut out = Vec::new();
    for by in &table.columns {
        let covers = if table.is_sole_key(&by.name) {
            quote!(Yes)
        } else {
            quote!(No)
        };
        let by = &by.name;
        for other in table.columns.iter().filter(|c| c.name != *by) {
            let other = &other.name;
            out.push(quote! {
                impl #ex::IsContainedInGroupBy<columns::#other> for columns::#by {
                    type Output = #ex::is_contained_in_group_by::#covers;
                }
            });
        }
    }
    out
}

/// Which of `+ - * /` Diesel's `table!` gives a column, by the name of its SQL type.
#[derive(Debug, PartialEq)]
enum Arithmetic {
    None,
    /// Dates, times and network addresses: `+` and `-`.
    Shift,
    /// Numbers: `+ - * /`.
    Full,
}

impl Arithmetic {
    fn of(sql_type: &syn::TypePath) -> Self {
        let Some(last) = sql_type.path.segments.last() else {
            return Arithmetic::None;
        };
        // `Nullable<T>` (and MySQL's `Unsigned<T>`) compute as `T` does.
        if last.ident == "Nullable" || last.ident == "Unsigned" {
            if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                if let [syn::GenericArgument::Type(syn::Type::Path(inner))] =
                    args.args.iter().collect::<Vec<_>>().as_slice()
                {
                    return Arithmetic::of(inner);
                }
            }
            return Arithmetic::None;
        }
        match last.ident.to_string().as_str() {
            "SmallInt" | "Smallint" | "Int2" | "SmallSerial" | "Integer" | "Int4" | "Serial"
            | "BigInt" | "Bigint" | "Int8" | "BigSerial" | "Float" | "Float4" | "Double"
            | "Float8" | "Numeric" | "Decimal" => Arithmetic::Full,
            "Date" | "Time" | "Timestamp" | "Timestamptz" | "Inet" | "Cidr" => Arithmetic::Shift,
            _ => Arithmetic::None,
        }
    }

    /// (`std::ops` trait, its method).
    fn ops(&self) -> &'static [(&'static str, &'static str)] {
        const ALL: &[(&str, &str)] = &[
            ("Add", "add"),
            ("Sub", "sub"),
            ("Mul", "mul"),
            ("Div", "div"),
        ];
        match self {
            Arithmetic::None => &[],
            Arithmetic::Shift => &ALL[..2],
            Arithmetic::Full => ALL,
        }
    }
}

/// `column <op> rhs`, typed by the SQL type's `diesel::sql_types::ops` impl.
fn operator(col: &TokenStream, op: &str, method: &str) -> TokenStream {
    let d = diesel();
    let op = format_ident!("{op}");
    let method = format_ident!("{method}");
    quote! {
        impl<__Rhs> ::core::ops::#op<__Rhs> for #col
        where
            __Rhs: #d::expression::AsExpression<
                <<Self as #d::Expression>::SqlType as #d::sql_types::ops::#op>::Rhs,
            >,
        {
            type Output = #d::internal::table_macro::ops::#op<Self, __Rhs::Expression>;

            fn #method(self, rhs: __Rhs) -> Self::Output {
                #d::internal::table_macro::ops::#op::new(
                    self,
                    #d::expression::AsExpression::as_expression(rhs),
                )
            }
        }
    }
}
