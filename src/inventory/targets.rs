//! Targets (a project at its region's endpoint), the live set of them, and what is known of
//! each one's health.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{DiscoveryState, TargetError, TargetResult};
use crate::ddm::Credential;

/// One project, called at the endpoint of the region it lives in.
#[derive(Debug, Clone)]
pub struct Target {
    /// Empty for a member account's project whose agency token could not be had (the id comes
    /// from that token): such a target answers with that failure, without a request.
    pub project_id: Arc<str>,
    pub project_name: String,
    /// Shared by the region's targets (as `endpoint` is): 100,000 targets hold a handful.
    pub region: Arc<str>,
    pub endpoint: Arc<str>,
    pub credential: Arc<Credential>,
    pub source: TargetSource,
    /// The member account reached through an agency; `None` for our own credentials' projects.
    pub account: Option<Arc<Account>>,
}

impl Target {
    /// What tells this target from every other: its project id, or for a member account's
    /// project without one yet, the account and the project's name.
    pub fn key(&self) -> Arc<str> {
        match &self.account {
            Some(a) if self.project_id.is_empty() => {
                format!("{}/{}", a.key(), self.project_name).into()
            }
            _ => Arc::clone(&self.project_id),
        }
    }

    /// Its account's id and name, as results carry them (empty for our own projects).
    pub fn account_id_and_name(&self) -> (&str, &str) {
        self.account
            .as_deref()
            .map_or(("", ""), |a| (a.id.as_str(), a.name.as_str()))
    }

    /// Whether queries read it: a suspended account's projects are listed, never read.
    pub fn readable(&self) -> bool {
        self.account.as_ref().is_none_or(|a| a.is_active())
    }
}

/// The key (`Target::key`) of the target a result is for.
pub fn result_key(r: &TargetResult) -> Arc<str> {
    if !r.project_id.is_empty() {
        return r.project_id.as_str().into();
    }
    let account = if r.account_id.is_empty() {
        &r.account_name
    } else {
        &r.account_id
    };
    format!("{account}/{}", r.project_name).into()
}

/// A member account of the organization (a domain), as Organizations or the configuration
/// names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Empty when the configuration names the account alone and no token told its id yet.
    pub id: String,
    pub name: String,
    /// `active`, `suspended`, `pending_closure`, lower case.
    pub status: String,
}

impl Account {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }

    /// Its id, or its name while the id is not known.
    pub fn key(&self) -> &str {
        if self.id.is_empty() {
            &self.name
        } else {
            &self.id
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSource {
    Config,
    Discovered,
    /// A project of an account in `[[accounts]]`.
    Accounts,
    /// A project of an account Organizations listed.
    Organization,
}

impl TargetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSource::Config => "config",
            TargetSource::Discovered => "discovered",
            TargetSource::Accounts => "accounts",
            TargetSource::Organization => "organization",
        }
    }
}

/// Each target behind its own `Arc`, in a list of its exact size: collected in place, the list
/// would keep the targets' allocation (≈ 100 bytes a target, for a pointer each).
fn shared(targets: Vec<Target>) -> Vec<Arc<Target>> {
    let mut shared: Vec<_> = targets.into_iter().map(Arc::new).collect();
    shared.shrink_to_fit();
    shared
}

/// Configured targets and discovered ones, as one list that queries take snapshots of.
pub(super) struct TargetSet {
    configured: Vec<Arc<Target>>,
    discovered: Mutex<BTreeMap<String, Vec<Arc<Target>>>>,
    current: RwLock<Arc<Vec<Arc<Target>>>>,
}

impl TargetSet {
    pub(super) fn new(configured: Vec<Target>) -> Self {
        let configured = shared(configured);
        TargetSet {
            current: RwLock::new(Arc::new(interleave_regions(configured.clone()))),
            configured,
            discovered: Mutex::default(),
        }
    }

