//! Targets (a project at its region's endpoint), the live set of them, and what is known of
//! each one's health.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ddm::Credential;
use crate::pb;

/// One project, called at the endpoint of the region it lives in.
#[derive(Debug, Clone)]
pub struct Target {
    pub project_id: Arc<str>,
    pub project_name: String,
    pub region: String,
    pub endpoint: Arc<str>,
    pub credential: Arc<Credential>,
    pub source: TargetSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSource {
    Config,
    Discovered,
}

impl TargetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSource::Config => "config",
            TargetSource::Discovered => "discovered",
        }
    }
}

/// Configured targets and discovered ones, as one list that queries take snapshots of.
pub(super) struct TargetSet {
    configured: Vec<Arc<Target>>,
    discovered: Mutex<BTreeMap<String, Vec<Arc<Target>>>>,
    current: RwLock<Arc<Vec<Arc<Target>>>>,
}

impl TargetSet {
    pub(super) fn new(configured: Vec<Target>) -> Self {
        let configured: Vec<_> = configured.into_iter().map(Arc::new).collect();
        TargetSet {
            current: RwLock::new(Arc::new(interleave_regions(configured.clone()))),
            configured,
            discovered: Mutex::default(),
        }
    }

    pub(super) fn current(&self) -> Arc<Vec<Arc<Target>>> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces what `credential` discovered; configured targets win over discovered ones.
    pub(super) fn set_discovered(&self, credential: &str, found: Vec<Target>) {
        let mut discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        discovered.insert(
            credential.to_owned(),
            found.into_iter().map(Arc::new).collect(),
        );
        let mut all = self.configured.clone();
        let mut seen: HashSet<Arc<str>> = all.iter().map(|t| Arc::clone(&t.project_id)).collect();
        for t in discovered.values().flatten() {
            if seen.insert(Arc::clone(&t.project_id)) {
                all.push(Arc::clone(t));
            }
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(interleave_regions(all));
    }
}

impl TargetSet {
    /// What `credential` discovered last.
    pub(super) fn discovered_by(&self, credential: &str) -> Vec<Arc<Target>> {
        let discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        discovered.get(credential).cloned().unwrap_or_default()
    }
}

/// Orders targets round-robin over regions, so no region is hammered first.
fn interleave_regions(targets: Vec<Arc<Target>>) -> Vec<Arc<Target>> {
    let mut regions: Vec<(String, Vec<Arc<Target>>)> = Vec::new();
    for t in targets {
        match regions.iter_mut().find(|(r, _)| *r == t.region) {
            Some((_, list)) => list.push(t),
            None => regions.push((t.region.clone(), vec![t])),
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
    last_success: Mutex<Option<SystemTime>>,
    last_error: Mutex<Option<(SystemTime, pb::TargetError)>>,
    /// While a retry waits: when it ends, in Unix milliseconds (0: not backing off).
    pub(super) backoff_until_ms: AtomicU64,
}

impl TargetHealth {
    pub(super) fn record(&self, result: &pb::TargetResult) {
        let now = SystemTime::now();
        match &result.error {
            None => *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Some(now),
            Some(e) => {
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, e.clone()))
            }
        }
    }

    pub fn last_success(&self) -> Option<SystemTime> {
        *self.last_success.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn last_error(&self) -> Option<(SystemTime, pb::TargetError)> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    pub(super) fn of(&self, project_id: &Arc<str>) -> Arc<TargetHealth> {
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(book.entry(Arc::clone(project_id)).or_default())
    }
}

/// What each credential's discovery last did, for `ListTargets`.
#[derive(Default)]
pub(super) struct DiscoveryBook(Mutex<BTreeMap<String, pb::DiscoveryState>>);

impl DiscoveryBook {
    pub(super) fn record(&self, credential: &str, outcome: Result<usize, String>) {
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let state = book
            .entry(credential.to_owned())
            .or_insert_with(|| pb::DiscoveryState {
                credential: credential.to_owned(),
                ..Default::default()
            });
        let now = Some(SystemTime::now().into());
        match outcome {
            Ok(n) => {
                state.last_success = now;
                state.targets = n as u32;
                state.last_error.clear();
            }
            Err(e) => {
                state.last_error_at = now;
                state.last_error = e;
            }
        }
    }

    pub(super) fn states(&self) -> Vec<pb::DiscoveryState> {
        let book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        book.values().cloned().collect()
    }
}
