//! A bad day in the cloud, one fault at a time: every healthy target still arrives exactly once,
//! the faulty one is retried where it should be and reported precisely where it fails.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use backupgw::ddm::ClientOptions;
use backupgw::inventory::{Limits, RegionLimits};
use backupgw::pb;
use backupgw::sim::{FailWith, FaultPlan, Faults, Simulator};

use crate::common::*;

struct Run {
    sim: Simulator,
    got: Collected,
    faulty: String,
}

/// One project of the small data set gets `faults`; everything else is healthy.
async fn run_one_faulty_project(faults: Faults, options: ClientOptions) -> Run {
    let spec = small_spec();
    let probe = backupgw::sim::DataSet::generate(&spec).unwrap();
    let faulty = probe.projects[4].id.clone();
    let mut sim_options = sim_options();
    sim_options.faults = project_faults(&faulty, faults);
    let sim = start_sim(&spec, sim_options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let mut gw = start_gateway(targets, Limits::default(), options).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    Run { sim, got, faulty }
}

impl Run {
    /// Every other target: all 300 backups, exactly once.
    fn healthy_targets_are_complete(&self) {
        let by_key = self.got.by_key();
        for p in self
            .sim
            .data()
            .projects
            .iter()
            .filter(|p| p.id != self.faulty)
        {
            let t = self.got.target(&p.id);
            assert!(t.ok && t.backups == 300, "{t:?}");
            assert_eq!(by_key.keys().filter(|(pid, _)| *pid == p.id).count(), 300);
        }
    }

    fn faulty_error(&self) -> &pb::TargetError {
        let t = self.got.target(&self.faulty);
        assert!(!t.ok, "{t:?}");
        t.error.as_ref().unwrap()
    }

    /// Requests the faulty project got beyond the 3 pages each healthy target needs.
    fn faulty_requests(&self) -> u64 {
        self.sim.stats().list_requests - 8 * 3
    }
}

fn failing(kind: FailWith, count: Option<u64>) -> Faults {
    Faults {
        fail_with: Some(kind),
        fail_count: count,
        ..Faults::default()
    }
}

#[tokio::test]
async fn transient_faults_are_retried_until_they_pass() {
    for kind in [
        FailWith::ServerError,
        FailWith::Unavailable,
        FailWith::BadGatewayHtml,
        FailWith::GatewayTimeoutHtml,
        FailWith::DdmBusy,
        FailWith::Throttled,
        FailWith::Reset,
        FailWith::Truncate,
    ] {
        // The first two requests fail; three attempts per page are allowed.
        let run = run_one_faulty_project(failing(kind, Some(2)), test_client_options()).await;
        run.healthy_targets_are_complete();
        let t = run.got.target(&run.faulty);
        assert!(t.ok && t.backups == 300, "{kind:?}: {t:?}");
        assert_eq!(
            run.faulty_requests(),
            3 + 2,
            "{kind:?}: 3 pages and 2 retries"
        );
        assert_eq!(run.sim.stats().faults, 2);
    }
}

#[tokio::test]
async fn persistent_faults_are_reported_precisely_after_bounded_retries() {
    let cases = [
        (FailWith::Unavailable, "upstream", "APIGW.0613", 503, true),
        (FailWith::ServerError, "upstream", "APIGW.0601", 500, true),
        (FailWith::BadGatewayHtml, "upstream", "502", 502, true),
        (FailWith::Reset, "transport", "", 0, true),
        (
            FailWith::ParameterError,
            "upstream",
            "DBS.280001",
            400,
            false,
        ),
        (FailWith::MalformedJson, "decode", "", 200, false),
        (FailWith::WrongTypes, "decode", "", 200, false),
    ];
    for (kind, error_kind, code, status, retried) in cases {
        let run = run_one_faulty_project(failing(kind, None), test_client_options()).await;
        run.healthy_targets_are_complete();
        let e = run.faulty_error();
        assert_eq!(
            (e.kind.as_str(), e.error_code.as_str(), e.http_status),
            (error_kind, code, status),
            "{kind:?}: {e:?}"
        );
        assert_eq!(e.retryable, retried, "{kind:?}");
        if status >= 400 && code.starts_with("APIGW") {
            assert_eq!(e.request_id.len(), 32, "{kind:?}: the request id is kept");
        }
        // Retryable: every attempt of the first page; otherwise exactly one request.
        let expected = if retried { 3 } else { 1 };
        assert_eq!(run.faulty_requests(), expected, "{kind:?}");
    }
}

#[tokio::test]
async fn oversized_slow_and_stalled_answers_fail_their_target_only() {
    let small = ClientOptions {
        max_body_bytes: 1 << 20,
        ..test_client_options()
    };
    let huge = Faults {
        huge_body_bytes: 2 << 20,
        ..failing(FailWith::HugeBody, None)
    };
    let run = run_one_faulty_project(huge, small).await;
    run.healthy_targets_are_complete();
    let e = run.faulty_error();
    assert_eq!(e.kind, "decode");
    assert!(e.message.contains("allowed"), "{e:?}");

    let quick = ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..test_client_options()
    };
    for faults in [
        Faults {
            slow_body_ms: 100,
            ..failing(FailWith::SlowBody, None)
        },
        Faults {
            stall_ms: 60_000,
            ..failing(FailWith::Stall, None)
        },
    ] {
        let run = run_one_faulty_project(faults, quick.clone()).await;
        run.healthy_targets_are_complete();
        let e = run.faulty_error();
        assert_eq!(e.kind, "transport", "{e:?}");
        assert!(e.message.contains("did not answer within"), "{e:?}");
        assert_eq!(run.faulty_requests(), 3, "timeouts are retried, boundedly");
    }
}

