//! Which targets a query reads: a selection (ids, names, globs) within the caller's scope.

use std::sync::Arc;

use super::{Inventory, InventoryError, Target, Violations, quote};
use crate::callers::{Patterns, Scope};

impl Inventory {
    /// The targets a selection names, within what `scope` allows. Each entry of `project_ids`
    /// is a project id, a project name or a glob over both; each entry of `regions` a region or
    /// a glob; each entry of `accounts` an account id, an account name or a glob over both.
    /// Naming a project, region or account outside the scope is refused whether or not it
    /// exists; a glob selects only within the scope; an empty selection is everything the scope
    /// allows, never more; an entry that selects nothing the caller may see is a caller error.
    /// Suspended accounts' projects are selected too (listed, not read: see `Target::readable`).
    pub fn select(
        &self,
        selection: &Selection<'_>,
        scope: &Scope,
    ) -> Result<Vec<Arc<Target>>, InventoryError> {
        let Selection {
            project_ids,
            regions,
            accounts,
        } = *selection;
        let all = self.targets();
        let projects = selectors("project_ids", project_ids)?;
        let region_selectors = selectors("regions", regions)?;
        let account_selectors = selectors("accounts", accounts)?;
        for (i, selector) in projects.iter().enumerate() {
            if let Selector::Exact(name) = selector {
                let known = all.iter().filter(|t| selector.selects_project(t));
                if !(scope.projects.matches(name) || known.into_iter().any(|t| scope.allows(t))) {
                    return Err(InventoryError::PermissionDenied {
                        field: format!("project_ids[{i}]"),
                        message: format!(
                            "project {} is outside what this caller may see",
                            quote(name)
                        ),
                    });
                }
            }
        }
        for (i, selector) in region_selectors.iter().enumerate() {
            if let Selector::Exact(region) = selector
                && !scope.regions.matches(region)
            {
                return Err(InventoryError::PermissionDenied {
                    field: format!("regions[{i}]"),
                    message: format!(
                        "region {} is outside what this caller may see",
                        quote(region)
                    ),
                });
            }
        }
        for (i, selector) in account_selectors.iter().enumerate() {
            if let Selector::Exact(name) = selector
                && let Some(allowed) = &scope.accounts
                && !allowed.matches(name)
                && !all
                    .iter()
                    .any(|t| selector.selects_account(t) && scope.allows(t))
            {
                return Err(InventoryError::PermissionDenied {
                    field: format!("accounts[{i}]"),
                    message: format!(
                        "account {} is outside what this caller may see",
                        quote(name)
                    ),
                });
            }
        }
        let visible: Vec<&Arc<Target>> = all.iter().filter(|t| scope.allows(t)).collect();
        let mut violations = Violations::default();
        for (i, selector) in projects.iter().enumerate() {
            if !visible.iter().any(|t| selector.selects_project(t)) {
                violations.push(
                    format!("project_ids[{i}]"),
                    format!("no project this caller may see is {selector}"),
                );
            }
        }
        for (i, selector) in region_selectors.iter().enumerate() {
            if !visible.iter().any(|t| selector.selects(&t.region)) {
                violations.push(
                    format!("regions[{i}]"),
                    format!("no project this caller may see is in a region {selector}"),
                );
            }
        }
        for (i, selector) in account_selectors.iter().enumerate() {
            if !visible.iter().any(|t| selector.selects_account(t)) {
                violations.push(
                    format!("accounts[{i}]"),
                    format!("no account this caller may see is {selector}"),
                );
            }
        }
        violations.into_result()?;
        let selected: Vec<_> = visible
            .into_iter()
            .filter(|t| projects.is_empty() || projects.iter().any(|s| s.selects_project(t)))
            .filter(|t| {
                region_selectors.is_empty() || region_selectors.iter().any(|s| s.selects(&t.region))
            })
            .filter(|t| {
                account_selectors.is_empty()
                    || account_selectors.iter().any(|s| s.selects_account(t))
            })
            .cloned()
            .collect();
        let fields = [project_ids, regions, accounts];
        if selected.is_empty() && fields.iter().filter(|f| !f.is_empty()).count() > 1 {
            let mut v = Violations::default();
            if accounts.is_empty() {
                v.push(
                    "regions",
                    "none of the selected projects is in the selected regions",
                );
            } else {
                v.push(
                    "accounts",
                    "no project of the selected accounts is among the selected projects and regions",
                );
            }
            return Err(InventoryError::InvalidRequest(v));
        }
        Ok(selected)
    }
}

impl Inventory {
    /// `select`, but the targets queries read: a suspended account's projects are listed by
    /// ListTargets, never read.
    pub fn select_to_read(
        &self,
        selection: &Selection<'_>,
        scope: &Scope,
    ) -> Result<Vec<Arc<Target>>, InventoryError> {
        let mut targets = self.select(selection, scope)?;
        targets.retain(|t| t.readable());
        Ok(targets)
    }
}

/// What a request selects: every field empty selects everything the caller may see.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    pub project_ids: &'a [String],
    pub regions: &'a [String],
    pub accounts: &'a [String],
}

/// One entry of a selection: a name (or id) as it is, or a glob.
enum Selector {
    Exact(String),
    Glob(String, Patterns),
}

impl Selector {
    fn selects(&self, text: &str) -> bool {
        match self {
            Selector::Exact(name) => name == text,
            Selector::Glob(_, pattern) => pattern.matches(text),
        }
    }

    /// A project by its id or its name.
    fn selects_project(&self, t: &Target) -> bool {
        (!t.project_id.is_empty() && self.selects(&t.project_id))
            || (!t.project_name.is_empty() && self.selects(&t.project_name))
    }

    /// A member account's project by the account's id or name.
    fn selects_account(&self, t: &Target) -> bool {
        t.account
            .as_ref()
            .is_some_and(|a| (!a.id.is_empty() && self.selects(&a.id)) || self.selects(&a.name))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Exact(name) => write!(f, "named {}", quote(name)),
            Selector::Glob(glob, _) => write!(f, "matched by {}", quote(glob)),
        }
    }
}

/// The entries of a selection field; a glob that does not parse is a caller error.
fn selectors(field: &str, entries: &[String]) -> Result<Vec<Selector>, InventoryError> {
    let mut violations = Violations::default();
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if entry.contains(['*', '?', '[', '{']) {
            match Patterns::new(std::slice::from_ref(entry)) {
                Ok(p) => out.push(Selector::Glob(entry.clone(), p)),
                Err(e) => violations.push(format!("{field}[{i}]"), e.trim_start_matches("[0]: ")),
            }
        } else {
            out.push(Selector::Exact(entry.clone()));
        }
    }
    violations.into_result().map(|()| out)
}
