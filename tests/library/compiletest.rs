//! Compile-time guarantees, pinned with trybuild: `TenantModel` refuses shared tables and unknown
//! attributes, and `tenant_table!` refuses a hard-coded schema.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
}