#[tokio::test]
async fn a_bad_item_is_skipped_and_reported_not_the_page() {
    let run =
        run_one_faulty_project(failing(FailWith::BadTimestamp, None), test_client_options()).await;
    run.healthy_targets_are_complete();
    let t = run.got.target(&run.faulty);
    // The first item of each of the 3 pages has an impossible `created`.
    assert!(t.ok, "{t:?}");
    assert_eq!((t.backups, t.skipped_items), (297, 3), "{t:?}");
    assert!(t.warnings.iter().any(|w| w.contains("created")), "{t:?}");
}

#[tokio::test]
async fn a_throttled_region_converges_with_backoff() {
    let spec = small_spec();
    let region = backupgw::sim::data::region_name(1).unwrap();
    let (sim, targets) = with_region_faults(
        region,
        Faults {
            throttle_rps: Some(20.0),
            throttle_burst: 2,
            ..Faults::default()
        },
    )
    .await;
    let mut patient = test_client_options();
    patient.retry.max_attempts = 20;
    let mut gw = start_gateway(targets, Limits::default(), patient).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(got.targets.iter().all(|t| t.ok), "{:?}", got.targets);
    assert_eq!(got.by_key().len(), spec.total_backups());
    assert!(sim.stats().throttled > 0, "the region was throttled");
}

#[tokio::test]
async fn a_paced_region_is_never_throttled() {
    let spec = small_spec();
    let region = backupgw::sim::data::region_name(1).unwrap().to_owned();
    // The upstream allows 12 requests a second (bursts of 3)…
    let (sim, targets) = with_region_faults(
        &region,
        Faults {
            throttle_rps: Some(12.0),
            throttle_burst: 3,
            ..Faults::default()
        },
    )
    .await;
    // …and the gateway is configured to send it at most 10 (bursts of 1).
    let paced = RegionLimits {
        max_concurrent_requests: Some(2),
        requests_per_second: Some(10.0),
        burst: 1,
    };
    let limits = Limits {
        regions: [(region, paced)].into(),
        ..Limits::default()
    };
    let mut gw = start_gateway(targets, limits, test_client_options()).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(got.targets.iter().all(|t| t.ok), "{:?}", got.targets);
    assert_eq!(got.by_key().len(), spec.total_backups());
    assert_eq!(sim.stats().throttled, 0, "never above the configured rate");
}

/// The small data set, with every request to its third region stalled for ten minutes.
async fn with_a_stalled_region() -> (&'static str, Simulator, Vec<backupgw::inventory::Target>) {
    let stalled = backupgw::sim::data::region_name(2).unwrap();
    let stall = Faults {
        stall_ms: 600_000,
        ..failing(FailWith::Stall, None)
    };
    let (sim, targets) = with_region_faults(stalled, stall).await;
    (stalled, sim, targets)
}

#[tokio::test]
async fn a_deadline_with_a_stalled_region_returns_everything_else_in_time() {
    let (stalled, sim, targets) = with_a_stalled_region().await;
    let mut gw = start_gateway(targets, Limits::default(), ClientOptions::default()).await;
    let mut request = tonic::Request::new(pb::ListBackupsRequest::default());
    // The client gives up at 1 s: a stream still open then ends in DEADLINE_EXCEEDED and fails here.
    request.set_timeout(Duration::from_secs(1));
    let got = try_list(&mut gw.client, request).await.unwrap();
    assert!(
        got.status.is_none(),
        "the stream ended cleanly before the deadline: {:?}",
        got.status
    );
    let by_key = got.by_key();
    for p in &sim.data().projects {
        let t = got.target(&p.id);
        if p.region == stalled {
            let e = t.error.as_ref().unwrap();
            assert_eq!(
                (e.kind.as_str(), e.error_code.as_str()),
                ("deadline_exceeded", "DEADLINE_EXCEEDED"),
                "{t:?}"
            );
        } else {
            assert!(t.ok, "{t:?}");
            assert_eq!(by_key.keys().filter(|(pid, _)| *pid == p.id).count(), 300);
        }
    }
    let s = got.summary.unwrap();
    assert_eq!((s.targets_ok, s.targets_failed), (6, 3));
}

