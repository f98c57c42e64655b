//! One call's fan-out: the targets it selects are read under the limits (a slot each, so
//! that a waiting target costs nothing), each target's outcome is reported as it ends, and the
//! summary closes the stream; what the deadline cuts short is reported as such.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::read::{QueryStats, TargetProgress, TargetRead};
use super::{
    Event, EventStream, Events, Inventory, InventoryError, Order, Query, Summary, Tally, Target,
    TargetError, TargetResult, loggable, order,
};
use crate::ddm::Pushdown;

impl Inventory {
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
            concluded: false,
        }
    }

    async fn drive(
        self: Arc<Self>,
        targets: Vec<Arc<Target>>,
        query: Arc<Query>,
        tx: mpsc::Sender<Result<Event, InventoryError>>,
    ) {
        let started = Instant::now();
        let call = CallShares {
            pushdown: Arc::new(query.pushdown.clone()),
            query: Arc::clone(&query),
            stats: Arc::default(),
            tx: tx.clone(),
            page_budget: Arc::new(Semaphore::new(self.limits.max_concurrent_requests.max(1))),
        };
        let target_slots = Arc::new(Semaphore::new(self.limits.max_concurrent_targets.max(1)));
        let progress: Vec<Arc<TargetProgress>> = targets.iter().map(|_| Arc::default()).collect();
        let mut running = JoinSet::new();
        let mut reading = HashMap::new();
        // Targets are spawned only once a slot is free: a waiting target costs nothing.
        let mut waiting = targets.iter().enumerate();
        let mut next = waiting.next();

        let mut tally = Tally::default();
        let mut finished = vec![false; targets.len()];
        let mut out_of_time = false;
        let deadline = sleep_until_opt(query.deadline);
        tokio::pin!(deadline);
        loop {
            let busy = next.is_some() || !running.is_empty();
            let joined = tokio::select! {
                biased;
                () = &mut deadline, if busy => {
                    out_of_time = true;
                    break;
                }
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => joined,
                slot = Arc::clone(&target_slots).acquire_owned(), if next.is_some() => {
                    let (Some((index, target)), Ok(slot)) = (next, slot) else { break };
                    let read = self.target_read(&call, target, &progress[index]);
                    let handle: AbortHandle = running.spawn(read.run().in_current_span());
                    reading.insert(handle.id(), Reading { index, _slot: slot });
                    next = waiting.next();
                    continue;
                }
                else => break,
            };
            let (ended, result) = outcome(joined, &mut reading, &targets, &progress);
            finished[ended.index] = true;
            if !self
                .report(&targets[ended.index], result, &query, &mut tally, &tx)
                .await
            {
                return;
            }
            // Its slot is free only now: a target's task is freed when joined, and while ended
            // ones waited to be joined, new ones started (4,000 piled up over 10,000 targets).
            drop(ended);
        }
        if out_of_time {
            let results = ran_out_of_time(
                &mut running,
                &mut finished,
                &mut reading,
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

        Self::finish(started, &call.stats, &tally, &query, &tx).await;
    }

    /// One target's read in a call.
    fn target_read(
        self: &Arc<Self>,
        call: &CallShares,
        target: &Arc<Target>,
        progress: &Arc<TargetProgress>,
    ) -> TargetRead {
        TargetRead {
            inventory: Arc::clone(self),
            target: Arc::clone(target),
            health: self.health(target),
            query: Arc::clone(&call.query),
            pushdown: Arc::clone(&call.pushdown),
            stats: Arc::clone(&call.stats),
            progress: Arc::clone(progress),
            tx: call.tx.clone(),
            page_budget: Arc::clone(&call.page_budget),
        }
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

/// What every target read of one call shares.
struct CallShares {
    query: Arc<Query>,
    pushdown: Arc<Pushdown>,
    stats: Arc<QueryStats>,
    tx: mpsc::Sender<Result<Event, InventoryError>>,
    /// Pages past the targets' first ones that the call holds at once (`TargetRead::page_budget`).
    page_budget: Arc<Semaphore>,
}

/// A target being read: which one, and the slot it holds until its result is reported.
struct Reading {
    index: usize,
    _slot: OwnedSemaphorePermit,
}

/// What a finished (or crashed) target read says about its target, and which target it was.
fn outcome(
    joined: Joined,
    reading: &mut HashMap<tokio::task::Id, Reading>,
    targets: &[Arc<Target>],
    progress: &[Arc<TargetProgress>],
) -> (Reading, TargetResult) {
    // Entries go as their tasks end: a call over 100,000 targets holds the running ones only.
    let mut ended = |id| reading.remove(&id).expect("every spawned read is indexed");
    match joined {
        Ok((id, result)) => (ended(id), result),
        Err(e) => {
            let ended = ended(e.id());
            let index = ended.index;
            tracing::error!(project = &*targets[index].project_id, error = %e, "target read crashed");
            let error = TargetError {
                kind: "internal".into(),
                message: "the gateway failed while reading this target".into(),
                ..Default::default()
            };
            (ended, progress[index].result(&targets[index], Some(error)))
        }
    }
}

/// The deadline ran out: targets that finished just now count as finished; the others (their
/// reads aborted here) ran out of time.
fn ran_out_of_time(
    running: &mut JoinSet<TargetResult>,
    finished: &mut [bool],
    reading: &mut HashMap<tokio::task::Id, Reading>,
    targets: &[Arc<Target>],
    progress: &[Arc<TargetProgress>],
) -> Vec<(usize, TargetResult)> {
    let mut results = Vec::new();
    while let Some(joined) = running.try_join_next_with_id() {
        let (ended, result) = outcome(joined, reading, targets, progress);
        finished[ended.index] = true;
        results.push((ended.index, result));
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
