//! The dialect's unit tests: captured `version()` strings, shard names, refusals.

use super::*;

#[test]
fn captured_version_strings() {
    let cases = [
        (
            "PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14+deb12u1) 12.2.0, 64-bit",
            Engine::PostgreSql,
        ),
        (
            "PostgreSQL 16.4 on aarch64-unknown-linux-gnu, compiled by aarch64-unknown-linux-gnu-gcc (GCC) 9.5.0, 64-bit",
            Engine::PostgreSql,
        ),
        (
            "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu, built 2023/09/27 01:53:43, go1.19.13)",
            Engine::CockroachDb,
        ),
        (
            "CockroachDB OSS v21.2.17 (x86_64-unknown-linux-gnu, built 2022/10/25 14:36:12, go1.16.6)",
            Engine::CockroachDb,
        ),
        (
            "PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu, compiled by clang version 16.0.6 (https://github.com/yugabyte/llvm-project.git 1e6329f40e5c531c09ade7015278078682293ebd), 64-bit",
            Engine::YugabyteDb,
        ),
        (
            "PostgreSQL 15.2-YB-2025.1.0.0-b0 on x86_64-pc-linux-gnu, compiled by clang version 17.0.6, 64-bit",
            Engine::YugabyteDb,
        ),
    ];
    for (version, engine) in cases {
        let d = Dialect::from_version(version);
        assert_eq!(d.engine(), &engine, "{version}");
        assert_eq!(d.version(), version);
        assert_eq!(d.ensure_supported().is_ok(), engine == Engine::PostgreSql);
    }
}

#[test]
fn shard_ids_are_stripped_from_messages() {
    let is_shard = |id| id == 102019 || id == 102020;
    assert_eq!(
        strip_shard_ids(
            r#"duplicate key value violates unique constraint "notes_pkey_102019""#,
            is_shard
        ),
        r#"duplicate key value violates unique constraint "notes_pkey""#
    );
    assert_eq!(
        strip_shard_ids("relation \"acme.notes_102020\" does not exist", is_shard),
        "relation \"acme.notes\" does not exist"
    );
    // Not shard ids, or not at the end of an identifier: kept.
    assert_eq!(
        strip_shard_ids("table notes_2024 and x_102019y and _102019 é", is_shard),
        "table notes_2024 and x_102019y and _102019 é"
    );
}

#[test]
fn refusals_name_the_missing_capability() {
    for version in [
        "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu)",
        "PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu",
    ] {
        let e = Dialect::from_version(version)
            .ensure_supported()
            .unwrap_err()
            .to_string();
        assert!(e.contains("transactional DDL"), "{e}");
        assert!(e.contains("advisory locks"), "{e}");
        assert!(e.contains("is not supported"), "{e}");
    }
}