#[tokio::test]
async fn a_caller_that_leaves_stops_all_its_upstream_work() {
    let (_, sim, targets) = with_a_stalled_region().await;
    let gw = start_gateway(targets, Limits::default(), ClientOptions::default()).await;
    let mut client = gw.client.clone();
    let mut stream = client
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    // The stalled region's first pages are in flight upstream, and would be for ten minutes.
    eventually("the stalled requests are in flight", || {
        sim.stats().in_flight == 3
    })
    .await;
    drop(stream);
    eventually("the upstream requests are cancelled", || {
        sim.stats().in_flight == 0
    })
    .await;
    let after = sim.stats().list_requests;
    // A later call proves the gateway is idle and healthy; the stalled region started nothing new.
    let got = list(
        &mut client,
        pb::ListBackupsRequest {
            regions: vec![backupgw::sim::data::region_name(0).unwrap().into()],
            ..Default::default()
        },
    )
    .await;
    assert!(got.targets.iter().all(|t| t.ok));
    assert_eq!(
        sim.stats().list_requests,
        after,
        "served from the cache; nothing orphaned started"
    );
}

/// A gateway over one project of 300 backups (3 pages) whose requests stall after the first
/// `answered`.
async fn one_project_stalling_after(answered: u64) -> (String, Simulator, Gateway) {
    let spec = backupgw::sim::DataSpec {
        regions: 1,
        projects_per_region: 1,
        ..small_spec()
    };
    let probe = backupgw::sim::DataSet::generate(&spec).unwrap();
    let project = probe.projects[0].id.clone();
    let stall_later = Faults {
        stall_ms: 600_000,
        fail_after: answered,
        ..failing(FailWith::Stall, None)
    };
    let mut options = sim_options();
    options.faults = project_faults(&project, stall_later);
    let sim = start_sim(&spec, options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    (project, sim, gw)
}

/// A target read before has the pages its list had then asked for at once, beside its first
/// page: the second read of a far region takes one round trip, not two.
#[tokio::test]
async fn a_target_read_before_has_all_its_pages_asked_for_at_once() {
    // Its first read's three requests are answered; every later one stalls.
    let (project, sim, mut gw) = one_project_stalling_after(3).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(got.target(&project).backups, 300);
    assert_eq!(sim.stats().list_requests, 3);

    let again = fresh_request();
    let stream = gw.client.list_backups(again).await.unwrap().into_inner();
    // The first page has not come back (it never will), yet all three are upstream.
    eventually("the three pages are in flight upstream at once", || {
        sim.stats().in_flight == 3
    })
    .await;
    drop(stream);
}

/// Only a list read whole guides the next read: a read that was cancelled after its first page
/// teaches nothing (callers that leave early would otherwise each ask for whole lists).
#[tokio::test]
async fn a_read_cut_short_does_not_guide_the_next() {
    // The first page is answered; every later request stalls.
    let (_, sim, mut gw) = one_project_stalling_after(1).await;
    let deadline = |message| {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_secs(1));
        request
    };
    // Its first page and the two after it (which stall until the deadline).
    try_list(&mut gw.client, deadline(pb::ListBackupsRequest::default()))
        .await
        .unwrap();
    assert_eq!(sim.stats().list_requests, 3);
    // Read again: the first page only, as for a list never read whole.
    try_list(&mut gw.client, deadline(fresh_request()))
        .await
        .unwrap();
    assert_eq!(sim.stats().list_requests, 4);
}

