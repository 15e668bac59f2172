//! The library's `tracing` spans: each operation's span names its tenant, fleet runs have one
//! span per tenant (on the worker threads, under the run's span), and outcomes are recorded.
//!
//! A capturing layer is installed as the test thread's default subscriber only: the fleet
//! workers must report to it through the dispatcher the library hands them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use ::tracing::field::{Field, Visit};
use ::tracing::span::{Attributes, Id, Record};
use ::tracing::{Event, Subscriber};
use diesel_workspace::{MigrateOptions, TenantId};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::fleet::{migrator_for, Prefix, FLEET};

/// One span or event as seen by the subscriber.
#[derive(Debug, Clone)]
struct Seen {
    /// The span's name, or the event's message.
    name: String,
    is_event: bool,
    fields: BTreeMap<String, String>,
    /// Index (in the capture) of the parent span, or of the span the event happened in.
    parent: Option<usize>,
    thread: ThreadId,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The capture's index of a span, kept in the span's extensions (span ids are reused).
struct Index(usize);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span");
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut seen = self.0.lock().unwrap();
        seen.push(Seen {
            name: attrs.metadata().name().to_owned(),
            is_event: false,
            fields,
            parent,
            thread: std::thread::current().id(),
        });
        span.extensions_mut().insert(Index(seen.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a recorded span");
        let Some(i) = span.extensions().get::<Index>().map(|i| i.0) else {
            return;
        };
        values.record(&mut Fields(&mut self.0.lock().unwrap()[i].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let parent = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let name = fields.remove("message").unwrap_or_default();
        self.0.lock().unwrap().push(Seen {
            name,
            is_event: true,
            fields,
            parent,
            thread: std::thread::current().id(),
        });
    }
}

impl Capture {
    /// Runs `f` with this capture as the thread's default subscriber; returns what it saw.
    fn during(f: impl FnOnce()) -> Vec<Seen> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        ::tracing::subscriber::with_default(subscriber, || {
            // A callsite another test thread registers while this dispatcher is being registered
            // can keep the interest it computed without it (the tests share one process); have
            // every callsite ask again now that this dispatcher exists.
            ::tracing::callsite::rebuild_interest_cache();
            f()
        });
        let seen = capture.0.lock().unwrap().clone();
        seen
    }
}

/// The indices of the spans named `name`.
fn spans(seen: &[Seen], name: &str) -> Vec<usize> {
    (0..seen.len())
        .filter(|&i| !seen[i].is_event && seen[i].name == name)
        .collect()
}

/// The single span named `name` whose `tenant` is `tenant`.
fn span_for(seen: &[Seen], name: &str, tenant: &str) -> usize {
    let found: Vec<usize> = spans(seen, name)
        .into_iter()
        .filter(|&i| seen[i].field("tenant") == Some(tenant))
        .collect();
    assert_eq!(found.len(), 1, "one {name} span for {tenant}: {seen:#?}");
    found[0]
}

/// The messages of the events emitted directly in span `i`.
fn events_in(seen: &[Seen], i: usize) -> Vec<&str> {
    seen.iter()
        .filter(|s| s.is_event && s.parent == Some(i))
        .map(|s| s.name.as_str())
        .collect()
}

fn id(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

#[test]
fn single_tenant_operations_have_spans_naming_the_tenant() {
    let db = crate::test_db!("single_tenant_operations_have_spans_naming_the_tenant");
    let mut conn = db.conn();
    let m = db.migrator();
    let seen = Capture::during(|| {
        m.run_shared(&mut conn).unwrap();
        m.create_tenant(&mut conn, &id("acme")).unwrap();
        m.create_tenant(&mut conn, &id("initech")).unwrap();
        assert!(m.create_tenant(&mut conn, &id("acme")).is_err());
        m.migrate_tenant(&mut conn, &id("acme")).unwrap();
        m.rename_tenant(&mut conn, &id("acme"), &id("globex"))
            .unwrap();
        m.drop_tenant(&mut conn, &id("globex")).unwrap();
        assert!(m.drop_tenant(&mut conn, &id("nobody")).is_err());
        m.fill_spares(&mut conn, 1).unwrap();
    });

    let shared = spans(&seen, "shared.migrate");
    assert_eq!(shared.len(), 1, "{seen:#?}");
    assert!(seen[shared[0]].field("applied").is_some(), "{seen:#?}");

    // Two creates of `acme`: the first succeeds, the second records the error.
    let creates: Vec<usize> = spans(&seen, "tenant.create")
        .into_iter()
        .filter(|&i| seen[i].field("tenant") == Some("acme"))
        .collect();
    assert_eq!(creates.len(), 2, "{seen:#?}");
    assert_eq!(seen[creates[0]].field("error"), None, "{seen:#?}");
    assert_eq!(events_in(&seen, creates[0]), ["done"]);
    let error = seen[creates[1]].field("error").expect("the error");
    assert!(error.contains("acme"), "{error}");
    assert_eq!(events_in(&seen, creates[1]), ["failed"]);
    // Negative control: the other tenant's create is its own span, never tagged `acme`.
    let initech = span_for(&seen, "tenant.create", "initech");
    assert_eq!(events_in(&seen, initech), ["done"]);

    let migrate = span_for(&seen, "tenant.migrate", "acme");
    assert_eq!(seen[migrate].field("applied"), Some("0"), "up to date");
    assert_eq!(events_in(&seen, migrate), ["done"]);
    // Every operation span carries its duration.
    for span in [initech, migrate] {
        assert!(
            seen[span]
                .field("elapsed_ms")
                .is_some_and(|ms| ms.parse::<u64>().is_ok()),
            "{seen:#?}"
        );
    }

    let rename = span_for(&seen, "tenant.rename", "acme");
    assert_eq!(seen[rename].field("to"), Some("globex"));
    assert_eq!(events_in(&seen, rename), ["done"]);

    let drop = span_for(&seen, "tenant.drop", "globex");
    assert_eq!(events_in(&seen, drop), ["done"]);
    let missing = span_for(&seen, "tenant.drop", "nobody");
    assert!(
        seen[missing]
            .field("error")
            .is_some_and(|e| e.contains("does not exist")),
        "{seen:#?}"
    );

    let fill = spans(&seen, "spares.fill");
    assert_eq!(fill.len(), 1, "{seen:#?}");
    assert_eq!(seen[fill[0]].field("target"), Some("1"));
    assert_eq!(seen[fill[0]].field("applied"), Some("1"), "one spare made");
}

#[test]
fn fleet_runs_have_a_span_per_tenant_on_the_workers() {
    let db = crate::test_db!("fleet_runs_have_a_span_per_tenant_on_the_workers");
    let mut conn = db.conn();
    let before = migrator_for(&mut conn, Prefix(FLEET, 2));
    let after = migrator_for(&mut conn, FLEET);
    let tenants = [id("acme"), id("globex"), id("initech")];
    let opts = MigrateOptions::default().parallel(3);
    let test_thread = std::thread::current().id();
    let seen = Capture::during(|| {
        before.create_tenants(db.url(), &tenants, &opts).unwrap();
        let report = after.migrate_all(db.url(), &opts).unwrap();
        assert_eq!(report.applied().count(), 3);
    });

    for (run_name, applied) in [("fleet.create_tenants", "2"), ("fleet.migrate_all", "3")] {
        let runs = spans(&seen, run_name);
        assert_eq!(runs.len(), 1, "{run_name}: {seen:#?}");
        let run = runs[0];
        assert_eq!(seen[run].field("tenants"), Some("3"), "{seen:#?}");
        assert_eq!(seen[run].field("applied"), Some("3"), "{seen:#?}");
        assert_eq!(seen[run].field("failed"), Some("0"), "{seen:#?}");
        assert_eq!(events_in(&seen, run), ["done"]);
        assert!(
            seen[run]
                .field("elapsed_ms")
                .is_some_and(|ms| ms.parse::<u64>().is_ok()),
            "{seen:#?}"
        );

        let children: Vec<usize> = spans(&seen, "fleet.tenant")
            .into_iter()
            .filter(|&i| seen[i].parent == Some(run))
            .collect();
        let names: Vec<&str> = children
            .iter()
            .map(|&i| seen[i].field("tenant").unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["acme", "globex", "initech"],
            "{run_name}: {seen:#?}"
        );
        for &t in &children {
            let tenant = seen[t].field("tenant").unwrap();
            assert_ne!(seen[t].thread, test_thread, "a worker thread's span");
            assert_eq!(seen[t].field("applied"), Some(applied), "{seen:#?}");
            assert_eq!(events_in(&seen, t), ["done"], "{tenant}");
            assert!(
                seen[t]
                    .field("elapsed_ms")
                    .is_some_and(|ms| ms.parse::<u64>().is_ok()),
                "{tenant}: {seen:#?}"
            );
            // Whatever the library does inside a tenant's span concerns that tenant only.
            for inner in seen.iter().filter(|s| !s.is_event && s.parent == Some(t)) {
                let named = inner.field("tenant").or(inner.field("schema"));
                assert_eq!(named, Some(tenant), "{inner:#?} under {tenant}");
            }
        }
    }
    // A fleet create runs `tenant.create` inside each tenant's span.
    for t in ["acme", "globex", "initech"] {
        let create = span_for(&seen, "tenant.create", t);
        let parent = seen[create].parent.expect("a parent span");
        assert_eq!(seen[parent].name, "fleet.tenant");
        assert_eq!(seen[parent].field("tenant"), Some(t));
    }
}
