//! `export_tenant` and `import_tenant`: one tenant to an archive file (or stdout) and back,
//! with a progress bar (bytes) on a terminal.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal as _, Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use diesel_workspace::ArchiveSummary;
use indicatif::{ProgressBar, ProgressStyle};

use super::{tenant_id, Ctx};
use crate::output;

/// `export_tenant <identifier> <file>` (`-` for stdout).
pub(crate) fn export(ctx: &Ctx, identifier: &str, file: &str) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    if file == "-" && ctx.json() {
        crate::exit::usage!("`--format json` needs an archive file: stdout carries the archive");
    }
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let mut conn = ctx.connect()?;
    let started = Instant::now();
    let bar = bar(None, file == "-");
    let summary = if file == "-" {
        let mut out = std::io::stdout().lock();
        migrator.export_tenant(&mut conn, &url, &tenant, &mut out)?
    } else {
        let path = Path::new(file);
        if path.exists() {
            anyhow::bail!("{file} exists: the archive is not written over a file");
        }
        let created = File::create(path).with_context(|| format!("creating {file}"))?;
        let mut out = BufWriter::new(created);
        let mut out = bar.wrap_write(&mut out);
        let exported = migrator.export_tenant(&mut conn, &url, &tenant, &mut out);
        drop(out);
        if exported.is_err() {
            // Nothing half-written is left behind.
            let _ = std::fs::remove_file(path);
        }
        exported?
    };
    bar.finish_and_clear();
    report(ctx, "export_tenant", "exported", &summary, started, file)
}

/// `import_tenant <identifier> <file>` (`-` for stdin).
pub(crate) fn import(ctx: &Ctx, identifier: &str, file: &str) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let mut conn = ctx.connect()?;
    let started = Instant::now();
    let summary = if file == "-" {
        let mut input = std::io::stdin().lock();
        migrator.import_tenant(&mut conn, &url, &tenant, &mut input)?
    } else {
        let opened = File::open(file).with_context(|| format!("opening {file}"))?;
        let len = opened.metadata().map(|m| m.len()).ok();
        let bar = bar(len, false);
        let mut input: Box<dyn Read> = Box::new(bar.wrap_read(BufReader::new(opened)));
        let imported = migrator.import_tenant(&mut conn, &url, &tenant, &mut input);
        bar.finish_and_clear();
        imported?
    };
    report(ctx, "import_tenant", "imported", &summary, started, file)
}

/// A byte progress bar on a terminal (hidden otherwise, or when stdout carries the archive).
fn bar(len: Option<u64>, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (
            ProgressBar::new(len),
            "[{bar:30}] {bytes}/{total_bytes}, {bytes_per_sec}, eta {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {bytes}, {bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    crate::progress::add(bar)
}

fn report(
    ctx: &Ctx,
    command: &'static str,
    verb: &str,
    summary: &ArchiveSummary,
    started: Instant,
    file: &str,
) -> Result<()> {
    let elapsed = started.elapsed().as_secs_f64();
    if ctx.json() {
        return output::print(&output::Archive::new(command, summary, file, elapsed));
    }
    let rows: i64 = summary.tables.iter().map(|t| t.rows).sum();
    let line = format!(
        "{verb} tenant `{}` ({} tables, {rows} rows, {} bytes, {elapsed:.2}s)",
        summary.tenant,
        summary.tables.len(),
        summary.bytes
    );
    if command == "export_tenant" && file == "-" {
        // Stdout carries the archive.
        writeln!(std::io::stderr().lock(), "{line}")?;
    } else {
        out!("{line}");
    }
    Ok(())
}
