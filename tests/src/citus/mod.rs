//! The Citus cluster for the scale-out tests and benchmarks: a coordinator on
//! `127.0.0.1:9700` (override with `CITUS_COORDINATOR_URL`) and the workers it has registered,
//! as `../shared/citus/cluster.sh setup` makes them.
//!
//! Citus 12.1 does not propagate `CREATE DATABASE`, so [`CitusDb`] creates its database on every
//! node, installs the extension in each and registers the workers in the coordinator's copy:
//! what `cluster.sh citus-db NAME` does. Names follow the scratch rule (`dwx_<pid>_<run>_<label>`),
//! leftovers of ended runs are dropped on every node.
//!
//! When no coordinator answers, [`CitusDb::create`] prints why and returns `None` (the test
//! returns early); with `WORKSPACE_DIESEL_REQUIRE_CITUS=1` (set by `cargo xtask test`) it panics instead,
//! so a CI run never passes without the cluster.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

use crate::db::{scratch_name, PREFIX};

mod catalog;

use self::catalog::names;
pub use self::catalog::{distributed_tables, nodes_of, shard_tables_on, shards_of, tables};

/// The coordinator's admin URL when `CITUS_COORDINATOR_URL` is unset.
pub const COORDINATOR: &str = "postgres://postgres@127.0.0.1:9700/postgres";

/// The variable that turns a missing cluster from a skip into a failure.
pub const REQUIRE: &str = "WORKSPACE_DIESEL_REQUIRE_CITUS";

/// A node of the cluster, as the coordinator's `postgres` database lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: i32,
}

impl Node {
    /// The URL of database `db` on this node (same user and options as the coordinator's URL).
    pub fn url(&self, db: &str) -> String {
        let admin = coordinator_url();
        let (scheme, rest) = admin.split_once("://").unwrap_or(("postgres", &admin));
        let (auth, _) = rest.split_once('@').map_or(("", rest), |(a, r)| (a, r));
        let auth = if auth.is_empty() {
            String::new()
        } else {
            format!("{auth}@")
        };
        let query = admin.split_once('?').map(|(_, q)| q);
        let base = format!("{scheme}://{auth}{}:{}/{db}", self.host, self.port);
        match query {
            Some(q) => format!("{base}?{q}"),
            None => base,
        }
    }
}

/// The coordinator's admin URL.
pub fn coordinator_url() -> String {
    std::env::var("CITUS_COORDINATOR_URL").unwrap_or_else(|_| COORDINATOR.to_owned())
}

fn required() -> bool {
    std::env::var(REQUIRE).is_ok_and(|v| v == "1")
}

#[derive(QueryableByName)]
struct NodeRow {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Integer)]
    port: i32,
}

/// The workers registered in the coordinator's `postgres` database, or why there are none.
fn workers() -> Result<&'static [Node], String> {
    static WORKERS: OnceLock<Result<Vec<Node>, String>> = OnceLock::new();
    WORKERS
        .get_or_init(|| {
            let url = coordinator_url();
            let mut conn = PgConnection::establish(&url).map_err(|e| {
                format!(
                    "no Citus coordinator answers at {url} ({}); start the cluster with \
                     `bash ../shared/citus/install.sh && bash ../shared/citus/cluster.sh setup`",
                    e.to_string().trim().replace('\n', " ")
                )
            })?;
            let nodes: Vec<NodeRow> = diesel::sql_query(
                "SELECT nodename::text AS host, nodeport AS port FROM pg_catalog.pg_dist_node \
                 WHERE groupid <> 0 AND noderole = 'primary' ORDER BY nodeid",
            )
            .load(&mut conn)
            .map_err(|e| format!("{url} is not a Citus coordinator: {e}"))?;
            if nodes.len() < 2 {
                return Err(format!(
                    "the Citus coordinator at {url} has {} workers; the tests need 2",
                    nodes.len()
                ));
            }
            let nodes: Vec<Node> = nodes
                .into_iter()
                .map(|n| Node {
                    host: n.host,
                    port: n.port,
                })
                .collect();
            let mut all = vec![coordinator_node(&url)];
            all.extend(nodes.iter().cloned());
            for node in &all {
                drop_leftovers(&node.url("postgres"));
                // Roles of moves interrupted in earlier runs (roles belong to the whole node).
                if let Ok(mut conn) = PgConnection::establish(&node.url("postgres")) {
                    for role in names(
                        &mut conn,
                        "SELECT rolname::text AS name FROM pg_catalog.pg_roles \
                         WHERE rolname LIKE 'citus\\_shard\\_%'",
                    ) {
                        let _ = conn.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""));
                    }
                }
            }
            Ok(nodes)
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn coordinator_node(url: &str) -> Node {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split(['/', '?']).next().unwrap_or("127.0.0.1:9700");
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    Node {
        host: host.to_owned(),
        port: port.parse().unwrap_or(5432),
    }
}

