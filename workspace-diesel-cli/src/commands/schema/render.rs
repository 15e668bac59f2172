//! Rendering: the Rust file of `table!` and `tenant_table!` blocks, the `sql_types` module for
//! custom types, `joinable!` lines and one `allow_tables_to_appear_in_same_query!`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::catalog::{Column, ForeignKey, Table};

/// Everything `render` needs.
pub(super) struct Schema<'a> {
    pub(super) shared_schema: &'a str,
    pub(super) tenant_schema: &'a str,
    pub(super) shared: Vec<Table>,
    pub(super) tenant: Vec<Table>,
    pub(super) foreign_keys: Vec<ForeignKey>,
}

/// A custom SQL type (enum, composite, extension type) declared in the `sql_types` module.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct CustomType {
    rust_name: String,
    name: String,
    schema: Option<String>,
}

/// Writes the Rust file.
pub(super) fn render(schema: &Schema<'_>) -> String {
    let mut custom: BTreeMap<String, CustomType> = BTreeMap::new();
    let mut blocks = Vec::new();
    for table in &schema.shared {
        blocks.push(render_table(
            "diesel::table!",
            Some(schema.shared_schema),
            schema.shared_schema,
            schema.tenant_schema,
            table,
            &mut custom,
        ));
    }
    for table in &schema.tenant {
        blocks.push(render_table(
            "diesel_workspace::tenant_table!",
            None,
            schema.tenant_schema,
            schema.tenant_schema,
            table,
            &mut custom,
        ));
    }

    let mut out = String::from("// @generated automatically by workspace-diesel print-schema.\n\n");
    if !custom.is_empty() {
        out.push_str("pub mod sql_types {\n");
        for (i, ty) in custom.values().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(
                "    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]\n",
            );
            match &ty.schema {
                Some(s) => writeln!(
                    out,
                    "    #[diesel(postgres_type(name = \"{}\", schema = \"{s}\"))]",
                    ty.name
                ),
                None => writeln!(out, "    #[diesel(postgres_type(name = \"{}\"))]", ty.name),
            }
            .expect("writing to a String");
            writeln!(out, "    pub struct {};", ty.rust_name).expect("writing to a String");
        }
        out.push_str("}\n\n");
    }
    out.push_str(&blocks.join("\n"));

    // Joins: one `joinable!` per (child, parent) pair whose single foreign key references the
    // parent's single-column primary key, both tables printed.
    let printed: BTreeMap<(&str, &str), &Table> = schema
        .shared
        .iter()
        .map(|t| ((schema.shared_schema, t.name.as_str()), t))
        .chain(
            schema
                .tenant
                .iter()
                .map(|t| ((schema.tenant_schema, t.name.as_str()), t)),
        )
        .collect();
    let mut pairs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for fk in &schema.foreign_keys {
        let (Some(_), Some(parent)) = (
            printed.get(&(fk.child_schema.as_str(), fk.child_table.as_str())),
            printed.get(&(fk.parent_schema.as_str(), fk.parent_table.as_str())),
        ) else {
            continue;
        };
        if parent.primary_key != [fk.parent_column.as_str()] || fk.child_table == fk.parent_table {
            continue;
        }
        pairs
            .entry((
                rust_ident(&fk.child_table).0,
                rust_ident(&fk.parent_table).0,
            ))
            .or_default()
            .push(rust_ident(&fk.child_column).0);
    }
    let joins: Vec<String> = pairs
        .into_iter()
        .filter_map(|((child, parent), columns)| match columns.as_slice() {
            [column] => Some(format!(
                "diesel::joinable!({child} -> {parent} ({column}));\n"
            )),
            _ => {
                eprintln!(
                    "warning: no `joinable!` for `{child}` -> `{parent}`: several foreign keys \
                     link them; write the join by hand"
                );
                None
            }
        })
        .collect();
    if !joins.is_empty() {
        out.push('\n');
        out.push_str(&joins.concat());
    }

    let names: BTreeSet<String> = printed.values().map(|t| rust_ident(&t.name).0).collect();
    if names.len() > 1 {
        out.push_str("\ndiesel::allow_tables_to_appear_in_same_query!(\n");
        for name in &names {
            writeln!(out, "    {name},").expect("writing to a String");
        }
        out.push_str(");\n");
    }
    out
}

/// One `table!`/`tenant_table!` block.
fn render_table(
    macro_path: &str,
    qualifier: Option<&str>,
    schema: &str,
    tenant_schema: &str,
    table: &Table,
    custom: &mut BTreeMap<String, CustomType>,
) -> String {
    let mut uses = BTreeSet::new();
    let mut columns = String::new();
    for column in &table.columns {
        let ty = sql_type(schema, tenant_schema, &table.name, column, custom);
        if let Some(custom_name) = &ty.custom {
            uses.insert(custom_name.clone());
        }
        if !column.comment.is_empty() {
            doc_comment(&mut columns, "        ", &column.comment);
        }
        let (ident, renamed) = rust_ident(&column.name);
        if renamed {
            writeln!(
                columns,
                "        #[sql_name = \"{}\"]",
                escape(&column.name)
            )
            .expect("writing to a String");
        }
        if let Some(len) = ty.max_length {
            writeln!(columns, "        #[max_length = {len}]").expect("writing to a String");
        }
        writeln!(columns, "        {ident} -> {},", ty.text).expect("writing to a String");
    }

    let mut out = format!("{macro_path} {{\n");
    if !uses.is_empty() {
        out.push_str("    use diesel::sql_types::*;\n");
        for u in &uses {
            writeln!(out, "    use super::sql_types::{u};").expect("writing to a String");
        }
        out.push('\n');
    }
    if !table.comment.is_empty() {
        doc_comment(&mut out, "    ", &table.comment);
    }
    let (ident, renamed) = rust_ident(&table.name);
    if renamed {
        writeln!(out, "    #[sql_name = \"{}\"]", escape(&table.name))
            .expect("writing to a String");
    }
    let key: Vec<String> = table.primary_key.iter().map(|k| rust_ident(k).0).collect();
    let qualified = match qualifier {
        Some(q) => format!("{}.{ident}", rust_ident(q).0),
        None => ident,
    };
    writeln!(out, "    {qualified} ({}) {{", key.join(", ")).expect("writing to a String");
    out.push_str(&columns);
    out.push_str("    }\n}\n");
    out
}

