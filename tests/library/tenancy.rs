//! Fail-closed behaviour, raw SQL in a tenant, and carrying the tenant across threads and futures.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_workspace::prelude::*;
use diesel_workspace::{bind, current, spawn, switch, Error, TenantFuture, TenantId};

use crate::support::schema::notes;
use crate::test_db;

#[derive(QueryableByName, Debug, PartialEq)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Activity {
    #[diesel(sql_type = Text)]
    query: String,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(Queryable, Selectable, TenantModel, Debug)]
#[diesel(table_name = notes, check_for_backend(diesel::pg::Pg))]
struct Note {
    title: String,
}

fn last_statement_of(observer: &mut PgConnection, pid: i32) -> String {
    diesel::sql_query("SELECT query FROM pg_catalog.pg_stat_activity WHERE pid = $1")
        .bind::<Integer, _>(pid)
        .get_result::<Activity>(observer)
        .unwrap()
        .query
}

fn add_note(conn: &mut PgConnection, title: &str) {
    diesel::insert_into(notes::table)
        .values(notes::title.eq(title))
        .execute(conn)
        .unwrap();
}

/// A tenant query outside any switch fails on the client: the server's view of the backend's last
/// statement is still the marker sent before it.
#[test]
fn no_tenant_means_nothing_is_sent() {
    let db = test_db!("no_tenant_means_nothing_is_sent");
    db.provision(&["acme"]);
    let mut conn = db.conn();
    let mut observer = db.conn();
    let pid = diesel::sql_query("SELECT pg_catalog.pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .unwrap()
        .pid;
    conn.batch_execute("SELECT 'marker-before-tenant-query'")
        .unwrap();

    let err = notes::table
        .select(notes::title)
        .load::<String>(&mut conn)
        .unwrap_err();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));
    let err = diesel::insert_into(notes::table)
        .values(notes::title.eq("x"))
        .execute(&mut conn)
        .unwrap_err();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));
    let err = diesel::delete(notes::table).execute(&mut conn).unwrap_err();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));
    let err = conn
        .tenant_transaction(|c| diesel::sql_query("SELECT 1").execute(c))
        .unwrap_err();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));
    // The model's table is just as closed.
    let err = Note::table()
        .select(Note::as_select())
        .load(&mut conn)
        .unwrap_err();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));

    assert_eq!(
        last_statement_of(&mut observer, pid),
        "SELECT 'marker-before-tenant-query'"
    );
    // The connection is still usable afterwards.
    let acme = TenantId::new("acme").unwrap();
    add_note_in(&mut conn, &acme, "still works");
    let loaded: Vec<Note> = switch(&acme, || {
        Note::table().select(Note::as_select()).load(&mut conn)
    })
    .unwrap();
    assert_eq!(loaded[0].title, "still works");
}

fn add_note_in(conn: &mut PgConnection, t: &TenantId, title: &str) {
    switch(t, || add_note(conn, title));
}

