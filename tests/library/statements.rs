//! The statement splitter, by property: statements built from every lexical element that may
//! hide a `;` (strings, escape strings, dollar quotes, quoted identifiers, comments, `BEGIN
//! ATOMIC` bodies), joined with `;`, split back into exactly themselves.

use diesel_workspace::statements::split_statements;
use proptest::prelude::*;

/// Text without the characters that would end the construct it goes into.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(";".to_owned()),
            Just("'".to_owned()),
            Just("\"".to_owned()),
            Just("$".to_owned()),
            Just("\\".to_owned()),
            Just("--".to_owned()),
            Just("/*".to_owned()),
            Just("*/".to_owned()),
            Just("\n".to_owned()),
            Just("é".to_owned()),
            "[a-z0-9 ]{1,6}",
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

/// One token-level element of a statement (never a comment at either end of the statement).
fn element() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_$]{0,8}".prop_map(|w| w),
        "[0-9]{1,4}".prop_map(|n| n),
        // Parentheses balanced, as in any statement PostgreSQL accepts.
        "[a-z]{1,3}".prop_map(|w| format!("({w}, 1)")),
        Just(",".to_owned()),
        Just("+".to_owned()),
        Just("$1".to_owned()),
        // 'standard' strings: backslashes are plain, quotes doubled.
        text().prop_map(|t| format!("'{}'", t.replace('\'', "''"))),
        // E'escape' strings: backslashes and quotes escaped with a backslash.
        text().prop_map(|t| format!("E'{}'", t.replace('\\', "\\\\").replace('\'', "\\'"))),
        // "quoted identifiers"
        text().prop_map(|t| format!("\"{}\"", t.replace('"', "\"\""))),
        // $tag$dollar quotes$tag$ whose body does not hold the closing tag
        ("[a-z_]{0,4}", text()).prop_map(|(tag, body)| {
            let delim = format!("${tag}$");
            let body = body.replace(&delim, "");
            // A body ending in `$tag` would run into the closing delimiter.
            let body = if body.ends_with('$') {
                format!("{body} ")
            } else {
                body
            };
            format!("{delim}{}{delim}", body.replace(&delim, ""))
        }),
    ]
}

fn comment() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_map(|t| format!("-- {}\n", t.replace('\n', " "))),
        text().prop_map(|t| format!(
            "/* {} /* nested {} */ */",
            t.replace("/*", "").replace("*/", "").replace('*', ""),
            t.replace(['*', '/'], "")
        )),
    ]
}

fn statement() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z_]{0,6}",
        proptest::collection::vec((element(), proptest::option::of(comment())), 0..6),
        element(),
    )
        .prop_map(|(head, middle, last)| {
            let mut s = head;
            for (e, c) in middle {
                s.push(' ');
                s.push_str(&e);
                if let Some(c) = c {
                    s.push(' ');
                    s.push_str(&c);
                }
            }
            s.push(' ');
            s.push_str(&last);
            s
        })
        // A statement starting with CREATE FUNCTION would turn BEGIN into a block opener.
        .prop_filter("not a routine", |s| !s.starts_with("create"))
}

fn routine() -> impl Strategy<Value = String> {
    proptest::collection::vec(statement(), 1..4).prop_map(|body| {
        format!(
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC {}; \
             SELECT CASE WHEN true THEN 1 END; END",
            body.join("; ")
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn statements_split_back_into_themselves(
        statements in proptest::collection::vec(prop_oneof![4 => statement(), 1 => routine()], 0..6),
        separators in proptest::collection::vec(
            prop_oneof![Just(";".to_owned()), Just(";\n".to_owned()), Just(" ;; ".to_owned()),
                        comment().prop_map(|c| format!(";{c}")), comment().prop_map(|c| format!("{c};"))],
            6,
        ),
    ) {
        let mut sql = String::new();
        for (s, sep) in statements.iter().zip(&separators) {
            sql.push_str(s);
            sql.push_str(sep);
        }
        let split = split_statements(&sql).map_err(|e| TestCaseError::fail(format!("{e}: {sql}")))?;
        let got: Vec<&str> = split.iter().map(|s| s.sql()).collect();
        prop_assert_eq!(got, statements.iter().map(String::as_str).collect::<Vec<_>>(), "{}", sql);
    }

    #[test]
    fn any_input_splits_or_reports_without_panicking(sql in "\\PC{0,200}") {
        if let Ok(statements) = split_statements(&sql) {
            for s in statements {
                prop_assert_eq!(&sql[s.offset()..s.offset() + s.sql().len()], s.sql());
                prop_assert!(!s.sql().trim().is_empty());
            }
        }
    }
}

/// Every split statement of the example migrations is accepted by PostgreSQL's own parser.
#[test]
fn the_example_schema_splits_into_what_postgresql_parses() {
    use diesel::connection::SimpleConnection;
    let db = crate::test_db!("the_example_schema_splits_into_what_postgresql_parses");
    let sql = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations_tenant/2026-01-01-000001_create_notes/up.sql"
    ))
    .unwrap();
    let statements = split_statements(&sql).unwrap();
    assert_eq!(statements.len(), 6);
    let mut conn = db.conn();
    conn.batch_execute("CREATE SCHEMA t; SET search_path TO t")
        .unwrap();
    for s in &statements {
        // One command per string: what Citus needs.
        conn.batch_execute(s.sql())
            .unwrap_or_else(|e| panic!("{}: {e}", s.sql()));
    }
}
