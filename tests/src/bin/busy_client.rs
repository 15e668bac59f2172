//! The second process of the busy-pooler test: `busy-client <url> <build|unchecked|deadpool|stock>
//! <offset> <ops> <tenant>...` runs [`workspace_diesel_tests::busy::run`] and prints its outcome
//! on one line.

use diesel_workspace::TenantId;
use workspace_diesel_tests::busy::{run, Kind};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, kind, offset, ops, tenants @ ..] = args.as_slice() else {
        eprintln!(
            "usage: busy-client <url> <build|unchecked|deadpool|stock> <offset> <ops> <tenant>..."
        );
        std::process::exit(2);
    };
    let kind = Kind::parse(kind).expect("build, unchecked, deadpool or stock");
    let tenants: Vec<TenantId> = tenants
        .iter()
        .map(|t| TenantId::new(t).expect("a tenant name"))
        .collect();
    let outcome = run(
        url,
        kind,
        &tenants,
        offset.parse().expect("an offset"),
        ops.parse().expect("a number of operations"),
    );
    println!("{outcome}");
}