    pub(super) fn current(&self) -> Arc<Vec<Arc<Target>>> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces what `source` (a discovering credential, or an account source) found;
    /// configured targets win over discovered ones.
    pub(super) fn set_discovered(&self, source: &str, found: Vec<Target>) {
        let mut discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        discovered.insert(source.to_owned(), shared(found));
        let mut all = self.configured.clone();
        let mut seen: HashSet<Arc<str>> = all.iter().map(|t| t.key()).collect();
        for t in discovered.values().flatten() {
            if seen.insert(t.key()) {
                all.push(Arc::clone(t));
            }
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(interleave_regions(all));
    }
}

impl TargetSet {
    /// What `source` discovered last.
    pub(super) fn discovered_by(&self, source: &str) -> Vec<Arc<Target>> {
        let discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        discovered.get(source).cloned().unwrap_or_default()
    }
}

/// Orders targets round-robin over regions, so no region is hammered first.
fn interleave_regions(targets: Vec<Arc<Target>>) -> Vec<Arc<Target>> {
    let mut regions: Vec<(Arc<str>, Vec<Arc<Target>>)> = Vec::new();
    for t in targets {
        match regions.iter_mut().find(|(r, _)| *r == t.region) {
            Some((_, list)) => list.push(t),
            None => regions.push((Arc::clone(&t.region), vec![t])),
        }
    }
    let longest = regions.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..longest {
        for (_, list) in &regions {
            if let Some(t) = list.get(i) {
                out.push(Arc::clone(t));
            }
        }
    }
    out
}

/// What the gateway last saw of a target, across queries.
#[derive(Default)]
pub struct TargetHealth {
    /// In Unix milliseconds (0: never).
    last_success_ms: AtomicU64,
    /// Boxed: most targets never fail, and 100,000 targets each keep one of these.
    last_error: Mutex<Option<Box<(SystemTime, TargetError)>>>,
    /// While a retry waits: when it ends, in Unix milliseconds (0: not backing off).
    pub(super) backoff_until_ms: AtomicU64,
    /// The `total` of the target's whole list when it was last read whole (0: not yet).
    listed_total: AtomicU64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl TargetHealth {
    pub(super) fn record(&self, result: &TargetResult) {
        match &result.error {
            None => self
                .last_success_ms
                .store(unix_ms(SystemTime::now()).max(1), Ordering::Relaxed),
            Some(e) => self.record_failure(e.clone()),
        }
    }

    /// How many backups the target's whole list had when it was last read whole (0: not yet).
    pub(super) fn listed_total(&self) -> u64 {
        self.listed_total.load(Ordering::Relaxed)
    }

    pub(super) fn note_listed_total(&self, total: u64) {
        self.listed_total.store(total, Ordering::Relaxed);
    }

    /// A failure, from a read or found outside one (an agency IAM refused).
    pub fn record_failure(&self, error: TargetError) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Box::new((SystemTime::now(), error)));
    }

    pub fn last_success(&self) -> Option<SystemTime> {
        let ms = self.last_success_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
    }

    pub fn last_error(&self) -> Option<(SystemTime, TargetError)> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .cloned()
    }

    /// When the retry being waited out ends, if one is.
    pub fn backoff_until(&self) -> Option<SystemTime> {
        let ms = self.backoff_until_ms.load(Ordering::Relaxed);
        let until = UNIX_EPOCH + Duration::from_millis(ms);
        (ms > 0 && until > SystemTime::now()).then_some(until)
    }
}

#[derive(Default)]
pub(super) struct HealthBook(Mutex<HashMap<Arc<str>, Arc<TargetHealth>>>);

impl HealthBook {
    pub(super) fn of(&self, key: Arc<str>) -> Arc<TargetHealth> {
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(book.entry(key).or_default())
    }
}

/// What a discovery found: targets, and for account sources, accounts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Found {
    pub targets: usize,
    pub accounts: usize,
}

/// What each discovery (a credential's projects, an account source) last did, for `ListTargets`.
#[derive(Default)]
pub(super) struct DiscoveryBook(Mutex<BTreeMap<(String, String), DiscoveryState>>);

impl DiscoveryBook {
    pub(super) fn record(&self, credential: &str, source: &str, outcome: Result<Found, String>) {
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let state = book
            .entry((source.to_owned(), credential.to_owned()))
            .or_insert_with(|| DiscoveryState {
                credential: credential.to_owned(),
                source: source.to_owned(),
                ..Default::default()
            });
        let now = Some(SystemTime::now());
        match outcome {
            Ok(found) => {
                state.last_success = now;
                state.targets = found.targets as u32;
                state.accounts = found.accounts as u32;
                state.last_error.clear();
            }
            Err(e) => {
                state.last_error_at = now;
                state.last_error = e;
            }
        }
    }

    pub(super) fn states(&self) -> Vec<DiscoveryState> {
        let book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        book.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn the_shared_list_is_its_exact_size() {
        let credential = Arc::new(Credential::token("t", SecretString::from("x")));
        let targets: Vec<Target> = (0..10)
            .map(|i| Target {
                project_id: format!("p{i}").into(),
                project_name: format!("n{i}"),
                region: "r".into(),
                endpoint: "http://127.0.0.1:1".into(),
                credential: Arc::clone(&credential),
                source: TargetSource::Config,
                account: None,
            })
            .collect();
        let shared = shared(targets);
        assert_eq!(shared.len(), 10);
        assert_eq!(shared.capacity(), 10, "not the targets' own allocation");
    }
}
