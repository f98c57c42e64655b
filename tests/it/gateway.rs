//! The gateway end to end: the inventory, failures in-stream, paging, the cache, what a call
//! holds.

use std::collections::HashSet;
use std::sync::Arc;

use backupgw::inventory::{Event, Inventory, Limits, Query};
use backupgw::pb;
use backupgw::sim::DataSpec;
use backupgw::sim::data::SimProject;
use futures_util::StreamExt as _;

use crate::common::*;

#[tokio::test]
async fn the_streamed_inventory_equals_the_data_set() {
    // 9 targets × 300 backups: 3 pages each (128 + 128 + 44), in 3 regions.
    let spec = small_spec();
    let (sim, mut gw) = start_pair(&spec).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(got.status.is_none(), "{:?}", got.status);

    let by_key = got.by_key();
    assert_eq!(by_key.len(), spec.total_backups());
    for project in &sim.data().projects {
        for b in &project.backups {
            let id = SimProject::backup_id(b);
            let got = &by_key[&(project.id.clone(), id.clone())];
            let info = project.render(b);
            let instance = &project.instances[b.instance as usize];
            assert_eq!(got.name, info.name.unwrap());
            assert_eq!(got.description, info.description.unwrap());
            assert_eq!(got.status, b.status);
            assert_eq!(got.instance_id, instance.id);
            assert_eq!(got.instance_name, instance.name);
            assert_eq!(got.instance_status, instance.status);
            assert_eq!(got.file_size_kb, b.size_kb);
            // The simulator writes times at +0000 or +0800; the instant must survive.
            assert_eq!(got.created.unwrap().seconds, b.created, "{id} created");
            assert_eq!(got.updated.unwrap().seconds, b.updated, "{id} updated");
            assert_eq!(got.backup_type_name, b.kind.as_str());
            let kind = match b.kind.as_str() {
                "auto_metadata" => pb::BackupType::AutoMetadata,
                _ => pb::BackupType::Metadata,
            };
            assert_eq!(got.backup_type(), kind);
            assert_eq!(got.region, project.region);
            assert_eq!(got.project_name, project.name);
        }
    }
    assert!(
        sim.data()
            .projects
            .iter()
            .any(|p| p.utc_offset_minutes == 480),
        "the data set should exercise +0800 times"
    );

    assert_eq!(got.targets.len(), 9);
    for t in &got.targets {
        assert!(t.ok, "{t:?}");
        assert_eq!(
            (t.backups, t.upstream_total, t.pages),
            (300, 300, 3),
            "{t:?}"
        );
    }
    let summary = got.summary.unwrap();
    assert_eq!((summary.targets_ok, summary.targets_failed), (9, 0));
    assert_eq!(summary.backups, spec.total_backups() as u64);
    assert_eq!(summary.upstream_requests, 9 * 3);
    assert_eq!(sim.stats().list_requests, 9 * 3);
    assert!(
        got.messages < got.backups.len() / 50,
        "backups come in batches, not one by one"
    );
}

#[tokio::test]
async fn a_bad_token_and_a_dead_region_fail_alone() {
    let spec = small_spec();
    let sim = start_sim(&spec, sim_options()).await;
    let mut targets = backupgw::demo::sim_targets(&sim, token_credential("good", TOKEN));
    let data = sim.data();
    // One project with a wrong token.
    let wrong = data.projects[1].id.clone();
    targets
        .iter_mut()
        .find(|t| *t.project_id == *wrong)
        .unwrap()
        .credential = token_credential("stale", "not-the-token");
    // A region whose endpoint answers nothing: a port that was bound and released.
    let dead_region = data.regions[2].clone();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for t in targets.iter_mut().filter(|t| *t.region == *dead_region) {
        t.endpoint = dead.as_str().into();
    }
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(got.status.is_none(), "{:?}", got.status);

    let bad = got.target(&wrong);
    assert!(!bad.ok);
    let e = bad.error.as_ref().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.error_code.as_str(), e.http_status),
        ("auth", "APIGW.0301", 401)
    );
    assert!(
        e.message.contains("\"stale\""),
        "names the credential: {e:?}"
    );
    assert_eq!(e.request_id.len(), 32, "{e:?}");
    assert!(!e.retryable);
    assert!(!e.message.contains(TOKEN) && !e.message.contains("not-the-token"));

    for p in data.projects.iter().filter(|p| p.region == dead_region) {
        let r = got.target(&p.id);
        let e = r.error.as_ref().unwrap();
        assert_eq!(
            (r.ok, e.kind.as_str(), e.http_status),
            (false, "transport", 0),
            "{r:?}"
        );
        assert!(e.message.contains("onnect"), "{e:?}");
    }
    // Everyone else is complete.
    let by_key = got.by_key();
    for p in data
        .projects
        .iter()
        .filter(|p| p.region != dead_region && p.id != wrong)
    {
        assert!(got.target(&p.id).ok);
        assert_eq!(by_key.keys().filter(|(pid, _)| *pid == p.id).count(), 300);
    }
    let s = got.summary.unwrap();
    assert_eq!((s.targets_ok, s.targets_failed), (5, 4));
}

