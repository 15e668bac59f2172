//! The config file, `workspace-diesel.toml`, in the spirit of `diesel.toml`: which environment
//! variable holds the database URL, where the migrations live, and what `print-schema` writes.
//!
//! It is found in the current directory or the nearest parent directory that has one (or named
//! with `--config`). Relative paths in it are relative to the file's own directory, so the tool
//! behaves the same from any subdirectory of the project. Command-line flags override it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// The config file's name.
pub(crate) const FILE_NAME: &str = "workspace-diesel.toml";

/// The default environment variable holding the database URL.
pub(crate) const DEFAULT_URL_VAR: &str = "DATABASE_URL";

/// The parsed config file; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    database: Database,
    #[serde(default)]
    migrations: Migrations,
    #[serde(default)]
    print_schema: PrintSchema,
    #[serde(default)]
    roles: Option<Roles>,
    registry: Option<RegistryTable>,
    /// The file's directory: the base of its relative paths.
    #[serde(skip)]
    base: PathBuf,
    /// Where it was read from (none when there is no config file).
    #[serde(skip)]
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Database {
    url_env: Option<String>,
    /// Refuse to change the database when `audit` finds a hijack hazard (`--refuse-hazards`).
    #[serde(default)]
    refuse_hazards: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Migrations {
    tenant_dir: Option<PathBuf>,
    shared_dir: Option<PathBuf>,
}

/// The `[roles]` table: per-tenant roles, created, renamed and dropped with the tenants.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Roles {
    prefix: String,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    login: bool,
}

/// The `[registry]` table: an application's own registry table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryTable {
    /// `SCHEMA.TABLE`.
    table: String,
    identifier_column: Option<String>,
    status_column: Option<String>,
    key_column: Option<String>,
}

/// The `[print_schema]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrintSchema {
    file: Option<PathBuf>,
    #[serde(default)]
    only_tables: Vec<String>,
    #[serde(default)]
    except_tables: Vec<String>,
    #[serde(default)]
    with_registry: bool,
}

