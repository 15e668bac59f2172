//! The busy-pooler scenario: a pool not declared for the transaction pooler in front of it holds
//! one checkout and reads and writes tenants with Diesel's DSL, while other clients keep the
//! pooler's servers busy. Shared by the `busy-client` binary (the second process) and the tests.
//!
//! Every tenant's rows carry the tenant's name as their title, so a row of another tenant is
//! seen at once.

use std::fmt;
use std::time::Duration;

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel_workspace::{pool, switch, Error, TenantId};

use crate::schema::notes;

/// Which pool the client builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `diesel_workspace::pool::builder().build(url)` (default mode).
    Build,
    /// `build_unchecked(url)`, then a checkout (default mode, no build check).
    Unchecked,
    /// `diesel_workspace::pool::builder().deadpool(url)`, then a deadpool-diesel pool of one
    /// and a checkout (default mode), the operations run in its `interact`.
    Deadpool,
    /// A stock Diesel r2d2 pool (statement cache on, no check at all): the negative control.
    Stock,
}

impl Kind {
    /// Parses the binary's argument.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "build" => Some(Kind::Build),
            "unchecked" => Some(Kind::Unchecked),
            "deadpool" => Some(Kind::Deadpool),
            "stock" => Some(Kind::Stock),
            _ => None,
        }
    }

    /// The binary's argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Unchecked => "unchecked",
            Kind::Deadpool => "deadpool",
            Kind::Stock => "stock",
        }
    }
}

/// What one client saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The pool (or its first checkout) was refused as an undeclared pooler.
    pub refused: bool,
    /// Operations run on the held checkout.
    pub ops: usize,
    /// Rows of another tenant read, or written rows that came back under another tenant.
    pub wrong: usize,
    /// Operations that failed (other than the refusal).
    pub errors: usize,
    /// The refusal's or the first error's message.
    pub message: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused={} ops={} wrong={} errors={} message={}",
            u8::from(self.refused),
            self.ops,
            self.wrong,
            self.errors,
            self.message.replace('\n', " ")
        )
    }
}

impl Outcome {
    /// Parses the line [`Display`](fmt::Display) writes.
    pub fn parse(line: &str) -> Option<Self> {
        let (head, message) = line.split_once(" message=")?;
        let mut out = Outcome {
            message: message.to_owned(),
            ..Outcome::default()
        };
        for field in head.split(' ') {
            let (k, v) = field.split_once('=')?;
            let n: usize = v.parse().ok()?;
            match k {
                "refused" => out.refused = n == 1,
                "ops" => out.ops = n,
                "wrong" => out.wrong = n,
                "errors" => out.errors = n,
                _ => return None,
            }
        }
        Some(out)
    }
}

/// The words of the refusal (`Error::PoolerNotDeclared`'s message), also found in the text of a
/// failed checkout's cause (r2d2 and deadpool report the manager's error as text).
const REFUSAL: &str = "without declaring it";

/// Every message of `e`'s chain of causes, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain = format!("{chain}: {s}");
        source = s.source();
    }
    chain
}

/// Records `e`: the refusal, or an error.
fn refused(out: &mut Outcome, e: Error) {
    let chain = chain(&e);
    out.refused = matches!(e, Error::PoolerNotDeclared(_))
        || matches!(e, Error::Pool(_)) && chain.contains(REFUSAL);
    out.message = chain;
    if !out.refused {
        out.errors += 1;
    }
}

/// One client: builds a pool of `kind` on `url`, holds one checkout and runs `ops` operations
/// over `tenants` (starting at `offset`, so two clients prepare the same statement names for
/// different tenants): a DSL read of the tenant's rows, an insert returning its row, and a read
/// back of that row.
pub fn run(url: &str, kind: Kind, tenants: &[TenantId], offset: usize, ops: usize) -> Outcome {
    let mut out = Outcome::default();
    // A refused connection fails at once; r2d2's checkout still waits out its timeout.
    let timeout = Duration::from_secs(3);
    let stock;
    let ours;
    let mut held: Box<dyn std::ops::DerefMut<Target = PgConnection>> = match kind {
        Kind::Stock => {
            stock = Pool::builder()
                .max_size(1)
                .connection_timeout(timeout)
                .build(ConnectionManager::<PgConnection>::new(url))
                .expect("a stock pool");
            Box::new(stock.get().expect("a stock checkout"))
        }
        Kind::Build | Kind::Unchecked => {
            let builder = pool::builder().max_size(1).connection_timeout(timeout);
            ours = if kind == Kind::Build {
                match builder.build(url) {
                    Ok(p) => p,
                    Err(e) => {
                        refused(&mut out, e);
                        return out;
                    }
                }
            } else {
                builder.build_unchecked(url)
            };
            match ours.get() {
                Ok(c) => Box::new(c),
                Err(e) => {
                    refused(&mut out, Error::from(e));
                    return out;
                }
            }
        }
        Kind::Deadpool => return run_deadpool(url, tenants, offset, ops),
    };
    operations(&mut held, tenants, offset, ops, &mut out);
    out
}

/// [`run`] on a deadpool-diesel pool built by the library (default mode) in a runtime of its
/// own: the refusal is `Error::PoolerNotDeclared` from `deadpool(url)`, or the same words in
/// the text of a failed checkout (its `post_create` hook, which fails at once); otherwise the
/// operations run on the held checkout, in its `interact`.
fn run_deadpool(url: &str, tenants: &[TenantId], offset: usize, ops: usize) -> Outcome {
    let mut out = Outcome::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _in_runtime = rt.enter();
    let pool = match pool::builder().deadpool(url) {
        Ok(builder) => builder.max_size(1).build().expect("a deadpool-diesel pool"),
        Err(e) => {
            refused(&mut out, e);
            return out;
        }
    };
    let held = match rt.block_on(pool.get()) {
        Ok(held) => held,
        Err(e) => {
            out.message = chain(&e);
            out.refused = out.message.contains(REFUSAL);
            out.errors += usize::from(!out.refused);
            return out;
        }
    };
    let tenants = tenants.to_vec();
    rt.block_on(held.interact(move |conn| {
        operations(conn, &tenants, offset, ops, &mut out);
        out
    }))
    .expect("the deadpool client's operations")
}

/// The operations of [`run`] on the held connection, counted into `out`.
fn operations(
    conn: &mut PgConnection,
    tenants: &[TenantId],
    offset: usize,
    ops: usize,
    out: &mut Outcome,
) {
    for i in 0..ops {
        let t = &tenants[(offset + i / 3) % tenants.len()];
        out.ops += 1;
        let res = switch(t, || -> QueryResult<usize> {
            match i % 3 {
                0 => {
                    let titles: Vec<String> = notes::table
                        .select(notes::title)
                        .filter(notes::body.eq(""))
                        .load(conn)?;
                    Ok(titles.iter().filter(|x| *x != t.as_str()).count())
                }
                1 => {
                    let title: String = diesel::insert_into(notes::table)
                        .values((notes::title.eq(t.as_str()), notes::body.eq("busy")))
                        .returning(notes::title)
                        .get_result(conn)?;
                    Ok(usize::from(title != t.as_str()))
                }
                _ => {
                    let titles: Vec<String> = notes::table
                        .select(notes::title)
                        .filter(notes::body.eq("busy"))
                        .limit(5)
                        .load(conn)?;
                    Ok(titles.iter().filter(|x| *x != t.as_str()).count())
                }
            }
        });
        match res {
            Ok(wrong) => out.wrong += wrong,
            Err(e) => {
                if out.errors == 0 {
                    out.message = e.to_string();
                }
                out.errors += 1;
            }
        }
    }
}
