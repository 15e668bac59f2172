//! `makemigrations_tenant`: a new migration directory in Diesel's layout.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use chrono::{NaiveDateTime, SubsecRound as _, TimeDelta, Utc};

use super::Ctx;
use crate::cli::GenerateArgs;
use crate::exit::usage;

/// Diesel's version format: the part of the directory name before the first `_`.
const VERSION_FORMAT: &str = "%Y-%m-%d-%H%M%S";

/// The longest migration name accepted (the directory name stays well under file-system limits).
const MAX_NAME_LEN: usize = 100;

const TENANT_UP: &str = "\
-- Your SQL goes here.
-- Runs once per tenant schema, with that schema alone on the search_path: create tenant tables
-- unqualified, and qualify references to shared tables (public.users).
";

const SHARED_UP: &str = "\
-- Your SQL goes here.
-- Runs once, in the shared schema.
";

const DOWN: &str = "-- This file should undo anything in `up.sql`.\n";

/// Writes `<YYYY-MM-DD-HHMMSS>_<name>/{up.sql,down.sql}` (or `<VERSION>_<name>` with
/// `--version`) into the tenant (or, with `shared`, the shared) migrations directory and prints
/// the two paths.
pub(crate) fn makemigrations(ctx: &Ctx, args: &GenerateArgs, command: &str) -> Result<()> {
    let (name, shared) = (args.name.as_str(), args.shared);
    check_name(name)?;
    if let Some(version) = &args.version {
        check_version(version)?;
    }
    let dir = if shared {
        match ctx.shared_dir()? {
            Some(dir) => dir.to_path_buf(),
            None => bail!(
                "the shared migrations directory `{}` does not exist (see --shared-migrations-dir)",
                super::DEFAULT_SHARED_DIR
            ),
        }
    } else {
        ctx.tenant_dir()?.to_path_buf()
    };
    let existing = existing_migrations(&dir)?;
    if let Some((version, _)) = existing.iter().find(|(_, n)| n == name) {
        bail!(
            "a migration named `{name}` already exists: `{}`",
            dir.join(format!("{version}_{name}")).display()
        );
    }
    let version = match &args.version {
        Some(version) => {
            // Diesel compares versions without their dashes.
            let bare = |v: &str| v.replace('-', "");
            if let Some((v, n)) = existing.iter().find(|(v, _)| bare(v) == bare(version)) {
                bail!(
                    "version {version} is taken: `{}`",
                    dir.join(format!("{v}_{n}")).display()
                );
            }
            version.clone()
        }
        None => next_version(
            Utc::now().naive_utc(),
            existing.iter().map(|(v, _)| v.as_str()),
        ),
    };
    let path = dir.join(format!("{version}_{name}"));
    write_migration(&path, if shared { SHARED_UP } else { TENANT_UP })?;
    if ctx.json() {
        let file = |f: &str| path.join(f).display().to_string();
        return crate::output::done(
            command,
            serde_json::json!({
                "directory": path.display().to_string(),
                "version": version.replace('-', ""),
                "files": [file("up.sql"), file("down.sql")],
            }),
        );
    }
    out!("Creating {}", path.join("up.sql").display());
    out!("Creating {}", path.join("down.sql").display());
    Ok(())
}

/// `--version`: ASCII digits and `-`, starting and ending with a digit, so it stays the part of
/// the directory name before the first `_` and sorts with the timestamps.
fn check_version(version: &str) -> Result<()> {
    let ok = version.len() <= 32
        && version.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version.ends_with(|c: char| c.is_ascii_digit());
    if !ok {
        usage!(
            "invalid migration version `{}`: expected digits and `-` (e.g. 2026-03-01-120000 or 20260301120000)",
            super::shown(version)
        );
    }
    Ok(())
}

/// Migration names: lower-case ASCII letters, digits and `_`, so the directory name is portable
/// and Diesel's version (the part before the first `_`) stays the timestamp.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        usage!("invalid migration name ``: a migration name cannot be empty");
    }
    if name.len() > MAX_NAME_LEN {
        usage!(
            "invalid migration name `{}`: a migration name is at most {MAX_NAME_LEN} bytes long",
            super::shown(name)
        );
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        usage!(
            "invalid migration name `{}`: only lower-case ASCII letters, digits and `_` are allowed",
            super::shown(name)
        );
    }
    Ok(())
}

/// The (version, name) of each migration directory in `dir`, as `<version>_<name>`.
fn existing_migrations(dir: &Path) -> Result<Vec<(String, String)>> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("could not read `{}`", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("could not read `{}`", dir.display()))?;
        if !entry.path().is_dir() {
            continue;
        }
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if let Some((version, name)) = file_name.split_once('_') {
            out.push((version.to_owned(), name.to_owned()));
        }
    }
    Ok(out)
}

/// The version for a new migration: now, or one second after the newest existing version when
/// that is not earlier (two migrations written in the same second must not share a version).
fn next_version<'a>(now: NaiveDateTime, existing: impl Iterator<Item = &'a str>) -> String {
    let now = now.trunc_subsecs(0);
    let newest = existing
        .filter_map(|v| NaiveDateTime::parse_from_str(v, VERSION_FORMAT).ok())
        .max();
    let at = match newest {
        Some(newest) if newest >= now => newest + TimeDelta::seconds(1),
        _ => now,
    };
    at.format(VERSION_FORMAT).to_string()
}

/// Creates the directory and its two files, removing the directory again if a file fails.
fn write_migration(path: &PathBuf, up: &str) -> Result<()> {
    fs::create_dir(path).with_context(|| format!("could not create `{}`", path.display()))?;
    let written =
        fs::write(path.join("up.sql"), up).and_then(|()| fs::write(path.join("down.sql"), DOWN));
    if let Err(e) = written {
        let _ = fs::remove_dir_all(path);
        return Err(e)
            .with_context(|| format!("could not write the migration `{}`", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, VERSION_FORMAT).unwrap()
    }

    #[test]
    fn version_is_now_unless_taken() {
        let now = at("2026-03-04-050607");
        let later_in_that_second = now + TimeDelta::milliseconds(500);
        assert_eq!(
            next_version(later_in_that_second, ["2026-03-04-050607"].into_iter()),
            "2026-03-04-050608"
        );
        assert_eq!(next_version(now, [].into_iter()), "2026-03-04-050607");
        assert_eq!(
            next_version(now, ["2026-01-01-000001"].into_iter()),
            "2026-03-04-050607"
        );
        assert_eq!(
            next_version(now, ["2026-03-04-050607", "junk"].into_iter()),
            "2026-03-04-050608"
        );
    }

    #[test]
    fn versions_are_checked() {
        for good in ["20260301120000", "2026-03-01-120000", "1"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in ["", "-1", "1-", "2026_03", "v1", "../1", "1 2"] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("add_invoices").is_ok());
        for bad in ["", "Add", "a-b", "a b", "../x", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
