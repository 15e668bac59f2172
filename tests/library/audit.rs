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
