//! The inventory: where a query fans out. Plans the targets a query selects, reads every page of
//! every target under limits (through the page cache), merges, filters and de-duplicates, and
//! emits batches and per-target outcomes on a bounded channel, so a slow caller slows the fan-out
//! instead of growing memory.

mod read;
mod targets;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::Stream;
use prost_types::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::cache::PageCache;
use crate::ddm::{DdmClient, Pushdown};
use crate::pb;
use crate::rate::TokenBucket;
use crate::wire::BackupMeta;
use read::{QueryStats, TargetProgress, TargetRead};
use targets::{HealthBook, TargetSet};
pub use targets::{Target, TargetHealth, TargetSource};

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
    /// Upstream requests in flight at once in the region; `None`: only the global limit.
    pub max_concurrent_requests: Option<usize>,
    /// Requests a second (a token bucket of `burst`); `None`: unpaced.
    pub requests_per_second: Option<f64>,
    pub burst: u32,
}

/// A region's limits, shared by every query.
pub(crate) struct RegionGate {
    pub slots: Option<Semaphore>,
    pub pace: Option<TokenBucket>,
}

/// A caller's question, validated.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub project_ids: Vec<String>,
    pub regions: Vec<String>,
    pub pushdown: Pushdown,
    pub filter: Filter,
    /// Cached pages older than this are read again; `None`: the cache TTL.
    pub max_age: Option<Duration>,
    /// When the caller stops waiting; unfinished targets are reported as timed out before it.
    pub deadline: Option<Instant>,
}

/// Gateway-side filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub backup_types: Vec<String>,
    pub statuses: Vec<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

impl Filter {
    fn matches(&self, b: &BackupMeta<'_>) -> bool {
        (self.backup_types.is_empty() || self.backup_types.iter().any(|t| t == b.backup_type_name))
            && (self.statuses.is_empty() || self.statuses.iter().any(|s| s == b.status))
            && self.created_in_range(b.created.as_ref())
    }

    fn is_empty(&self) -> bool {
        self.backup_types.is_empty()
            && self.statuses.is_empty()
            && self.created_after.is_none()
            && self.created_before.is_none()
    }

    fn created_in_range(&self, created: Option<&Timestamp>) -> bool {
        if self.created_after.is_none() && self.created_before.is_none() {
            return true;
        }
        let Some(c) = created else { return false };
        let key = |t: &Timestamp| (t.seconds, t.nanos);
        self.created_after.as_ref().is_none_or(|a| key(c) >= key(a))
            && self.created_before.as_ref().is_none_or(|b| key(c) < key(b))
    }
}

/// A field of the request that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InventoryError {
    #[error("invalid request: {}", describe(.0))]
    InvalidRequest(Vec<FieldViolation>),
    #[error("none of the {failed} selected targets could be read; see targets[].error")]
    NothingAnswered { failed: u32 },
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a query's stream carries.
#[derive(Debug)]
pub enum Event {
    /// Backups, already encoded (see `wire`).
    Backups(EncodedBatch),
    TargetDone(pb::TargetResult),
    Finished(pb::Summary),
}

