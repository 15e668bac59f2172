//! `Migrator::audit` finds what weakens isolation: a superuser, a shared schema open to every role,
//! shared tables named like tenant tables, registered tenants without a schema.

use diesel::connection::SimpleConnection;
use diesel_workspace::Hazard;

use crate::test_db;

#[test]
fn audit_reports_each_hazard() {
    let db = test_db!("audit_reports_each_hazard");
    db.provision(&["acme", "globex"]);
    let migrator = db.migrator();
    let mut conn = db.conn();

    // The tests connect as a superuser; PostgreSQL 15 no longer lets every role create in public.
    // Roles are cluster-wide: name it for this run, so concurrent runs on one server never meet.
    let role = format!(
        "{}{}_audit",
        crate::support::db::PREFIX,
        crate::support::db::run_token()
    );
    conn.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} NOLOGIN; \
         GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    ))
    .unwrap();
    let hazards = migrator.audit(&mut conn).unwrap();
    assert_eq!(
        hazards,
        [Hazard::Superuser {
            role: "postgres".into()
        }]
    );
    assert!(hazards[0].to_string().contains("superuser"));

    conn.batch_execute(&format!("SET ROLE {role}")).unwrap();
    assert_eq!(migrator.audit(&mut conn).unwrap(), []);
    conn.batch_execute("RESET ROLE").unwrap();

    conn.batch_execute(
        "GRANT CREATE ON SCHEMA public TO PUBLIC; \
         CREATE TABLE public.notes (id int); CREATE VIEW public.tags AS SELECT 1 AS id; \
         DROP SCHEMA globex CASCADE",
    )
    .unwrap();
    conn.batch_execute(&format!("SET ROLE {role}")).unwrap();
    let hazards = migrator.audit(&mut conn).unwrap();
    conn.batch_execute("RESET ROLE").unwrap();
    assert_eq!(
        hazards,
        [
            Hazard::SharedSchemaOpenToAll {
                schema: "public".into()
            },
            Hazard::SharedTableNamedLikeTenantTable {
                table: "notes".into()
            },
            Hazard::SharedTableNamedLikeTenantTable {
                table: "tags".into()
            },
            Hazard::MissingSchema {
                tenant: "globex".into()
            },
        ]
    );
    assert!(hazards[0]
        .to_string()
        .contains("REVOKE CREATE ON SCHEMA public FROM PUBLIC"));
    conn.batch_execute(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}; \
         REVOKE ALL ON SCHEMA public FROM {role}; DROP ROLE {role}"
    ))
    .unwrap();
}

