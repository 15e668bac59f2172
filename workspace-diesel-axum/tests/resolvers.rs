//! The resolvers on request parts: normalisation, rejections, composition.

use diesel_workspace_axum::{Header, PathPrefix, Resolution, Resolver, Subdomain, TenantRejection};

fn parts(host: Option<&str>, headers: &[(&str, &str)], path: &str) -> http::request::Parts {
    let mut b = http::Request::get(path);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn malformed(r: &Resolution) -> bool {
    matches!(r, Resolution::Reject(TenantRejection::Malformed { .. }))
}

#[test]
fn subdomains_are_normalised_and_apex_hosts_are_never_tenants() {
    let r = Subdomain::new(["Example.com", "localhost", "eu.example.com"]).reserved(["WWW"]);
    let at = |host: &str| block_on(r.resolve(&parts(Some(host), &[], "/")));
    assert_eq!(at("acme.example.com"), Resolution::parse("acme"));
    assert_eq!(at("ACME.EXAMPLE.COM:8443"), Resolution::parse("acme"));
    assert_eq!(at("acme.example.com."), Resolution::parse("acme"));
    assert_eq!(at("acme.localhost:3000"), Resolution::parse("acme"));
    // The longest apex wins: `eu.example.com` is an apex, not tenant `eu`.
    assert_eq!(at("eu.example.com"), Resolution::NoMatch);
    assert_eq!(at("acme.eu.example.com"), Resolution::parse("acme"));
    for host in [
        "example.com",
        "example.com:80",
        "localhost",
        "www.example.com",
        "www.localhost:3000",
        "example.org",
        "acme.example.org",
        "127.0.0.1:3000",
        "[::1]:3000",
        "notexample.com",
    ] {
        assert_eq!(at(host), Resolution::NoMatch, "{host}");
    }
    for host in [
        "a.b.example.com",
        "my-shop.example.com",
        "pg_catalog.localhost",
        "public.localhost",
    ] {
        assert!(malformed(&at(host)), "{host}: {:?}", at(host));
    }
    // No host at all.
    assert_eq!(
        block_on(r.resolve(&parts(None, &[], "/"))),
        Resolution::NoMatch
    );
}

#[test]
fn headers_are_taken_as_they_are() {
    let r = Header::behind_trusted_proxy("x-tenant");
    let with = |v: &str| block_on(r.resolve(&parts(None, &[("x-tenant", v)], "/")));
    assert_eq!(with("acme"), Resolution::parse("acme"));
    assert_eq!(with("  acme "), Resolution::parse("acme"));
    for bad in ["Acme", "", "a\"b", "acme,public", "$user", "pg_toast"] {
        assert!(malformed(&with(bad)), "{bad:?}");
    }
    assert_eq!(
        block_on(r.resolve(&parts(None, &[], "/"))),
        Resolution::NoMatch
    );
}

#[test]
fn path_prefixes() {
    let r = PathPrefix::new("/t/");
    let at = |p: &str| block_on(r.resolve(&parts(None, &[], p)));
    assert_eq!(at("/t/acme/notes"), Resolution::parse("acme"));
    assert_eq!(at("/t/acme"), Resolution::parse("acme"));
    assert_eq!(at("/notes"), Resolution::NoMatch);
    assert_eq!(at("/tx/acme"), Resolution::NoMatch);
    assert!(malformed(&at("/t/")));
    assert!(malformed(&at("/t/Acme/notes")));
    assert!(malformed(&at("/t/a%22b/notes")));
}

#[test]
fn either_source_may_name_the_tenant_and_two_must_agree() {
    let r = Subdomain::new(["localhost"]).or(Header::behind_trusted_proxy("x-tenant"));
    let resolve =
        |host: &str, hdr: &[(&str, &str)]| block_on(r.resolve(&parts(Some(host), hdr, "/")));
    assert!(matches!(
        resolve("acme.localhost", &[("x-tenant", "globex")]),
        Resolution::Reject(TenantRejection::Ambiguous(_))
    ));
    assert_eq!(
        resolve("acme.localhost", &[("x-tenant", "acme")]),
        Resolution::parse("acme")
    );
    assert_eq!(resolve("acme.localhost", &[]), Resolution::parse("acme"));
    assert_eq!(
        resolve("localhost", &[("x-tenant", "globex")]),
        Resolution::parse("globex")
    );
    assert_eq!(resolve("localhost", &[]), Resolution::NoMatch);
    // A malformed subdomain is not skipped in favour of the header.
    assert!(malformed(&resolve(
        "a.b.localhost",
        &[("x-tenant", "globex")]
    )));
}

#[test]
fn with_an_explicit_precedence_the_first_match_wins() {
    let r = Subdomain::new(["localhost"]).or_first(Header::behind_trusted_proxy("x-tenant"));
    let resolve =
        |host: &str, hdr: &[(&str, &str)]| block_on(r.resolve(&parts(Some(host), hdr, "/")));
    assert_eq!(
        resolve("acme.localhost", &[("x-tenant", "globex")]),
        Resolution::parse("acme")
    );
    assert_eq!(
        resolve("localhost", &[("x-tenant", "globex")]),
        Resolution::parse("globex")
    );
    assert!(malformed(&resolve(
        "a.b.localhost",
        &[("x-tenant", "globex")]
    )));
}

#[test]
fn agreeing_resolvers_refuse_a_contradiction() {
    // The first resolver stands in for a logged-in user's workspace.
    let r = Header::behind_trusted_proxy("x-user-workspace")
        .agreeing_with(Subdomain::new(["localhost"]));
    let resolve =
        |host: &str, hdr: &[(&str, &str)]| block_on(r.resolve(&parts(Some(host), hdr, "/")));
    let user = [("x-user-workspace", "acme")];
    assert_eq!(resolve("acme.localhost", &user), Resolution::parse("acme"));
    assert_eq!(resolve("localhost", &user), Resolution::parse("acme"));
    let other = resolve("globex.localhost", &user);
    assert!(
        matches!(&other, Resolution::Reject(TenantRejection::Forbidden(t)) if t.as_str() == "globex"),
        "{other:?}"
    );
    assert_eq!(
        resolve("globex.localhost", &[]),
        Resolution::parse("globex")
    );
}
