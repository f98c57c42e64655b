//! The inventory: where a query fans out. Plans the targets a query selects, reads every page of
//! every target under limits (through the page cache), merges, filters and de-duplicates, and
//! emits batches and per-target outcomes on a bounded channel, so a slow caller slows the fan-out
//! instead of growing memory.

mod fan_out;
mod instances;
mod order;
mod outcome;
mod query;
mod read;
mod seen;
mod select;
mod targets;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::stream::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::cache::PageCache;
use crate::ddm::{Credential, DdmClient};
use crate::metrics::Metrics;
use crate::rate::{Pace, TokenBucket};
use crate::shared::SharedPace;
pub use order::Order;
pub use outcome::{DiscoveryState, Summary, TargetError, TargetResult};
pub use query::{
    FieldViolation, Filter, InventoryError, NothingAnsweredCause, Query, Tally, Violations,
    loggable, quote,
};
pub use read::target_error;
pub use select::Selection;
pub use targets::{Account, Found, Target, TargetHealth, TargetSource, result_key};
use targets::{DiscoveryBook, HealthBook, TargetSet};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Upstream requests in flight at once, over all targets and callers.
    pub max_concurrent_requests: usize,
    /// Targets one query reads at once.
    pub max_concurrent_targets: usize,
    /// Pages of one target in flight at once.
    pub max_pages_per_target: usize,
    /// Batches buffered between the fan-out and a caller.
    pub stream_buffer: usize,
    /// Limits of every region, unless `regions` says otherwise for one.
    pub region: RegionLimits,
    pub regions: HashMap<String, RegionLimits>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_requests: 64,
            max_concurrent_targets: 64,
            max_pages_per_target: 8,
            stream_buffer: 16,
            region: RegionLimits::default(),
            regions: HashMap::new(),
        }
    }
}

/// How hard one region may be asked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionLimits {
    /// Upstream requests in flight at once in the region; `None`: half the global limit.
    pub max_concurrent_requests: Option<usize>,
    /// Requests a second (a token bucket of `burst`); `None`: unpaced.
    pub requests_per_second: Option<f64>,
    pub burst: u32,
}

/// A region's limits, shared by every query.
pub(crate) struct RegionGate {
    pub slots: Option<Semaphore>,
    pub pace: Option<Pace>,
}

/// What a query's stream carries.
#[derive(Debug)]
pub enum Event {
    /// Backups, already encoded (see `wire`).
    Backups(EncodedBatch),
    TargetDone(Box<TargetResult>),
    Finished(Summary),
}

pub struct Inventory {
    targets: TargetSet,
    client: DdmClient,
    cache: PageCache,
    limits: Limits,
    upstream_slots: Semaphore,
    regions: Mutex<HashMap<String, Arc<RegionGate>>>,
    health: Arc<HealthBook>,
    metrics: Option<Metrics>,
    discoveries: Arc<DiscoveryBook>,
}

impl Inventory {
    pub fn new(targets: Vec<Target>, client: DdmClient, cache: PageCache, limits: Limits) -> Self {
        Inventory {
            targets: TargetSet::new(targets),
            client,
            cache,
            upstream_slots: Semaphore::new(limits.max_concurrent_requests.max(1)),
            limits,
            regions: Mutex::default(),
            health: Arc::default(),
            metrics: None,
            discoveries: Arc::default(),
        }
    }

    /// Keeps what `previous` (the configuration before a reload) knew: each target's health,
    /// what discovery found (under the new credentials of the same name, until discovery runs
    /// again), what the account sources still configured found (as it was, until they refresh)
    /// and what discovery last did.
    pub fn carry_over(
        mut self,
        previous: &Inventory,
        credentials: &[Arc<Credential>],
        account_sources: &[&str],
    ) -> Self {
        for source in account_sources {
            let found = previous.targets.discovered_by(source);
            if !found.is_empty() {
                let kept = found.iter().map(|t| (**t).clone()).collect();
                self.targets.set_discovered(source, kept);
            }
        }
        self.health = Arc::clone(&previous.health);
        self.discoveries = Arc::clone(&previous.discoveries);
        for credential in credentials {
            let found = previous.targets.discovered_by(credential.name());
            if !found.is_empty() {
                let rebound = found
                    .iter()
                    .map(|t| Target {
                        credential: Arc::clone(credential),
                        ..(**t).clone()
                    })
                    .collect();
                self.targets.set_discovered(credential.name(), rebound);
            }
        }
        self
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// What each credential's discovery last did (for `ListTargets`).
    pub fn discovery_states(&self) -> Vec<DiscoveryState> {
        self.discoveries.states()
    }

    pub(crate) fn record_discovery(
        &self,
        credential: &str,
        source: &str,
        outcome: Result<Found, String>,
    ) {
        self.discoveries.record(credential, source, outcome);
    }

    /// The targets now: configured ones and those discovered so far.
    pub fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.current()
    }

