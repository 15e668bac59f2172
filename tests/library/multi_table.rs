//! Several tables from one `tenant_table!` invocation: doc comments and attributes, `#[sql_name]`
//! on tables and columns, custom and composite primary keys, a table wider than 16 columns, and
//! joins between them, each routed to the active tenant's schema.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{switch, tenant_table, Error, TenantId, TenantModel, TenantTable};

use crate::test_db;

tenant_table! {
    use diesel::sql_types::*;

    /// Projects of a tenant.
    projects (id) {
        id -> Int4,
        name -> Text,
        /// Spent so far, in whole units.
        budget -> Int4,
    }

    /// Who works on which project: a composite key.
    memberships (user_id, project_id) {
        user_id -> Int4,
        project_id -> Int4,
        #[sql_name = "role"]
        kind -> Text,
    }

    /// An event log with its own key column and SQL name.
    #[sql_name = "audit_events"]
    events (seq) {
        seq -> Int8,
        project_id -> Int4,
        #[max_length = 20]
        action -> Varchar,
        happened_at -> Timestamptz,
    }

    /// Twenty columns: more than Diesel's 16 without features, within its default 32.
    settings (id) {
        id -> Int4,
        s1 -> Int4, s2 -> Int4, s3 -> Int4, s4 -> Int4, s5 -> Int4, s6 -> Int4,
        s7 -> Int4, s8 -> Int4, s9 -> Int4, s10 -> Int4, s11 -> Int4, s12 -> Int4,
        s13 -> Int4, s14 -> Int4, s15 -> Int4, s16 -> Int4, s17 -> Int4, s18 -> Int4,
        s19 -> Text,
    }
}

diesel::joinable!(memberships -> projects (project_id));
diesel::joinable!(events -> projects (project_id));
diesel::allow_tables_to_appear_in_same_query!(projects, memberships, events, settings);

/// The tables, created in each tenant's schema.
const SCHEMA: &str = r#"
CREATE TABLE projects (id SERIAL PRIMARY KEY, name TEXT NOT NULL, budget INT NOT NULL DEFAULT 0);
CREATE TABLE memberships (
    user_id INT NOT NULL,
    project_id INT NOT NULL REFERENCES projects (id),
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, project_id)
);
CREATE TABLE audit_events (
    seq BIGSERIAL PRIMARY KEY,
    project_id INT NOT NULL REFERENCES projects (id),
    action VARCHAR(20) NOT NULL,
    happened_at TIMESTAMPTZ NOT NULL DEFAULT pg_catalog.now()
);
CREATE TABLE settings (
    id SERIAL PRIMARY KEY,
    s1 INT NOT NULL DEFAULT 1, s2 INT NOT NULL DEFAULT 2, s3 INT NOT NULL DEFAULT 3,
    s4 INT NOT NULL DEFAULT 4, s5 INT NOT NULL DEFAULT 5, s6 INT NOT NULL DEFAULT 6,
    s7 INT NOT NULL DEFAULT 7, s8 INT NOT NULL DEFAULT 8, s9 INT NOT NULL DEFAULT 9,
    s10 INT NOT NULL DEFAULT 10, s11 INT NOT NULL DEFAULT 11, s12 INT NOT NULL DEFAULT 12,
    s13 INT NOT NULL DEFAULT 13, s14 INT NOT NULL DEFAULT 14, s15 INT NOT NULL DEFAULT 15,
    s16 INT NOT NULL DEFAULT 16, s17 INT NOT NULL DEFAULT 17, s18 INT NOT NULL DEFAULT 18,
    s19 TEXT NOT NULL DEFAULT 'nineteen'
);
"#;

#[derive(Debug, PartialEq, Queryable, Selectable, Identifiable, TenantModel)]
#[diesel(table_name = memberships, primary_key(user_id, project_id))]
#[diesel(check_for_backend(diesel::pg::Pg))]
struct Membership {
    user_id: i32,
    project_id: i32,
    kind: String,
}

/// A database with the tables above in a schema per tenant (made with plain SQL: routing needs
/// only the schema).
fn tenants(db: &crate::support::TestDb, names: &[&str]) -> (PgConnection, Vec<TenantId>) {
    let mut conn = db.conn();
    let ids = names
        .iter()
        .map(|name| {
            let id = TenantId::new(name).unwrap();
            conn.batch_execute(&format!(
                "CREATE SCHEMA \"{id}\"; SET search_path TO \"{id}\"; {SCHEMA} RESET search_path;"
            ))
            .unwrap();
            id
        })
        .collect();
    (conn, ids)
}

/// Adds a project with one member and one event in the active tenant; returns the project's id.
fn seed(conn: &mut PgConnection, name: &str, user: i32) -> QueryResult<i32> {
    let project: i32 = diesel::insert_into(projects::table)
        .values(projects::name.eq(name))
        .returning(projects::id)
        .get_result(conn)?;
    diesel::insert_into(memberships::table)
        .values((
            memberships::user_id.eq(user),
            memberships::project_id.eq(project),
            memberships::kind.eq("owner"),
        ))
        .execute(conn)?;
    diesel::insert_into(events::table)
        .values((events::project_id.eq(project), events::action.eq("created")))
        .execute(conn)?;
    Ok(project)
}