#[test]
fn raw_sql_in_a_tenant_transaction() {
    let db = test_db!("raw_sql_in_a_tenant_transaction");
    let ids = db.provision(&["acme", "globex"]);
    let mut conn = db.conn();
    add_note_in(&mut conn, &ids[0], "a1");
    add_note_in(&mut conn, &ids[0], "a2");
    add_note_in(&mut conn, &ids[1], "g1");

    let count = |conn: &mut PgConnection, t: &TenantId| {
        switch(t, || {
            conn.tenant_transaction(|c| {
                diesel::sql_query("SELECT count(*) AS n FROM notes").get_result::<Count>(c)
            })
        })
        .unwrap()
        .n
    };
    assert_eq!(count(&mut conn, &ids[0]), 2);
    assert_eq!(count(&mut conn, &ids[1]), 1);
    assert_eq!(count(&mut conn, &ids[0]), 2);

    // transaction_in names the tenant explicitly, whatever is active.
    let n = switch(&ids[0], || {
        conn.transaction_in(&ids[1], |c| {
            assert_eq!(current().as_ref(), Some(&ids[1]));
            diesel::sql_query("SELECT count(*) AS n FROM notes").get_result::<Count>(c)
        })
    })
    .unwrap();
    assert_eq!(n.n, 1);

    // The search_path ends with the transaction, committed or rolled back.
    let path = |conn: &mut PgConnection| {
        #[derive(QueryableByName)]
        struct P {
            #[diesel(sql_type = Text)]
            search_path: String,
        }
        diesel::sql_query("SHOW search_path")
            .get_result::<P>(conn)
            .unwrap()
            .search_path
    };
    let before = path(&mut conn);
    let _: Result<(), diesel::result::Error> = conn.transaction_in(&ids[0], |c| {
        diesel::sql_query("INSERT INTO notes (title) VALUES ('rolled back')").execute(c)?;
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert_eq!(path(&mut conn), before);
    assert_eq!(count(&mut conn, &ids[0]), 2);
    let err = diesel::sql_query("SELECT count(*) AS n FROM notes")
        .get_result::<Count>(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    // The session's own search_path plays no part: a table only acme has stays out of reach of
    // globex's transaction even when the session path names acme.
    conn.batch_execute("CREATE TABLE acme.secrets (v text); INSERT INTO acme.secrets VALUES ('acme only'); SET search_path TO acme")
        .unwrap();
    let err = switch(&ids[1], || {
        conn.tenant_transaction(|c| {
            diesel::sql_query("SELECT count(*) AS n FROM secrets").get_result::<Count>(c)
        })
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("relation \"secrets\" does not exist"),
        "{err}"
    );
    conn.batch_execute("RESET search_path").unwrap();

    // Raw SQL and the DSL agree inside the transaction (savepoints nest as usual).
    switch(&ids[1], || {
        conn.tenant_transaction(|c| {
            c.transaction(|c| {
                diesel::sql_query("INSERT INTO notes (title) VALUES ('g2')").execute(c)
            })?;
            let titles: Vec<String> = notes::table.order(notes::id).select(notes::title).load(c)?;
            assert_eq!(titles, ["g1", "g2"]);
            diesel::result::QueryResult::Ok(())
        })
    })
    .unwrap();
}

#[test]
fn dropped_schema_fails_clearly_and_never_falls_through() {
    let db = test_db!("dropped_schema_fails_clearly_and_never_falls_through");
    let ids = db.provision(&["acme"]);
    let mut conn = db.conn();
    // A table of the same name in public must never be reached.
    conn.batch_execute("CREATE TABLE public.notes (id serial primary key, title text not null)")
        .unwrap();
    conn.batch_execute("INSERT INTO public.notes (title) VALUES ('public row')")
        .unwrap();
    conn.batch_execute("DROP SCHEMA acme CASCADE").unwrap();

    let err = switch(&ids[0], || {
        notes::table.select(notes::title).load::<String>(&mut conn)
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("relation \"acme.notes\" does not exist"),
        "{err}"
    );
    let err = switch(&ids[0], || {
        conn.tenant_transaction(|c| {
            diesel::sql_query("SELECT count(*) AS n FROM notes").get_result::<Count>(c)
        })
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("schema \"acme\" does not exist"),
        "{err}"
    );
    // The failed open left no transaction behind.
    let n = diesel::sql_query("SELECT count(*) AS n FROM public.notes")
        .get_result::<Count>(&mut conn)
        .unwrap();
    assert_eq!(n.n, 1);
}

#[test]
fn tenant_follows_helpers_across_threads_and_futures() {
    let db = test_db!("tenant_follows_helpers_across_threads_and_futures");
    let ids = db.provision(&["acme", "globex"]);
    let url = db.url().to_string();
    let mut conn = db.conn();
    add_note_in(&mut conn, &ids[0], "acme note");
    add_note_in(&mut conn, &ids[1], "globex note");

    let read = move || -> QueryResult<Vec<String>> {
        let mut c = PgConnection::establish(&url).unwrap();
        notes::table.select(notes::title).load(&mut c)
    };
    // spawn carries the tenant; a plain thread does not.
    let r = read.clone();
    let got = switch(&ids[0], || spawn(r)).join().unwrap().unwrap();
    assert_eq!(got, ["acme note"]);
    let r = read.clone();
    let err = switch(&ids[0], || std::thread::spawn(r))
        .join()
        .unwrap()
        .unwrap_err();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));
    // bind for executors.
    let job = switch(&ids[1], || bind(read.clone()));
    assert_eq!(
        std::thread::spawn(job).join().unwrap().unwrap(),
        ["globex note"]
    );

    // A future re-enters its tenant on every poll, even when polled from elsewhere.
    let r = read.clone();
    let fut = TenantFuture::new(ids[1].clone(), async move {
        YieldOnce(false).await;
        r()
    });
    let got = switch(&ids[0], || futures_executor::block_on(fut)).unwrap();
    assert_eq!(got, ["globex note"]);
    let r = read.clone();
    let fut = switch(&ids[0], || TenantFuture::current(async move { r() }));
    assert_eq!(futures_executor::block_on(fut).unwrap(), ["acme note"]);
}

/// Returns `Pending` once, so the wrapped future is polled twice.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

#[test]
fn provisioning_rejects_duplicates_and_the_shared_schema() {
    let db = test_db!("provisioning_rejects_duplicates_and_the_shared_schema");
    let ids = db.provision(&["acme"]);
    let mut conn = db.conn();
    let migrator = db.migrator();
    let err = migrator.create_tenant(&mut conn, &ids[0]).unwrap_err();
    assert!(
        matches!(err, Error::TenantExists(ref t) if t == &ids[0]),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "tenant `acme` already exists");
    // A schema that exists without a registry row is refused too, and nothing is registered.
    conn.batch_execute("CREATE SCHEMA squatter").unwrap();
    let squatter = TenantId::new("squatter").unwrap();
    let err = migrator.create_tenant(&mut conn, &squatter).unwrap_err();
    assert!(matches!(err, Error::TenantExists(_)), "{err:?}");
    let rows = diesel::sql_query(
        "SELECT count(*) AS n FROM public.workspaces WHERE schema_name = 'squatter'",
    )
    .get_result::<Count>(&mut conn)
    .unwrap();
    assert_eq!(rows.n, 0);
}

/// Triggers resolve names through `search_path`: inside a tenant transaction they see the tenant's
/// schema; outside one, an unqualified name fails closed. A trigger written against
/// `TG_TABLE_SCHEMA` works either way, and keeps working after the tenant is renamed.
#[test]
fn triggers_follow_the_tenant() {
    let db = test_db!("triggers_follow_the_tenant");
    let ids = db.provision(&["acme", "globex"]);
    let mut conn = db.conn();
    for t in &ids {
        conn.batch_execute(&format!(
            "CREATE FUNCTION {t}.tag_unqualified() RETURNS trigger LANGUAGE plpgsql AS $$ \
               BEGIN INSERT INTO tags (label) VALUES (NEW.title); RETURN NEW; END $$; \
             CREATE TRIGGER tag_unqualified BEFORE INSERT ON {t}.notes FOR EACH ROW \
               WHEN (NEW.title LIKE 'u:%') EXECUTE FUNCTION {t}.tag_unqualified(); \
             CREATE FUNCTION {t}.tag_qualified() RETURNS trigger LANGUAGE plpgsql AS $$ \
               BEGIN EXECUTE pg_catalog.format('INSERT INTO %I.tags (label) VALUES ($1)', TG_TABLE_SCHEMA) \
               USING NEW.title; RETURN NEW; END $$; \
             CREATE TRIGGER tag_qualified BEFORE INSERT ON {t}.notes FOR EACH ROW \
               WHEN (NEW.title LIKE 'q:%') EXECUTE FUNCTION {t}.tag_qualified();"
        ))
        .unwrap();
    }
    let labels = |conn: &mut PgConnection, t: &TenantId| -> Vec<String> {
        switch(t, || {
            crate::support::schema::tags::table
                .select(crate::support::schema::tags::label)
                .order(crate::support::schema::tags::id)
                .load(conn)
        })
        .unwrap()
    };
    // Inside a tenant transaction the unqualified trigger writes to the tenant's own tags.
    for t in &ids {
        switch(t, || {
            conn.tenant_transaction(|c| {
                diesel::insert_into(notes::table)
                    .values(notes::title.eq(format!("u:{t}")))
                    .execute(c)
            })
        })
        .unwrap();
    }
    assert_eq!(labels(&mut conn, &ids[0]), ["u:acme"]);
    assert_eq!(labels(&mut conn, &ids[1]), ["u:globex"]);
    // Outside one, it fails closed and the insert is not kept.
    let err = switch(&ids[0], || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq("u:outside"))
            .execute(&mut conn)
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("relation \"tags\" does not exist"),
        "{err}"
    );
    // The TG_TABLE_SCHEMA form needs no transaction, and survives a rename.
    switch(&ids[1], || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq("q:plain"))
            .execute(&mut conn)
    })
    .unwrap();
    let renamed = TenantId::new("globex_two").unwrap();
    db.migrator()
        .rename_tenant(&mut conn, &ids[1], &renamed)
        .unwrap();
    switch(&renamed, || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq("q:renamed"))
            .execute(&mut conn)
    })
    .unwrap();
    assert_eq!(
        labels(&mut conn, &renamed),
        ["u:globex", "q:plain", "q:renamed"]
    );
    assert_eq!(labels(&mut conn, &ids[0]), ["u:acme"]);
}
