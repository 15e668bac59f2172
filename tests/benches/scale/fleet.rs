//! The fleet side of the scale benchmark: provisioning, `status`, `migrate_all` (nothing
//! pending, additive) per tenant, and every fleet command of the library and the CLI once.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_workspace::{MigrateOptions, Migrator, TenantId};

use workspace_diesel_tests::cli::{copy_dir, repo_root, Workdir};

pub struct FleetRow {
    pub tenants: usize,
    pub status: f64,
    pub idle_migrate: f64,
    pub additive: Option<f64>,
    pub provision: f64,
}

pub fn per_tenant_ms(d: Duration, tenants: usize) -> f64 {
    d.as_secs_f64() * 1e3 / tenants as f64
}

/// `status` (median of three), `migrate_all` with nothing pending and (unless
/// `BENCH_SCALE_ADDITIVE=0`) an additive `migrate_all`, reverted after, per tenant.
pub fn fleet_row(
    url: &str,
    admin: &mut PgConnection,
    migrators: (&Migrator, &Migrator),
    size: usize,
    provision: f64,
) -> FleetRow {
    let (migrator, additive) = migrators;
    let opts = MigrateOptions::default().parallel(2);
    let mut status = (0..3)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(migrator.status(admin).expect("status").len(), size);
            start.elapsed()
        })
        .collect::<Vec<_>>();
    status.sort();
    let start = Instant::now();
    let idle = migrator.migrate_all(url, &opts).expect("migrate_all");
    let idle_migrate = per_tenant_ms(start.elapsed(), size);
    assert_eq!(idle.up_to_date().count(), size);
    let additive_ms = (std::env::var("BENCH_SCALE_ADDITIVE").as_deref() != Ok("0")).then(|| {
        let start = Instant::now();
        let applied = additive.migrate_all(url, &opts).expect("additive");
        let ms = per_tenant_ms(start.elapsed(), size);
        assert_eq!(applied.applied().count(), size);
        let reverted = additive.revert_last_all(url, &opts).expect("revert");
        assert!(reverted.is_success(), "{}", reverted.failure_summary());
        ms
    });
    FleetRow {
        tenants: size,
        status: per_tenant_ms(status[1], size),
        idle_migrate,
        additive: additive_ms,
        provision,
    }
}

/// One command of the fleet, timed: its name, the size, the time.
pub struct CommandRow {
    pub command: String,
    pub tenants: usize,
    pub took: Duration,
}

/// Every fleet command once on the `size` tenants of `url`, in the library and in the CLI, each
/// checked to succeed.
pub fn command_rows(
    url: &str,
    admin: &mut PgConnection,
    migrator: &Migrator,
    size: usize,
) -> Vec<CommandRow> {
    let mut rows = Vec::new();
    let mut time = |command: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        rows.push(CommandRow {
            command: command.to_owned(),
            tenants: size,
            took: start.elapsed(),
        });
    };
    time("library status", &mut || {
        assert_eq!(migrator.status(admin).expect("status").len(), size);
    });
    time("library status_with_drift", &mut || {
        let drifted = migrator.status_with_drift(admin).expect("drift");
        assert_eq!(drifted.len(), size);
        assert!(drifted.iter().all(|s| s.drift.is_none()));
    });
    time("library list_tenants", &mut || {
        assert_eq!(migrator.list_tenants(admin).expect("list").len(), size);
    });
    time("library catalog_size", &mut || {
        let catalog = migrator.catalog_size(admin).expect("catalog size");
        assert!(catalog.schemas >= size as i64, "{catalog:?}");
    });
    time("library audit", &mut || {
        migrator.audit(admin).expect("audit");
    });
    time("library migrate_all (nothing pending)", &mut || {
        let report = migrator
            .migrate_all(url, &MigrateOptions::default().parallel(2))
            .expect("migrate_all");
        assert_eq!(report.up_to_date().count(), size);
    });
    // The CLI on the benchmark's own tenant migrations.
    let w = Workdir::new();
    let tenant_dir = w.path().join("migrations_tenant");
    std::fs::remove_dir_all(&tenant_dir).expect("remove the example migrations");
    copy_dir(&repo_root().join("tests/migrations/tenant"), &tenant_dir);
    // The shared migrations of the CLI's directory are applied once, untimed.
    let setup = w.run_url(url, &["migrate_all"]);
    assert_eq!(setup.code, 0, "migrate_all: {}", setup.stderr);
    for args in [
        &["status"][..],
        &["status", "--format", "json"],
        &["list_tenants"],
        &["pending"],
        &["migrate_all"],
    ] {
        time(&format!("CLI {}", args.join(" ")), &mut || {
            let run = w.run_url(url, args);
            assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        });
    }
    rows
}

/// Creates the tenants `ids[from..]` in `url`; returns the cost per tenant.
pub fn provision(migrator: &Migrator, url: &str, ids: &[TenantId]) -> f64 {
    let start = Instant::now();
    let report = migrator
        .create_tenants(url, ids, &MigrateOptions::default().parallel(2))
        .expect("create tenants");
    assert!(report.is_success(), "{}", report.failure_summary());
    per_tenant_ms(start.elapsed(), ids.len())
}

pub fn tenant_ids(range: std::ops::Range<usize>) -> Vec<TenantId> {
    range
        .map(|k| TenantId::new(format!("t{k:06}")).unwrap())
        .collect()
}
