//! The dialect module on live servers: plain PostgreSQL on 5432, Citus on the cluster.

use diesel_workspace::{citus::Dialect, citus::Engine, pool};
use workspace_diesel_tests::citus_db;

use crate::test_db;

#[test]
fn plain_postgresql_is_postgresql() {
    let db = test_db!("plain_postgresql_is_postgresql");
    let d = Dialect::detect(&mut db.conn()).expect("detect");
    assert_eq!(d.engine(), &Engine::PostgreSql);
    assert!(d.version().starts_with("PostgreSQL "), "{}", d.version());
    assert!(d.citus().is_none());
    assert!(!d.distributes_schemas());
    d.ensure_supported().expect("PostgreSQL is supported");
}

#[test]
fn the_cluster_is_citus_with_two_workers() {
    let db = citus_db!("the_cluster_is_citus_with_two_workers");
    let d = Dialect::detect(&mut db.conn()).expect("detect");
    let citus = d.citus().expect("a Citus engine");
    assert!(citus.extension_version.starts_with("12.1"), "{citus:?}");
    assert!(citus.version.starts_with("Citus 12.1"), "{citus:?}");
    assert!(
        citus.schema_sharding,
        "cluster.sh turns schema-based sharding on"
    );
    let workers: Vec<i32> = citus.workers().map(|n| n.port).collect();
    let expected: Vec<i32> = db.workers().iter().map(|n| n.port).collect();
    assert_eq!(workers, expected);
    assert!(citus
        .nodes
        .iter()
        .any(|n| n.is_coordinator() && !n.should_have_shards));
    assert!(d.distributes_schemas());
    d.ensure_supported().expect("Citus is supported");
    assert!(d.to_string().starts_with("Citus 12.1"), "{d}");
    assert!(
        d.to_string()
            .ends_with("(schema-based sharding on, 2 workers)"),
        "{d}"
    );

    // The pool detects the engine when it is built, and accepts Citus.
    let pool = pool::builder()
        .max_size(1)
        .build(db.url())
        .expect("pool on Citus");
    drop(pool);
}

#[test]
fn a_citus_session_with_sharding_off_says_so() {
    use diesel::connection::SimpleConnection;
    let db = citus_db!("a_citus_session_with_sharding_off_says_so");
    let mut conn = db.conn();
    conn.batch_execute("SET citus.enable_schema_based_sharding = off")
        .unwrap();
    let d = Dialect::detect(&mut conn).expect("detect");
    assert!(!d.citus().expect("Citus").schema_sharding);
}
