//! Reading one target for one query: its pages, fast, without emitting a backup twice or
//! silently losing one when the list shifts under us.
//!
//! The first page tells `total`, so the other pages are read concurrently (for a list read whole
//! before, beside the first page, up to the total that read ended with). If the list changed
//! meanwhile (a page disagrees on `total`, a page is shorter than it should be, or a backup shows
//! up on two pages), the list is read again front to back, fresh from the upstream, until a short
//! page. Under DDM's churn — new backups at the front, old ones expiring at the end — reading front
//! to back can only show a backup twice (de-duplicated here), never skip one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};

use super::seen::SeenIds;
use super::targets::{Target, TargetHealth};
use super::{EncodedBatch, Event, Inventory, InventoryError, Query, TargetError, TargetResult};
use crate::cache::{CachedPage, Origin, PageKey};
use crate::ddm::{DdmError, Gate, MAX_PAGE_SIZE, PageRequest, Pushdown};
use crate::wire::Owner;

/// Warnings kept per target; more are counted, not listed.
const MAX_WARNINGS: usize = 10;

#[derive(Default)]
pub(super) struct QueryStats {
    pub backups: AtomicU64,
    pub upstream_requests: AtomicU64,
    pub cache_hits: AtomicU64,
}

/// What a target has done so far, readable when its task is aborted at the deadline.
#[derive(Default)]
pub(super) struct TargetProgress {
    backups: AtomicU64,
    total: AtomicU64,
    pages: AtomicU32,
}

impl TargetProgress {
    pub(super) fn result(&self, target: &Target, error: Option<TargetError>) -> TargetResult {
        TargetResult {
            backups: self.backups.load(Ordering::Relaxed),
            upstream_total: self.total.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            ..TargetResult::of(target, error)
        }
    }
}

/// A target's failure as `TargetResult.error` says it: built here, in one place.
pub fn target_error(e: &DdmError) -> TargetError {
    TargetError {
        kind: e.kind().into(),
        error_code: match e {
            DdmError::DeadlineExceeded => "DEADLINE_EXCEEDED".into(),
            _ => e.code().into(),
        },
        message: e.to_string(),
        http_status: u32::from(e.http_status()),
        request_id: e.request_id().unwrap_or_default().into(),
        retryable: e.may_succeed_later(),
    }
}

pub(super) struct TargetRead {
    pub inventory: Arc<Inventory>,
    pub target: Arc<Target>,
    pub health: Arc<TargetHealth>,
    pub query: Arc<Query>,
    pub pushdown: Arc<Pushdown>,
    pub stats: Arc<QueryStats>,
    pub progress: Arc<TargetProgress>,
    pub tx: mpsc::Sender<Result<Event, InventoryError>>,
    /// The call's pages past its targets' first ones, from when each is asked for until it is
    /// handed to the caller's stream (see `read_concurrently`).
    pub page_budget: Arc<Semaphore>,
}

/// A page's share of its call's `page_budget` (`None` only if the budget were closed).
type Held<'a> = Option<SemaphorePermit<'a>>;

