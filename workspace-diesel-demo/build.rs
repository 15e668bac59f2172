//! Re-embeds the migrations when they change.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=../migrations_tenant");
}