#[tokio::test]
async fn when_nothing_answers_the_call_fails_after_reporting_why() {
    // The code says whether asking again can help: not with these credentials…
    let sim = start_sim(&small_spec(), sim_options()).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("bad", "wrong"));
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(got.targets.len(), 9);
    assert!(got.targets.iter().all(|t| !t.ok));
    assert_eq!(got.summary.unwrap().targets_failed, 9);
    let status = got.status.expect("a terminal error");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("targets[].error"), "{status:?}");

    // …later, when the upstream is back.
    let mut targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for t in &mut targets {
        t.endpoint = dead.as_str().into();
    }
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(
        got.status.expect("a terminal error").code(),
        tonic::Code::Unavailable
    );
}

/// A list that shrank or grew by pages since it was last read whole is read whole again: the
/// pages it no longer has come back empty, those it gained are asked for once its first page
/// tells.
#[tokio::test]
async fn a_list_that_changed_since_its_last_read_is_read_whole() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let project = sim.data().projects[4].id.clone();
    let fresh = pb::ListBackupsRequest {
        project_ids: vec![project.clone()],
        ..fresh_request()
    };
    let got = list(&mut gw.client, fresh.clone()).await;
    assert_eq!(got.backups.len(), 300);
    // (added, expired) → backups then, and the requests the read takes.
    for ((add, expire), backups, requests) in [((0, 200), 100, 3), ((300, 0), 400, 4)] {
        sim.churn_now(&project, add, expire);
        let got = list(&mut gw.client, fresh.clone()).await;
        let ids: HashSet<String> = got.backups.iter().map(|b| b.id.clone()).collect();
        let now: HashSet<String> = sim.current_backup_ids(&project).into_iter().collect();
        assert_eq!(ids.len(), backups);
        assert!(ids == now, "the backups the upstream has now");
        let t = got.target(&project);
        assert!(t.ok && t.warnings.is_empty(), "{t:?}");
        assert_eq!(got.summary.unwrap().upstream_requests, requests);
    }
}

/// What a target's whole list had when last read pages its next read; a filtered read asks
/// only for its own pages.
#[tokio::test]
async fn a_filtered_read_is_not_paged_by_the_whole_lists_last_total() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let project = &sim.data().projects[4];
    let whole = pb::ListBackupsRequest {
        project_ids: vec![project.id.clone()],
        ..Default::default()
    };
    let got = list(&mut gw.client, whole).await;
    assert_eq!(got.summary.unwrap().upstream_requests, 3);
    let got = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            project_ids: vec![project.id.clone()],
            instance_id: project.instances[1].id.clone(),
            ..Default::default()
        },
    )
    .await;
    // One instance's 100 backups: one page, not the whole list's three.
    assert_eq!(got.targets[0].upstream_total, 100);
    assert_eq!(got.backups.len(), 100);
    assert_eq!(got.summary.unwrap().upstream_requests, 1);
}