fn drop_leftovers(url: &str) {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        datname: String,
    }
    let Ok(mut conn) = PgConnection::establish(url) else {
        return;
    };
    let Ok(names) = diesel::sql_query(format!(
        "SELECT datname::text AS datname FROM pg_catalog.pg_database \
         WHERE pg_catalog.starts_with(datname::text, '{PREFIX}')"
    ))
    .load::<Name>(&mut conn) else {
        return;
    };
    let me = std::process::id().to_string();
    for Name { datname } in names {
        let pid = datname[PREFIX.len()..].split('_').next().unwrap_or("");
        if pid.is_empty() || pid == me || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        drop_everywhere(&mut conn, url, &datname);
    }
}

/// Drops database `db` on the node of `admin` (a connection to its `postgres` database, at
/// `admin_url`), after removing what an interrupted shard move leaves behind and what would
/// block the drop: subscriptions in `db` and replication slots of `db`.
fn drop_everywhere(admin: &mut PgConnection, admin_url: &str, db: &str) {
    let db_url = {
        let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
        format!("{base}/{db}")
    };
    if let Ok(mut conn) = PgConnection::establish(&db_url) {
        for sub in names(
            &mut conn,
            "SELECT subname::text AS name FROM pg_catalog.pg_subscription",
        ) {
            let _ = conn.batch_execute(&format!(
                "ALTER SUBSCRIPTION \"{sub}\" DISABLE; \
                 ALTER SUBSCRIPTION \"{sub}\" SET (slot_name = NONE)"
            ));
            let _ = conn.batch_execute(&format!("DROP SUBSCRIPTION \"{sub}\""));
        }
    }
    let _ = admin.batch_execute(&format!(
        "SELECT pg_catalog.pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots \
         WHERE database = '{db}' AND active_pid IS NOT NULL"
    ));
    let _ = admin.batch_execute(&format!(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
         WHERE database = '{db}' AND NOT active"
    ));
    // A node's maintenance daemon may be connecting meanwhile: try a few times.
    for attempt in 0..5 {
        match admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")) {
            Ok(()) => return,
            Err(e) if attempt == 4 => eprintln!("could not drop {db} at {admin_url}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// How many Citus test databases may exist at once in this process (`CITUS_TEST_DATABASES`,
/// default 3): every Citus database runs a maintenance background worker on every node, and
/// moves need logical replication workers, all out of `max_worker_processes` (8 by default).
fn permits() -> &'static (std::sync::Mutex<usize>, std::sync::Condvar) {
    static PERMITS: OnceLock<(std::sync::Mutex<usize>, std::sync::Condvar)> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let n = std::env::var("CITUS_TEST_DATABASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize)
            .max(1);
        (std::sync::Mutex::new(n), std::sync::Condvar::new())
    })
}

/// One of the [`permits`], given back on drop.
struct Permit;

impl Permit {
    fn take() -> Self {
        let (lock, cvar) = permits();
        let mut free = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = cvar.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let (lock, cvar) = permits();
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cvar.notify_one();
    }
}

/// A database of its own on every node of the cluster, with the Citus extension and the workers
/// registered; dropped on every node when the guard drops, unless the test panicked.
pub struct CitusDb {
    _permit: Permit,
    name: String,
    url: String,
    coordinator: Node,
    workers: Vec<Node>,
}

impl CitusDb {
    /// Creates the database for the test named `test` (pass `module_path!()` + name), or
    /// returns `None` after printing why when no cluster answers.
    ///
    /// # Panics
    /// When no cluster answers and `WORKSPACE_DIESEL_REQUIRE_CITUS=1`, or when creating the
    /// database fails.
    pub fn create(test: &str) -> Option<Self> {
        let workers = match workers() {
            Ok(w) => w.to_vec(),
            Err(why) if required() => panic!("{REQUIRE}=1 but {why}"),
            Err(why) => {
                // Once per run, past the test harness's capture (which would hide it).
                static SAID: OnceLock<()> = OnceLock::new();
                SAID.get_or_init(|| {
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipping the Citus tests: {why} (set {REQUIRE}=1 to fail instead)"
                    );
                });
                return None;
            }
        };
        let permit = Permit::take();
        let mut h = DefaultHasher::new();
        test.hash(&mut h);
        let name = scratch_name(&format!("citus_{:016x}", h.finish()));
        let coordinator = coordinator_node(&coordinator_url());
        let mut all = vec![coordinator.clone()];
        all.extend(workers.iter().cloned());
        // The nodes are independent until the workers are registered: create them in parallel.
        std::thread::scope(|s| {
            for node in &all {
                let name = &name;
                s.spawn(move || {
                    let mut admin = PgConnection::establish(&node.url("postgres"))
                        .unwrap_or_else(|e| panic!("connect to {}:{}: {e}", node.host, node.port));
                    for sql in [
                        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                        format!("CREATE DATABASE \"{name}\" TEMPLATE template0"),
                    ] {
                        admin
                            .batch_execute(&sql)
                            .unwrap_or_else(|e| panic!("{sql} on port {}: {e}", node.port));
                    }
                    PgConnection::establish(&node.url(name))
                        .and_then(|mut c| {
                            c.batch_execute("CREATE EXTENSION citus")
                                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
                        })
                        .unwrap_or_else(|e| panic!("citus in {name} on port {}: {e}", node.port));
                });
            }
        });
        let url = coordinator.url(&name);
        let mut conn = PgConnection::establish(&url).expect("connect to the coordinator");
        let mut sql = format!(
            "SELECT pg_catalog.citus_set_coordinator_host('{}', {});",
            coordinator.host, coordinator.port
        );
        for w in &workers {
            sql.push_str(&format!(
                "SELECT pg_catalog.citus_add_node('{}', {});",
                w.host, w.port
            ));
        }
        register(&mut conn, &sql, &name);
        Some(Self {
            _permit: permit,
            name,
            url,
            coordinator,
            workers,
        })
    }

    /// The database's name (the same on every node).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The coordinator's URL for this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection to the coordinator.
    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url).expect("connect to the coordinator")
    }

    /// The workers, in node id order.
    pub fn workers(&self) -> &[Node] {
        &self.workers
    }

    /// A new connection to this database on `node`.
    pub fn conn_on(&self, node: &Node) -> PgConnection {
        PgConnection::establish(&node.url(&self.name))
            .unwrap_or_else(|e| panic!("connect to {}:{}: {e}", node.host, node.port))
    }

    /// Runs one SQL query returning one boolean on the coordinator.
    pub fn check(&self, sql: &str) -> bool {
        check_on(&mut self.conn(), sql)
    }
}

