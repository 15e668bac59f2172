//! The quick start: two tenants, one schema each, written and read through Diesel's DSL.
//!
//! ```sh
//! cargo run -p workspace-diesel --example quickstart
//! ```
//!
//! With `DATABASE_URL` set, it uses that database. Without it, it creates a fresh database
//! `dwx_<pid>_<time>_quickstart` on the local PostgreSQL (127.0.0.1:5432, user `postgres`), a name
//! unique to the run, and drops it at the end. When no server answers (at `DATABASE_URL`, or at the
//! local server), it says so in one line with what to do.
//!
//! Its tenant migrations are this crate's `migrations_tenant/` (one table, `notes`), so the
//! example builds from the published crate as well as from a checkout.

use std::process::ExitCode;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::prelude::*;
use diesel_workspace::{switch, tenant_table, Migrator, TenantId};

const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations_tenant");

tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
        body -> Text,
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

fn main() -> ExitCode {
    let (url, scratch) = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            if let Err(e) = PgConnection::establish(&url) {
                eprintln!(
                    "error: no PostgreSQL answers at DATABASE_URL {} ({}). Start it, or point \
                     DATABASE_URL at a database you can create schemas in (unset it to use a \
                     scratch database on {LOCAL_SERVER}).",
                    redacted(&url),
                    one_line(&e.to_string())
                );
                return ExitCode::FAILURE;
            }
            (url, None)
        }
        Err(_) => {
            let name = scratch_name();
            match create_scratch_database(&name) {
                Ok(url) => (url, Some(name)),
                Err(e) => {
                    eprintln!(
                        "error: no PostgreSQL answers at {LOCAL_SERVER} ({}). Start one (e.g. \
                         `pg_ctlcluster 15 main start`), or set DATABASE_URL to a database you \
                         can create schemas in.",
                        one_line(&e.to_string())
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let result = run(&url);
    if let Some(name) = scratch {
        drop_scratch_database(&name);
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

/// A database name unique to this run: `dwx_<pid>_<time>_quickstart`, the pattern of the test
/// suite's scratch databases, whose clean-up also drops a copy left behind by a killed run.
fn scratch_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "dwx_{}_{:x}_quickstart",
        std::process::id(),
        (nanos as u64) & 0xff_ffff_ffff
    )
}

fn create_scratch_database(name: &str) -> Result<String, diesel::ConnectionError> {
    let mut admin = PgConnection::establish(&format!("{LOCAL_SERVER}/postgres"))?;
    if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")) {
        return Err(diesel::ConnectionError::BadConnection(e.to_string()));
    }
    println!("using a fresh database {name} on {LOCAL_SERVER}");
    Ok(format!("{LOCAL_SERVER}/{name}"))
}

fn drop_scratch_database(name: &str) {
    if let Ok(mut admin) = PgConnection::establish(&format!("{LOCAL_SERVER}/postgres")) {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    }
}

/// `url` with its password, if any, replaced by `***`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// libpq's multi-line connection errors on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
