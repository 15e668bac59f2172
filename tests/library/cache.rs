//! The tenant-scoped cache: the same key under two tenants is two values, no tenant is an
//! error, and a tenant dropped, renamed or suspended by another process (the real CLI binary)
//! loses its entries here through the registry's notifications, while a cache that does not
//! listen keeps them (the negative control) and other tenants keep theirs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_workspace::cache::{TenantCache, NOTIFY_CHANNEL};
use diesel_workspace::{switch, TenantId};

use crate::support::cli::Workdir;
use crate::test_db;

#[test]
fn the_same_key_under_two_tenants_is_two_values_and_no_tenant_is_an_error() {
    let cache: TenantCache<String, String> = TenantCache::new(1_000);
    let (acme, globex) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    switch(&acme, || cache.insert("plan".into(), "gold".into())).unwrap();
    switch(&globex, || cache.insert("plan".into(), "free".into())).unwrap();
    let key = String::from("plan");
    assert_eq!(
        switch(&acme, || cache.get(&key)).unwrap().as_deref(),
        Some("gold")
    );
    assert_eq!(
        switch(&globex, || cache.get(&key)).unwrap().as_deref(),
        Some("free")
    );
    // Computed once per tenant, not shared.
    let computed = switch(&globex, || cache.get_with("theme".into(), || "dark".into())).unwrap();
    assert_eq!(computed, "dark");
    assert_eq!(
        switch(&acme, || cache.get(&"theme".to_owned())).unwrap(),
        None
    );
    // Outside a switch every call fails: no shared or default tenant.
    let err = cache.get(&key).unwrap_err();
    assert!(err.to_string().starts_with("no tenant is active"), "{err}");
    assert!(cache.insert("plan".into(), "leak".into()).is_err());
    assert!(cache.get_with("plan".into(), || "leak".into()).is_err());
    assert_eq!(
        switch(&acme, || cache.get(&key)).unwrap().as_deref(),
        Some("gold")
    );
    cache.invalidate_tenant(&acme);
    assert_eq!(switch(&acme, || cache.get(&key)).unwrap(), None);
    assert_eq!(
        switch(&globex, || cache.get(&key)).unwrap().as_deref(),
        Some("free")
    );
}

#[test]
fn the_library_listens_on_the_channel_the_web_crate_installs() {
    assert_eq!(NOTIFY_CHANNEL, diesel_workspace_axum::NOTIFY_CHANNEL);
}

/// How soon after the command that changed the registry has exited its tenant's entries must be
/// gone: the listener reads its notifications every 50 ms, and the rest is slack for a loaded
/// machine. Past it the test fails, however long `emptied` would still wait.
const NOTIFY_BOUND: Duration = Duration::from_millis(500);

/// Waits (up to 10 s) until `tenant` holds no entry in `cache`; returns how long it took.
fn emptied(cache: &TenantCache<u32, u32>, tenant: &TenantId) -> Duration {
    let start = Instant::now();
    while cache.tenant_entries(tenant) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{tenant}'s entries are still cached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn a_drop_rename_or_suspension_in_another_process_empties_that_tenant_here() {
    let db = test_db!("cache_across_processes");
    let tenants = db.provision(&["acme", "globex", "initech", "umbrella"]);
    let mut conn = db.conn();
    diesel_workspace_axum::install_notify_trigger(&mut conn).unwrap();

    let listening: Arc<TenantCache<u32, u32>> = Arc::new(TenantCache::new(10_000));
    let _listener = listening.listen(db.url()).unwrap();
    let deaf: TenantCache<u32, u32> = TenantCache::new(10_000);
    for tenant in &tenants {
        switch(tenant, || {
            for k in 0..10 {
                listening.insert(k, k).unwrap();
                deaf.insert(k, k).unwrap();
            }
        });
    }
    let w = Workdir::new();
    let mut waited = Vec::new();
    w.run(&db, &["drop_tenant", "acme", "--yes"]).ok();
    waited.push(emptied(&listening, &tenants[0]));
    w.run(&db, &["rename_tenant", "globex", "globex_two"]).ok();
    waited.push(emptied(&listening, &tenants[1]));
    w.run(&db, &["set_tenant_status", "initech", "suspended"])
        .ok();
    waited.push(emptied(&listening, &tenants[2]));
    eprintln!("entries gone after {waited:?} (after the command exited)");
    for wait in &waited {
        assert!(*wait <= NOTIFY_BOUND, "{waited:?} (bound {NOTIFY_BOUND:?})");
    }

    // The tenant nothing happened to keeps its entries; the cache that does not listen keeps
    // everything (nothing in this process told it).
    assert_eq!(listening.tenant_entries(&tenants[3]), 10);
    for tenant in &tenants {
        assert_eq!(deaf.tenant_entries(tenant), 10, "{tenant}");
    }
}
