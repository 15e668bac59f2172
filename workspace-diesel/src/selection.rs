//! Which tenants a fleet call takes ([`Selection`]): by list (or a file of names), by pattern,
//! all but some, by life-cycle state; and what a fleet run does with each tenant's state.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::registry::model::LifecycleState;
use crate::tenant::TenantId;

/// The tenants a fleet call takes: every registered tenant by default, narrowed by names, glob
/// patterns, names left out and life-cycle states. The same selection serves
/// [`Migrator::migrate_selected`](crate::Migrator::migrate_selected), the selected reverts
/// and [`Migrator::status_selected`](crate::Migrator::status_selected).
///
/// A fleet run works on the tenants in the selected states (by default `active` only). A
/// selected tenant in another state is not run: `suspended` and `provisioning` ones are reported
/// as held ([`MigrationReport::held`](crate::MigrationReport::held)), `archived` ones are left
/// out of the report. Name a state with [`states`](Self::states) to run its tenants.
///
/// ```
/// use diesel_workspace::{registry::LifecycleState, Selection, TenantId};
///
/// let canary = Selection::all()
///     .pattern("eu_*")?
///     .except([TenantId::new("eu_big_customer")?])
///     .states([LifecycleState::Active, LifecycleState::Suspended]);
/// assert!(canary.matches(&TenantId::new("eu_acme")?, LifecycleState::Suspended));
/// assert!(!canary.matches(&TenantId::new("us_acme")?, LifecycleState::Active));
/// assert!(!canary.matches(&TenantId::new("eu_big_customer")?, LifecycleState::Active));
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Selection {
    names: Option<BTreeSet<TenantId>>,
    patterns: Vec<glob::Pattern>,
    except: BTreeSet<TenantId>,
    states: Option<BTreeSet<LifecycleState>>,
}

/// What a fleet run does with one registered tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Selected, in a selected state: run it.
    Run,
    /// Selected by name, but its state holds it back: report it.
    Hold(LifecycleState),
    /// Not selected (or archived): not part of the run.
    Omit,
}

impl Selection {
    /// Every registered tenant (in the default states): what `migrate_all` takes.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these tenants (added to any named before). A fleet call fails with
    /// [`Error::TenantNotFound`] before running anything when one is not registered.
    pub fn tenants(mut self, tenants: impl IntoIterator<Item = TenantId>) -> Self {
        self.names.get_or_insert_with(BTreeSet::new).extend(tenants);
        self
    }

