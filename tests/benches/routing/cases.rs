//! The cases of the routing benchmark: each a raw side (stock Diesel, the schema hard-coded in
//! `table!`, or plain SQL) and a routed side running the same query shape.

use std::hint::black_box;

use diesel::prelude::*;
use diesel::sql_types::Int4;
use diesel_workspace::prelude::*;
use diesel_workspace::{switch, TenantId};

use crate::{Title, NOTES, TENANTS};

fn note_id(i: usize) -> i32 {
    1 + (i % NOTES) as i32
}

pub(crate) type Step = Box<dyn FnMut(&mut PgConnection, usize)>;

/// One comparison: the raw side and the routed side run the same query shape.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) raw: Step,
    pub(crate) routed: Step,
}

pub(crate) fn cases(ids: &[TenantId], url: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let t0 = ids[0].clone();

    // 1 + 2: SELECT title FROM notes WHERE id = $1, one tenant.
    out.push(Case {
        name: "1. select by id, one tenant",
        raw: Box::new(|conn, i| {
            use crate::raw::r0::notes;
            let t: String = notes::table
                .filter(notes::id.eq(note_id(i)))
                .select(notes::title)
                .first(conn)
                .expect("raw select");
            black_box(t);
        }),
        routed: Box::new({
            let t0 = t0.clone();
            move |conn, i| {
                use crate::routed::notes;
                let t: String = switch(&t0, || {
                    notes::table
                        .filter(notes::id.eq(note_id(i)))
                        .select(notes::title)
                        .first(conn)
                })
                .expect("routed select");
                black_box(t);
            }
        }),
    });

    // 3: the tenant alternates every query.
    for (n, name) in [
        (2, "2. select by id, alternating 2 tenants"),
        (16, "3. select by id, alternating 16 tenants"),
    ] {
        let ids = ids[..n].to_vec();
        out.push(Case {
            name,
            raw: Box::new(move |conn, i| {
                let t: String = with_raw!(i % n, m => m::notes::table
                    .filter(m::notes::id.eq(note_id(i)))
                    .select(m::notes::title)
                    .first(conn)
                    .expect("raw select"));
                black_box(t);
            }),
            routed: Box::new(move |conn, i| {
                use crate::routed::notes;
                let t: String = switch(&ids[i % n], || {
                    notes::table
                        .filter(notes::id.eq(note_id(i)))
                        .select(notes::title)
                        .first(conn)
                })
                .expect("routed select");
                black_box(t);
            }),
        });
    }

    // 4: raw SQL. Routed = switch + tenant_transaction (BEGIN + transaction-local search_path
    // in one round trip, the query, COMMIT); raw = sql_query on a schema-qualified table.
    let raw_sql: Vec<String> = ids
        .iter()
        .map(|t| format!("SELECT title FROM {}.notes WHERE id = $1", t.quoted()))
        .collect();
    for (n, name) in [
        (
            1,
            "4a. sql_query, one tenant: tenant_transaction vs qualified SQL",
        ),
        (
            16,
            "4b. sql_query, alternating 16: tenant_transaction vs qualified SQL",
        ),
    ] {
        let ids = ids[..n].to_vec();
        let raw_sql = raw_sql[..n].to_vec();
        out.push(Case {
            name,
            raw: Box::new(move |conn, i| {
                let row: Title = diesel::sql_query(raw_sql[i % n].as_str())
                    .bind::<Int4, _>(note_id(i))
                    .get_result(conn)
                    .expect("raw sql_query");
                black_box(row.title);
            }),
            routed: Box::new(move |conn, i| {
                let row: Title = switch(&ids[i % n], || {
                    conn.tenant_transaction(|conn| {
                        diesel::sql_query("SELECT title FROM notes WHERE id = $1")
                            .bind::<Int4, _>(note_id(i))
                            .get_result(conn)
                    })
                })
                .expect("routed sql_query");
                black_box(row.title);
            }),
        });
    }

    // 4, split: the same transaction shape on both sides (raw = a plain `conn.transaction`
    // around the schema-qualified query), so the ratio is the search_path part alone.
    {
        let ids = ids.to_vec();
        let raw_sql = raw_sql.clone();
        out.push(Case {
            name:
                "4c. sql_query, alternating 16: tenant_transaction vs BEGIN/COMMIT + qualified SQL",
            raw: Box::new(move |conn, i| {
                let row: Title = conn
                    .transaction(|conn| {
                        diesel::sql_query(raw_sql[i % TENANTS].as_str())
                            .bind::<Int4, _>(note_id(i))
                            .get_result(conn)
                    })
                    .expect("raw sql_query in a transaction");
                black_box(row.title);
            }),
            routed: Box::new(move |conn, i| {
                let row: Title = switch(&ids[i % TENANTS], || {
                    conn.tenant_transaction(|conn| {
                        diesel::sql_query("SELECT title FROM notes WHERE id = $1")
                            .bind::<Int4, _>(note_id(i))
                            .get_result(conn)
                    })
                })
                .expect("routed sql_query");
                black_box(row.title);
            }),
        });
    }

    // 4d, 4e: the same tenant transaction on a connection opened without the library and on
    // one the library opened: 4d for the default mode (`connect(url, Pooler::Direct)`: the
    // startup setting was checked when it opened, nothing is added per transaction), 4e for a
    // session pooler (`Pooler::Session`: the backend check in the `BEGIN` batch).
    for (name, pooler) in [
        (
            "4d. tenant_transaction, alternating 16: plain connection vs Pooler::Direct's",
            diesel_workspace::pooler::Pooler::Direct,
        ),
        (
            "4e. tenant_transaction, alternating 16: plain connection vs Pooler::Session's (backend check)",
            diesel_workspace::pooler::Pooler::Session,
        ),
    ] {
        let ids = ids.to_vec();
        let (url, library_url) = (url.to_owned(), url.to_owned());
        let mut plain: Option<PgConnection> = None;
        let mut library: Option<PgConnection> = None;
        let tenant_read = |conn: &mut PgConnection, t: &TenantId, i: usize| {
            let row: Title = switch(t, || {
                conn.tenant_transaction(|conn| {
                    diesel::sql_query("SELECT title FROM notes WHERE id = $1")
                        .bind::<Int4, _>(note_id(i))
                        .get_result(conn)
                })
            })
            .expect("tenant_transaction");
            black_box(row.title);
        };
        let routed_ids = ids.clone();
        out.push(Case {
            name,
            raw: Box::new(move |_, i| {
                let conn = plain.get_or_insert_with(|| {
                    PgConnection::establish(&url).expect("a plain connection")
                });
                tenant_read(conn, &ids[i % TENANTS], i);
            }),
            routed: Box::new(move |_, i| {
                let conn = library.get_or_insert_with(|| {
                    diesel_workspace::connect(&library_url, pooler).expect("a library connection")
                });
                tenant_read(conn, &routed_ids[i % TENANTS], i)
            }),
        });
    }

    // 5: writes and a join.
    out.push(Case {
        name: "5a. insert one note, one tenant",
        raw: Box::new(|conn, _| {
            use crate::raw::r0::notes;
            let n = diesel::insert_into(notes::table)
                .values((notes::title.eq("inserted"), notes::body.eq("raw")))
                .execute(conn)
                .expect("raw insert");
            black_box(n);
        }),
        routed: Box::new({
            let t0 = t0.clone();
            move |conn, _| {
                use crate::routed::notes;
                let n = switch(&t0, || {
                    diesel::insert_into(notes::table)
                        .values((notes::title.eq("inserted"), notes::body.eq("routed")))
                        .execute(conn)
                })
                .expect("routed insert");
                black_box(n);
            }
        }),
    });
    out.push(Case {
        name: "5b. update by id, one tenant",
        raw: Box::new(|conn, i| {
            use crate::raw::r0::notes;
            let n = diesel::update(notes::table.filter(notes::id.eq(note_id(i))))
                .set(notes::title.eq("updated by raw"))
                .execute(conn)
                .expect("raw update");
            black_box(n);
        }),
        routed: Box::new({
            let t0 = t0.clone();
            move |conn, i| {
                use crate::routed::notes;
                let n = switch(&t0, || {
                    diesel::update(notes::table.filter(notes::id.eq(note_id(i))))
                        .set(notes::title.eq("updated by routed"))
                        .execute(conn)
                })
                .expect("routed update");
                black_box(n);
            }
        }),
    });
    for (n, name) in [
        (1, "5c. join notes + categories, one tenant"),
        (16, "5d. join notes + categories, alternating 16 tenants"),
    ] {
        let ids = ids[..n].to_vec();
        out.push(Case {
            name,
            raw: Box::new(move |conn, i| {
                let row: (String, String) = with_raw!(i % n, m => m::notes::table
                    .inner_join(m::categories::table)
                    .filter(m::notes::id.eq(note_id(i)))
                    .select((m::notes::title, m::categories::name))
                    .first(conn)
                    .expect("raw join"));
                black_box(row);
            }),
            routed: Box::new(move |conn, i| {
                use crate::routed::{categories, notes};
                let row: (String, String) = switch(&ids[i % n], || {
                    notes::table
                        .inner_join(categories::table)
                        .filter(notes::id.eq(note_id(i)))
                        .select((notes::title, categories::name))
                        .first(conn)
                })
                .expect("routed join");
                black_box(row);
            }),
        });
    }
    out
}
