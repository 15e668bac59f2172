//! Tenant selection and life-cycle states in fleet runs: by list, file, pattern, state and all
//! but, over 200 tenants, checked in each tenant's ledger; archived tenants skipped, suspended
//! ones held and reported; `create_tenant` seen as `provisioning` from another connection.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::registry::{set_lifecycle_state, LifecycleState};
use diesel_workspace::{Error, MigrateOptions, Migrator, Selection, TenantId};

use crate::fleet::{ledger_rows, migrator_for, Prefix, ADDITIVE};

/// The additive set's second version: what a selected run applies.
const V2: &str = "20260301000001";

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn names(range: std::ops::Range<usize>) -> Vec<TenantId> {
    range.map(|i| id(&format!("t_{i:03}"))).collect()
}

/// The tenants whose ledger holds `V2`.
fn advanced(conn: &mut PgConnection, tenants: &[TenantId]) -> BTreeSet<String> {
    ledger_rows(conn, tenants)
        .into_iter()
        .filter(|(_, v)| v == V2)
        .map(|(t, _)| t)
        .collect()
}

fn run(migrator: &Migrator, url: &str, selection: &Selection) -> diesel_workspace::MigrationReport {
    migrator
        .migrate_selected(url, selection, &MigrateOptions::default().parallel(2))
        .expect("a selected run")
}

#[test]
fn selection_by_each_criterion_over_200_tenants() {
    let db = crate::test_db!("selection_by_each_criterion_over_200_tenants");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    let all = names(0..200);
    before
        .create_tenants(db.url(), &all, &MigrateOptions::default().parallel(2))
        .expect("200 tenants");
    for t in names(190..195) {
        set_lifecycle_state(&mut conn, &t, LifecycleState::Suspended).unwrap();
    }
    for t in names(195..200) {
        set_lifecycle_state(&mut conn, &t, LifecycleState::Archived).unwrap();
    }
    let after = migrator_for(&mut conn, ADDITIVE);
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut check = |conn: &mut PgConnection, chosen: Vec<TenantId>, what: &str| {
        expected.extend(chosen.iter().map(ToString::to_string));
        assert_eq!(advanced(conn, &all), expected, "after the run by {what}");
    };

    // An unregistered name refuses the whole run before anything runs.
    let unknown = Selection::all().tenants([id("t_000"), id("nobody")]);
    let err = after
        .migrate_selected(db.url(), &unknown, &MigrateOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::TenantNotFound(t) if t.as_str() == "nobody"),
        "{err:?}"
    );
    check(&mut conn, Vec::new(), "an unknown name");

    // By list.
    let list = vec![id("t_000"), id("t_001"), id("t_002")];
    let report = run(&after, db.url(), &Selection::all().tenants(list.clone()));
    assert_eq!(report.applied().count(), 3);
    check(&mut conn, list, "list");

    // By file.
    let dir = std::env::temp_dir().join(format!("wd-select-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tenants.txt");
    std::fs::write(&file, "# canary\nt_010\n\n t_011 \nt_012\n").unwrap();
    run(
        &after,
        db.url(),
        &Selection::all().tenants_from_file(&file).unwrap(),
    );
    check(&mut conn, names(10..13), "file");
    std::fs::remove_dir_all(&dir).unwrap();

    // By pattern.
    run(
        &after,
        db.url(),
        &Selection::all().pattern("t_02?").unwrap(),
    );
    check(&mut conn, names(20..30), "pattern");

    // By state: the suspended ones only; the active ones matched are held and reported.
    let report = run(
        &after,
        db.url(),
        &Selection::all().states([LifecycleState::Suspended]),
    );
    assert_eq!(report.applied().count(), 5);
    assert!(
        report.held.iter().all(|(_, s)| s == "active"),
        "{:?}",
        report.held
    );
    check(&mut conn, names(190..195), "state");

    // All but t_100..t_189: every other active tenant; the archived ones are left out of the
    // report, none is suspended any more that is not applied already.
    for t in names(190..192) {
        set_lifecycle_state(&mut conn, &t, LifecycleState::Active).unwrap();
    }
    let report = run(&after, db.url(), &Selection::all().except(names(100..190)));
    let ran: BTreeSet<String> = report.applied().map(|(t, _)| t.to_string()).collect();
    let mut rest: Vec<TenantId> = names(3..100);
    rest.retain(|t| !(10..13).contains(&num(t)) && !(20..30).contains(&num(t)));
    assert_eq!(ran, rest.iter().map(ToString::to_string).collect());
    let held: Vec<(String, String)> = report
        .held
        .iter()
        .map(|(t, s)| (t.to_string(), s.clone()))
        .collect();
    assert_eq!(
        held,
        (192..195)
            .map(|i| (format!("t_{i:03}"), "suspended".to_owned()))
            .collect::<Vec<_>>()
    );
    assert!(
        report.tenants.iter().all(|(t, _)| num(t) < 195),
        "archived left out"
    );
    check(&mut conn, rest, "all but");

    // The status view takes the same selection.
    let status = after
        .status_selected(&mut conn, &Selection::all().pattern("t_19*").unwrap())
        .unwrap();
    assert_eq!(status.len(), 10);
    let archived = after
        .status_selected(
            &mut conn,
            &Selection::all().states([LifecycleState::Archived]),
        )
        .unwrap();
    assert_eq!(
        archived
            .iter()
            .map(|s| s.tenant.clone())
            .collect::<Vec<_>>(),
        names(195..200)
    );
    assert!(archived.iter().all(|s| s.pending == vec![V2.to_owned()]));
}