/// Per-target bookkeeping across reads of its list.
#[derive(Default)]
struct Merge {
    seen: SeenIds,
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
    pub(super) async fn run(self) -> TargetResult {
        let mut merge = Merge::default();
        let outcome = match self.read_concurrently(&mut merge).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::info!(
                    project = &*self.target.project_id,
                    "the list changed while read; reading it again front to back"
                );
                // Skips are counted again on the re-read.
                merge.skipped = 0;
                merge.warnings.retain(|w| !w.starts_with("skipped"));
                self.read_in_order(&mut merge).await
            }
            Err(e) => Err(e),
        };
        let mut result = self
            .progress
            .result(&self.target, outcome.err().as_ref().map(target_error));
        result.skipped_items = merge.skipped;
        result.warnings = merge.warnings;
        result
    }

    /// Reads every page at once. `Ok(false)`: the list shifted meanwhile. A failed page ends
    /// the read with its error, after the other pages have been emitted.
    ///
    /// The first page tells `total`; the pages the target's whole list had when it was last
    /// read whole are asked for beside it, not one round trip after it (a list seldom changes
    /// between two queries). Pages the list no longer has come back empty and are checked like any
    /// other; the first page is sent before them.
    ///
    /// Pages in flight are polled while a batch waits for room in the caller's stream, so a
    /// caller that does not read never holds an upstream slot or another caller's shared fetch;
    /// and no new page is asked for while a fetched one waits to be sent.
    ///
    /// Each page past the first takes one of the call's `page_budget` (as many as the upstream
    /// requests the gateway makes at once) until it is sent: the upstream cannot be asked for
    /// more at once anyway, and when the caller's stream is the slower side, what waits for it
    /// is bounded by the call, not by its targets × `max_pages_per_target` (measured side by
    /// side, a million backups at the default limits: 108–112 MiB peak with the budget, 114–122
    /// MiB without).
    async fn read_concurrently(&self, merge: &mut Merge) -> Result<bool, DdmError> {
        // Boxed, here and below: a page's read is a large future (the fetch, its retries, the
        // cache), needed only while it runs; inline, it would make this task and every slot
        // of `in_flight` as large for the whole read (and moving them costs copies).
        let mut first = Some(Box::pin(self.page(0, self.query.max_age)));
        // Only the whole list's total is kept: a filtered one says nothing of another filter.
        let whole_list = *self.pushdown == Pushdown::default();
        let page_size = u64::from(MAX_PAGE_SIZE);
        let mut next = page_size;
        // Until the first page tells: the total of the list's last whole read (0: none).
        let mut end = if whole_list {
            self.health.listed_total()
        } else {
            0
        };
        let mut total = None;
        let most = self.inventory.limits.max_pages_per_target.max(1);
        let mut in_flight = FuturesUnordered::new();
        let mut ready: VecDeque<(u64, Arc<CachedPage>, Held<'_>)> = VecDeque::new();
        let mut first_error = None;
        let mut consistent = true;
        loop {
            while ready.is_empty() && in_flight.len() < most && next < end {
                let offset = next;
                next += page_size;
                in_flight.push(Box::pin(async move {
                    let held = self.page_budget.acquire().await.ok();
                    (offset, self.page(offset, self.query.max_age).await, held)
                }));
            }
            if first.is_none() && in_flight.is_empty() && ready.is_empty() {
                break;
            }
            tokio::select! {
                page = async { first.as_mut().expect("checked").await }, if first.is_some() => {
                    first = None;
                    let page = page?;
                    total = Some(page.total);
                    end = page.total;
                    self.progress.total.store(page.total, Ordering::Relaxed);
                    ready.push_front((0, page, None));
                }
                Some((offset, page, held)) = in_flight.next(), if !in_flight.is_empty() => match page {
                    Ok(page) => ready.push_back((offset, page, held)),
                    Err(e) => {
                        tracing::warn!(project = &*self.target.project_id, offset, error = %e, "page failed");
                        first_error.get_or_insert(e);
                    }
                },
                room = self.tx.reserve(), if total.is_some() && !ready.is_empty() => {
                    // The caller has gone: this task is being aborted.
                    let Ok(room) = room else { return Ok(consistent) };
                    // Its share of the budget is given back once the batch is sent.
                    let (offset, page, _held) = ready.pop_front().expect("a page is ready");
                    let total = total.expect("checked");
                    let (batch, no_overlap) = self.select(&page, offset, 1, merge);
                    if let Some(batch) = batch {
                        self.count_sent(batch.count as u64);
                        room.send(Ok(Event::Backups(batch)));
                    }
                    consistent &= no_overlap && fits(&page, offset, total);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                // Only a list read whole is a guess for the next read: reads cancelled after
                // their first pages (a storm of them) would otherwise each ask for whole lists.
                if let (true, true, Some(total)) = (whole_list, consistent, total) {
                    self.health.note_listed_total(total);
                }
                Ok(consistent)
            }
        }
    }

    /// Reads page after page from the front, fresh from the upstream, until a short page.
    async fn read_in_order(&self, merge: &mut Merge) -> Result<(), DdmError> {
        let limit = u64::from(MAX_PAGE_SIZE);
        let mut totals = Vec::new();
        let mut offset = 0;
        loop {
            let page = Box::pin(self.page(offset, Some(Duration::ZERO))).await?;
            self.progress.total.store(page.total, Ordering::Relaxed);
            totals.push(page.total);
            let short = (page.items as u64) < limit;
            self.emit(page, offset, 2, merge).await;
            // A list that grows without end is not followed forever.
            let bound = totals[0].saturating_mul(2).saturating_add(100 * limit);
            if short || offset + limit >= bound {
                break;
            }
            offset += limit;
        }
        let (first, last) = (totals[0], totals[totals.len() - 1]);
        if totals.iter().any(|t| *t != first) {
            merge.warn(format!(
                "the upstream list kept changing while it was read (total {first} → {last}); backups added meanwhile may be missing"
            ));
        }
        Ok(())
    }

    /// Sends a page's new, matching backups. Returns false if a backup of this page was already
    /// seen in the same read (the list shifted).
    async fn emit(&self, page: Arc<CachedPage>, offset: u64, read: u32, merge: &mut Merge) -> bool {
        let (batch, no_overlap) = self.select(&page, offset, read, merge);
        // Not held while the batch waits: the batch holds what it sends, and a target read
        // keeps no page past its turn (its first page, held to the end, was 2.4 MB of a million
        // backups' peak at 64 targets at once).
        drop(page);
        if let Some(batch) = batch {
            let n = batch.count as u64;
            // A closed channel means the caller left; this task is being aborted as well.
            if self.tx.send(Ok(Event::Backups(batch))).await.is_ok() {
                self.count_sent(n);
            }
        }
        no_overlap
    }

    fn count_sent(&self, n: u64) {
        self.progress.backups.fetch_add(n, Ordering::Relaxed);
        self.stats.backups.fetch_add(n, Ordering::Relaxed);
    }

    /// A page's new, matching backups as one batch (none when nothing is left), and whether no
    /// backup of it was already seen in the same read.
    fn select(
        &self,
        page: &CachedPage,
        offset: u64,
        read: u32,
        merge: &mut Merge,
    ) -> (Option<EncodedBatch>, bool) {
        self.progress.pages.fetch_add(1, Ordering::Relaxed);
        for why in &page.skipped {
            merge.skipped += 1;
            merge.warn(format!(
                "skipped an unreadable item at offset {offset}: {why}"
            ));
        }
        merge.seen.reserve_for(page);
        let mut no_overlap = true;
        let unfiltered = self.query.filter.is_empty();
        // While every backup so far is chosen, the batch is a prefix of the page (no copy);
        // at the first one left out, the chosen ones are copied from then on.
        let (mut chosen, mut copied) = (0, None::<BytesMut>);
        for i in 0..page.len() {
            let keep = match merge.seen.first_seen(page.id_bytes(i), read) {
                Some(first_read) => {
                    no_overlap &= first_read != read;
                    false
                }
                None => unfiltered || self.query.filter.matches(&page.meta(i)),
            };
            match (&mut copied, keep) {
                (None, true) => chosen += 1,
                (None, false) => copied = Some(BytesMut::from(&page.encoded[..page.start_of(i)])),
                (Some(out), true) => {
                    chosen += 1;
                    out.extend_from_slice(&page.encoded[page.start_of(i)..page.end_of(i)]);
                }
                (Some(_), false) => {}
            }
        }
        if chosen == 0 {
            return (None, no_overlap);
        }
        // The whole page as cached (the usual case) costs no copy.
        let encoded = match copied {
            None => page.encoded.clone(),
            Some(out) => out.freeze(),
        };
        let batch = EncodedBatch {
            encoded,
            count: chosen,
        };
        (Some(batch), no_overlap)
    }

    async fn page(
        &self,
        offset: u64,
        max_age: Option<Duration>,
    ) -> Result<Arc<CachedPage>, DdmError> {
        let inventory = &self.inventory;
        let region = inventory.region_gate(&self.target.region);
        let key = PageKey {
            endpoint: Arc::clone(&self.target.endpoint),
            target: self.target.key(),
            pushdown: Arc::clone(&self.pushdown),
            offset,
            limit: MAX_PAGE_SIZE,
        };
        let (account_id, account_name) = self.target.account_id_and_name();
        let fetch = || async {
            let request = PageRequest {
                endpoint: &self.target.endpoint,
                owner: Owner {
                    project_id: &self.target.project_id,
                    project_name: &self.target.project_name,
                    region: &self.target.region,
                    account_id,
                    account_name,
                },
                pushdown: &self.pushdown,
                offset,
                limit: MAX_PAGE_SIZE,
                deadline: self.query.deadline,
                sent: &self.stats.upstream_requests,
                gate: Gate {
                    global: Some(&inventory.upstream_slots),
                    region: region.slots.as_ref(),
                    pace: region.pace.as_ref(),
                },
                backoff_until: Some(&self.health.backoff_until_ms),
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

/// Whether a page is what the list described by `total` has at `offset`.
fn fits(page: &CachedPage, offset: u64, total: u64) -> bool {
    let expected = total.saturating_sub(offset).min(u64::from(MAX_PAGE_SIZE));
    page.total == total && page.items as u64 == expected
}
