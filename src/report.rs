//! The protection report: which instances are backed up, and which are not. For every selected
//! target it joins the instance list (`GET /v1/{project}/instances`) with the backups
//! (ListBackups' fan-out), one row per instance, and classifies each:
//!
//! - PROTECTED: listed, its newest backup within `stale_after`;
//! - STALE: listed, its newest backup older;
//! - UNPROTECTED: listed, no backup at all;
//! - ORPHANED: backups of an instance that a *complete* instance list does not show (deleted);
//! - UNKNOWN: the instance list failed or is incomplete (for instances it does not show), or the
//!   backups could not be read: the gateway cannot tell, and never guesses.
//!
//! Memory: a few hundred bytes per instance (its counts and times), not the backups themselves.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt as _};
use prost_types::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::callers::Caller;
use crate::ddm::{DdmError, InstanceList};
use crate::inventory::{
    Account, Event, Inventory, InventoryError, Query, Selection, Tally, Target, TargetError,
    TargetResult, result_key, target_error,
};
use crate::wire::BackupFacts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protection {
    Protected,
    Stale,
    Unprotected,
    Orphaned,
    Unknown,
}

/// The default `stale_after`: the daily backup plus slack.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(26 * 3600);

/// What a caller asks of the report, validated.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub project_ids: Vec<String>,
    pub regions: Vec<String>,
    pub accounts: Vec<String>,
    pub stale_after: Duration,
    /// Rows to keep; empty: all (totals always count every row).
    pub protections: Vec<Protection>,
    pub max_age: Option<Duration>,
    pub deadline: Option<Instant>,
    pub caller: Arc<Caller>,
}

/// One instance of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    /// The member account, for a project reached through an agency.
    pub account: Option<Arc<Account>>,
    pub project_id: Arc<str>,
    pub project_name: String,
    pub region: String,
    pub instance_id: String,
    pub instance_name: String,
    /// From the instance list; empty when not listed.
    pub instance_status: String,
    pub protection: Protection,
    pub backup_count: u64,
    pub total_size_kb: f64,
    pub newest: Option<Timestamp>,
    pub oldest: Option<Timestamp>,
    pub newest_auto: Option<Timestamp>,
}

/// Rows counted by class, for one region or (region `""`) for all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub region: String,
    pub by_class: BTreeMap<Protection, u32>,
    pub backups: u64,
    pub total_size_kb: f64,
}

impl Totals {
    pub fn of(&self, p: Protection) -> u32 {
        self.by_class.get(&p).copied().unwrap_or(0)
    }
}

/// What a report's stream carries: each target's rows and result as it is joined, then totals.
#[derive(Debug)]
pub enum ReportEvent {
    Rows(Vec<InstanceRow>),
    TargetDone(Box<TargetResult>),
    Totals(Vec<Totals>),
}

/// The report's events. Dropping it stops its upstream work.
pub struct ReportStream {
    events: mpsc::Receiver<Result<ReportEvent, InventoryError>>,
    driver: tokio::task::AbortHandle,
}

