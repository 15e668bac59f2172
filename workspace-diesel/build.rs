//! Rebuilds the crate when an embedded migration changes (`embed_migrations!` reads them at
//! compile time, and cargo does not track those files by itself).

fn main() {
    for dir in ["migrations", "../migrations_shared", "../migrations_tenant"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