fn doc_comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            writeln!(out, "{indent}///").expect("writing to a String");
        } else {
            writeln!(out, "{indent}/// {line}").expect("writing to a String");
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A column's Diesel SQL type.
struct SqlType {
    text: String,
    max_length: Option<i32>,
    custom: Option<String>,
}

/// Maps a PostgreSQL type to a Diesel `sql_types` name, as `diesel print-schema` does.
fn sql_type(
    schema: &str,
    tenant_schema: &str,
    table: &str,
    column: &Column,
    custom: &mut BTreeMap<String, CustomType>,
) -> SqlType {
    let builtin = column.type_schema == "pg_catalog";
    let mut custom_name = None;
    let base = match builtin.then(|| builtin_type(&column.type_name)).flatten() {
        Some(name) => name.to_owned(),
        None if builtin => {
            eprintln!(
                "warning: column `{schema}.{table}.{}` has type `{}`, which has no Diesel type; \
                 printed as `{}`",
                column.name,
                column.type_name,
                camel_case(&column.type_name)
            );
            camel_case(&column.type_name)
        }
        None => {
            let rust_name = camel_case(&column.type_name);
            // A type in a tenant schema exists once per tenant: declare it by name only.
            let in_tenant = column.type_schema == tenant_schema;
            if in_tenant && column.type_kind == "e" {
                eprintln!(
                    "warning: column `{schema}.{table}.{}` uses the enum type `{}` of a tenant \
                     schema; Diesel caches type OIDs per connection by name, so keep enum types \
                     in the shared schema",
                    column.name, column.type_name
                );
            }
            let type_schema = (!in_tenant).then(|| column.type_schema.clone());
            custom
                .entry(rust_name.clone())
                .or_insert_with(|| CustomType {
                    rust_name: rust_name.clone(),
                    name: column.type_name.clone(),
                    schema: type_schema,
                });
            custom_name = Some(rust_name.clone());
            rust_name
        }
    };
    let max_length = (!column.is_array
        && matches!(column.type_name.as_str(), "varchar" | "bpchar")
        && column.typmod > 4)
        .then(|| column.typmod - 4);
    let mut text = if column.is_array {
        format!("Array<Nullable<{base}>>")
    } else {
        base
    };
    if !column.not_null {
        text = format!("Nullable<{text}>");
    }
    SqlType {
        text,
        max_length,
        custom: custom_name,
    }
}

fn builtin_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "int2" => "Int2",
        "int4" => "Int4",
        "int8" => "Int8",
        "float4" => "Float4",
        "float8" => "Float8",
        "numeric" => "Numeric",
        "money" => "Money",
        "oid" => "Oid",
        "bool" => "Bool",
        "text" => "Text",
        "varchar" => "Varchar",
        "bpchar" => "Bpchar",
        "char" => "CChar",
        "name" => "Text",
        "citext" => "Citext",
        "bytea" => "Bytea",
        "date" => "Date",
        "time" => "Time",
        "timestamp" => "Timestamp",
        "timestamptz" => "Timestamptz",
        "interval" => "Interval",
        "uuid" => "Uuid",
        "json" => "Json",
        "jsonb" => "Jsonb",
        "inet" => "Inet",
        "cidr" => "Cidr",
        "macaddr" => "MacAddr",
        "macaddr8" => "MacAddr8",
        "int4range" => "Int4range",
        "int8range" => "Int8range",
        "numrange" => "Numrange",
        "tsrange" => "Tsrange",
        "tstzrange" => "Tstzrange",
        "daterange" => "Daterange",
        "int4multirange" => "Int4multirange",
        "int8multirange" => "Int8multirange",
        "nummultirange" => "Nummultirange",
        "tsmultirange" => "Tsmultirange",
        "tstzmultirange" => "Tstzmultirange",
        "datemultirange" => "Datemultirange",
        "record" => "Record",
        _ => return None,
    })
}

/// `workspace_status` → `WorkspaceStatus`.
fn camel_case(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            match cs.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + cs.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// A Rust identifier for an SQL name, and whether it differs (then `#[sql_name]` is needed):
/// key words get a `_` suffix, as `diesel print-schema` does, other characters become `_`.
fn rust_ident(name: &str) -> (String, bool) {
    let mut ident: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    if RUST_KEYWORDS.contains(&ident.as_str()) {
        ident.push('_');
    }
    let renamed = ident != name;
    (ident, renamed)
}

const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield", "_",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(rust_ident("notes"), ("notes".into(), false));
        assert_eq!(rust_ident("type"), ("type_".into(), true));
        assert_eq!(rust_ident("1st"), ("_1st".into(), true));
        assert_eq!(rust_ident("a-b"), ("a_b".into(), true));
        assert_eq!(camel_case("workspace_status"), "WorkspaceStatus");
    }
}
