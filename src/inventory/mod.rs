//! The inventory: where a query fans out. Plans the targets a query selects, reads every page of
//! every target under limits (through the page cache), merges, filters and de-duplicates, and
//! emits batches and per-target outcomes on a bounded channel, so a slow caller slows the fan-out
//! instead of growing memory.

mod instances;
mod order;
mod outcome;
mod query;
mod read;
mod select;
mod targets;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::stream::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument as _;

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
use read::{QueryStats, TargetProgress, TargetRead};
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

    /// Starts the fan-out for `query`. The stream ends with `Event::Finished`, followed by an
    /// error only when no target could be read. Dropping the stream stops all its upstream work.
    /// An ordered query's backups come after its target results, sorted (see `order`).
    pub fn list(self: &Arc<Self>, query: Query) -> Result<Events, InventoryError> {
        let order = query.order;
        let events = self.fan_out(query)?;
        Ok(match order {
            Order::Arrival => Box::pin(events),
            order => Box::pin(order::Ordered::new(
                events,
                order,
                self.cache.max_bytes() as usize,
            )),
        })
    }

    fn fan_out(self: &Arc<Self>, query: Query) -> Result<EventStream, InventoryError> {
        let targets = self.select_to_read(&query.selection(), &query.caller.scope)?;
        Ok(self.list_targets_of(targets, query))
    }

    /// The fan-out over targets already selected (the query's selection is not looked at).
    pub fn list_targets_of(
        self: &Arc<Self>,
        targets: Vec<Arc<Target>>,
        query: Query,
    ) -> EventStream {
        let (tx, rx) = mpsc::channel(self.limits.stream_buffer.max(1));
        // Every line logged for this call (targets, pages, retries) carries the caller.
        let span =
            tracing::info_span!("call", caller = &*query.caller.name, method = "ListBackups");
        let driver = tokio::spawn(
            Arc::clone(self)
                .drive(targets, Arc::new(query), tx)
                .instrument(span),
        );
        EventStream {
            events: rx,
            driver: Some(driver.abort_handle()),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn drive(
        self: Arc<Self>,
        targets: Vec<Arc<Target>>,
        query: Arc<Query>,
        tx: mpsc::Sender<Result<Event, InventoryError>>,
    ) {
        let started = Instant::now();
        let stats = Arc::new(QueryStats::default());
        let target_slots = Arc::new(Semaphore::new(self.limits.max_concurrent_targets.max(1)));
        let pushdown = Arc::new(query.pushdown.clone());
        let progress: Vec<Arc<TargetProgress>> = targets.iter().map(|_| Arc::default()).collect();
        let mut running = JoinSet::new();
        let mut index_of = HashMap::new();
        // Targets are spawned only once a slot is free: a waiting target costs nothing.
        let mut waiting = targets.iter().enumerate();
        let mut next = waiting.next();

        let mut tally = Tally::default();
        let mut finished = vec![false; targets.len()];
        let mut out_of_time = false;
        loop {
            let busy = next.is_some() || !running.is_empty();
            let joined = tokio::select! {
                slot = Arc::clone(&target_slots).acquire_owned(), if next.is_some() => {
                    let (Some((index, target)), Ok(slot)) = (next, slot) else { break };
                    let read = TargetRead {
                        inventory: Arc::clone(&self),
                        target: Arc::clone(target),
                        health: self.health(target),
                        query: Arc::clone(&query),
                        pushdown: Arc::clone(&pushdown),
                        stats: Arc::clone(&stats),
                        progress: Arc::clone(&progress[index]),
                        tx: tx.clone(),
                    };
                    let handle: AbortHandle = running.spawn(
                        async move {
                            let _slot = slot;
                            read.run().await
                        }
                        .in_current_span(),
                    );
                    index_of.insert(handle.id(), index);
                    next = waiting.next();
                    continue;
                }
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => joined,
                _ = sleep_until_opt(query.deadline), if busy => {
                    out_of_time = true;
                    break;
                }
                else => break,
            };
            let (index, result) = outcome(joined, &mut index_of, &targets, &progress);
            finished[index] = true;
            if !self
                .report(&targets[index], result, &query, &mut tally, &tx)
                .await
            {
                return;
            }
        }
        if out_of_time {
            let results = ran_out_of_time(
                &mut running,
                &mut finished,
                &mut index_of,
                &targets,
                &progress,
            );
            for (index, result) in results {
                if !self
                    .report(&targets[index], result, &query, &mut tally, &tx)
                    .await
                {
                    return;
                }
            }
        }

        Self::finish(started, &stats, &tally, &query, &tx).await;
    }

    /// Sends the summary (and, when no target answered, why), and logs the call's line.
    async fn finish(
        started: Instant,
        stats: &QueryStats,
        tally: &Tally,
        query: &Query,
        tx: &mpsc::Sender<Result<Event, InventoryError>>,
    ) {
        let (ok, failed) = (tally.ok, tally.failed);
        let summary = Summary {
            targets_ok: ok,
            targets_failed: failed,
            backups: stats.backups.load(Ordering::Relaxed),
            upstream_requests: stats.upstream_requests.load(Ordering::Relaxed),
            cache_hits: stats.cache_hits.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        };
        tracing::info!(
            caller = &*query.caller.name,
            method = "ListBackups",
            projects = %loggable(&query.project_ids),
            regions = %loggable(&query.regions),
            ok,
            failed,
            backups = summary.backups,
            upstream_requests = summary.upstream_requests,
            cache_hits = summary.cache_hits,
            elapsed = ?started.elapsed(),
            "call finished"
        );
        if tx.send(Ok(Event::Finished(summary))).await.is_err() {
            return;
        }
        if let Some(e) = tally.nothing_answered() {
            let _ = tx.send(Err(e)).await;
        }
    }

    /// Records a target's outcome and sends it; false when the caller has gone.
    async fn report(
        &self,
        target: &Target,
        result: TargetResult,
        query: &Query,
        tally: &mut Tally,
        tx: &mpsc::Sender<Result<Event, InventoryError>>,
    ) -> bool {
        self.health(target).record(&result);
        if let Some(metrics) = &self.metrics {
            metrics.target_read(&target.key(), &target.region, result.ok);
        }
        tally.count(&result);
        if let Some(e) = &result.error {
            tracing::warn!(
                caller = &*query.caller.name,
                project = &*target.project_id,
                region = &*target.region,
                credential = target.credential.name(),
                kind = e.kind,
                code = e.error_code,
                request_id = e.request_id,
                error = e.message,
                "target failed"
            );
        }
        tx.send(Ok(Event::TargetDone(Box::new(result))))
            .await
            .is_ok()
    }
}

type Joined = Result<(tokio::task::Id, TargetResult), tokio::task::JoinError>;

/// What a finished (or crashed) target read says about its target, and which target it was.
fn outcome(
    joined: Joined,
    index_of: &mut HashMap<tokio::task::Id, usize>,
    targets: &[Arc<Target>],
    progress: &[Arc<TargetProgress>],
) -> (usize, TargetResult) {
    // Entries go as their tasks end: a call over 100,000 targets holds the running ones only.
    let mut index = |id| index_of.remove(&id).expect("every spawned read is indexed");
    match joined {
        Ok((id, result)) => (index(id), result),
        Err(e) => {
            let index = index(e.id());
            tracing::error!(project = &*targets[index].project_id, error = %e, "target read crashed");
            let error = TargetError {
                kind: "internal".into(),
                message: "the gateway failed while reading this target".into(),
                ..Default::default()
            };
            (index, progress[index].result(&targets[index], Some(error)))
        }
    }
}

/// The deadline ran out: targets that finished just now count as finished; the others (their
/// reads aborted here) ran out of time.
fn ran_out_of_time(
    running: &mut JoinSet<TargetResult>,
    finished: &mut [bool],
    index_of: &mut HashMap<tokio::task::Id, usize>,
    targets: &[Arc<Target>],
    progress: &[Arc<TargetProgress>],
) -> Vec<(usize, TargetResult)> {
    let mut results = Vec::new();
    while let Some(joined) = running.try_join_next_with_id() {
        let (index, result) = outcome(joined, index_of, targets, progress);
        finished[index] = true;
        results.push((index, result));
    }
    running.abort_all();
    for (index, done) in finished.iter().enumerate() {
        if !done {
            let result = progress[index].result(&targets[index], Some(deadline_error()));
            results.push((index, result));
        }
    }
    results
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn deadline_error() -> TargetError {
    TargetError {
        kind: "deadline_exceeded".into(),
        error_code: "DEADLINE_EXCEEDED".into(),
        message: "the caller's deadline ran out before this target was read completely".into(),
        retryable: true,
        ..Default::default()
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
}

impl EventStream {
    /// Events from `events`, with no fan-out behind them (for tests of what consumes them).
    #[cfg(test)]
    pub(crate) fn detached(events: mpsc::Receiver<Result<Event, InventoryError>>) -> Self {
        EventStream {
            events,
            driver: None,
        }
    }
}

impl Stream for EventStream {
    type Item = Result<Event, InventoryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(driver) = &self.driver {
            driver.abort();
        }
    }
}
