//! Rebuilds the crate when an embedded migration changes (`embed_migrations!` reads them at
//! compile time, and cargo does not track those files by itself): the registry's migrations and
//! the tenant migrations of the examples and the crate documentation.

fn main() {
    for dir in ["migrations", "migrations_tenant"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