pub struct Inventory {
    targets: TargetSet,
    client: DdmClient,
    cache: PageCache,
    limits: Limits,
    upstream_slots: Semaphore,
    regions: Mutex<HashMap<String, Arc<RegionGate>>>,
    health: HealthBook,
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
            health: HealthBook::default(),
        }
    }

    /// The targets now: configured ones and those discovered so far.
    pub fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.current()
    }

    /// Replaces what `credential` discovered; configured targets win over discovered ones.
    pub fn set_discovered(&self, credential: &str, found: Vec<Target>) {
        self.targets.set_discovered(credential, found);
    }

    pub fn client(&self) -> &DdmClient {
        &self.client
    }

    /// What is known of a target's health (last success, last error, current backoff).
    pub fn health(&self, project_id: &Arc<str>) -> Arc<TargetHealth> {
        self.health.of(project_id)
    }

    fn region_gate(&self, region: &str) -> Arc<RegionGate> {
        let mut gates = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let gate = gates.entry(region.to_owned()).or_insert_with(|| {
            let l = self
                .limits
                .regions
                .get(region)
                .unwrap_or(&self.limits.region);
            Arc::new(RegionGate {
                slots: l.max_concurrent_requests.map(|n| Semaphore::new(n.max(1))),
                pace: l
                    .requests_per_second
                    .map(|rps| TokenBucket::new(rps, l.burst)),
            })
        });
        Arc::clone(gate)
    }

    pub fn cache(&self) -> &PageCache {
        &self.cache
    }

    /// The targets a selection names. Unknown projects or regions are caller errors.
    pub fn select(
        &self,
        project_ids: &[String],
        regions: &[String],
    ) -> Result<Vec<Arc<Target>>, InventoryError> {
        let all = self.targets();
        let mut violations = Vec::new();
        for (i, id) in project_ids.iter().enumerate() {
            if !all.iter().any(|t| &*t.project_id == id) {
                violations.push(FieldViolation::new(
                    format!("project_ids[{i}]"),
                    format!("no configured project has the id {id:?}"),
                ));
            }
        }
        for (i, region) in regions.iter().enumerate() {
            if !all.iter().any(|t| &t.region == region) {
                violations.push(FieldViolation::new(
                    format!("regions[{i}]"),
                    format!("no configured project is in the region {region:?}"),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(InventoryError::InvalidRequest(violations));
        }
        let selected: Vec<_> = all
            .iter()
            .filter(|t| project_ids.is_empty() || project_ids.iter().any(|p| *p == *t.project_id))
            .filter(|t| regions.is_empty() || regions.contains(&t.region))
            .cloned()
            .collect();
        if selected.is_empty() && !(project_ids.is_empty() && regions.is_empty()) {
            return Err(InventoryError::InvalidRequest(vec![FieldViolation::new(
                "regions",
                "none of the selected projects is in the selected regions",
            )]));
        }
        Ok(selected)
    }

    /// Starts the fan-out for `query`. The stream ends with `Event::Finished`, followed by an
    /// error only when no target could be read. Dropping the stream stops all its upstream work.
    pub fn list(self: &Arc<Self>, query: Query) -> Result<EventStream, InventoryError> {
        let targets = self.select(&query.project_ids, &query.regions)?;
        let (tx, rx) = mpsc::channel(self.limits.stream_buffer.max(1));
        let driver = tokio::spawn(Arc::clone(self).drive(targets, Arc::new(query), tx));
        Ok(EventStream {
            events: rx,
            driver: driver.abort_handle(),
        })
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

        let (mut ok, mut failed) = (0u32, 0u32);
        let mut finished = vec![false; targets.len()];
        let mut out_of_time = false;
        // What a finished (or crashed) task says about its target.
        let outcome = |joined: Result<
            (tokio::task::Id, pb::TargetResult),
            tokio::task::JoinError,
        >,
                       index_of: &HashMap<tokio::task::Id, usize>| {
            match joined {
                Ok((id, result)) => (index_of[&id], result),
                Err(e) => {
                    let index = index_of[&e.id()];
                    tracing::error!(project = &*targets[index].project_id, error = %e, "target read crashed");
                    let error = pb::TargetError {
                        kind: "internal".into(),
                        message: "the gateway failed while reading this target".into(),
                        ..Default::default()
                    };
                    (index, progress[index].result(&targets[index], Some(error)))
                }
            }
        };
        loop {
            let busy = next.is_some() || !running.is_empty();
            let joined = tokio::select! {
                slot = Arc::clone(&target_slots).acquire_owned(), if next.is_some() => {
                    let (Some((index, target)), Ok(slot)) = (next, slot) else { break };
                    let read = TargetRead {
                        inventory: Arc::clone(&self),
                        target: Arc::clone(target),
                        health: self.health(&target.project_id),
                        query: Arc::clone(&query),
                        pushdown: Arc::clone(&pushdown),
                        stats: Arc::clone(&stats),
                        progress: Arc::clone(&progress[index]),
                        tx: tx.clone(),
                    };
                    let handle: AbortHandle = running.spawn(async move {
                        let _slot = slot;
                        read.run().await
                    });
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
            let (index, result) = outcome(joined, &index_of);
            finished[index] = true;
            if !self.report(result, &mut ok, &mut failed, &tx).await {
                return;
            }
        }
        if out_of_time {
            // Targets that finished just now count as finished; the others ran out of time.
            let mut results = Vec::new();
            while let Some(joined) = running.try_join_next_with_id() {
                let (index, result) = outcome(joined, &index_of);
                finished[index] = true;
                results.push(result);
            }
            running.abort_all();
            for (index, done) in finished.iter().enumerate() {
                if !done {
                    results.push(progress[index].result(&targets[index], Some(deadline_error())));
                }
            }
            for result in results {
                if !self.report(result, &mut ok, &mut failed, &tx).await {
                    return;
                }
            }
        }

        let summary = pb::Summary {
            targets_ok: ok,
            targets_failed: failed,
            backups: stats.backups.load(Ordering::Relaxed),
            upstream_requests: stats.upstream_requests.load(Ordering::Relaxed),
            cache_hits: stats.cache_hits.load(Ordering::Relaxed),
            elapsed: prost_types::Duration::try_from(started.elapsed()).ok(),
        };
        tracing::info!(ok, failed, backups = summary.backups, upstream_requests = summary.upstream_requests, cache_hits = summary.cache_hits, elapsed = ?started.elapsed(), "inventory finished");
        if tx.send(Ok(Event::Finished(summary))).await.is_err() {
            return;
        }
        if ok == 0 && failed > 0 {
            let _ = tx
                .send(Err(InventoryError::NothingAnswered { failed }))
                .await;
        }
    }

    /// Records a target's outcome and sends it; false when the caller has gone.
    async fn report(
        &self,
        result: pb::TargetResult,
        ok: &mut u32,
        failed: &mut u32,
        tx: &mpsc::Sender<Result<Event, InventoryError>>,
    ) -> bool {
        let project_id: Arc<str> = result.project_id.as_str().into();
        self.health(&project_id).record(&result);
        if result.ok {
            *ok += 1;
        } else {
            *failed += 1;
        }
        tx.send(Ok(Event::TargetDone(result))).await.is_ok()
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn deadline_error() -> pb::TargetError {
    pb::TargetError {
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

/// The events of one query. Dropping it aborts the fan-out and all its upstream requests.
pub struct EventStream {
    events: mpsc::Receiver<Result<Event, InventoryError>>,
    driver: AbortHandle,
}

impl Stream for EventStream {
    type Item = Result<Event, InventoryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup<'a>(kind: &'a str, status: &'a str, created: Option<i64>) -> BackupMeta<'a> {
        BackupMeta {
            id: "b",
            backup_type_name: kind,
            status,
            created: created.map(|seconds| Timestamp { seconds, nanos: 0 }),
        }
    }

    #[test]
    fn filters_combine() {
        let f = Filter {
            backup_types: vec!["metadata".into()],
            statuses: vec![],
            created_after: Some(Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            created_before: Some(Timestamp {
                seconds: 200,
                nanos: 0,
            }),
        };
        assert!(f.matches(&backup("metadata", "normal", Some(100))));
        assert!(!f.matches(&backup("metadata", "normal", Some(200))));
        assert!(!f.matches(&backup("auto_metadata", "normal", Some(150))));
        assert!(!f.matches(&backup("metadata", "normal", None)));
        assert!(Filter::default().matches(&backup("x", "y", None)));
    }
}