/// Create rights of any role other than the owner, on the shared schema and on tenant schemas,
/// and overloads of `pg_catalog` names outside the system schemas, are reported; extension
/// members and superusers are not.
#[test]
fn audit_reports_create_rights_and_catalog_overloads() {
    let db = test_db!("audit_reports_create_rights_and_catalog_overloads");
    db.provision(&["acme", "globex"]);
    let migrator = db.migrator();
    let mut conn = db.conn();
    // Roles are cluster-wide: named after this run, so concurrent runs never share one.
    let role = format!("dw_audit_{}", crate::support::db::run_token());
    conn.batch_execute(&format!(
        "CREATE ROLE {role} NOLOGIN; GRANT CREATE ON SCHEMA public TO {role}; \
         GRANT CREATE ON SCHEMA globex TO {role}; GRANT CREATE ON SCHEMA acme TO PUBLIC; \
         CREATE FUNCTION public.hashtext(pg_catalog.varchar) RETURNS int LANGUAGE sql AS 'SELECT 1'; \
         CREATE FUNCTION acme.eq_vt(a varchar, b text) RETURNS bool LANGUAGE sql AS 'SELECT true'; \
         CREATE OPERATOR acme.= (LEFTARG = varchar, RIGHTARG = text, FUNCTION = acme.eq_vt); \
         CREATE FUNCTION public.not_a_catalog_name() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    ))
    .unwrap();
    let hazards: Vec<Hazard> = migrator
        .audit(&mut conn)
        .unwrap()
        .into_iter()
        .filter(Hazard::enables_hijack)
        .collect();
    conn.batch_execute(&format!(
        "REVOKE ALL ON SCHEMA public FROM {role}; REVOKE ALL ON SCHEMA globex FROM {role}; DROP ROLE {role}"
    ))
    .unwrap();
    assert_eq!(
        hazards,
        [
            Hazard::SchemaCreateGranted {
                schema: "acme".into(),
                role: "PUBLIC".into()
            },
            Hazard::SchemaCreateGranted {
                schema: "globex".into(),
                role: role.clone()
            },
            Hazard::SchemaCreateGranted {
                schema: "public".into(),
                role: role.clone()
            },
            Hazard::CatalogNameOverloaded {
                schema: "acme".into(),
                kind: "operator",
                signature: "acme.=(character varying,text)".into()
            },
            Hazard::CatalogNameOverloaded {
                schema: "public".into(),
                kind: "function",
                signature: "public.hashtext(character varying)".into()
            },
        ]
    );
    let shown = hazards[2].to_string();
    assert!(
        shown.contains(&format!("REVOKE CREATE ON SCHEMA public FROM {role}")),
        "{shown}"
    );
    assert!(hazards[3].to_string().contains("CVE-2018-1058"));
}

/// A pool built to refuse hijack hazards starts on a clean database and refuses, naming the
/// hazard, once a role other than the owner may create objects in the shared schema.
#[test]
fn pool_refuses_to_start_on_hijack_hazards() {
    let db = test_db!("pool_refuses_to_start_on_hijack_hazards");
    db.provision(&["acme"]);
    let build = || {
        diesel_workspace::pool::builder()
            .max_size(1)
            .refuse_hijack_hazards(true)
            .build(db.url())
    };
    build().expect("a clean database");
    db.conn()
        .batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .unwrap();
    match build() {
        Err(diesel_workspace::Error::HijackHazards(hazards)) => {
            assert_eq!(
                hazards,
                [Hazard::SharedSchemaOpenToAll {
                    schema: "public".into()
                }]
            );
        }
        other => panic!("expected HijackHazards, got {other:?}"),
    }
    let err = build().unwrap_err().to_string();
    assert!(
        err.starts_with("refusing to run: every role may create"),
        "{err}"
    );
    // Without the setting, the same database is served.
    diesel_workspace::pool::builder()
        .max_size(1)
        .build(db.url())
        .expect("the default does not check");
}

/// A migrator built to refuse hijack hazards runs on a clean database and refuses every call
/// that changes it once a planted overload exists, changing nothing; reads still work.
#[test]
fn migrator_refuses_to_run_on_hijack_hazards() {
    let db = test_db!("migrator_refuses_to_run_on_hijack_hazards");
    let m = diesel_workspace::Migrator::builder(crate::support::TENANT_MIGRATIONS)
        .refuse_hijack_hazards(true)
        .build()
        .unwrap();
    let mut conn = db.conn();
    m.run_shared(&mut conn).unwrap();
    let acme = diesel_workspace::TenantId::new("acme").unwrap();
    m.create_tenant(&mut conn, &acme).unwrap();
    conn.batch_execute(
        "CREATE FUNCTION acme.eq_vt(a varchar, b text) RETURNS bool LANGUAGE sql AS 'SELECT true'; \
         CREATE OPERATOR acme.= (LEFTARG = varchar, RIGHTARG = text, FUNCTION = acme.eq_vt)",
    )
    .unwrap();
    let refused = |r: diesel_workspace::Result<()>| match r {
        Err(diesel_workspace::Error::HijackHazards(h)) => {
            assert_eq!(
                h,
                [Hazard::CatalogNameOverloaded {
                    schema: "acme".into(),
                    kind: "operator",
                    signature: "acme.=(character varying,text)".into()
                }]
            );
        }
        other => panic!("expected HijackHazards, got {other:?}"),
    };
    let globex = diesel_workspace::TenantId::new("globex").unwrap();
    let opts = diesel_workspace::MigrateOptions::default();
    refused(m.run_shared(&mut conn).map(drop));
    refused(m.create_tenant(&mut conn, &globex));
    refused(m.migrate_tenant(&mut conn, &acme).map(drop));
    refused(m.revert_last(&mut conn, &acme).map(drop));
    refused(m.migrate_all(db.url(), &opts).map(drop));
    refused(m.fill_spares(&mut conn, 1).map(drop));
    refused(m.rename_tenant(&mut conn, &acme, &globex));
    refused(m.drop_tenant(&mut conn, &acme));
    assert_eq!(
        m.list_tenants(&mut conn).unwrap(),
        std::slice::from_ref(&acme)
    );
    assert!(db.schema_exists("acme") && !db.schema_exists("globex"));
    assert!(m.spares(&mut conn).unwrap().is_empty());
    // The default migrator runs (and its audit names the overload).
    let plain = diesel_workspace::Migrator::builder(crate::support::TENANT_MIGRATIONS)
        .build()
        .unwrap();
    plain.drop_tenant(&mut conn, &acme).unwrap();
}

/// `SECURITY DEFINER` functions without a fixed `search_path`, in the shared schema and in a
/// tenant schema, are named; with the path fixed on the function (or as a plain function) they
/// are not; a migrator built to refuse hijack hazards refuses on them.
#[test]
fn audit_names_security_definer_functions_without_a_fixed_path() {
    let db = test_db!("audit_security_definer");
    db.provision(&["acme", "globex"]);
    let mut conn = db.conn();
    conn.batch_execute(
        "SET check_function_bodies = off; \
         CREATE FUNCTION public.peek() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER \
           AS 'SELECT title FROM notes'; \
         CREATE FUNCTION acme.helper(int) RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT $1'; \
         CREATE FUNCTION public.fixed() RETURNS int LANGUAGE sql SECURITY DEFINER \
           SET search_path = pg_catalog, pg_temp AS 'SELECT 1'; \
         CREATE FUNCTION public.invoker() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    )
    .unwrap();
    let hazards: Vec<Hazard> = db
        .migrator()
        .audit(&mut conn)
        .unwrap()
        .into_iter()
        .filter(|h| !matches!(h, Hazard::Superuser { .. }))
        .collect();
    assert_eq!(
        hazards,
        [
            Hazard::SecurityDefinerWithoutSearchPath {
                schema: "acme".into(),
                signature: "acme.helper(integer)".into()
            },
            Hazard::SecurityDefinerWithoutSearchPath {
                schema: "public".into(),
                signature: "public.peek()".into()
            },
        ]
    );
    assert!(hazards.iter().all(Hazard::enables_hijack));
    assert!(
        hazards[1]
            .to_string()
            .contains("function `public.peek()` is SECURITY DEFINER without a fixed search_path"),
        "{}",
        hazards[1]
    );
    let refusing = diesel_workspace::Migrator::builder(crate::support::TENANT_MIGRATIONS)
        .refuse_hijack_hazards(true)
        .build()
        .unwrap();
    let e = refusing
        .create_tenant(
            &mut conn,
            &diesel_workspace::TenantId::new("initech").unwrap(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("SECURITY DEFINER"), "{e}");
    assert!(!db.schema_exists("initech"));
    conn.batch_execute(
        "ALTER FUNCTION public.peek() SET search_path = pg_catalog, pg_temp; \
         DROP FUNCTION acme.helper(int)",
    )
    .unwrap();
    assert!(db
        .migrator()
        .audit(&mut conn)
        .unwrap()
        .iter()
        .all(|h| matches!(h, Hazard::Superuser { .. })));
}
