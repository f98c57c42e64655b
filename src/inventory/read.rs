//! Reading one target for one query: its pages, fast, without emitting a backup twice or
//! silently losing one when the list shifts under us.
//!
//! The first page tells `total`, so the other pages are read concurrently. If the list changed
//! meanwhile (a page disagrees on `total`, a page is shorter than it should be, or a backup shows
//! up on two pages), the list is read again front to back, fresh from the upstream, until a short
//! page. Under DDM's churn — new backups at the front, old ones expiring at the end — reading front
//! to back can only show a backup twice (de-duplicated here), never skip one.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream;
use tokio::sync::mpsc;

use super::targets::{Target, TargetHealth};
use super::{Event, Inventory, InventoryError, Query};
use crate::cache::{CachedPage, Origin, PageKey};
use crate::ddm::{DdmError, Gate, MAX_PAGE_SIZE, PageRequest, Pushdown};
use crate::pb;

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
    pub(super) fn result(
        &self,
        target: &Target,
        error: Option<pb::TargetError>,
    ) -> pb::TargetResult {
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

pub(super) fn target_error(e: &DdmError) -> pb::TargetError {
    pb::TargetError {
        kind: e.kind().into(),
        error_code: match e {
            DdmError::DeadlineExceeded => "DEADLINE_EXCEEDED".into(),
            _ => e.code().into(),
        },
        message: e.to_string(),
        http_status: u32::from(e.http_status()),
        request_id: e.request_id().unwrap_or_default().into(),
        retryable: e.is_retryable() || matches!(e, DdmError::DeadlineExceeded),
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
}

/// Per-target bookkeeping across reads of its list.
#[derive(Default)]
struct Merge {
    /// Backup id → the read in which it was first seen.
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
    pub(super) async fn run(self) -> pb::TargetResult {
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

    /// Reads every page at once, after the first. `Ok(false)`: the list shifted meanwhile.
    /// A failed page ends the read with its error, after the other pages have been emitted.
    async fn read_concurrently(&self, merge: &mut Merge) -> Result<bool, DdmError> {
        let first = self.page(0, self.query.max_age).await?;
        let total = first.page.total;
        self.progress.total.store(total, Ordering::Relaxed);
        let mut consistent = self.emit(&first, 0, 1, merge).await && fits(&first, 0, total);

        let offsets = (u64::from(MAX_PAGE_SIZE)..total).step_by(MAX_PAGE_SIZE as usize);
        let mut pages = stream::iter(offsets)
            .map(|offset| async move { (offset, self.page(offset, self.query.max_age).await) })
            .buffer_unordered(self.inventory.limits.max_pages_per_target.max(1));
        let mut first_error = None;
        while let Some((offset, page)) = pages.next().await {
            match page {
                Ok(page) => {
                    consistent &=
                        self.emit(&page, offset, 1, merge).await && fits(&page, offset, total)
                }
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

    /// Reads page after page from the front, fresh from the upstream, until a short page.
    async fn read_in_order(&self, merge: &mut Merge) -> Result<(), DdmError> {
        let limit = u64::from(MAX_PAGE_SIZE);
        let mut totals = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.page(offset, Some(Duration::ZERO)).await?;
            self.progress
                .total
                .store(page.page.total, Ordering::Relaxed);
            totals.push(page.page.total);
            self.emit(&page, offset, 2, merge).await;
            // A list that grows without end is not followed forever.
            let bound = totals[0].saturating_mul(2).saturating_add(100 * limit);
            if (page.page.items as u64) < limit || offset + limit >= bound {
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
    async fn emit(&self, cached: &CachedPage, offset: u64, read: u32, merge: &mut Merge) -> bool {
        let page = &cached.page;
        self.progress.pages.fetch_add(1, Ordering::Relaxed);
        for why in &page.skipped {
            merge.skipped += 1;
            merge.warn(format!(
                "skipped an unreadable item at offset {offset}: {why}"
            ));
        }
        let mut no_overlap = true;
        let mut batch = Vec::new();
        for backup in &page.backups {
            match merge.seen.entry(backup.id.clone()) {
                Entry::Occupied(first_read) => {
                    no_overlap &= *first_read.get() != read;
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
            // A closed channel means the caller left; this task is being aborted as well.
            if self.tx.send(Ok(Event::Backups(batch))).await.is_ok() {
                self.progress.backups.fetch_add(n, Ordering::Relaxed);
                self.stats.backups.fetch_add(n, Ordering::Relaxed);
            }
        }
        no_overlap
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
            project_id: Arc::clone(&self.target.project_id),
            pushdown: Arc::clone(&self.pushdown),
            offset,
            limit: MAX_PAGE_SIZE,
        };
        let fetch = async {
            let request = PageRequest {
                endpoint: &self.target.endpoint,
                project_id: &self.target.project_id,
                region: &self.target.region,
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
fn fits(cached: &CachedPage, offset: u64, total: u64) -> bool {
    let expected = total.saturating_sub(offset).min(u64::from(MAX_PAGE_SIZE));
    cached.page.total == total && cached.page.items as u64 == expected
}