impl Stream for ReportStream {
    type Item = Result<ReportEvent, InventoryError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for ReportStream {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Starts the report for `query`; the stream ends with totals, then an error only when not one
/// target could be read.
pub fn summarize(
    inventory: &Arc<Inventory>,
    query: ReportQuery,
) -> Result<ReportStream, InventoryError> {
    let selection = Selection {
        project_ids: &query.project_ids,
        regions: &query.regions,
        accounts: &query.accounts,
    };
    let targets = inventory.select_to_read(&selection, &query.caller.scope)?;
    let (tx, rx) = mpsc::channel(16);
    let span = tracing::info_span!(
        "call",
        caller = &*query.caller.name,
        method = "SummarizeBackups"
    );
    let driver = tokio::spawn(run(Arc::clone(inventory), targets, query, tx).instrument(span));
    Ok(ReportStream {
        events: rx,
        driver: driver.abort_handle(),
    })
}

/// What one instance's backups add up to.
#[derive(Default)]
struct Seen {
    name: String,
    count: u64,
    size_kb: f64,
    newest: Option<Timestamp>,
    oldest: Option<Timestamp>,
    newest_auto: Option<Timestamp>,
}

fn key(t: &Timestamp) -> (i64, i32) {
    (t.seconds, t.nanos)
}

impl Seen {
    fn add(&mut self, b: &BackupFacts) {
        if self.name.is_empty() {
            self.name = b.instance_name.clone();
        }
        self.count += 1;
        self.size_kb += b.size_kb;
        if let Some(c) = b.created {
            if self.newest.is_none_or(|n| key(&c) > key(&n)) {
                self.newest = Some(c);
            }
            if self.oldest.is_none_or(|o| key(&c) < key(&o)) {
                self.oldest = Some(c);
            }
            if b.auto && self.newest_auto.is_none_or(|n| key(&c) > key(&n)) {
                self.newest_auto = Some(c);
            }
        }
    }
}

async fn run(
    inventory: Arc<Inventory>,
    targets: Vec<Arc<Target>>,
    query: ReportQuery,
    tx: mpsc::Sender<Result<ReportEvent, InventoryError>>,
) {
    let started = Instant::now();
    let sent = AtomicU64::new(0);
    let lists = read_instance_lists(&inventory, &targets, &query, &sent);
    let backups = read_backups(&inventory, &targets, &query);
    let (lists, (mut seen, mut results)) = tokio::join!(lists, backups);

    let now = SystemTime::now();
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    let mut tally = Tally::default();
    for target in &targets {
        let list = lists.get(&target.key());
        let result = results.remove(&target.key());
        let instances = seen.remove(&target.project_id).unwrap_or_default();
        let (rows, result) = join(target, list, instances, result, &query, now);
        for row in &rows {
            add_to_totals(&mut totals, row);
        }
        tally.count(&result);
        let kept: Vec<_> = rows
            .into_iter()
            .filter(|r| query.protections.is_empty() || query.protections.contains(&r.protection))
            .collect();
        if !kept.is_empty() && tx.send(Ok(ReportEvent::Rows(kept))).await.is_err() {
            return;
        }
        if tx
            .send(Ok(ReportEvent::TargetDone(Box::new(result))))
            .await
            .is_err()
        {
            return;
        }
    }
    tracing::info!(
        caller = &*query.caller.name,
        method = "SummarizeBackups",
        projects = %crate::inventory::loggable(&query.project_ids),
        regions = %crate::inventory::loggable(&query.regions),
        ok = tally.ok,
        failed = tally.failed,
        elapsed = ?started.elapsed(),
        "call finished"
    );
    // Every region, then all of them together (region "").
    let mut all: Vec<Totals> = totals.into_values().collect();
    let first = 1.min(all.len());
    all.rotate_left(first);
    if tx.send(Ok(ReportEvent::Totals(all))).await.is_err() {
        return;
    }
    if let Some(e) = tally.nothing_answered() {
        let _ = tx.send(Err(e)).await;
    }
}

/// Counts a row in its region's totals and in the overall ones (region "").
fn add_to_totals(totals: &mut BTreeMap<String, Totals>, row: &InstanceRow) {
    for region in [row.region.clone(), String::new()] {
        let t = totals.entry(region.clone()).or_insert_with(|| Totals {
            region,
            ..Totals::default()
        });
        *t.by_class.entry(row.protection).or_default() += 1;
        t.backups += row.backup_count;
        t.total_size_kb = ((t.total_size_kb + row.total_size_kb) * 1e6).round() / 1e6;
    }
}

type InstanceLists = HashMap<Arc<str>, Result<Arc<crate::cache::Fresh<InstanceList>>, DdmError>>;

/// Every target's instance list, as many at once as targets are read at once.
async fn read_instance_lists(
    inventory: &Arc<Inventory>,
    targets: &[Arc<Target>],
    query: &ReportQuery,
    sent: &AtomicU64,
) -> InstanceLists {
    futures_util::stream::iter(targets.iter().cloned())
        .map(|t| async move {
            let list = inventory
                .instances(&t, query.max_age, query.deadline, sent)
                .await
                .map(|(list, _)| list);
            (t.key(), list)
        })
        .buffer_unordered(inventory.limits().max_concurrent_targets.max(1))
        .collect()
        .await
}

type BackupsByInstance = HashMap<Arc<str>, BTreeMap<String, Seen>>;

/// Every backup of every target, added up per instance, and each target's result.
async fn read_backups(
    inventory: &Arc<Inventory>,
    targets: &[Arc<Target>],
    query: &ReportQuery,
) -> (BackupsByInstance, HashMap<Arc<str>, TargetResult>) {
    let mut seen: BackupsByInstance = HashMap::new();
    let mut results = HashMap::new();
    let backups = Query {
        max_age: query.max_age,
        deadline: query.deadline,
        caller: Arc::clone(&query.caller),
        ..Query::default()
    };
    let mut events = inventory.list_targets_of(targets.to_vec(), backups);
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Backups(batch)) => {
                for b in crate::wire::backup_facts(&batch.encoded) {
                    seen.entry(Arc::clone(&b.project_id))
                        .or_default()
                        .entry(b.instance_id.clone())
                        .or_default()
                        .add(&b);
                }
            }
            Ok(Event::TargetDone(result)) => {
                results.insert(result_key(&result), *result);
            }
            Ok(Event::Finished(_)) | Err(_) => {}
        }
    }
    (seen, results)
}