impl Config {
    /// The config file named by `explicit` (which must exist), else the one found from `cwd`
    /// upward, else the empty config.
    pub(crate) fn load(explicit: Option<&Path>, cwd: &Path) -> Result<Self> {
        let path = match explicit {
            Some(path) => {
                if !path.is_file() {
                    bail!("the config file `{}` does not exist", path.display());
                }
                Some(cwd.join(path))
            }
            None => cwd
                .ancestors()
                .map(|dir| dir.join(FILE_NAME))
                .find(|candidate| candidate.is_file()),
        };
        let Some(path) = path else {
            return Ok(Self {
                base: cwd.to_path_buf(),
                ..Self::default()
            });
        };
        let text = fs::read_to_string(&path)
            .with_context(|| format!("could not read the config file `{}`", path.display()))?;
        let mut config: Self = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("invalid config file `{}`: {}", path.display(), e.message())
        })?;
        if let Some(var) = &config.database.url_env {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                bail!(
                    "invalid config file `{}`: database.url_env must name an environment variable, got {var:?}",
                    path.display()
                );
            }
        }
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.to_path_buf());
        config.path = Some(path);
        Ok(config)
    }

    /// Where the config was read from, if anywhere.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The per-tenant roles the `[roles]` table configures, if any.
    pub(crate) fn tenant_roles(&self) -> Result<Option<diesel_workspace::TenantRoles>> {
        let Some(r) = &self.roles else {
            return Ok(None);
        };
        let roles = diesel_workspace::TenantRoles::new(r.prefix.as_str())
            .with_context(|| format!("invalid config file: roles.prefix {:?}", r.prefix))?
            .login(r.login);
        Ok(Some(
            r.members
                .iter()
                .fold(roles, |roles, m| roles.member(m.as_str())),
        ))
    }

    /// The config with `refuse_hazards` also on when `flag` (`--refuse-hazards`) is.
    pub(crate) fn refusing_hazards(mut self, flag: bool) -> Self {
        self.database.refuse_hazards |= flag;
        self
    }

    /// Whether commands that change the database refuse on hijack hazards.
    pub(crate) fn refuse_hazards(&self) -> bool {
        self.database.refuse_hazards
    }

    /// The registry the `[registry]` table names, else the built-in one.
    pub(crate) fn registry(&self) -> Result<diesel_workspace::registry::Registry> {
        let Some(r) = &self.registry else {
            return Ok(diesel_workspace::registry::Registry::default());
        };
        let Some((schema, table)) = r
            .table
            .split_once('.')
            .filter(|(s, t)| !s.is_empty() && !t.is_empty() && !t.contains('.'))
        else {
            bail!(
                "invalid `[registry] table = {:?}` in `{}`: expected \"SCHEMA.TABLE\"",
                r.table,
                self.path
                    .as_deref()
                    .unwrap_or(Path::new(FILE_NAME))
                    .display()
            );
        };
        let mut registry = diesel_workspace::registry::Registry::new(schema, table);
        if let Some(c) = &r.identifier_column {
            registry = registry.identifier_column(c);
        }
        if let Some(c) = &r.status_column {
            registry = registry.status_column(c);
        }
        if let Some(c) = &r.key_column {
            registry = registry.key_column(c);
        }
        Ok(registry)
    }

    /// The environment variable holding the database URL.
    pub(crate) fn url_var(&self) -> &str {
        self.database.url_env.as_deref().unwrap_or(DEFAULT_URL_VAR)
    }

    /// The tenant migrations directory the file names, resolved against its directory.
    pub(crate) fn tenant_dir(&self) -> Option<PathBuf> {
        self.migrations
            .tenant_dir
            .as_ref()
            .map(|d| self.base.join(d))
    }

    /// The shared migrations directory the file names, resolved against its directory.
    pub(crate) fn shared_dir(&self) -> Option<PathBuf> {
        self.migrations
            .shared_dir
            .as_ref()
            .map(|d| self.base.join(d))
    }

    /// `print_schema.file`, resolved against the file's directory.
    pub(crate) fn print_schema_file(&self) -> Option<PathBuf> {
        self.print_schema.file.as_ref().map(|f| self.base.join(f))
    }

    /// `print_schema.only_tables`.
    pub(crate) fn only_tables(&self) -> &[String] {
        &self.print_schema.only_tables
    }

    /// `print_schema.except_tables`.
    pub(crate) fn except_tables(&self) -> &[String] {
        &self.print_schema.except_tables
    }

    /// `print_schema.with_registry`.
    pub(crate) fn with_registry(&self) -> bool {
        self.print_schema.with_registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_upward_and_resolved_against_its_directory() {
        let root = tempfile_dir();
        let nested = root.join("a/b");
        fs::create_dir_all(&nested).unwrap();
        fs::write(
            root.join(FILE_NAME),
            "[database]\nurl_env = \"APP_DB\"\n[migrations]\ntenant_dir = \"db/tenant\"\n\
             [print_schema]\nfile = \"src/schema.rs\"\nexcept_tables = [\"^audit_\"]\n",
        )
        .unwrap();
        let config = Config::load(None, &nested).unwrap();
        assert_eq!(config.path(), Some(root.join(FILE_NAME).as_path()));
        assert_eq!(config.url_var(), "APP_DB");
        assert_eq!(config.tenant_dir(), Some(root.join("db/tenant")));
        assert_eq!(config.shared_dir(), None);
        assert_eq!(config.print_schema_file(), Some(root.join("src/schema.rs")));
        assert_eq!(config.except_tables(), ["^audit_".to_owned()]);
        assert!(config.only_tables().is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let root = tempfile_dir();
        fs::write(
            root.join(FILE_NAME),
            "[migrations]\ntenant_directory = \"x\"\n",
        )
        .unwrap();
        let message = Config::load(None, &root).unwrap_err().to_string();
        assert!(message.starts_with("invalid config file `"), "{message}");
        assert!(
            message.contains("unknown field `tenant_directory`"),
            "{message}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "workspace-diesel-config-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