    /// Replaces what `source` (a discovering credential, an account source) found; configured
    /// targets win over discovered ones.
    pub fn set_discovered(&self, source: &str, found: Vec<Target>) {
        self.targets.set_discovered(source, found);
    }

    pub fn client(&self) -> &DdmClient {
        &self.client
    }

    /// What is known of a target's health (last success, last error, current backoff).
    pub fn health(&self, target: &Target) -> Arc<TargetHealth> {
        self.health.of(target.key())
    }

    fn region_gate(&self, region: &str) -> Arc<RegionGate> {
        let mut gates = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let gate = gates.entry(region.to_owned()).or_insert_with(|| {
            let l = self
                .limits
                .regions
                .get(region)
                .unwrap_or(&self.limits.region);
            // Unbounded regions still get a share of the global limit: a stalled region must not
            // take every slot and queue the healthy ones behind it.
            let share = self.limits.max_concurrent_requests.div_ceil(2).max(1);
            Arc::new(RegionGate {
                slots: Some(Semaphore::new(
                    l.max_concurrent_requests.unwrap_or(share).max(1),
                )),
                // With shared state, the rate holds for every replica together.
                pace: l.requests_per_second.map(|rps| match self.cache.shared() {
                    Some(shared) => {
                        Pace::Shared(SharedPace::new(Arc::clone(shared), region, rps, l.burst))
                    }
                    None => Pace::Local(TokenBucket::new(rps, l.burst)),
                }),
            })
        });
        Arc::clone(gate)
    }

    pub fn cache(&self) -> &PageCache {
        &self.cache
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// A batch of backups as `ListBackupsResponse` field 1 entries.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub encoded: bytes::Bytes,
    pub count: usize,
}

/// What a query answers, in order.
pub type Events = Pin<Box<dyn Stream<Item = Result<Event, InventoryError>> + Send>>;

/// The events of one query. Dropping it aborts the fan-out and all its upstream requests.
pub struct EventStream {
    events: mpsc::Receiver<Result<Event, InventoryError>>,
    driver: Option<AbortHandle>,
    /// The summary (or an error) was seen: the stream may end.
    concluded: bool,
}

impl EventStream {
    /// Events from `events`, with no fan-out behind them (for tests of what consumes them).
    #[cfg(test)]
    pub(crate) fn detached(events: mpsc::Receiver<Result<Event, InventoryError>>) -> Self {
        EventStream {
            events,
            driver: None,
            concluded: false,
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, InventoryError>;

    /// A fan-out that stops before its summary (it crashed) ends the stream with an error, so
    /// that no caller takes a cut-short answer for a whole one.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let event = std::task::ready!(self.events.poll_recv(cx));
        match &event {
            Some(Ok(Event::Finished(_)) | Err(_)) => self.concluded = true,
            Some(Ok(_)) => {}
            None if !self.concluded => {
                self.concluded = true;
                return Poll::Ready(Some(Err(InventoryError::Internal(
                    "the call stopped before its summary; what it sent may be incomplete".into(),
                ))));
            }
            None => {}
        }
        Poll::Ready(event)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(driver) = &self.driver {
            driver.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn events(sent: Vec<Result<Event, InventoryError>>) -> EventStream {
        let (tx, rx) = mpsc::channel(sent.len().max(1));
        for event in sent {
            tx.try_send(event).unwrap();
        }
        EventStream::detached(rx)
    }

    fn backups() -> Result<Event, InventoryError> {
        Ok(Event::Backups(EncodedBatch {
            encoded: bytes::Bytes::from_static(b"\x0a\x00"),
            count: 1,
        }))
    }

    #[tokio::test]
    async fn a_fan_out_that_stops_before_its_summary_ends_the_stream_with_an_error() {
        let mut stream = events(vec![backups()]);
        assert!(matches!(stream.next().await, Some(Ok(Event::Backups(_)))));
        let Some(Err(InventoryError::Internal(why))) = stream.next().await else {
            panic!("a cut-short stream ended as if whole");
        };
        assert!(why.contains("before its summary"), "{why}");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_ends_quietly_after_its_summary_or_an_error() {
        let mut stream = events(vec![backups(), Ok(Event::Finished(Summary::default()))]);
        assert_eq!(stream.by_ref().count().await, 2);
        let failed = Err(InventoryError::Internal("x".into()));
        assert_eq!(events(vec![failed]).count().await, 1);
    }
}
