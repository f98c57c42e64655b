//! The inventory: where a query fans out. Plans the targets a query selects, reads every page of
//! every target under limits (through the page cache), merges, filters and de-duplicates, and
//! emits batches and per-target outcomes on a bounded channel, so a slow caller slows the fan-out
//! instead of growing memory.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::{self, Stream};
use prost_types::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::cache::{CachedPage, Origin, PageCache, PageKey};
use crate::ddm::{Credential, DdmClient, DdmError, MAX_PAGE_SIZE, PageRequest, Pushdown};
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
    /// Reads of a target whose list keeps changing, before the inconsistency is reported.
    pub max_reads_per_target: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_requests: 64,
            max_concurrent_targets: 64,
            max_pages_per_target: 8,
            stream_buffer: 16,
            max_reads_per_target: 3,
        }
    }
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
    fn matches(&self, b: &pb::Backup) -> bool {
        (self.backup_types.is_empty() || self.backup_types.contains(&b.backup_type_name))
            && (self.statuses.is_empty() || self.statuses.contains(&b.status))
            && self.created_in_range(b.created.as_ref())
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
    Backups(Vec<pb::Backup>),
    TargetDone(pb::TargetResult),
    Finished(pb::Summary),
}

pub struct Inventory {
    targets: TargetSet,
    client: DdmClient,
    cache: PageCache,
    limits: Limits,
    upstream_slots: Arc<Semaphore>,
}

