//! The checked description of a tenant table: every user mistake is found here, each reported at
//! the token that causes it, before anything is generated.

use std::collections::HashSet;

use diesel_table_macro_syntax::{ColumnDef, TableDecl};
use syn::{Attribute, Ident, ItemUse, LitInt, TypePath};

use super::parse::Invocation;

/// Diesel's primary key when the declaration names none.
const DEFAULT_KEY: &str = "id";

/// Names the generated module defines for itself; a column of that name would collide.
const RESERVED: &[&str] = &["star", "table"];

/// Above this many columns no Diesel feature helps (`128-column-tables` is the widest).
pub(crate) const MAX_COLUMNS: usize = 128;

/// One checked table of an invocation.
pub(crate) struct Table {
    /// Attributes for the module, doc comments included (`#[sql_name]` already taken out).
    pub(crate) attrs: Vec<Attribute>,
    /// The module's name, as written.
    pub(crate) name: Ident,
    /// The table's name in SQL, without a schema.
    pub(crate) sql_name: String,
    /// The `use` items that bring the columns' SQL types into scope.
    pub(crate) imports: Vec<ItemUse>,
    /// The primary key's columns, in order: one, or several for a composite key.
    pub(crate) primary_key: Vec<Ident>,
    pub(crate) columns: Vec<Column>,
}

/// One checked column.
pub(crate) struct Column {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) name: Ident,
    pub(crate) sql_name: String,
    pub(crate) sql_type: TypePath,
    pub(crate) max_length: Option<LitInt>,
}

impl Table {
    /// Checks every declaration of the invocation; reports all their errors at once.
    ///
    /// `use` items written before the first table apply to every table that brings none of its
    /// own, so an invocation can import its SQL types once.
    pub(crate) fn from_invocation(invocation: Invocation) -> syn::Result<Vec<Table>> {
        let shared_imports = invocation.decls[0].use_statements.clone();
        let mut errors = Errors::default();
        let mut seen = HashSet::new();
        let mut tables = Vec::with_capacity(invocation.decls.len());
        for decl in invocation.decls {
            if !seen.insert(decl.table_name.to_string()) {
                errors.push(syn::Error::new_spanned(
                    &decl.table_name,
                    format!(
                        "table `{}` is declared twice in this invocation\n\
                         help: remove one of the declarations",
                        decl.table_name
                    ),
                ));
            }
            if let Some(table) = Table::from_decl(decl, &shared_imports, &mut errors) {
                tables.push(table);
            }
        }
        errors.finish().map(|()| tables)
    }

    fn from_decl(decl: TableDecl, shared: &[ItemUse], errors: &mut Errors) -> Option<Table> {
        let before = errors.len();
        if let Some(schema) = &decl.schema {
            errors.push(syn::Error::new_spanned(
                schema,
                "a tenant table takes its schema from the active tenant\n\
                 help: remove the schema, or declare a shared table with diesel's `table!`",
            ));
        }
        let columns: Vec<Column> = decl.column_defs.into_iter().map(Column::from).collect();
        check_columns(&decl.table_name, &columns, errors);
        let primary_key = primary_key(&decl.table_name, decl.primary_keys, &columns, errors);
        if errors.len() > before {
            return None;
        }
        let imports = if decl.use_statements.is_empty() {
            shared.to_vec()
        } else {
            decl.use_statements
        };
        Some(Table {
            attrs: decl.meta,
            name: decl.table_name,
            sql_name: decl.sql_name,
            imports,
            primary_key: primary_key?,
            columns,
        })
    }

    /// Whether `column` alone is the primary key (grouping by it then covers every column).
    pub(crate) fn is_sole_key(&self, column: &Ident) -> bool {
        self.primary_key.len() == 1 && self.primary_key[0] == *column
    }
}

impl From<ColumnDef> for Column {
    fn from(def: ColumnDef) -> Self {
        Column {
            attrs: def.meta,
            name: def.column_name,
            sql_name: def.sql_name,
            sql_type: def.tpe,
            max_length: def.max_length,
        }
    }
}

