//! Expansion snapshots of `tenant_table!` (reviewed with `cargo insta review`) and its
//! diagnostics, on token streams.

use proc_macro2::TokenStream;
use quote::quote;

use crate::tenant_table_inner;

/// The expansion, pretty-printed; panics when it is not valid Rust items.
fn pretty(input: TokenStream) -> String {
    let output = tenant_table_inner(input);
    let file: syn::File = syn::parse2(output.clone())
        .unwrap_or_else(|e| panic!("the expansion does not parse ({e}):\n{output}"));
    prettyplease::unparse(&file)
}

/// The messages of the `compile_error!`s the expansion consists of; panics on any other item.
fn errors(input: TokenStream) -> Vec<String> {
    let file: syn::File = syn::parse2(tenant_table_inner(input)).expect("errors parse as items");
    file.items
        .iter()
        .map(|item| match item {
            syn::Item::Macro(m) if m.mac.path.segments.last().unwrap().ident == "compile_error" => {
                syn::parse2::<syn::LitStr>(m.mac.tokens.clone())
                    .expect("a message")
                    .value()
            }
            other => panic!("expected only errors, got {}", quote!(#other)),
        })
        .collect()
}

fn columns(n: usize) -> TokenStream {
    let names = (1..n).map(|i| quote::format_ident!("c{i}"));
    quote!(id -> Int4, #(#names -> Int4,)*)
}

#[test]
fn one_table() {
    insta::assert_snapshot!(pretty(quote! {
        notes (id) {
            id -> Int4,
            title -> Text,
        }
    }));
}

#[test]
fn several_tables_with_attributes_sql_names_and_keys() {
    insta::assert_snapshot!(pretty(quote! {
        use diesel::sql_types::*;
        use super::sql_types::Mood;

        /// Tags, keyed by their label.
        #[sql_name = "note_tags"]
        tags (label) {
            /// The label shown to users.
            #[max_length = 40]
            label -> Varchar,
            mood -> Mood,
        }

        memberships (user_id, team_id) {
            user_id -> Int4,
            team_id -> Int4,
            #[sql_name = "type"]
            kind -> Nullable<Text>,
            joined_at -> Timestamptz,
        }
    }));
}

#[test]
fn first_tables_imports_serve_tables_without_their_own() {
    let out = tenant_table_inner(quote! {
        use crate::types::Mood;
        a (id) { id -> Int4, m -> Mood, }
        b (id) { id -> Int4, m -> Mood, }
        use crate::other::Mood;
        c (id) { id -> Int4, m -> Mood, }
    });
    let file: syn::File = syn::parse2(out).unwrap();
    let imports: Vec<String> = file
        .items
        .iter()
        .map(|item| {
            let syn::Item::Mod(m) = item else {
                panic!("a module per table")
            };
            let uses: Vec<String> = m
                .content
                .as_ref()
                .unwrap()
                .1
                .iter()
                .filter_map(|i| match i {
                    syn::Item::Use(u) if !matches!(u.vis, syn::Visibility::Public(_)) => {
                        Some(quote!(#u).to_string())
                    }
                    _ => None,
                })
                .collect();
            format!("{}: {}", m.ident, uses.join(" "))
        })
        .collect();
    insta::assert_snapshot!(imports.join("\n"));
}

#[test]
fn no_imports_means_diesels_sql_types() {
    let out = pretty(quote!(notes (id) { id -> Int4, }));
    assert!(
        out.contains("use ::diesel_workspace::__private::diesel::sql_types::*;"),
        "{out}"
    );
}

#[test]
fn width_check_names_the_next_feature() {
    assert!(!pretty(quote!(t (id) { #(columns(16)) })).contains("width::"));
    for (count, check) in [
        (17, "Within32"),
        (32, "Within32"),
        (33, "Within64"),
        (64, "Within64"),
        (65, "Within128"),
        (128, "Within128"),
    ] {
        let cols = columns(count);
        let out = pretty(quote!(t (id) { #cols }));
        let units = vec!["()"; count].join(", ");
        let bound = format!("where ({units}): ::diesel_workspace::__private::width::{check}");
        let squeeze = |s: &str| s.replace(['\n', ' '], "").replace(",)", ")");
        assert!(
            squeeze(&out).contains(&squeeze(&bound)),
            "{count} columns should check {check}:\n{out}"
        );
    }
}

#[test]
fn more_than_128_columns_is_an_error() {
    let cols = columns(129);
    insta::assert_snapshot!(errors(quote!(t (id) { #cols })).join("\n---\n"));
}

#[test]
fn diagnostics() {
    let cases = [
        quote!(acme.notes (id) { id -> Int4, }),
        quote!(memberships { user_id -> Int4, team_id -> Int4, }),
        quote!(memberships (user_id, tema_id) { user_id -> Int4, team_id -> Int4, }),
        quote!(notes () { id -> Int4, }),
        quote!(notes (id) {}),
        quote!(notes (id) { id -> Int4, notes -> Text, }),
        quote!(seats (id) { id -> Int4, table -> Int4, star -> Int4, }),
        quote!(notes (id) { id -> Int4, title -> Text, title -> Varchar, }),
        quote!(notes (id) { id -> Int4, } tags (id) { id -> Int4, } notes (id) { id -> Int4, }),
        quote!(notes (id) { id -> Int4, } acme.tags (id) { id -> Int4, } labels (key) { id -> Int4, }),
        quote!(notes (id) { id -> Int4, } tags (id) { id => Int4, }),
        quote!(),
    ];
    let report: Vec<String> = cases
        .into_iter()
        .map(|input| format!("{input}\n{}", errors(input.clone()).join("\n")))
        .collect();
    insta::assert_snapshot!(report.join("\n\n"));
}