impl Inventory {
    pub fn new(targets: Vec<Target>, client: DdmClient, cache: PageCache, limits: Limits) -> Self {
        let upstream_slots = Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1)));
        Inventory {
            targets: TargetSet::new(targets),
            client,
            cache,
            limits,
            upstream_slots,
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
        for (index, target) in targets.iter().enumerate() {
            let job = TargetRead {
                inventory: Arc::clone(&self),
                target: Arc::clone(target),
                query: Arc::clone(&query),
                pushdown: Arc::clone(&pushdown),
                stats: Arc::clone(&stats),
                progress: Arc::clone(&progress[index]),
                tx: tx.clone(),
            };
            let slots = Arc::clone(&target_slots);
            let handle: AbortHandle = running.spawn(async move {
                let _slot = slots.acquire_owned().await;
                job.run().await
            });
            index_of.insert(handle.id(), index);
        }

        let (mut ok, mut failed) = (0u32, 0u32);
        let mut finished = vec![false; targets.len()];
        let deadline = query.deadline;
        loop {
            let joined = tokio::select! {
                joined = running.join_next_with_id() => joined,
                _ = sleep_until_opt(deadline) => {
                    running.abort_all();
                    for (index, done) in finished.iter().enumerate() {
                        if !done {
                            failed += 1;
                            let result = progress[index].result(&targets[index], Some(deadline_error()));
                            if tx.send(Ok(Event::TargetDone(result))).await.is_err() {
                                return;
                            }
                        }
                    }
                    break;
                }
            };
            let result = match joined {
                None => break,
                Some(Ok((id, result))) => {
                    finished[index_of[&id]] = true;
                    result
                }
                Some(Err(e)) => {
                    let index = index_of[&e.id()];
                    finished[index] = true;
                    tracing::error!(project = &*targets[index].project_id, error = %e, "target read crashed");
                    let error = pb::TargetError {
                        kind: "internal".into(),
                        message: "the gateway failed while reading this target".into(),
                        ..Default::default()
                    };
                    progress[index].result(&targets[index], Some(error))
                }
            };
            if result.ok {
                ok += 1;
            } else {
                failed += 1;
            }
            if tx.send(Ok(Event::TargetDone(result))).await.is_err() {
                return;
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

fn target_error(e: &DdmError) -> pb::TargetError {
    pb::TargetError {
        kind: e.kind().into(),
        error_code: e.code().into(),
        message: e.to_string(),
        http_status: u32::from(e.http_status()),
        request_id: e.request_id().unwrap_or_default().into(),
        retryable: e.is_retryable() || matches!(e, DdmError::DeadlineExceeded),
    }
}

/// Configured targets and discovered ones, as one list that queries take snapshots of.
struct TargetSet {
    configured: Vec<Arc<Target>>,
    discovered: std::sync::Mutex<std::collections::BTreeMap<String, Vec<Arc<Target>>>>,
    current: std::sync::RwLock<Arc<Vec<Arc<Target>>>>,
}

impl TargetSet {
    fn new(configured: Vec<Target>) -> Self {
        let configured: Vec<_> = configured.into_iter().map(Arc::new).collect();
        TargetSet {
            current: std::sync::RwLock::new(Arc::new(interleave_regions(configured.clone()))),
            configured,
            discovered: Default::default(),
        }
    }

    fn current(&self) -> Arc<Vec<Arc<Target>>> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set_discovered(&self, credential: &str, found: Vec<Target>) {
        let mut discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        discovered.insert(
            credential.to_owned(),
            found.into_iter().map(Arc::new).collect(),
        );
        let mut all = self.configured.clone();
        let mut seen: std::collections::HashSet<Arc<str>> =
            all.iter().map(|t| Arc::clone(&t.project_id)).collect();
        for t in discovered.values().flatten() {
            if seen.insert(Arc::clone(&t.project_id)) {
                all.push(Arc::clone(t));
            }
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(interleave_regions(all));
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

#[derive(Default)]
struct QueryStats {
    backups: AtomicU64,
    upstream_requests: AtomicU64,
    cache_hits: AtomicU64,
}

/// What a target has done so far, readable when its task is aborted at the deadline.
#[derive(Default)]
struct TargetProgress {
    backups: AtomicU64,
    total: AtomicU64,
    pages: AtomicU32,
}

impl TargetProgress {
    fn result(&self, target: &Target, error: Option<pb::TargetError>) -> pb::TargetResult {
        pb::TargetResult {
            project_id: target.project_id.to_string(),
            project_name: target.project_name.clone(),
            region: target.region.clone(),
            ok: error.is_none(),
            backups: self.backups.load(Ordering::Relaxed),
            upstream_total: self.total.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            error,
            ..Default::default()
        }
    }
}

/// Warnings kept per target; more are counted, not listed.
const MAX_WARNINGS: usize = 10;

/// Reading every page of one target for one query.
struct TargetRead {
    inventory: Arc<Inventory>,
    target: Arc<Target>,
    query: Arc<Query>,
    pushdown: Arc<Pushdown>,
    stats: Arc<QueryStats>,
    progress: Arc<TargetProgress>,
    tx: mpsc::Sender<Result<Event, InventoryError>>,
}

/// Per-target bookkeeping across reads of its list.
#[derive(Default)]
struct Merge {
    /// Backup id → the read in which it was first seen. Ids seen twice in one read show
    /// a list that shifted under us.
    seen: HashMap<String, u32>,
    skipped: u32,
    warnings: Vec<String>,
}

impl Merge {
    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        }
    }
}

impl TargetRead {
    async fn run(self) -> pb::TargetResult {
        let mut merge = Merge::default();
        let mut max_age = self.query.max_age;
        let mut first_error: Option<DdmError> = None;
        let mut read = 0;
        loop {
            read += 1;
            match self.read_list(read, max_age, &mut merge).await {
                Ok(true) => break,
                Ok(false) if read < self.inventory.limits.max_reads_per_target => {
                    // The list changed while we read it: read it again, from the upstream.
                    max_age = Some(Duration::ZERO);
                }
                Ok(false) => {
                    merge.warn(format!(
                        "the upstream list kept changing over {read} reads; backups added or removed meanwhile may be missing"
                    ));
                    break;
                }
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
        let mut result = self
            .progress
            .result(&self.target, first_error.as_ref().map(target_error));
        result.skipped_items = merge.skipped;
        result.warnings = merge.warnings;
        result
    }

    /// Reads the whole list once. `Ok(true)`: consistent; `Ok(false)`: it shifted while read.
    /// Pages that fail after retries end the read with the first error, after the other pages
    /// have been emitted.
    async fn read_list(
        &self,
        read: u32,
        max_age: Option<Duration>,
        merge: &mut Merge,
    ) -> Result<bool, DdmError> {
        let first = self.page(0, max_age).await?;
        let total = first.page.total;
        self.progress.total.store(total, Ordering::Relaxed);
        let mut consistent = self.emit(&first, 0, total, read, merge).await;

        let limit = u64::from(MAX_PAGE_SIZE);
        let offsets = (limit..total).step_by(MAX_PAGE_SIZE as usize);
        let mut pages = stream::iter(offsets)
            .map(|offset| async move { (offset, self.page(offset, max_age).await) })
            .buffer_unordered(self.inventory.limits.max_pages_per_target.max(1));
        let mut first_error = None;
        while let Some((offset, page)) = pages.next().await {
            match page {
                Ok(page) => consistent &= self.emit(&page, offset, total, read, merge).await,
                Err(e) => {
                    tracing::warn!(project = &*self.target.project_id, offset, error = %e, "page failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(consistent),
        }
    }

    /// Sends a page's new, matching backups. Returns whether the page fits the list as the
    /// first page described it.
    async fn emit(
        &self,
        cached: &CachedPage,
        offset: u64,
        total: u64,
        read: u32,
        merge: &mut Merge,
    ) -> bool {
        let page = &cached.page;
        self.progress.pages.fetch_add(1, Ordering::Relaxed);
        let expected = total.saturating_sub(offset).min(u64::from(MAX_PAGE_SIZE));
        let mut consistent = page.total == total && page.items as u64 == expected;
        for why in &page.skipped {
            merge.skipped += 1;
            merge.warn(format!(
                "skipped an unreadable item at offset {offset}: {why}"
            ));
        }
        let mut batch = Vec::new();
        for backup in &page.backups {
            match merge.seen.entry(backup.id.clone()) {
                Entry::Occupied(first_read) => {
                    if *first_read.get() == read {
                        consistent = false; // the same backup on two pages of one read
                    }
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(read);
                }
            }
            if self.query.filter.matches(backup) {
                batch.push(backup.clone());
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            // A closed channel means the caller left; the driver is being aborted as well.
            if self.tx.send(Ok(Event::Backups(batch))).await.is_ok() {
                self.progress.backups.fetch_add(n, Ordering::Relaxed);
                self.stats.backups.fetch_add(n, Ordering::Relaxed);
            }
        }
        consistent
    }

    async fn page(
        &self,
        offset: u64,
        max_age: Option<Duration>,
    ) -> Result<Arc<CachedPage>, DdmError> {
        let inventory = &self.inventory;
        let key = PageKey {
            endpoint: Arc::clone(&self.target.endpoint),
            project_id: Arc::clone(&self.target.project_id),
            pushdown: Arc::clone(&self.pushdown),
            offset,
            limit: MAX_PAGE_SIZE,
        };
        let fetch = async {
            let _slot = inventory
                .upstream_slots
                .acquire()
                .await
                .map_err(|_| DdmError::Transport("the gateway is shutting down".into()))?;
            let request = PageRequest {
                endpoint: &self.target.endpoint,
                project_id: &self.target.project_id,
                region: &self.target.region,
                pushdown: &self.pushdown,
                offset,
                limit: MAX_PAGE_SIZE,
                deadline: self.query.deadline,
                sent: &self.stats.upstream_requests,
            };
            inventory
                .client
                .list_backups(&request, &self.target.credential)
                .await
        };
        match inventory.cache.get_or_fetch(key, max_age, fetch).await {
            Ok((page, origin)) => {
                if origin == Origin::Cache {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(page)
            }
            Err(shared) => Err((*shared).clone()),
        }
    }
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

    fn backup(kind: &str, status: &str, created: Option<i64>) -> pb::Backup {
        pb::Backup {
            backup_type_name: kind.into(),
            status: status.into(),
            created: created.map(|seconds| Timestamp { seconds, nanos: 0 }),
            ..Default::default()
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
