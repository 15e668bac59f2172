//! The arguments of the commands that write files: a new migration, and the Rust schema.

use std::path::PathBuf;

use clap::Args;

/// `makemigrations_tenant` and `migration generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The migration's name: lower-case ASCII letters, digits and _ (e.g. add_invoices)
    pub(crate) name: String,
    /// Write into the shared migrations directory instead
    #[arg(long)]
    pub(crate) shared: bool,
    /// The migration's version, the directory name's prefix (digits and -, e.g.
    /// 2026-03-01-120000 or 20260301120000) [default: the current time, as diesel_cli]
    #[arg(long, value_name = "VERSION")]
    pub(crate) version: Option<String>,
}

/// Options of `print-schema`.
#[derive(Debug, Args)]
pub(crate) struct PrintSchemaArgs {
    /// The tenant whose schema holds the tenant tables [default: the first registered tenant, or a
    /// scratch schema built from the tenant migrations and rolled back]
    #[arg(long, value_name = "IDENTIFIER")]
    pub(crate) tenant: Option<String>,
    /// Write to this file instead of stdout [default: the config file's print_schema.file, else
    /// stdout]
    #[arg(long, alias = "output", value_name = "FILE")]
    pub(crate) output_file: Option<PathBuf>,
    /// Print only the tables whose name matches one of these regular expressions (matched
    /// against the bare table name, anywhere in it unless anchored with ^ and $)
    #[arg(
        long,
        short = 'o',
        value_name = "REGEX",
        num_args = 1..,
        conflicts_with = "except_tables"
    )]
    pub(crate) only_tables: Vec<String>,
    /// Leave out the tables whose name matches one of these regular expressions
    #[arg(long, short = 'e', value_name = "REGEX", num_args = 1..)]
    pub(crate) except_tables: Vec<String>,
    /// Also print the registry's own tables (public.workspaces, public.workspace_migrations),
    /// which the library already declares
    #[arg(long)]
    pub(crate) with_registry: bool,
}
