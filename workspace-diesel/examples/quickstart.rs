//! The quick start: two tenants, one schema each, written and read through Diesel's DSL.
//!
//! ```sh
//! cargo run -p workspace-diesel --example quickstart
//! ```
//!
//! With `DATABASE_URL` set, it uses that database. Without it, it creates a fresh database
//! `workspace_diesel_quickstart` on the local PostgreSQL (127.0.0.1:5432, user `postgres`) and drops
//! it at the end.

use std::process::ExitCode;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::prelude::*;
use diesel_workspace::{switch, tenant_table, Migrator, TenantId};

const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations_tenant");

tenant_table! {
    notes (id) {
        id -> Int4,
        category_id -> Nullable<Int4>,
        tag_id -> Nullable<Int4>,
        title -> Text,
        body -> Text,
        created_at -> Timestamptz,
    }
}

#[derive(Queryable, Selectable, TenantModel)]
#[diesel(table_name = notes, check_for_backend(diesel::pg::Pg))]
struct Note {
    id: i32,
    title: String,
}

#[derive(Insertable)]
#[diesel(table_name = notes)]
struct NewNote<'a> {
    title: &'a str,
}

const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const SCRATCH_DB: &str = "workspace_diesel_quickstart";

fn main() -> ExitCode {
    let (url, scratch) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, false),
        Err(_) => match create_scratch_database() {
            Ok(url) => (url, true),
            Err(e) => {
                eprintln!(
                    "error: no PostgreSQL answers at {LOCAL_SERVER} ({e}).\n\
                     Start one (e.g. `pg_ctlcluster 15 main start`), or set DATABASE_URL to a \
                     database you can create schemas in."
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let result = run(&url);
    if scratch {
        drop_scratch_database();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&*e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = PgConnection::establish(url)?;

    // The registry and shared tables, then one schema per tenant with the tenant migrations.
    let migrator = Migrator::builder(TENANT_MIGRATIONS).build()?;
    migrator.run_shared(&mut conn)?;
    let acme = TenantId::new("acme")?;
    let globex = TenantId::new("globex")?;
    for tenant in [&acme, &globex] {
        migrator.create_tenant(&mut conn, tenant)?;
        println!("created tenant {tenant}");
    }

    // The same code writes to whichever tenant is active.
    let add = |conn: &mut PgConnection, title: &str| {
        diesel::insert_into(notes::table)
            .values(&NewNote { title })
            .execute(conn)
    };
    switch(&acme, || add(&mut conn, "Acme's roadmap"))?;
    switch(&acme, || add(&mut conn, "Acme's invoices"))?;
    switch(&globex, || add(&mut conn, "Globex's secret plan"))?;

    // Each tenant reads its own rows only.
    for tenant in [&acme, &globex] {
        let notes: Vec<Note> = switch(tenant, || {
            Note::table()
                .order(notes::id)
                .select(Note::as_select())
                .load(&mut conn)
        })?;
        println!("{tenant} sees {} note(s):", notes.len());
        for note in notes {
            println!("  #{} {}", note.id, note.title);
        }
    }

    // Outside a switch, a tenant table is refused before anything is sent.
    let err = notes::table
        .count()
        .get_result::<i64>(&mut conn)
        .unwrap_err();
    println!("outside any tenant: {err}");

    // Raw SQL sees the tenant's schema inside a tenant transaction.
    let count = switch(&globex, || {
        conn.tenant_transaction(|conn| {
            diesel::sql_query("UPDATE notes SET body = 'classified'").execute(conn)
        })
    })?;
    println!("globex: raw SQL updated {count} row(s) in its own schema");
    Ok(())
}

fn create_scratch_database() -> Result<String, diesel::ConnectionError> {
    let mut admin = PgConnection::establish(&format!("{LOCAL_SERVER}/postgres"))?;
    let setup = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)"
        ))
        .and_then(|()| admin.batch_execute(&format!("CREATE DATABASE {SCRATCH_DB}")));
    if let Err(e) = setup {
        return Err(diesel::ConnectionError::BadConnection(e.to_string()));
    }
    println!("using a fresh database {SCRATCH_DB} on {LOCAL_SERVER}");
    Ok(format!("{LOCAL_SERVER}/{SCRATCH_DB}"))
}

fn drop_scratch_database() {
    if let Ok(mut admin) = PgConnection::establish(&format!("{LOCAL_SERVER}/postgres")) {
        let _ = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)"
        ));
    }
}
