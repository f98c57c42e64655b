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
        let selectors = Selectors::new(selection)?;
        let all = self.targets();
        selectors.within(scope, &all)?;
        let visible: Vec<&Arc<Target>> = all.iter().filter(|t| scope.allows(t)).collect();
        selectors.each_selects_something(&visible).into_result()?;
        let selected: Vec<_> = visible
            .into_iter()
            .filter(|t| selectors.selects(t))
            .cloned()
            .collect();
        let fields = [selection.project_ids, selection.regions, selection.accounts];
        if selected.is_empty() && fields.iter().filter(|f| !f.is_empty()).count() > 1 {
            let mut v = Violations::default();
            if selection.accounts.is_empty() {
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

/// A selection's entries, parsed.
struct Selectors {
    projects: Vec<Selector>,
    regions: Vec<Selector>,
    accounts: Vec<Selector>,
}

impl Selectors {
    fn new(selection: &Selection<'_>) -> Result<Self, InventoryError> {
        Ok(Selectors {
            projects: selectors("project_ids", selection.project_ids)?,
            regions: selectors("regions", selection.regions)?,
            accounts: selectors("accounts", selection.accounts)?,
        })
    }

    /// Naming a project, region or account outside the caller's scope is refused, whether or
    /// not it exists (globs are not refused: they select within the scope).
    fn within(&self, scope: &Scope, all: &[Arc<Target>]) -> Result<(), InventoryError> {
        let denied = |field: String, what: &str, name: &str| InventoryError::PermissionDenied {
            field,
            message: format!("{what} {} is outside what this caller may see", quote(name)),
        };
        for (i, selector) in self.projects.iter().enumerate() {
            if let Selector::Exact(name) = selector
                && !scope.projects.matches(name)
                && !all
                    .iter()
                    .any(|t| selector.selects_project(t) && scope.allows(t))
            {
                return Err(denied(format!("project_ids[{i}]"), "project", name));
            }
        }
        for (i, selector) in self.regions.iter().enumerate() {
            if let Selector::Exact(region) = selector
                && !scope.regions.matches(region)
            {
                return Err(denied(format!("regions[{i}]"), "region", region));
            }
        }
        for (i, selector) in self.accounts.iter().enumerate() {
            if let Selector::Exact(name) = selector
                && let Some(allowed) = &scope.accounts
                && !allowed.matches(name)
                && !all
                    .iter()
                    .any(|t| selector.selects_account(t) && scope.allows(t))
            {
                return Err(denied(format!("accounts[{i}]"), "account", name));
            }
        }
        Ok(())
    }

    /// Every entry must select something the caller may see: one that does not is a mistake.
    fn each_selects_something(&self, visible: &[&Arc<Target>]) -> Violations {
        let mut violations = Violations::default();
        for (i, selector) in self.projects.iter().enumerate() {
            if !visible.iter().any(|t| selector.selects_project(t)) {
                violations.push(
                    format!("project_ids[{i}]"),
                    format!("no project this caller may see is {selector}"),
                );
            }
        }
        for (i, selector) in self.regions.iter().enumerate() {
            if !visible.iter().any(|t| selector.selects(&t.region)) {
                violations.push(
                    format!("regions[{i}]"),
                    format!("no project this caller may see is in a region {selector}"),
                );
            }
        }
        for (i, selector) in self.accounts.iter().enumerate() {
            if !visible.iter().any(|t| selector.selects_account(t)) {
                violations.push(
                    format!("accounts[{i}]"),
                    format!("no account this caller may see is {selector}"),
                );
            }
        }
        violations
    }

    /// Whether a target is selected: by every field that names something.
    fn selects(&self, t: &Target) -> bool {
        let any = |selectors: &[Selector], hit: &dyn Fn(&Selector) -> bool| {
            selectors.is_empty() || selectors.iter().any(hit)
        };
        any(&self.projects, &|s| s.selects_project(t))
            && any(&self.regions, &|s| s.selects(&t.region))
            && any(&self.accounts, &|s| s.selects_account(t))
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
