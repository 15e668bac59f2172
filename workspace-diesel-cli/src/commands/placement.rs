//! Placement commands on Citus: `move_tenant`, `rebalance`, and the node and size columns of
//! `list_tenants` and `status`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use diesel::PgConnection;
use diesel_workspace::{citus::Dialect, citus::RebalanceStatus, citus::TenantPlacement, Migrator};

use super::{plural, tenant_id, Ctx};

/// `move_tenant <identifier> <host:port>`.
pub(crate) fn move_tenant(ctx: &Ctx, identifier: &str, to: &str) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    let Some((host, port)) = to.rsplit_once(':') else {
        bail!("invalid node `{to}`: expected HOST:PORT (e.g. 10.0.0.12:5432)");
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .with_context(|| format!("invalid node `{to}`: the port must be 1 to 65535"))?;
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    super::ensure_registered(&mut conn, &migrator, &tenant)?;
    migrator
        .move_tenant(&mut conn, &tenant, host, port)
        .with_context(|| format!("could not move tenant `{tenant}` to {to}"))?;
    if ctx.json() {
        return crate::output::done(
            "move_tenant",
            serde_json::json!({"tenant": tenant.as_str(), "node": format!("{host}:{port}")}),
        );
    }
    out!("moved tenant `{tenant}` to {host}:{port}");
    Ok(())
}

fn progress_line(s: &RebalanceStatus) -> String {
    format!(
        "rebalance job {}: {}/{} moves done ({})",
        s.job_id, s.done, s.total, s.state
    )
}

/// `rebalance [--no-wait | --status]`.
pub(crate) fn rebalance(ctx: &Ctx, no_wait: bool, status: bool) -> Result<()> {
    let mut conn = ctx.connect()?;
    if status {
        let status = diesel_workspace::citus::rebalance_status(&mut conn)?;
        if ctx.json() {
            return crate::output::done("rebalance", rebalance_doc(status.as_ref()));
        }
        match status {
            Some(s) => out!("{}", progress_line(&s)),
            None => out!("no rebalance has run"),
        }
        return Ok(());
    }
    let Some(job) = diesel_workspace::citus::start_rebalance(&mut conn)? else {
        if ctx.json() {
            return crate::output::done("rebalance", rebalance_doc(None));
        }
        out!("nothing to move: the tenants are balanced");
        return Ok(());
    };
    if no_wait {
        if ctx.json() {
            return crate::output::done("rebalance", serde_json::json!({"job": job}));
        }
        out!("started rebalance job {job}");
        return Ok(());
    }
    if !ctx.json() {
        out!("started rebalance job {job}");
    }
    let mut last = String::new();
    let mut failure = None;
    let end =
        diesel_workspace::citus::wait_rebalance(&mut conn, Duration::from_millis(500), |s| {
            let line = progress_line(s);
            if line != last {
                eprintln!("{line}");
                last = line;
            }
        })?;
    if let Some(s) = &end {
        if !s.succeeded() {
            failure = Some(s.state.clone());
        }
    }
    match (end, failure) {
        (Some(s), None) if ctx.json() => {
            crate::output::done("rebalance", rebalance_doc(Some(&s)))?;
        }
        (Some(s), None) => out!(
            "rebalance job {} finished: {}",
            s.job_id,
            plural(s.done as usize, "move")
        ),
        (Some(s), Some(state)) => bail!(
            "rebalance job {} ended {state} after {} of {} moves (see citus_rebalance_status())",
            s.job_id,
            s.done,
            s.total
        ),
        (None, _) => bail!("rebalance job {job} disappeared from citus_rebalance_status()"),
    }
    Ok(())
}

/// The JSON fields of a rebalance job (`job: null` when there is none).
fn rebalance_doc(s: Option<&RebalanceStatus>) -> serde_json::Value {
    match s {
        Some(s) => serde_json::json!({
            "job": s.job_id, "state": s.state, "done": s.done, "total": s.total,
        }),
        None => serde_json::json!({"job": null}),
    }
}

/// The engine, when it is Citus: then `list_tenants` and `status` show placement.
pub(crate) fn citus(conn: &mut PgConnection) -> Result<Option<Dialect>> {
    let dialect = Dialect::detect(conn).context("could not detect the database engine")?;
    dialect.ensure_supported()?;
    Ok(dialect.distributes_schemas().then_some(dialect))
}

/// Each tenant's placement, by tenant.
pub(crate) fn placements(
    conn: &mut PgConnection,
    migrator: &Migrator,
) -> Result<BTreeMap<String, TenantPlacement>> {
    Ok(migrator
        .placement(conn)
        .context("could not read where the tenants are")?
        .into_iter()
        .map(|p| (p.tenant.clone(), p))
        .collect())
}

/// A size in bytes, for people.
pub(crate) fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `status` on Citus: the engine and how many tenants (and bytes) each node holds.
pub(crate) fn status_lines(
    conn: &mut PgConnection,
    migrator: &Migrator,
    dialect: &Dialect,
) -> Result<()> {
    out!("engine: {dialect}");
    let mut per_node: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for p in placements(conn, migrator)?.into_values() {
        let node = p.node.unwrap_or_else(|| "not distributed".to_owned());
        let entry = per_node.entry(node).or_default();
        entry.0 += 1;
        entry.1 += p.size_bytes;
    }
    for (node, (tenants, bytes)) in per_node {
        out!("  {node}: {}, {}", plural(tenants, "tenant"), size(bytes));
    }
    Ok(())
}
