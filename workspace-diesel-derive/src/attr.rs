//! Parsing of `#[tenant(...)]` and of the `table_name` in `#[diesel(...)]`.

use syn::spanned::Spanned;
use syn::{Attribute, Path};

/// The keys `#[tenant(...)]` accepts.
const VALID_KEYS: &str = "`table`";

/// What the attributes of a `TenantModel` say.
#[derive(Default)]
pub(crate) struct Attrs {
    /// `#[tenant(table = path)]`.
    pub(crate) tenant_table: Option<Path>,
    /// `#[diesel(table_name = path)]`, shared with diesel's own derives.
    pub(crate) diesel_table_name: Option<Path>,
}

pub(crate) fn parse(attrs: &[Attribute]) -> syn::Result<Attrs> {
    let mut out = Attrs::default();
    for attr in attrs {
        if attr.path().is_ident("tenant") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table") {
                    if out.tenant_table.is_some() {
                        return Err(meta.error("duplicate `table` key"));
                    }
                    out.tenant_table = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    let key = meta
                        .path
                        .get_ident()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| "?".into());
                    Err(syn::Error::new(
                        meta.path.span(),
                        format!(
                            "unknown attribute `{key}` in `#[tenant(...)]`\n\
                             help: the valid keys are {VALID_KEYS}, as in `#[tenant(table = notes)]`"
                        ),
                    ))
                }
            })?;
        } else if attr.path().is_ident("diesel") {
            // Only `table_name` matters here; diesel's derives check the rest.
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table_name") {
                    out.diesel_table_name = Some(meta.value()?.parse()?);
                } else if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                } else if meta.input.peek(syn::token::Paren) {
                    let _content;
                    syn::parenthesized!(_content in meta.input);
                }
                Ok(())
            });
        }
    }
    Ok(out)
}