impl InstanceRow {
    fn new(target: &Target, id: &str, status: &str, seen: Seen, protection: Protection) -> Self {
        InstanceRow {
            account: target.account.clone(),
            project_id: Arc::clone(&target.project_id),
            project_name: target.project_name.clone(),
            region: target.region.to_string(),
            instance_id: id.to_owned(),
            instance_name: seen.name,
            instance_status: status.to_owned(),
            protection,
            backup_count: seen.count,
            // Sums of the upstream's sizes, at its precision (no float noise).
            total_size_kb: (seen.size_kb * 1e6).round() / 1e6,
            newest: seen.newest,
            oldest: seen.oldest,
            newest_auto: seen.newest_auto,
        }
    }
}

/// One target's rows, and its result for both lists.
fn join(
    target: &Target,
    list: Option<&Result<Arc<crate::cache::Fresh<InstanceList>>, DdmError>>,
    mut instances: BTreeMap<String, Seen>,
    backups: Option<TargetResult>,
    query: &ReportQuery,
    now: SystemTime,
) -> (Vec<InstanceRow>, TargetResult) {
    let mut result = backups.unwrap_or_else(|| {
        let not_read = TargetError {
            kind: "internal".into(),
            message: "the target's backups were not read".into(),
            ..Default::default()
        };
        TargetResult::of(target, Some(not_read))
    });
    let backups_read = result.ok;
    let stale_before = Timestamp::from(now.checked_sub(query.stale_after).unwrap_or(now));
    let row = |id: &str, status: &str, seen: Option<Seen>, protection: Protection| {
        InstanceRow::new(target, id, status, seen.unwrap_or_default(), protection)
    };
    let mut rows = Vec::new();
    let complete = match list {
        Some(Ok(list)) => {
            for i in &list.instances {
                let seen = instances.remove(&i.id);
                let protection = match &seen {
                    _ if !backups_read => Protection::Unknown,
                    None => Protection::Unprotected,
                    Some(s) if s.newest.is_some_and(|n| key(&n) >= key(&stale_before)) => {
                        Protection::Protected
                    }
                    Some(_) => Protection::Stale,
                };
                let mut r = row(&i.id, &i.status, seen, protection);
                if r.instance_name.is_empty() {
                    r.instance_name = i.name.clone();
                }
                rows.push(r);
            }
            result.warnings.extend(list.warnings.iter().cloned());
            list.complete
        }
        Some(Err(e)) => {
            if result.ok {
                result.ok = false;
                result.error = Some(target_error(e));
            }
            false
        }
        None => false,
    };
    // Backups of instances the list does not show: gone, if the list is complete.
    for (id, seen) in std::mem::take(&mut instances) {
        let protection = if complete {
            Protection::Orphaned
        } else {
            Protection::Unknown
        };
        rows.push(row(&id, "", Some(seen), protection));
    }
    rows.sort_by(|a, b| {
        (a.instance_name.as_str(), a.instance_id.as_str())
            .cmp(&(b.instance_name.as_str(), b.instance_id.as_str()))
    });
    (rows, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddm::Credential;
    use crate::inventory::TargetSource;

    /// A target whose backups never came back is failed, and keyed as its own (a member
    /// account's project without an id yet is known by its account and name).
    #[test]
    fn a_target_without_backups_read_fails_as_itself() {
        let target = Target {
            project_id: "".into(),
            project_name: "cn-north-4_payments".into(),
            region: "cn-north-4".into(),
            endpoint: "http://127.0.0.1:1".into(),
            credential: Arc::new(Credential::token("t", "x".to_owned().into())),
            source: TargetSource::Organization,
            account: Some(Arc::new(Account {
                id: "0a1b".into(),
                name: "payments".into(),
                status: "active".into(),
            })),
        };
        let query = ReportQuery {
            project_ids: Vec::new(),
            regions: Vec::new(),
            accounts: Vec::new(),
            stale_after: Duration::from_secs(3600),
            protections: Vec::new(),
            max_age: None,
            deadline: None,
            caller: Arc::new(Caller::anonymous()),
        };
        let (rows, result) = join(
            &target,
            None,
            BTreeMap::new(),
            None,
            &query,
            SystemTime::now(),
        );
        assert!(rows.is_empty());
        assert!(!result.ok);
        assert_eq!(result.error.as_ref().map(|e| &*e.kind), Some("internal"));
        assert_eq!(
            (&*result.account_id, &*result.account_name),
            ("0a1b", "payments")
        );
        assert_eq!(result_key(&result), target.key());
    }
}
