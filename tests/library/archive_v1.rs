//! Archives of format version 1 (each table's count and server-computed checksum in the
//! manifest, its end frame only the SHA-256 of its bytes) still import, checked as they were; a
//! version this one does not know is refused as such.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{Error, TenantId};
use serde_json::Value;

use crate::archive::traces;
use crate::mobility::{fingerprint, seed};

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rows: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    sum: String,
}

#[derive(QueryableByName)]
struct Digest {
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    d: Vec<u8>,
}

fn sha256(conn: &mut PgConnection, bytes: &[u8]) -> Vec<u8> {
    diesel::sql_query("SELECT sha256($1) AS d")
        .bind::<diesel::sql_types::Bytea, _>(bytes)
        .get_result::<Digest>(conn)
        .unwrap()
        .d
}

fn frame(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// `archive` (format 2) written again as format 1, with the checksums the server computes for
/// the tables of `schema`.
fn as_version_1(conn: &mut PgConnection, schema: &str, archive: &[u8]) -> Vec<u8> {
    conn.batch_execute(
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
         SET extra_float_digits = 1; SET bytea_output = 'hex'",
    )
    .unwrap();
    let mut out = b"workspace-diesel/1\n\0".to_vec();
    let mut at = 20;
    while at < archive.len() {
        let tag = archive[at];
        let len = u32::from_be_bytes(archive[at + 1..at + 5].try_into().unwrap()) as usize;
        let payload = &archive[at + 5..at + 5 + len];
        at += 5 + len;
        match tag {
            b'M' => {
                let mut manifest: Value = serde_json::from_slice(payload).unwrap();
                for table in manifest["tables"].as_array_mut().unwrap() {
                    let sum: Sum = diesel::sql_query(format!(
                        "SELECT count(*)::int8 AS rows, coalesce(sum(('x' || left(md5(t::text), \
                         16))::bit(64)::int8::numeric), 0)::text AS sum FROM ONLY \"{schema}\".\"{}\" t",
                        table["name"].as_str().unwrap()
                    ))
                    .get_result(conn)
                    .unwrap();
                    table["rows"] = sum.rows.into();
                    table["checksum"] = sum.sum.into();
                }
                let json = serde_json::to_vec(&manifest).unwrap();
                frame(&mut out, b'M', &json);
                frame(&mut out, b'H', &sha256(conn, &json));
            }
            b'H' => {}
            b'E' => frame(&mut out, b'E', &payload[..32]),
            _ => frame(&mut out, tag, payload),
        }
    }
    out
}

#[test]
fn an_archive_of_format_1_still_imports_and_an_unknown_format_is_refused() {
    let db =
        crate::test_db!("an_archive_of_format_1_still_imports_and_an_unknown_format_is_refused");
    let acme = &db.provision(&["acme"])[0];
    let migrator = db.migrator();
    let mut conn = db.conn();
    seed(&mut conn, "acme", 300);
    let mut archive = Vec::new();
    let exported = migrator
        .export_tenant(&mut conn, db.url(), acme, &mut archive)
        .unwrap();
    assert!(archive.starts_with(b"workspace-diesel/2\n\0"));
    let old = as_version_1(&mut conn, "acme", &archive);
    let before = fingerprint(&mut conn, "acme");

    let moved = TenantId::new("acme_v1").unwrap();
    let imported = migrator
        .import_tenant(&mut conn, db.url(), &moved, &mut old.as_slice())
        .unwrap();
    assert_eq!(imported.tables.len(), exported.tables.len());
    for (v1, v2) in imported.tables.iter().zip(&exported.tables) {
        assert_eq!((&v1.name, v1.rows), (&v2.name, v2.rows));
        assert_ne!(
            v1.checksum, v2.checksum,
            "format 1 carries its own checksum"
        );
    }
    assert_eq!(fingerprint(&mut conn, "acme_v1"), before);

    // A format 1 archive whose rows changed after its checksums: refused, nothing created.
    let mut wrong = as_version_1(&mut conn, "acme", &archive);
    let manifest_at = 20 + 5;
    let len = u32::from_be_bytes(wrong[21..25].try_into().unwrap()) as usize;
    let json = String::from_utf8(wrong[manifest_at..manifest_at + len].to_vec()).unwrap();
    let mut manifest: Value = serde_json::from_str(&json).unwrap();
    manifest["tables"][0]["checksum"] = "12345".into();
    let json = serde_json::to_vec(&manifest).unwrap();
    let mut rebuilt = b"workspace-diesel/1\n\0".to_vec();
    frame(&mut rebuilt, b'M', &json);
    frame(&mut rebuilt, b'H', &sha256(&mut conn, &json));
    let rest_at = manifest_at + len + 5 + 32;
    rebuilt.extend_from_slice(&wrong.split_off(rest_at));
    let got = migrator.import_tenant(
        &mut conn,
        db.url(),
        &TenantId::new("acme_bad").unwrap(),
        &mut rebuilt.as_slice(),
    );
    assert!(
        matches!(got, Err(Error::ArchiveRefused { ref reason, .. }) if reason.contains("checksum")),
        "{got:?}"
    );
    assert_eq!(traces(db.url(), "acme_bad"), 0);

    // A version this one does not know: refused as such.
    let mut newer = archive.clone();
    newer[17] = b'9';
    let got = migrator.import_tenant(
        &mut conn,
        db.url(),
        &TenantId::new("acme_new").unwrap(),
        &mut newer.as_slice(),
    );
    assert!(
        matches!(got, Err(Error::ArchiveRefused { ref reason, .. }) if reason.contains("format version")),
        "{got:?}"
    );
    assert_eq!(traces(db.url(), "acme_new"), 0);
}