fn num(t: &TenantId) -> usize {
    t.as_str()[2..].parse().unwrap()
}

#[test]
fn archived_skipped_suspended_reported() {
    let db = crate::test_db!("archived_skipped_suspended_reported");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    let tenants = [id("live"), id("paused"), id("gone")];
    for t in &tenants {
        before.create_tenant(&mut conn, t).unwrap();
    }
    set_lifecycle_state(&mut conn, &tenants[1], LifecycleState::Suspended).unwrap();
    set_lifecycle_state(&mut conn, &tenants[2], LifecycleState::Archived).unwrap();
    let after = migrator_for(&mut conn, ADDITIVE);
    let report = after
        .migrate_all(db.url(), &MigrateOptions::default())
        .expect("held tenants are no failure");
    assert_eq!(report.tenants.len(), 1);
    assert_eq!(
        report.applied().next().map(|(t, _)| t.as_str()),
        Some("live")
    );
    assert_eq!(report.held, vec![(id("paused"), "suspended".to_owned())]);
    assert_eq!(
        advanced(&mut conn, &tenants),
        BTreeSet::from(["live".to_owned()])
    );
    // Asked to include them, the suspended one runs; the archived one still does not.
    let with = Selection::all().states([LifecycleState::Active, LifecycleState::Suspended]);
    run(&after, db.url(), &with);
    assert_eq!(
        advanced(&mut conn, &tenants),
        BTreeSet::from(["live".to_owned(), "paused".to_owned()])
    );
}

#[test]
fn create_tenant_is_provisioning_until_usable() {
    let db = crate::test_db!("create_tenant_is_provisioning_until_usable");
    let mut conn = db.conn();
    let migrator = migrator_for(&mut conn, ADDITIVE);
    let acme = id("acme");
    // Another session keeps the central record from being written, so the creation stops
    // after its first step (the registry row), before the schema is usable.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE public.workspace_migrations IN SHARE MODE")
        .unwrap();
    let url = db.url().to_owned();
    let creating = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        let migrator = migrator_for(&mut conn, ADDITIVE);
        migrator.create_tenant(&mut conn, &TenantId::new("acme").unwrap())
    });
    let mut observer = db.conn();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = diesel_workspace::registry::lifecycle_state(&mut observer, &acme).unwrap();
        if state == Some(LifecycleState::Provisioning) {
            break;
        }
        assert_eq!(
            state, None,
            "nothing but provisioning before the schema is built"
        );
        assert!(Instant::now() < deadline, "never seen provisioning");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A fleet run meanwhile holds it back instead of migrating a half-made tenant.
    let report = migrator
        .migrate_all(db.url(), &MigrateOptions::default())
        .unwrap();
    assert_eq!(report.held, vec![(acme.clone(), "provisioning".to_owned())]);
    holder.batch_execute("ROLLBACK").unwrap();
    creating.join().unwrap().expect("the creation completes");
    assert_eq!(
        diesel_workspace::registry::lifecycle_state(&mut observer, &acme).unwrap(),
        Some(LifecycleState::Active)
    );
    assert_eq!(
        ledger_rows(&mut observer, std::slice::from_ref(&acme)).len(),
        2
    );

    // A creation that fails leaves no row behind (the provisioning row is deleted).
    let failing = migrator_for(&mut conn, crate::lifecycle::FAILING);
    let broken = id("broken");
    failing.create_tenant(&mut conn, &broken).unwrap_err();
    assert_eq!(
        diesel_workspace::registry::lifecycle_state(&mut observer, &broken).unwrap(),
        None
    );
    // A second creation of an existing tenant fails and leaves the first intact.
    assert!(matches!(
        migrator.create_tenant(&mut conn, &acme),
        Err(Error::TenantExists(_))
    ));
    assert_eq!(
        diesel_workspace::registry::lifecycle_state(&mut observer, &acme).unwrap(),
        Some(LifecycleState::Active)
    );
}
