//! A hundred `#[test]` functions, each with its own tenant from the warm pool of one shared
//! database, run in parallel by the test harness: each writes a number of rows unique to it and
//! must see exactly those. The last one to finish drops the database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{tenant_table, Migrator};
use diesel_workspace_test::{TestDatabase, ADMIN_URL_ENV};

const SHARED: EmbeddedMigrations = embed_migrations!("../migrations_shared");
const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
const TESTS: usize = 100;

tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

/// The shared database, created by the first test to need it.
static DATABASE: Mutex<Option<TestDatabase>> = Mutex::new(None);
static MIGRATOR: OnceLock<Migrator> = OnceLock::new();
static FINISHED: AtomicUsize = AtomicUsize::new(0);

fn database() -> TestDatabase {
    let mut slot = DATABASE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(db) = slot.as_ref() {
        return db.clone();
    }
    if std::env::var(ADMIN_URL_ENV).is_err() {
        std::env::set_var(ADMIN_URL_ENV, "postgres://postgres@127.0.0.1:5432/postgres");
    }
    let migrator =
        MIGRATOR.get_or_init(|| Migrator::builder(TENANT).shared(SHARED).build().unwrap());
    let db = TestDatabase::builder(migrator)
        .label("hundred_tests")
        .spares(TESTS)
        .create()
        .unwrap();
    *slot = Some(db.clone());
    db
}

/// Test `i`: its own tenant, `i + 1` rows written, exactly those read back.
fn one_test(i: usize) {
    let db = database();
    let tenant = db.tenant().unwrap();
    let mut conn = db.connection().unwrap();
    let titles: Vec<String> = tenant
        .switch(|| {
            for n in 0..=i {
                diesel::insert_into(notes::table)
                    .values(notes::title.eq(format!("{}-{n}", tenant.id())))
                    .execute(&mut conn)?;
            }
            notes::table.select(notes::title).load(&mut conn)
        })
        .unwrap();
    assert_eq!(titles.len(), i + 1, "{}", tenant.id());
    let prefix = format!("{}-", tenant.id());
    assert!(titles.iter().all(|t| t.starts_with(&prefix)), "{titles:?}");
    drop(conn);
    drop(tenant);
    if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 == TESTS {
        // The last test lets go of the shared handle: the database goes with `db`.
        DATABASE.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

macro_rules! hundred {
    ($($name:ident => $i:expr,)*) => {
        $(
            #[test]
            fn $name() {
                one_test($i);
            }
        )*

        #[test]
        fn the_list_holds_a_hundred_tests() {
            assert_eq!([$($i),*].len(), TESTS);
        }
    };
}

hundred! {
    t000 => 0,
    t001 => 1,
    t002 => 2,
    t003 => 3,
    t004 => 4,
    t005 => 5,
    t006 => 6,
    t007 => 7,
    t008 => 8,
    t009 => 9,
    t010 => 10,
    t011 => 11,
    t012 => 12,
    t013 => 13,
    t014 => 14,
    t015 => 15,
    t016 => 16,
    t017 => 17,
    t018 => 18,
    t019 => 19,
    t020 => 20,
    t021 => 21,
    t022 => 22,
    t023 => 23,
    t024 => 24,
    t025 => 25,
    t026 => 26,
    t027 => 27,
    t028 => 28,
    t029 => 29,
    t030 => 30,
    t031 => 31,
    t032 => 32,
    t033 => 33,
    t034 => 34,
    t035 => 35,
    t036 => 36,
    t037 => 37,
    t038 => 38,
    t039 => 39,
    t040 => 40,
    t041 => 41,
    t042 => 42,
    t043 => 43,
    t044 => 44,
    t045 => 45,
    t046 => 46,
    t047 => 47,
    t048 => 48,
    t049 => 49,
    t050 => 50,
    t051 => 51,
    t052 => 52,
    t053 => 53,
    t054 => 54,
    t055 => 55,
    t056 => 56,
    t057 => 57,
    t058 => 58,
    t059 => 59,
    t060 => 60,
    t061 => 61,
    t062 => 62,
    t063 => 63,
    t064 => 64,
    t065 => 65,
    t066 => 66,
    t067 => 67,
    t068 => 68,
    t069 => 69,
    t070 => 70,
    t071 => 71,
    t072 => 72,
    t073 => 73,
    t074 => 74,
    t075 => 75,
    t076 => 76,
    t077 => 77,
    t078 => 78,
    t079 => 79,
    t080 => 80,
    t081 => 81,
    t082 => 82,
    t083 => 83,
    t084 => 84,
    t085 => 85,
    t086 => 86,
    t087 => 87,
    t088 => 88,
    t089 => 89,
    t090 => 90,
    t091 => 91,
    t092 => 92,
    t093 => 93,
    t094 => 94,
    t095 => 95,
    t096 => 96,
    t097 => 97,
    t098 => 98,
    t099 => 99,
}
