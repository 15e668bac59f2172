//! Tenant tables route every kind of query to the active tenant's schema, and fail closed outside
//! a switch.

use diesel::dsl::{count_star, exists, max};
use diesel::prelude::*;
use diesel_workspace::{switch, Error, TenantId};

use crate::support::schema::{categories, notes, plans, tags};
use crate::test_db;

#[derive(Debug, Queryable, Selectable, Identifiable, PartialEq)]
#[diesel(table_name = notes, check_for_backend(diesel::pg::Pg))]
struct Note {
    id: i32,
    category_id: Option<i32>,
    title: String,
}

#[derive(Insertable)]
#[diesel(table_name = notes)]
struct NewNote<'a> {
    title: &'a str,
    category_id: Option<i32>,
}

#[derive(AsChangeset)]
#[diesel(table_name = notes)]
struct NoteChange<'a> {
    title: &'a str,
}

fn titles(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    notes::table
        .order(notes::id)
        .select(notes::title)
        .load(conn)
}

/// Trap 1 in DESIGN.md: the same query, two tenants, one connection, statement cache on.
#[test]
fn same_query_two_tenants_one_connection() {
    let db = test_db!("same_query_two_tenants_one_connection");
    let ids = db.provision(&["t1", "t2"]);
    let mut conn = db.conn();
    for (t, title) in ids.iter().zip(["from t1", "from t2"]) {
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(notes::title.eq(title))
                .execute(&mut conn)
        })
        .unwrap();
    }
    for _ in 0..3 {
        for (t, expected) in ids.iter().zip(["from t1", "from t2"]) {
            let got = switch(t, || {
                notes::table
                    .filter(notes::id.eq(1))
                    .select(notes::title)
                    .first::<String>(&mut conn)
            })
            .unwrap();
            assert_eq!(got, expected);
        }
    }
}

#[test]
fn full_dsl_runs_in_the_active_tenant() {
    let db = test_db!("full_dsl_runs_in_the_active_tenant");
    let ids = db.provision(&["alpha", "beta"]);
    let mut conn = db.conn();
    diesel::insert_into(plans::table)
        .values(plans::name.eq("pro"))
        .execute(&mut conn)
        .unwrap();

    for t in &ids {
        switch(t, || -> QueryResult<()> {
            let conn = &mut conn;
            let tag = t.as_str();
            // insert ... returning, single and batch
            let cat: i32 = diesel::insert_into(categories::table)
                .values(categories::name.eq(format!("cat-{tag}")))
                .returning(categories::id)
                .get_result(conn)?;
            let n: Note = diesel::insert_into(notes::table)
                .values(&NewNote {
                    title: &format!("first-{tag}"),
                    category_id: Some(cat),
                })
                .returning(Note::as_returning())
                .get_result(conn)?;
            assert_eq!(n.title, format!("first-{tag}"));
            let batch = vec![
                NewNote {
                    title: "b1",
                    category_id: None,
                },
                NewNote {
                    title: "b2",
                    category_id: Some(cat),
                },
            ];
            let inserted = diesel::insert_into(notes::table)
                .values(&batch)
                .execute(conn)?;
            assert_eq!(inserted, 2);
            // select, filter, order, limit, Selectable
            let loaded: Vec<Note> = notes::table
                .filter(notes::title.like("b%"))
                .order(notes::title.desc())
                .limit(5)
                .select(Note::as_select())
                .load(conn)?;
            assert_eq!(
                loaded.iter().map(|n| n.title.as_str()).collect::<Vec<_>>(),
                ["b2", "b1"]
            );
            // update with AsChangeset, and with set()
            diesel::update(notes::table.filter(notes::title.eq("b1")))
                .set(&NoteChange {
                    title: "b1-renamed",
                })
                .execute(conn)?;
            diesel::update(&n)
                .set(notes::body.eq("edited"))
                .execute(conn)?;
            // upsert
            diesel::insert_into(categories::table)
                .values((categories::id.eq(cat), categories::name.eq("ignored")))
                .on_conflict(categories::id)
                .do_update()
                .set(categories::name.eq(format!("cat-{tag}-v2")))
                .execute(conn)?;
            diesel::insert_into(tags::table)
                .values(tags::label.eq("x"))
                .on_conflict_do_nothing()
                .execute(conn)?;
            // joins with a tenant table and with a shared table
            let joined: Vec<(String, String)> = notes::table
                .inner_join(categories::table)
                .select((notes::title, categories::name))
                .order(notes::title)
                .load(conn)?;
            assert_eq!(
                joined,
                [
                    ("b2".to_string(), format!("cat-{tag}-v2")),
                    (format!("first-{tag}"), format!("cat-{tag}-v2"))
                ]
            );
            let left: i64 = notes::table
                .left_join(tags::table)
                .count()
                .get_result(conn)?;
            assert_eq!(left, 3);
            let with_plan: Vec<(String, String)> = notes::table
                .inner_join(plans::table.on(plans::id.eq(1)))
                .select((notes::title, plans::name))
                .filter(notes::title.eq("b2"))
                .load(conn)?;
            assert_eq!(with_plan, [("b2".to_string(), "pro".to_string())]);
            // subqueries
            let in_cat: Vec<String> = notes::table
                .filter(
                    notes::category_id.eq_any(categories::table.select(categories::id.nullable())),
                )
                .select(notes::title)
                .order(notes::title)
                .load(conn)?;
            assert_eq!(in_cat, ["b2".to_string(), format!("first-{tag}")]);
            let any: bool = diesel::select(exists(notes::table.filter(notes::title.eq("b2"))))
                .get_result(conn)?;
            assert!(any);
            // into_boxed, count, aggregates
            let mut q = notes::table.into_boxed();
            q = q.filter(notes::category_id.is_not_null());
            assert_eq!(q.count().get_result::<i64>(conn)?, 2);
            let (c, m): (i64, Option<i32>) = notes::table
                .select((count_star(), max(notes::id)))
                .first(conn)?;
            assert_eq!((c, m), (3, Some(3)));
            let grouped: Vec<(Option<i32>, i64)> = notes::table
                .group_by(notes::category_id)
                .select((notes::category_id, count_star()))
                .order(notes::category_id)
                .load(conn)?;
            assert_eq!(grouped, [(Some(cat), 2), (None, 1)]);
            // delete with returning
            let gone: Vec<String> =
                diesel::delete(notes::table.filter(notes::title.eq("b1-renamed")))
                    .returning(notes::title)
                    .get_results(conn)?;
            assert_eq!(gone, ["b1-renamed"]);
            Ok(())
        })
        .unwrap();
    }
    // Each tenant saw only its own rows.
    for t in &ids {
        let names = switch(t, || titles(&mut conn)).unwrap();
        assert_eq!(names, [format!("first-{t}"), "b2".to_string()]);
    }
}