fn check_columns(table: &Ident, columns: &[Column], errors: &mut Errors) {
    if columns.is_empty() {
        errors.push(syn::Error::new_spanned(
            table,
            format!(
                "table `{table}` has no columns\n\
                 help: declare its columns in the braces, as in `{table} (id) {{ id -> Int4, }}`"
            ),
        ));
    }
    if let Some(extra) = columns.get(MAX_COLUMNS) {
        errors.push(syn::Error::new_spanned(
            &extra.name,
            format!(
                "table `{table}` has {} columns; Diesel supports at most {MAX_COLUMNS}, with its \
                 `128-column-tables` feature\n\
                 help: split the table, or declare only the columns the application reads",
                columns.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for column in columns {
        let name = column.name.to_string();
        if column.name == *table {
            errors.push(syn::Error::new_spanned(
                &column.name,
                format!(
                    "column `{name}` has the name of its table\n\
                     help: rename the column and keep its SQL name with \
                     `#[sql_name = \"{name}\"] {name}_ -> ...`"
                ),
            ));
        } else if RESERVED.contains(&name.as_str()) {
            errors.push(syn::Error::new_spanned(
                &column.name,
                format!(
                    "a column cannot be named `{name}`: the table module defines `{table}::{name}` itself\n\
                     help: rename the column and keep its SQL name with \
                     `#[sql_name = \"{name}\"] {name}_ -> ...`"
                ),
            ));
        }
        if !seen.insert(name.clone()) {
            errors.push(syn::Error::new_spanned(
                &column.name,
                format!(
                    "column `{name}` is declared twice in table `{table}`\n\
                     help: remove one of them"
                ),
            ));
        }
    }
}

/// The declared key, or `id` when there is such a column; every key column must exist.
fn primary_key(
    table: &Ident,
    declared: Option<diesel_table_macro_syntax::PrimaryKey>,
    columns: &[Column],
    errors: &mut Errors,
) -> Option<Vec<Ident>> {
    if columns.is_empty() {
        // Already reported: a key needs columns to name.
        return None;
    }
    let is_column = |key: &Ident| columns.iter().any(|c| c.name == *key);
    match declared {
        Some(declared) => {
            let keys: Vec<Ident> = declared.keys.into_iter().collect();
            if keys.is_empty() {
                errors.push(syn::Error::new_spanned(
                    table,
                    format!(
                        "the primary key of `{table}` is empty\n\
                         help: name its key columns in the parentheses, as in `{table} (id)`"
                    ),
                ));
                return None;
            }
            let mut ok = true;
            for key in keys.iter().filter(|k| !is_column(k)) {
                ok = false;
                errors.push(syn::Error::new_spanned(
                    key,
                    format!(
                        "primary key `{key}` is not a column of `{table}`\n\
                         help: the columns are {}",
                        column_list(columns)
                    ),
                ));
            }
            ok.then_some(keys)
        }
        None => match columns.iter().find(|c| c.name == DEFAULT_KEY) {
            Some(id) => Some(vec![id.name.clone()]),
            None => {
                errors.push(syn::Error::new_spanned(
                    table,
                    format!(
                        "table `{table}` names no primary key and has no `id` column\n\
                         help: name the key in parentheses after the table's name, as in `{table} ({first}) {{ ... }}`, \
                         or `{table} ({first}, ...)` for a composite key",
                        first = columns[0].name
                    ),
                ));
                None
            }
        },
    }
}

fn column_list(columns: &[Column]) -> String {
    let names: Vec<String> = columns.iter().map(|c| format!("`{}`", c.name)).collect();
    names.join(", ")
}

/// Errors collected across every table of an invocation, reported together.
#[derive(Default)]
struct Errors {
    all: Option<syn::Error>,
    count: usize,
}

impl Errors {
    fn push(&mut self, error: syn::Error) {
        self.count += 1;
        match &mut self.all {
            Some(all) => all.combine(error),
            None => self.all = Some(error),
        }
    }

    fn len(&self) -> usize {
        self.count
    }

    fn finish(self) -> syn::Result<()> {
        self.all.map_or(Ok(()), Err)
    }
}
