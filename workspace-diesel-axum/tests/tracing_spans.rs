//! A captured subscriber sees the tenant on the request span and on the library's spans.
//!
//! A test binary of its own: tracing caches each callsite's interest process-wide, so spans hit
//! first by other tests' threads (which have no subscriber) could be missed here.

mod support;

use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use diesel::prelude::*;
use diesel_workspace::{registry::LifecycleState, TenantId};
use diesel_workspace_axum::{Header, Routing, Tenant};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use support::{get as http_get, serve};

/// A span as seen: its id, its name, and its fields as `name=value`.
type Seen = (Id, String, Vec<String>);

/// An event as seen: the span it happened in and its fields as `name=value`.
type Event = (Option<Id>, Vec<String>);

/// Every span and every event, in the order seen.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>, Arc<Mutex<Vec<Event>>>);

struct Fields<'a>(&'a mut Vec<String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={:?}", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={}", field.name(), value));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((id.clone(), attrs.metadata().name().to_owned(), fields));
    }
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let span = ctx.current_span().id().cloned();
        self.1.lock().unwrap().push((span, fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, _, fields)) = spans.iter_mut().rev().find(|(i, _, _)| i == id) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Capture {
    /// The fields of each event inside a span named `span` whose fields include `with`.
    fn events_in(&self, span: &str, with: &str) -> Vec<Vec<String>> {
        let spans = self.0.lock().unwrap();
        self.1
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| {
                spans.iter().any(|(i, n, f)| {
                    Some(i) == id.as_ref() && n == span && f.iter().any(|x| x == with)
                })
            })
            .map(|(_, f)| f.clone())
            .collect()
    }

    fn spans(&self, name: &str) -> Vec<Vec<String>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n, _)| n == name)
            .map(|(_, _, f)| f.clone())
            .collect()
    }
}

#[test]
fn spans_carry_the_tenant() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let (db, _migrator) = support::provision("web_tracing", &["acme", "globex"]);

    // One thread runs the server and the client, so the thread-default subscriber sees the
    // request spans.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = diesel_workspace::pool::builder()
        .max_size(1)
        .statement_cap(0)
        .build(db.url())
        .unwrap();
    // A connection recycled over its statement cap (0), checked in inside a switch. This runs
    // first: tracing caches a callsite's interest when it is first hit, and the server's blocking
    // threads, which have no subscriber (it is this thread's default only), would hit it first.
    let globex = TenantId::new("globex").unwrap();
    diesel_workspace::switch(&globex, || {
        let mut pooled = pool.get().unwrap();
        let _: i64 = support::notes::table
            .count()
            .get_result(&mut *pooled)
            .unwrap();
        drop(pooled); // checked in over the cap of 0 statements
    });
    eprintln!(
        "all: {:?}",
        capture
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n, f)| format!("{n} {f:?}"))
            .collect::<Vec<_>>()
    );
    runtime.block_on(async {
        let routing = Routing::builder(pool.clone())
            .resolver(Header::behind_trusted_proxy("x-tenant"))
            .access(diesel_workspace_axum::Access::public_tenant_routes())
            .build();
        let app = Router::new()
            .route(
                "/whoami",
                get(|Tenant(t): Tenant| async move { t.to_string() }),
            )
            .layer(routing.layer());
        let addr = serve(app).await;
        assert_eq!(
            http_get(addr, "/whoami", &[("x-tenant", "acme")]).await.0,
            200
        );
        assert_eq!(
            http_get(addr, "/whoami", &[("x-tenant", "nobody")]).await.0,
            404
        );
    });
    let requests = capture.spans("request");
    assert!(
        requests.iter().any(
            |f| f.contains(&"tenant=acme".to_owned()) && f.contains(&"path=/whoami".to_owned())
        ),
        "{requests:?}"
    );
    // Each served request logs one line in its span, as tower-http's TraceLayer does: status
    // and latency.
    for (tenant, status) in [("acme", "200"), ("nobody", "404")] {
        let lines = capture.events_in("request", &format!("tenant={tenant}"));
        let finished: Vec<&Vec<String>> = lines
            .iter()
            .filter(|f| f.contains(&"message=finished processing request".to_owned()))
            .collect();
        assert_eq!(finished.len(), 1, "{tenant}: {lines:?}");
        assert!(
            finished[0].contains(&format!("status={status}")),
            "{finished:?}"
        );
        let latency = finished[0]
            .iter()
            .find_map(|f| f.strip_prefix("latency="))
            .expect("a latency");
        assert!(
            latency
                .strip_suffix(" ms")
                .is_some_and(|ms| ms.parse::<u64>().is_ok()),
            "{latency}"
        );
    }
    // A refused request's span names the tenant it asked for, too.
    assert!(
        requests
            .iter()
            .any(|f| f.contains(&"tenant=nobody".to_owned())),
        "{requests:?}"
    );

    // The library's own spans: a state change.
    let mut conn = PgConnection::establish(db.url()).unwrap();
    diesel_workspace::registry::set_lifecycle_state(&mut conn, &globex, LifecycleState::Suspended)
        .unwrap();
    let states = capture.spans("set_tenant_status");
    assert!(
        states
            .iter()
            .any(|f| f.contains(&"tenant=globex".to_owned())),
        "{states:?}"
    );

    let recycled = capture.spans("pool.cap_recycle");
    assert!(
        recycled
            .iter()
            .any(|f| f.contains(&"tenant=globex".to_owned())),
        "{recycled:?}"
    );
}