    /// Only the tenants named in `text`, one per line; blank lines and lines starting with `#`
    /// are ignored, surrounding white space is trimmed.
    ///
    /// # Errors
    /// [`Error::InvalidSelection`] naming the line of an invalid name.
    pub fn tenants_from_text(self, text: &str) -> Result<Self> {
        let mut names = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            names.push(
                TenantId::new(line)
                    .map_err(|e| Error::InvalidSelection(format!("line {}: {e}", n + 1)))?,
            );
        }
        Ok(self.tenants(names))
    }

    /// [`tenants_from_text`](Self::tenants_from_text) of the file at `path`.
    ///
    /// # Errors
    /// [`Error::InvalidSelection`] when the file cannot be read or holds an invalid name.
    pub fn tenants_from_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidSelection(format!("{}: {e}", path.display())))?;
        self.tenants_from_text(&text).map_err(|e| match e {
            Error::InvalidSelection(m) => {
                Error::InvalidSelection(format!("{}: {m}", path.display()))
            }
            e => e,
        })
    }

    /// Only tenants whose name matches the glob `pattern` (`*`, `?`, `[a-z]`), or any of the
    /// patterns given before.
    ///
    /// # Errors
    /// [`Error::InvalidSelection`] when `pattern` is not a valid glob.
    pub fn pattern(mut self, pattern: &str) -> Result<Self> {
        let compiled = glob::Pattern::new(pattern)
            .map_err(|e| Error::InvalidSelection(format!("pattern `{pattern}`: {e}")))?;
        self.patterns.push(compiled);
        Ok(self)
    }

    /// All but these tenants (they are left out even when named or matched).
    pub fn except(mut self, tenants: impl IntoIterator<Item = TenantId>) -> Self {
        self.except.extend(tenants);
        self
    }

    /// Run the tenants in these life-cycle states (by default `active` only; added to the states
    /// named before).
    pub fn states(mut self, states: impl IntoIterator<Item = LifecycleState>) -> Self {
        self.states.get_or_insert_with(BTreeSet::new).extend(states);
        self
    }

    /// The tenants named by [`tenants`](Self::tenants), when any were.
    pub fn named(&self) -> Option<impl Iterator<Item = &TenantId>> {
        self.names.as_ref().map(|n| n.iter())
    }

    /// Whether the name filters (list, patterns, all-but) take `tenant`.
    pub fn matches_name(&self, tenant: &TenantId) -> bool {
        if self.except.contains(tenant) {
            return false;
        }
        if let Some(names) = &self.names {
            if !names.contains(tenant) {
                return false;
            }
        }
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(tenant.as_str()))
    }

    /// Whether `tenant` in `state` is selected: by name, and by state when states were named (a
    /// status view shows every state unless told otherwise).
    pub fn matches(&self, tenant: &TenantId, state: LifecycleState) -> bool {
        self.matches_name(tenant) && self.states.as_ref().is_none_or(|s| s.contains(&state))
    }

    /// What a fleet run does with `tenant` in `state`.
    pub(crate) fn pick(&self, tenant: &TenantId, state: LifecycleState) -> Pick {
        if !self.matches_name(tenant) {
            return Pick::Omit;
        }
        let run = match &self.states {
            Some(states) => states.contains(&state),
            None => state == LifecycleState::Active,
        };
        match state {
            _ if run => Pick::Run,
            LifecycleState::Archived => Pick::Omit,
            held => Pick::Hold(held),
        }
    }

    /// Fails with [`Error::TenantNotFound`] for the first named tenant `registered` lacks.
    pub(crate) fn check_named(&self, registered: &BTreeSet<&TenantId>) -> Result<()> {
        match self
            .names
            .iter()
            .flatten()
            .find(|t| !registered.contains(t))
        {
            Some(missing) => Err(Error::TenantNotFound(missing.clone())),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Selection {
    /// The selection in words, as a run's record keeps it: `all`, or its filters
    /// (`tenants: a, b; patterns: eu_*; except: c; states: active, suspended`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |items: Vec<String>| items.join(", ");
        let mut parts = Vec::new();
        if let Some(names) = &self.names {
            parts.push(format!(
                "tenants: {}",
                join(names.iter().map(ToString::to_string).collect())
            ));
        }
        if !self.patterns.is_empty() {
            parts.push(format!(
                "patterns: {}",
                join(self.patterns.iter().map(ToString::to_string).collect())
            ));
        }
        if !self.except.is_empty() {
            parts.push(format!(
                "except: {}",
                join(self.except.iter().map(ToString::to_string).collect())
            ));
        }
        if let Some(states) = &self.states {
            parts.push(format!(
                "states: {}",
                join(states.iter().map(ToString::to_string).collect())
            ));
        }
        if parts.is_empty() {
            f.write_str("all")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TenantId {
        TenantId::new(name).unwrap()
    }

    #[test]
    fn states_decide_the_run() {
        let all = Selection::all();
        assert_eq!(all.pick(&t("a"), LifecycleState::Active), Pick::Run);
        assert_eq!(
            all.pick(&t("a"), LifecycleState::Suspended),
            Pick::Hold(LifecycleState::Suspended)
        );
        assert_eq!(all.pick(&t("a"), LifecycleState::Archived), Pick::Omit);
        let with = Selection::all().states([LifecycleState::Active, LifecycleState::Suspended]);
        assert_eq!(with.pick(&t("a"), LifecycleState::Suspended), Pick::Run);
        let archived = Selection::all().states([LifecycleState::Archived]);
        assert_eq!(archived.pick(&t("a"), LifecycleState::Archived), Pick::Run);
    }

    #[test]
    fn names_patterns_and_except() {
        let s = Selection::all()
            .pattern("t_1*")
            .unwrap()
            .except([t("t_10")]);
        assert!(s.matches_name(&t("t_11")));
        assert!(!s.matches_name(&t("t_10")));
        assert!(!s.matches_name(&t("t_2")));
        let text = "# canary\nt_1\n\n  t_2  \n";
        let listed = Selection::all().tenants_from_text(text).unwrap();
        assert!(listed.matches_name(&t("t_2")) && !listed.matches_name(&t("t_3")));
        let bad = Selection::all()
            .tenants_from_text("ok\nBad-Name\n")
            .unwrap_err();
        assert!(bad.to_string().contains("line 2"), "{bad}");
        assert!(Selection::all().pattern("[").is_err());
    }
}
