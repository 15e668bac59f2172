//! The Prometheus example (`examples/prometheus.rs`), served and scraped over HTTP after known
//! traffic: every series exists with the value that traffic makes. A test binary of its own: the
//! recorder is process-wide.

mod support;

#[path = "../examples/prometheus.rs"]
#[allow(dead_code)]
mod example;

use diesel::prelude::*;
use diesel_workspace::{MigrateOptions, TenantId};

use support::{get as http_get, serve};

/// The value of the series `name` whose labels are exactly `labels`, from a scrape.
fn value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    scrape.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, number) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let mut got: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(',').map(str::to_owned).collect()
        };
        got.sort();
        (metric == name && got == wanted).then(|| number.parse().ok())?
    })
}

#[test]
fn the_example_exports_every_series_with_the_values_of_known_traffic() {
    let (db, migrator) = support::provision("web_prometheus", &["acme", "globex"]);
    let handle = example::install_recorder();
    // Two tenants get labels of their own; a third is counted under `_other`.
    diesel_workspace::metrics::set_tenant_label_limit(2);

    // Migrations: one tenant alone, a fleet run that creates two tenants, then one over all four
    // (up to date: no worker runs them).
    let acme = TenantId::new("acme").unwrap();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    assert!(migrator.migrate_tenant(&mut conn, &acme).is_ok());
    let opts = MigrateOptions::default().parallel(2);
    let new = [
        TenantId::new("initech").unwrap(),
        TenantId::new("hooli").unwrap(),
    ];
    let report = migrator.create_tenants(db.url(), &new, &opts).unwrap();
    assert_eq!(report.applied().count(), 2);
    let report = migrator.migrate_all(db.url(), &opts).unwrap();
    assert_eq!(report.up_to_date().count(), 4);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scrape = runtime.block_on(async {
        let pool = example::pool(db.url()).unwrap();
        let addr = serve(example::app(pool, handle)).await;
        for (tenant, times, status, body) in [
            ("acme", 3, 200, "1"),
            ("globex", 2, 200, "1"),
            ("nobody", 1, 404, ""),
        ] {
            for _ in 0..times {
                let (got, text) = http_get(addr, "/notes", &[("x-tenant", tenant)]).await;
                assert_eq!(got, status, "{tenant}: {text}");
                if status == 200 {
                    assert_eq!(text, body, "{tenant}");
                }
            }
        }
        let (status, scrape) = http_get(addr, "/metrics", &[]).await;
        assert_eq!(status, 200);
        scrape
    });

    let requests = "workspace_diesel_http_requests_total";
    for (tenant, status, n) in [
        ("acme", "200", 3.0),
        ("globex", "200", 2.0),
        ("_other", "404", 1.0),
    ] {
        assert_eq!(
            value(&scrape, requests, &[("tenant", tenant), ("status", status)]),
            Some(n),
            "{tenant} {status}:\n{scrape}"
        );
    }
    assert_eq!(
        value(
            &scrape,
            "workspace_diesel_http_request_duration_seconds_count",
            &[]
        ),
        Some(6.0),
        "{scrape}"
    );
    // One count query per served tenant request, under its tenant.
    let queries = "workspace_diesel_queries_total";
    for (tenant, n) in [("acme", 3.0), ("globex", 2.0)] {
        assert_eq!(
            value(&scrape, queries, &[("tenant", tenant), ("outcome", "ok")]),
            Some(n),
            "{tenant}:\n{scrape}"
        );
    }
    // Idle after the traffic: nothing checked out, at least one connection kept.
    let pool = "workspace_diesel_pool_connections";
    assert_eq!(
        value(&scrape, pool, &[("pool", "web"), ("state", "in_use")]),
        Some(0.0),
        "{scrape}"
    );
    assert!(
        value(&scrape, pool, &[("pool", "web"), ("state", "idle")]).is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
    let durations = "workspace_diesel_migration_duration_seconds_count";
    assert_eq!(
        value(
            &scrape,
            durations,
            &[("scope", "tenant"), ("outcome", "ok")]
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        value(
            &scrape,
            durations,
            &[("scope", "fleet"), ("outcome", "applied")]
        ),
        Some(2.0),
        "{scrape}"
    );
    let fleet = "workspace_diesel_fleet_tenants_total";
    for (outcome, n) in [("applied", 2.0), ("up_to_date", 4.0)] {
        assert_eq!(
            value(&scrape, fleet, &[("outcome", outcome)]),
            Some(n),
            "{outcome}:\n{scrape}"
        );
    }
    // Negative control: no series for a tenant that had no traffic.
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("tenant", "initech"), ("status", "200")]
        ),
        None
    );
    assert_eq!(
        value(&scrape, fleet, &[("outcome", "failed")]),
        None,
        "{scrape}"
    );
}
