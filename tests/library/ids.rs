//! Tenant ids: hostile input is rejected before anything reaches the server, and the rule is exactly
//! `^[a-z_][a-z0-9_]{0,62}$` minus PostgreSQL's reserved names and key words.

use std::collections::HashSet;
use std::sync::OnceLock;

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_workspace::{Error, TenantId};
use proptest::prelude::*;

use crate::support::admin_url;

#[derive(QueryableByName)]
struct Keyword {
    #[diesel(sql_type = Text)]
    word: String,
}

/// PostgreSQL's own list of key words that cannot be a bare schema name (`R`: reserved, `T`:
/// reserved but allowed as a function or type name), read from the server.
fn server_reserved_keywords() -> &'static HashSet<String> {
    static WORDS: OnceLock<HashSet<String>> = OnceLock::new();
    WORDS.get_or_init(|| {
        let mut conn = PgConnection::establish(&admin_url()).expect("connect");
        diesel::sql_query(
            "SELECT word FROM pg_catalog.pg_get_keywords() WHERE catcode IN ('R', 'T')",
        )
        .load::<Keyword>(&mut conn)
        .expect("pg_get_keywords")
        .into_iter()
        .map(|k| k.word)
        .collect()
    })
}

/// The rule, written independently of the library.
fn oracle(name: &str) -> bool {
    let re = regex::Regex::new(r"\A[a-z_][a-z0-9_]{0,62}\z").unwrap();
    re.is_match(name)
        && !name.starts_with("pg_")
        && name != "public"
        && name != "information_schema"
        && !server_reserved_keywords().contains(name)
}

#[test]
fn every_server_keyword_is_rejected() {
    for word in server_reserved_keywords() {
        assert!(TenantId::new(word).is_err(), "{word} was accepted");
    }
    // Unreserved key words are valid schema names.
    for word in ["name", "data", "between_x", "int", "varchar"] {
        assert!(TenantId::new(word).is_ok(), "{word} was rejected");
    }
}

#[test]
fn hostile_ids_are_rejected_with_the_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "a\"; DROP SCHEMA public CASCADE; --",
            "only lower-case ASCII letters",
        ),
        ("a'b", "only lower-case ASCII letters"),
        ("a,public", "only lower-case ASCII letters"),
        ("$user", "only lower-case ASCII letters"),
        ("Acme", "only lower-case ASCII letters"),
        ("acmé", "only lower-case ASCII letters"),
        ("a\0b", "only lower-case ASCII letters"),
        ("a\nb", "only lower-case ASCII letters"),
        ("tab\there", "only lower-case ASCII letters"),
        ("pg_catalog", "reserved by PostgreSQL"),
        ("pg_toast", "reserved by PostgreSQL"),
        ("public", "reserved for shared data"),
        ("information_schema", "reserved for shared data"),
        ("select", "reserved SQL key word"),
        ("user", "reserved SQL key word"),
        ("9lives", "cannot start with a digit"),
        ("", "cannot be empty"),
    ];
    for (input, reason) in cases {
        let err = TenantId::new(input).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::InvalidTenantName { .. }),
            "{input:?}: {err:?}"
        );
        assert!(msg.contains(reason), "{input:?}: {msg}");
        // Control characters are shown escaped, so the message stays on one line.
        let shown: String = input
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_debug().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect();
        assert!(
            msg.starts_with(&format!("invalid tenant name `{shown}`")),
            "{msg}"
        );
        assert!(!msg.contains(['\n', '\0', '\t']), "{msg:?}");
    }
    assert!(TenantId::new("a\nb")
        .unwrap_err()
        .to_string()
        .starts_with("invalid tenant name `a\\nb`"));
    let long = "a".repeat(64);
    let msg = TenantId::new(&long).unwrap_err().to_string();
    assert!(msg.contains("at most 63 bytes"), "{msg}");
    // 63 bytes is fine and is kept whole, never truncated.
    assert_eq!(TenantId::new("a".repeat(63)).unwrap().as_str().len(), 63);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn accepted_iff_rule_holds_for_any_string(name in any::<String>()) {
        prop_assert_eq!(TenantId::new(&name).is_ok(), oracle(&name));
    }

    #[test]
    fn accepted_iff_rule_holds_near_the_boundary(name in "[a-z_0-9A-Z,\"$ ]{0,66}") {
        prop_assert_eq!(TenantId::new(&name).is_ok(), oracle(&name));
    }

    #[test]
    fn accepted_iff_rule_holds_for_plausible_names(name in "(pg_)?[a-z_][a-z0-9_]{0,64}") {
        prop_assert_eq!(TenantId::new(&name).is_ok(), oracle(&name));
    }
}