#[tokio::test]
async fn churn_loses_nothing_and_emits_nothing_twice() {
    let spec = backupgw::sim::DataSpec {
        regions: 1,
        projects_per_region: 2,
        instances_per_project: 4,
        backups_per_instance: 150,
        ..backupgw::sim::DataSpec::default()
    };
    let probe = backupgw::sim::DataSet::generate(&spec).unwrap();
    let churning = probe.projects[1].id.clone();
    let mut options = sim_options();
    // Each request: two new backups at the front, the oldest expires.
    // Jitter makes the concurrent page reads reach it in any order.
    let churn = Faults {
        churn_add: 2,
        churn_expire: 1,
        latency_ms: 5,
        jitter_ms: 40,
        ..Faults::default()
    };
    options.faults = project_faults(&churning, churn);
    let sim = start_sim(&spec, options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    // The second read, fresh from the upstream, starts from what the first found.
    for max_age in [None, Some(prost_types::Duration::default())] {
        let before: HashSet<String> = sim.current_backup_ids(&churning).into_iter().collect();
        let request = pb::ListBackupsRequest {
            max_age,
            ..Default::default()
        };
        let got = list(&mut gw.client, request).await;
        let after: HashSet<String> = sim.current_backup_ids(&churning).into_iter().collect();
        nothing_present_throughout_is_lost(&got, &churning, &before, &after);
        let t = got.target(&churning);
        assert!(t.ok, "{t:?}");
        assert!(t.pages > 5, "the list was read again: {t:?}");
        assert!(
            !t.warnings.is_empty(),
            "the remaining inconsistency is reported: {t:?}"
        );
    }
}

/// Every backup present before and after a read is in its answer, and nothing else is (but
/// backups new meanwhile).
fn nothing_present_throughout_is_lost(
    got: &Collected,
    churning: &str,
    before: &HashSet<String>,
    after: &HashSet<String>,
) {
    let emitted: HashSet<String> = got
        .by_key()
        .into_keys()
        .filter(|(p, _)| *p == churning)
        .map(|(_, id)| id)
        .collect();
    let throughout: HashSet<&String> = before.intersection(after).collect();
    let lost: Vec<_> = throughout
        .iter()
        .filter(|id| !emitted.contains(**id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} backups present throughout were lost",
        lost.len(),
        throughout.len()
    );
    assert!(
        emitted
            .iter()
            .all(|id| before.contains(id) || after.contains(id) || id.ends_with("br09"))
    );
}

#[tokio::test]
async fn list_targets_shows_last_success_last_error_and_backoff() {
    let spec = small_spec();
    let probe = backupgw::sim::DataSet::generate(&spec).unwrap();
    let (broken, throttled) = (probe.projects[1].id.clone(), probe.projects[2].id.clone());
    let mut options = sim_options();
    options.faults = FaultPlan {
        projects: BTreeMap::from([
            (broken.clone(), failing(FailWith::ParameterError, None)),
            (
                throttled.clone(),
                Faults {
                    retry_after_s: Some(200),
                    ..failing(FailWith::Throttled, None)
                },
            ),
        ]),
        ..FaultPlan::default()
    };
    let sim = start_sim(&spec, options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    // A gateway that may wait as long as the upstream asks.
    let patient = ClientOptions {
        retry: backupgw::ddm::RetryPolicy {
            max_delay: std::time::Duration::from_secs(3600),
            ..Default::default()
        },
        ..ClientOptions::default()
    };
    let gw = start_gateway(targets, Limits::default(), patient).await;
    let mut client = gw.client.clone();
    let mut stream = client
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Everyone but the throttled project finishes; that one waits out a 200 s Retry-After.
    let mut done = 0;
    while done < 8 {
        done += stream.message().await.unwrap().unwrap().targets.len();
    }
    let listed = gw.targets().await;
    for t in &listed {
        if t.project_id == broken {
            let e = t.last_error.as_ref().unwrap();
            assert_eq!(e.error_code, "DBS.280001");
            assert!(
                t.last_error_at.is_some() && t.last_success.is_none() && t.backoff_until.is_none()
            );
        } else if t.project_id == throttled {
            let until = t.backoff_until.expect("backing off now");
            let now = prost_types::Timestamp::from(std::time::SystemTime::now());
            assert!(
                until.seconds > now.seconds + 150,
                "Retry-After is honoured: {until:?}"
            );
            assert!(t.last_success.is_none());
        } else {
            assert!(t.last_success.is_some() && t.last_error.is_none(), "{t:?}");
        }
    }
    drop(stream);
}

#[tokio::test]
async fn a_redirect_is_an_error_and_the_token_goes_nowhere_else() {
    // Where the redirect points: a listener that would receive the request, and its token.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let faults = Faults {
        redirect_to: format!("http://{}/v3/stolen", elsewhere.local_addr().unwrap()),
        ..failing(FailWith::Redirect, None)
    };
    let run = run_one_faulty_project(faults, test_client_options()).await;
    run.healthy_targets_are_complete();
    let e = run.faulty_error();
    assert_eq!(
        (e.kind.as_str(), e.error_code.as_str(), e.http_status),
        ("upstream", "302", 302),
        "{e:?}"
    );
    assert!(e.message.contains("not followed"), "{e:?}");
    assert!(!e.retryable, "{e:?}");
    assert_eq!(run.faulty_requests(), 1);
    // The answer is complete: a redirect followed would have connected by now.
    assert!(
        futures_util::FutureExt::now_or_never(elsewhere.accept()).is_none(),
        "the redirect was followed"
    );
}