#[test]
fn every_table_of_one_invocation_is_routed() {
    let db = test_db!("every_table_of_one_invocation_is_routed");
    let (mut conn, ids) = tenants(&db, &["north", "south"]);
    let north = switch(&ids[0], || seed(&mut conn, "apollo", 7)).unwrap();
    switch(&ids[1], || seed(&mut conn, "gemini", 8)).unwrap();

    // Each tenant sees its own rows in every table, and none of the other's.
    for (t, name, user) in [(&ids[0], "apollo", 7), (&ids[1], "gemini", 8)] {
        switch(t, || -> QueryResult<()> {
            let conn = &mut conn;
            let names: Vec<String> = projects::table.select(projects::name).load(conn)?;
            assert_eq!(names, [name]);
            let members: Vec<(i32, String)> = memberships::table
                .select((memberships::user_id, memberships::kind))
                .load(conn)?;
            assert_eq!(members, [(user, "owner".to_string())]);
            let actions: Vec<String> = events::table.select(events::action).load(conn)?;
            assert_eq!(actions, ["created"]);
            Ok(())
        })
        .unwrap();
    }

    // The SQL names the table's SQL name and column's, in the active tenant's schema.
    let sql = switch(&ids[0], || {
        diesel::debug_query::<diesel::pg::Pg, _>(
            &events::table
                .filter(events::seq.eq(1_i64))
                .select(events::action),
        )
        .to_string()
    });
    assert!(
        sql.starts_with(r#"SELECT "audit_events"."action" FROM "north"."audit_events" WHERE"#),
        "{sql}"
    );
    let sql = switch(&ids[1], || {
        diesel::debug_query::<diesel::pg::Pg, _>(&memberships::table.select(memberships::kind))
            .to_string()
    });
    assert!(
        sql.starts_with(r#"SELECT "memberships"."role" FROM "south"."memberships""#),
        "{sql}"
    );

    // The south tenant has no project of north's id with north's name: a negative control for
    // a query that would silently read the other schema.
    let south_view: Option<String> = switch(&ids[1], || {
        projects::table
            .find(north)
            .filter(projects::name.eq("apollo"))
            .select(projects::name)
            .first(&mut conn)
            .optional()
    })
    .unwrap();
    assert_eq!(south_view, None);
    assert_eq!(<events::table as TenantTable>::SQL_NAME, "audit_events");
    let star = diesel::debug_query::<diesel::pg::Pg, _>(&events::table.star()).to_string();
    assert!(star.starts_with(r#""audit_events".*"#), "{star}");
}

#[test]
fn composite_and_custom_keys() {
    let db = test_db!("composite_and_custom_keys");
    let (mut conn, ids) = tenants(&db, &["keys"]);
    switch(&ids[0], || -> QueryResult<()> {
        let conn = &mut conn;
        let project = seed(conn, "apollo", 7)?;
        diesel::insert_into(memberships::table)
            .values((
                memberships::user_id.eq(9),
                memberships::project_id.eq(project),
                memberships::kind.eq("viewer"),
            ))
            .execute(conn)?;

        // find() on a composite key, Identifiable with it, update and delete through it.
        let m: Membership = memberships::table
            .find((9, project))
            .select(Membership::as_select())
            .first(conn)?;
        assert_eq!(m.kind, "viewer");
        diesel::update(&m)
            .set(memberships::kind.eq("editor"))
            .execute(conn)?;
        let kind: String = Membership::table()
            .find((9, project))
            .select(memberships::kind)
            .first(conn)?;
        assert_eq!(kind, "editor");
        assert_eq!(
            diesel::delete(memberships::table.find((7, project))).execute(conn)?,
            1
        );

        // A custom single key: find() and GROUP BY it, which covers the other columns.
        let seq: i64 = events::table.select(events::seq).first(conn)?;
        let action: String = events::table.find(seq).select(events::action).first(conn)?;
        assert_eq!(action, "created");
        let grouped: Vec<(i64, String, i64)> = events::table
            .group_by(events::seq)
            .select((events::seq, events::action, diesel::dsl::count_star()))
            .load(conn)?;
        assert_eq!(grouped, [(seq, "created".to_string(), 1)]);
        let by_key: Vec<(i32, i32)> = memberships::table
            .group_by((memberships::user_id, memberships::project_id))
            .select((memberships::user_id, memberships::project_id))
            .load(conn)?;
        assert_eq!(by_key, [(9, project)]);
        assert_eq!(
            <events::action as diesel::query_source::SizeRestrictedColumn>::MAX_LENGTH,
            20
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn joins_and_arithmetic_across_the_invocations_tables() {
    let db = test_db!("joins_and_arithmetic_across_the_invocations_tables");
    let (mut conn, ids) = tenants(&db, &["east", "west"]);
    for (t, name) in ids.iter().zip(["hermes", "artemis"]) {
        switch(t, || seed(&mut conn, name, 1)).unwrap();
    }
    for (t, name) in ids.iter().zip(["hermes", "artemis"]) {
        switch(t, || -> QueryResult<()> {
            let conn = &mut conn;
            let rows: Vec<(String, String, String)> = memberships::table
                .inner_join(projects::table)
                .inner_join(events::table.on(events::project_id.eq(projects::id)))
                .select((projects::name, memberships::kind, events::action))
                .load(conn)?;
            assert_eq!(rows, [(name.to_string(), "owner".into(), "created".into())]);
            let left: Vec<(String, Option<String>)> = projects::table
                .left_join(memberships::table)
                .select((projects::name, memberships::kind.nullable()))
                .load(conn)?;
            assert_eq!(left, [(name.to_string(), Some("owner".into()))]);
            diesel::update(projects::table)
                .set(projects::budget.eq(projects::budget + 10))
                .execute(conn)?;
            let budget: i32 = projects::table
                .select(projects::budget * 3 - 5)
                .first(conn)?;
            assert_eq!(budget, 25);
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn a_table_wider_than_16_columns() {
    let db = test_db!("a_table_wider_than_16_columns");
    let (mut conn, ids) = tenants(&db, &["wide"]);
    switch(&ids[0], || -> QueryResult<()> {
        let conn = &mut conn;
        diesel::insert_into(settings::table)
            .default_values()
            .execute(conn)?;
        let (id, s18, s19): (i32, i32, String) = settings::table
            .select((settings::id, settings::s18, settings::s19))
            .first(conn)?;
        assert_eq!((id, s18, s19.as_str()), (1, 18, "nineteen"));
        let all = settings::table.load::<(
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            String,
        )>(conn)?;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].17, 17);
        Ok(())
    })
    .unwrap();
}

#[test]
fn every_table_fails_closed_outside_a_switch() {
    let db = test_db!("every_table_fails_closed_outside_a_switch");
    let (mut conn, _) = tenants(&db, &["closed"]);
    let table_of = |err: diesel::result::Error| match Error::from(err) {
        Error::NoActiveTenant(e) => e.table_name().map(str::to_owned),
        other => panic!("expected NoActiveTenant, got {other:?}"),
    };
    let err = projects::table
        .count()
        .get_result::<i64>(&mut conn)
        .unwrap_err();
    assert_eq!(table_of(err).as_deref(), Some("projects"));
    let err = memberships::table
        .select(memberships::kind)
        .load::<String>(&mut conn)
        .unwrap_err();
    assert_eq!(table_of(err).as_deref(), Some("memberships"));
    let err = diesel::insert_into(events::table)
        .values((events::project_id.eq(1), events::action.eq("x")))
        .execute(&mut conn)
        .unwrap_err();
    assert_eq!(table_of(err).as_deref(), Some("audit_events"));
    let err = diesel::delete(settings::table)
        .execute(&mut conn)
        .unwrap_err();
    assert_eq!(table_of(err).as_deref(), Some("settings"));
}

/// `ONLY`, `TABLESAMPLE` and `alias!` on a table of a multi-table invocation render the active
/// tenant's schema too.
#[test]
fn wrappers_and_aliases_are_routed() {
    use diesel::dsl::{OnlyDsl, TablesampleDsl};
    let db = test_db!("wrappers_and_aliases_are_routed");
    let (mut conn, ids) = tenants(&db, &["alpha", "beta"]);
    for (t, name) in ids.iter().zip(["vega", "lyra"]) {
        switch(t, || seed(&mut conn, name, 1)).unwrap();
    }
    let parent = diesel::alias!(projects as parent);
    for (t, name) in ids.iter().zip(["vega", "lyra"]) {
        switch(t, || -> QueryResult<()> {
            let conn = &mut conn;
            let only = projects::table.only().select(projects::name);
            let sql = diesel::debug_query::<diesel::pg::Pg, _>(&only).to_string();
            assert!(
                sql.contains(&format!(r#"FROM  ONLY "{t}"."projects""#)),
                "{sql}"
            );
            assert_eq!(only.load::<String>(conn)?, [name]);

            let sampled = projects::table
                .tablesample_system(100)
                .select(projects::name);
            let sql = diesel::debug_query::<diesel::pg::Pg, _>(&sampled).to_string();
            assert!(
                sql.contains(&format!(r#"FROM "{t}"."projects" TABLESAMPLE SYSTEM"#)),
                "{sql}"
            );
            assert_eq!(sampled.load::<String>(conn)?, [name]);

            let via_alias: Vec<(String, String)> = memberships::table
                .inner_join(parent.on(parent.field(projects::id).eq(memberships::project_id)))
                .select((memberships::kind, parent.field(projects::name)))
                .load(conn)?;
            assert_eq!(via_alias, [("owner".to_string(), name.to_string())]);

            Ok(())
        })
        .unwrap();
    }
}
