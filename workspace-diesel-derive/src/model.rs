//! The checked description of a `#[derive(TenantModel)]` input.

use syn::{DeriveInput, Generics, Ident, Path};

use crate::attr;

/// A model, checked in one place before anything is generated.
pub(crate) struct Model {
    pub(crate) name: Ident,
    pub(crate) generics: Generics,
    /// The path to the table *module* (`notes`), as in `#[diesel(table_name = notes)]`.
    pub(crate) table: Path,
}

impl Model {
    pub(crate) fn from_item(item: &DeriveInput) -> syn::Result<Self> {
        let attrs = attr::parse(&item.attrs)?;
        let table = match (attrs.tenant_table, attrs.diesel_table_name) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => {
                let snake = to_snake_plural(&item.ident.to_string());
                let mut path: Path = syn::parse_str(&snake).map_err(|_| {
                    syn::Error::new_spanned(
                        &item.ident,
                        "cannot infer the table of this model\n\
                         help: name it with `#[tenant(table = notes)]`",
                    )
                })?;
                // Errors about an inferred table point at the model's name.
                for seg in &mut path.segments {
                    seg.ident.set_span(item.ident.span());
                }
                path
            }
        };
        Ok(Self {
            name: item.ident.clone(),
            generics: item.generics.clone(),
            table,
        })
    }
}

/// `NoteTag` → `note_tags`, diesel's default table name for a struct.
fn to_snake_plural(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out.push('s');
    out
}