#[tokio::test]
async fn the_second_call_is_served_from_the_cache() {
    let spec = small_spec();
    let (sim, mut gw) = start_pair(&spec).await;
    let first = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    let after_first = sim.stats().list_requests;
    assert_eq!(after_first, 9 * 3);
    let second = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(
        sim.stats().list_requests,
        after_first,
        "no upstream request within the TTL"
    );
    assert_eq!(second.by_key(), first.by_key());
    let s = second.summary.unwrap();
    assert_eq!((s.upstream_requests, s.cache_hits), (0, 9 * 3));

    // A caller that wants fresher data than the cache holds gets it.
    let fresh = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            max_age: Some(prost_types::Duration {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(fresh.summary.unwrap().upstream_requests, 9 * 3);
    assert_eq!(sim.stats().list_requests, after_first * 2);
}

/// A target holds its slot until its result is reported: a call over many quick targets then
/// holds as many as it may read at once, not a pile of ended ones waiting to be reported
/// (their tasks are freed only then; 4,000 piled up over 10,000 targets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_targets_are_reported_before_new_ones_start() {
    // One backup per target: a target's backup comes before its result.
    let spec = DataSpec {
        regions: 1,
        projects_per_region: 2000,
        instances_per_project: 1,
        backups_per_instance: 1,
        ..DataSpec::default()
    };
    let at_once = 4;
    let limits = Limits {
        max_concurrent_targets: at_once,
        ..Limits::default()
    };
    let (_sim, gw) = start_pair_with(&spec, limits).await;
    // Warm: every target then ends as soon as it starts, from the cache.
    unreported_targets(&gw.inventory).await;
    let unreported = unreported_targets(&gw.inventory).await;
    let most = *unreported.iter().max().unwrap();
    assert!(most <= at_once, "{most} targets unreported at once");
}

/// Reads a whole call; after each event, how many targets have sent their backups but not yet
/// their result.
async fn unreported_targets(inventory: &Arc<Inventory>) -> Vec<usize> {
    let mut events = inventory.list(Query::default()).unwrap();
    let (mut backups, mut results, mut unreported) = (0usize, 0usize, Vec::new());
    while let Some(event) = events.next().await {
        match event.unwrap() {
            Event::Backups(batch) => backups += batch.count,
            Event::TargetDone(_) => results += 1,
            Event::Finished(_) => {}
        }
        unreported.push(backups.saturating_sub(results));
    }
    assert_eq!((backups, results), (2000, 2000));
    unreported
}

/// What waits for a slow caller is bounded by the call: past each target's first page, a call
/// holds at most as many pages (asked for, or fetched and not yet sent) as the gateway makes
/// upstream requests at once, whatever `max_pages_per_target` allows each target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_no_more_pages_than_it_may_ask_for_at_once() {
    // 4 targets of 40 pages each.
    let spec = DataSpec {
        regions: 1,
        projects_per_region: 4,
        instances_per_project: 10,
        backups_per_instance: 512,
        ..DataSpec::default()
    };
    let (at_once, buffered) = (4, 1);
    let limits = Limits {
        max_concurrent_requests: at_once,
        max_concurrent_targets: at_once,
        max_pages_per_target: 8,
        stream_buffer: buffered,
        ..Limits::default()
    };
    let (sim, gw) = start_pair_with(&spec, limits).await;
    let mut events = gw.inventory.list(Query::default()).unwrap();
    // Each page is one request here (no retries, no filter): what was asked for and not yet
    // read is held by the call. Its first pages aside, it holds at most `at_once` pages, and
    // the stream's buffer one more.
    let pages = 4 * 40;
    let most_held = (at_once + at_once + buffered) as u64;
    // Unread, the call fills up: the targets' first pages (one in the stream's buffer) and, for
    // the target whose page got there, pages past it.
    eventually("the call holds what it may", || {
        sim.stats().list_requests >= (at_once + at_once) as u64
    })
    .await;
    let (mut pages_read, mut backups) = (0u64, 0usize);
    loop {
        // A slow caller (the bound holds at any speed; slowly, a call without it exceeds it).
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let asked = sim.stats().list_requests;
        assert!(
            asked <= pages_read + most_held,
            "{asked} pages asked for, {pages_read} read: {} held",
            asked - pages_read
        );
        let Some(event) = events.next().await else {
            break;
        };
        if let Event::Backups(batch) = event.unwrap() {
            pages_read += 1;
            backups += batch.count;
        }
    }
    assert_eq!((backups, pages_read), (4 * 5120, pages));
    assert_eq!(sim.stats().list_requests, pages);
}

#[tokio::test]
async fn concurrent_identical_calls_share_upstream_pages() {
    let spec = small_spec();
    let mut options = sim_options();
    // Latency keeps the first call's pages in flight while the second asks for them.
    options.latency = std::time::Duration::from_millis(50);
    let sim = start_sim(&spec, options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let (mut a, mut b) = (gw.client.clone(), gw.client.clone());
    let (x, y) = tokio::join!(
        list(&mut a, pb::ListBackupsRequest::default()),
        list(&mut b, pb::ListBackupsRequest::default())
    );
    assert_eq!(x.backups.len(), spec.total_backups());
    assert_eq!(y.backups.len(), spec.total_backups());
    assert_eq!(
        sim.stats().list_requests,
        9 * 3,
        "each page was fetched once"
    );
}