/// Registers the workers. The coordinator's first connection to a worker's new database can be
/// refused while that worker is busy creating other tests' databases ("failure on connection
/// marked as essential"); registration is idempotent, so it is retried a few times before the
/// test fails with the last error.
fn register(conn: &mut PgConnection, sql: &str, name: &str) {
    let mut last = None;
    for attempt in 0..6u64 {
        match conn.batch_execute(sql) {
            Ok(()) => return,
            Err(e) => {
                last = Some(e.to_string());
                std::thread::sleep(std::time::Duration::from_millis(250 << attempt.min(3)));
            }
        }
    }
    panic!(
        "register the workers in {name} (6 attempts): {}",
        last.unwrap_or_default()
    );
}

/// Runs one SQL query returning one boolean.
pub fn check_on(conn: &mut PgConnection, sql: &str) -> bool {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        b: bool,
    }
    let row: Row = diesel::sql_query(format!("SELECT ({sql}) AS b"))
        .get_result(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.b
}

impl Drop for CitusDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "keeping database {} on the Citus nodes after a panic",
                self.name
            );
            return;
        }
        let mut all = vec![self.coordinator.clone()];
        all.extend(self.workers.iter().cloned());
        for node in all {
            let admin = node.url("postgres");
            if let Ok(mut conn) = PgConnection::establish(&admin) {
                drop_everywhere(&mut conn, &admin, &self.name);
            }
        }
    }
}

/// A [`CitusDb`] named after the calling test; the test returns early (after a printed reason)
/// when no cluster answers, unless `WORKSPACE_DIESEL_REQUIRE_CITUS=1`.
#[macro_export]
macro_rules! citus_db {
    ($name:expr) => {
        match $crate::citus::CitusDb::create(concat!(module_path!(), "::", $name)) {
            Some(db) => db,
            None => return,
        }
    };
}

/// Serialises shard moves across the tests of every process on this machine (a test runner may
/// give each test a process of its own): Citus names the role, the subscription and the
/// replication slot of a move after counters that every database starts alike, so two moves in
/// two databases at once collide (`role "citus_shard_move_subscription_role_10_1" already
/// exists`, `replication slot "citus_shard_move_slot_2_10_1" already exists`). An exclusive
/// lock on a file in the temporary directory, held until the returned file is dropped.
pub fn move_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("workspace-diesel-citus-moves.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    fs4::fs_std::FileExt::lock_exclusive(&file)
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    file
}