#[test]
fn tenant_table_outside_switch_fails_before_sending() {
    let db = test_db!("tenant_table_outside_switch_fails_before_sending");
    db.provision(&["acme"]);
    let mut conn = db.conn();
    let err = titles(&mut conn).unwrap_err();
    let err = Error::from(err);
    assert!(
        matches!(err, Error::NoActiveTenant(ref e) if e.table_name() == Some("notes")),
        "{err:?}"
    );

    let acme = TenantId::new("acme").unwrap();
    let err = switch(&acme, || {
        std::thread::spawn(move || titles(&mut conn).unwrap_err())
    })
    .join()
    .unwrap();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));
}

/// A query value does not capture a tenant: its schema is rendered when it runs, so a query built
/// under one tenant and run under another reads the second, and run outside any switch fails.
#[test]
fn schema_is_rendered_when_the_query_runs() {
    let db = test_db!("schema_is_rendered_when_the_query_runs");
    let ids = db.provision(&["built", "ran"]);
    let mut conn = db.conn();
    for t in &ids {
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(notes::title.eq(t.as_str()))
                .execute(&mut conn)
        })
        .unwrap();
    }
    let boxed = switch(&ids[0], || {
        notes::table
            .select(notes::title)
            .into_boxed::<diesel::pg::Pg>()
    });
    let got: Vec<String> = switch(&ids[1], || boxed.load(&mut conn)).unwrap();
    assert_eq!(got, ["ran"]);
    let boxed = notes::table
        .select(notes::title)
        .into_boxed::<diesel::pg::Pg>();
    let err = boxed.load::<String>(&mut conn).unwrap_err();
    assert!(matches!(Error::from(err), Error::NoActiveTenant(_)));
}

/// Aliases (self-joins) of a tenant table render the tenant's schema too.
#[test]
fn aliases_of_tenant_tables_are_routed() {
    let db = test_db!("aliases_of_tenant_tables_are_routed");
    let ids = db.provision(&["one", "two"]);
    let mut conn = db.conn();
    for t in &ids {
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(&vec![
                    notes::title.eq(format!("{t}-a")),
                    notes::title.eq(format!("{t}-b")),
                ])
                .execute(&mut conn)
        })
        .unwrap();
    }
    let other = diesel::alias!(notes as other);
    for t in &ids {
        let pairs: Vec<(String, String)> = switch(t, || {
            notes::table
                .inner_join(other.on(other.field(notes::id).gt(notes::id)))
                .select((notes::title, other.field(notes::title)))
                .load(&mut conn)
        })
        .unwrap();
        assert_eq!(pairs, [(format!("{t}-a"), format!("{t}-b"))]);
    }
}
