//! A tenant exported from a plain PostgreSQL server and imported into the cluster: it becomes a
//! distributed tenant schema on one worker, with the same rows, ledger, sequences and checksums;
//! a corrupted archive is refused with nothing created on any node.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{Error, TenantId};
use workspace_diesel_tests::citus::{check_on, shard_tables_on};
use workspace_diesel_tests::citus_db;

use crate::archive::traces;
use crate::mobility::{fingerprint, seed};

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[test]
fn an_archive_from_postgresql_imports_as_a_distributed_tenant() {
    let source = crate::test_db!("an_archive_from_postgresql_imports_as_a_distributed_tenant");
    let acme = &source.provision(&["acme"])[0];
    let migrator = source.migrator();
    let mut conn = source.conn();
    seed(&mut conn, "acme", 500);
    let before = fingerprint(&mut conn, "acme");
    let mut archive = Vec::new();
    let exported = migrator
        .export_tenant(&mut conn, source.url(), acme, &mut archive)
        .unwrap();

    let db = citus_db!("an_archive_from_postgresql_imports_as_a_distributed_tenant");
    // The workers' and the coordinator's sessions turn values into text otherwise than the
    // exporting server's: the checksums do not depend on it.
    let defaults = |conn: &mut PgConnection, zone: &str, style: &str| {
        conn.batch_execute(&format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', \
             current_database(), '{zone}'); EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', \
             current_database(), '{style}'); EXECUTE format('ALTER DATABASE %I SET \
             extra_float_digits = -3', current_database()); END $$"
        ))
        .unwrap();
    };
    for node in db.workers() {
        defaults(&mut db.conn_on(node), "Pacific/Chatham", "SQL, DMY");
    }
    defaults(&mut db.conn(), "America/St_Johns", "German, YMD");
    let mut cluster = db.conn();
    // The migrator that exported from PostgreSQL: its first transaction on the cluster finds
    // Citus there, and the import is planned for Citus.
    migrator.run_shared(&mut cluster).unwrap();
    let moved = id("acme_moved");
    let imported = migrator
        .import_tenant(&mut cluster, db.url(), &moved, &mut archive.as_slice())
        .unwrap();
    // The import checked every table's count and checksum against the archive's.
    assert_eq!(imported.tables, exported.tables);
    let under_settings = migrator
        .export_tenant(&mut cluster, db.url(), &moved, &mut Vec::new())
        .unwrap();
    assert_eq!(under_settings.tables, exported.tables);
    let reset =
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET ALL', current_database()); END $$";
    for node in db.workers() {
        db.conn_on(node).batch_execute(reset).unwrap();
    }
    db.conn().batch_execute(reset).unwrap();
    let mut cluster = db.conn();
    assert_eq!(
        fingerprint(&mut cluster, "acme_moved"),
        before,
        "rows and ledger equal"
    );
    assert!(migrator.is_registered(&mut cluster, &moved).unwrap());
    assert_eq!(traces(db.url(), "acme_moved"), 3);
    // A distributed schema: every table a tenant table with its shard on one worker.
    let worker = db.assert_distributed("acme_moved").clone();
    assert!(db.check(
        "EXISTS (SELECT 1 FROM citus_schemas WHERE schema_name::text = 'acme_moved') \
         AND (SELECT count(DISTINCT nodeport) FROM citus_shards \
              WHERE table_name::text LIKE 'acme_moved.%') = 1"
    ));
    // Exported again from the cluster, the same checksums.
    let mut again = Vec::new();
    let reexported = migrator
        .export_tenant(&mut cluster, db.url(), &moved, &mut again)
        .unwrap();
    assert_eq!(reexported.tables, exported.tables);
    // The sequences stand past the imported rows.
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        id: i32,
    }
    let max: Id = diesel::sql_query("SELECT max(id) AS id FROM acme_moved.notes")
        .get_result(&mut cluster)
        .unwrap();
    let next: Id =
        diesel::sql_query("INSERT INTO acme_moved.notes (title) VALUES ('x') RETURNING id")
            .get_result(&mut cluster)
            .unwrap();
    assert_eq!(next.id, max.id + 1);
    assert_eq!(
        migrator.migrate_tenant(&mut cluster, &moved).unwrap(),
        diesel_workspace::TenantOutcome::UpToDate
    );

    // One digit of the rows changed near the end: refused, nothing on any node.
    let mut corrupt = archive.clone();
    let at = corrupt.len()
        - 200
        - corrupt[..corrupt.len() - 200]
            .iter()
            .rev()
            .position(u8::is_ascii_digit)
            .unwrap()
        - 1;
    corrupt[at] = if corrupt[at] == b'9' {
        b'8'
    } else {
        corrupt[at] + 1
    };
    let got = migrator.import_tenant(&mut cluster, db.url(), &id("acme_bad"), &mut &corrupt[..]);
    match got {
        Err(Error::ArchiveRefused { reason, .. }) => {
            assert!(reason.contains("corrupted"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(traces(db.url(), "acme_bad"), 0);
    assert!(!db.check("EXISTS (SELECT 1 FROM citus_schemas WHERE schema_name::text = 'acme_bad')"));
    for node in db.workers() {
        let mut on_worker = db.conn_on(node);
        assert!(shard_tables_on(&mut on_worker, "acme_bad").is_empty());
        assert!(!check_on(
            &mut on_worker,
            "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'acme_bad')"
        ));
    }
    // Negative control: the imported tenant's shards are on its worker.
    assert!(!shard_tables_on(&mut db.conn_on(&worker), "acme_moved").is_empty());
}
