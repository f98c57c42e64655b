//! Hostile and unlucky callers: a caller that does not read, requests built to blow up memory,
//! a credential that keeps failing, an upstream that asks for an hour's wait, connections that
//! never speak. None of them may cost anyone else their answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backupgw::ddm::auth::AccessKey;
use backupgw::ddm::{Credential, CredentialKind};
use backupgw::inventory::Limits;
use backupgw::pb;
use backupgw::server::ServerOptions;
use backupgw::sim::{AuthOptions, DataSpec, FailWith, FaultPlan, Faults, SimKey};
use secrecy::SecretString;
use tokio::io::AsyncReadExt as _;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::common::*;

/// A guard against a hang, not a timing assertion: a test that needs it has already failed.
const HANG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_caller_that_does_not_read_costs_only_its_own_stream() {
    // 9 targets × 3000 backups: far more than a stream's buffers hold.
    let spec = DataSpec {
        backups_per_instance: 1000,
        ..small_spec()
    };
    let (sim, gw) = {
        let sim = start_sim(&spec, sim_options()).await;
        let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
        let limits = Limits {
            // Few upstream slots: any that a stalled stream pinned would starve the others.
            max_concurrent_requests: 4,
            ..Limits::default()
        };
        let gw = start_gateway(targets, limits, test_client_options()).await;
        (sim, gw)
    };
    let (first, mut slow) = caller_that_does_not_read(gw.addr).await;

    // Another caller asks one project, fresh from the upstream, while the slow one sits.
    let project = sim.data().projects[4].id.clone();
    let before = sim.stats().list_requests;
    let mut request = tonic::Request::new(pb::ListBackupsRequest {
        project_ids: vec![project.clone()],
        ..fresh_request()
    });
    request.set_timeout(Duration::from_secs(30));
    let mut other = gw.client.clone();
    let got = try_list(&mut other, request).await.unwrap();
    assert!(got.status.is_none(), "{:?}", got.status);
    let t = got.target(&project);
    assert!(t.ok, "starved behind a caller that does not read: {t:?}");
    assert_eq!((t.backups, t.pages), (3000, 24));
    // It asked the upstream for its 24 pages itself (nothing shared with the slow caller).
    assert_eq!(got.summary.unwrap().upstream_requests, 24);
    assert!(sim.stats().list_requests - before >= 24);

    // The slow caller is still served, to the end, every backup once.
    let mut backups = first.backups;
    let mut targets = first.targets;
    while let Some(m) = slow.message().await.unwrap() {
        backups.extend(m.backups);
        targets.extend(m.targets);
    }
    let unique: HashSet<_> = backups
        .iter()
        .map(|b| (b.project_id.clone(), b.id.clone()))
        .collect();
    assert_eq!((backups.len(), unique.len()), (27_000, 27_000));
    assert!(targets.iter().all(|t| t.ok), "{targets:?}");
}

#[tokio::test]
async fn huge_and_malformed_requests_get_short_clear_refusals() {
    let (sim, mut gw) = start_pair(&small_spec()).await;

    // ~2 MiB of request (a million one-character ids): refused by size before it is decoded.
    let huge = pb::ListBackupsRequest {
        project_ids: vec!["x".into(); 1_000_000],
        ..Default::default()
    };
    let status = gw.client.list_backups(huge).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().len() < 2048);

    // Within the size bound: lists past their bound, at most 10 violations, each short.
    let many = pb::ListBackupsRequest {
        project_ids: vec!["x".into(); 15_000],
        regions: vec!["\u{1}".repeat(250); 50],
        ..Default::default()
    };
    let status = gw.client.list_backups(many).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 10);
    assert_eq!(violations[0].field, "project_ids");
    assert!(
        violations.iter().all(|v| v.description.len() < 160),
        "{violations:?}"
    );
    assert!(status.message().len() < 2048, "{}", status.message().len());
    assert!(status.details().len() < 4096, "{}", status.details().len());

    // Fifty ids that do not exist: one short answer a default client can read.
    let fifty = pb::ListBackupsRequest {
        project_ids: (0..50).map(|i| format!("{i:0>32}")).collect(),
        ..Default::default()
    };
    let status = gw.client.list_backups(fifty).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().len() < 2048);
    assert!(
        status.message().ends_with("and 40 more"),
        "{}",
        status.message()
    );

    // ListTargets is bounded too.
    let status = gw
        .client
        .list_targets(pb::ListTargetsRequest {
            project_ids: vec!["x".into(); 5_000],
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    // Times outside 0001–9999.
    let far = pb::ListBackupsRequest {
        created_after: Some(prost_types::Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        }),
        ..Default::default()
    };
    let status = gw.client.list_backups(far).await.expect_err("refused");
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "created_after");

    assert_eq!(sim.stats().list_requests, 0, "nothing reached the upstream");
    let fine = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(fine.backups.len(), small_spec().total_backups());
}

#[tokio::test]
async fn a_failing_access_key_is_not_tried_again_until_its_cool_down_ends() {
    const AK: &str = "HPUASHAREDACCESSKEY1";
    const SK: &str = "the-right-secret-key-0123456789abcdefghij";
    let mut options = sim_options();
    options.auth = AuthOptions {
        tokens: vec![SecretString::from(TOKEN)],
        keys: vec![SimKey {
            access_key: AK.into(),
            secret_key: SecretString::from(SK),
        }],
        ..AuthOptions::default()
    };
    let sim = start_sim(&small_spec(), options).await;
    let key = |name: &str, sk: &str| {
        Arc::new(Credential::new(
            name,
            CredentialKind::AccessKey(AccessKey {
                iam_endpoint: sim.endpoint(&sim.data().regions[0]).unwrap(),
                access_key: AK.into(),
                secret_key: SecretString::from(sk),
            }),
        ))
    };
    // Region 0 with the right secret key, region 1 with a wrong one, same access key.
    let (good, bad) = (key("good", SK), key("typo", "a-wrong-secret-key"));
    let regions = sim.data().regions.clone();
    let targets: Vec<_> = backupgw::demo::sim_targets(&sim, Arc::clone(&good))
        .into_iter()
        .filter(|t| *t.region != *regions[2])
        .map(|mut t| {
            if *t.region == *regions[1] {
                t.credential = Arc::clone(&bad);
            }
            t
        })
        .collect();
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    for round in 0..7 {
        let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
        for t in &got.targets {
            if t.region == regions[0] {
                assert!(
                    t.ok && t.backups == 300,
                    "round {round}: the key got locked: {t:?}"
                );
            } else {
                let e = t.error.as_ref().unwrap();
                assert_eq!(e.kind, "auth", "{e:?}");
                assert!(
                    e.message.contains("\"typo\""),
                    "names the credential: {e:?}"
                );
                assert!(!e.retryable);
                if round > 0 {
                    assert!(e.message.contains("not used until"), "{e:?}");
                }
            }
        }
    }
    // One signed request with the wrong key in seven calls × three targets; the good key's
    // 3 targets × 3 pages were read once and then served from the cache.
    assert_eq!(sim.stats().list_requests, 3 * 3 + 1);
    let listed = gw.targets().await;
    for t in listed {
        assert_eq!(
            t.credential_failing_until.is_some(),
            t.region == regions[1],
            "{t:?}"
        );
    }
}

#[tokio::test]
async fn an_hour_of_retry_after_is_reported_not_waited_for() {
    let spec = small_spec();
    let probe = backupgw::sim::DataSet::generate(&spec).unwrap();
    let throttled = probe.projects[3].id.clone();
    let mut options = sim_options();
    options.faults = project_faults(
        &throttled,
        Faults {
            fail_with: Some(FailWith::Throttled),
            retry_after_s: Some(3600),
            ..Faults::default()
        },
    );
    let sim = start_sim(&spec, options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    // Production retry settings; the caller sets no deadline.
    let mut gw = start_gateway(
        targets,
        Limits::default(),
        backupgw::ddm::ClientOptions::default(),
    )
    .await;
    let got = tokio::time::timeout(
        HANG,
        list(&mut gw.client, pb::ListBackupsRequest::default()),
    )
    .await
    .expect("the call waited out the Retry-After");
    let t = got.target(&throttled);
    let e = t.error.as_ref().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.error_code.as_str(), e.http_status),
        ("throttled", "APIGW.0308", 429),
        "{e:?}"
    );
    assert!(e.message.contains("3600"), "the upstream's advice: {e:?}");
    assert!(e.retryable);
    assert_eq!(got.targets.iter().filter(|t| t.ok).count(), 8);
    // One request: no retry can help within the bounds.
    assert_eq!(sim.stats().list_requests, 8 * 3 + 1);
}

#[tokio::test]
async fn a_call_without_a_deadline_gets_the_default_one() {
    let (sim, targets) = with_region_faults(
        backupgw::sim::data::region_name(1).unwrap(),
        Faults {
            fail_with: Some(FailWith::Stall),
            ..Faults::default()
        },
    )
    .await;
    let mut gw = start_gateway_with(
        targets,
        GatewaySetup {
            server: ServerOptions {
                default_deadline: Duration::from_secs(2),
                ..ServerOptions::default()
            },
            ..GatewaySetup::default()
        },
    )
    .await;
    let got = tokio::time::timeout(
        HANG,
        list(&mut gw.client, pb::ListBackupsRequest::default()),
    )
    .await
    .expect("the stalled region held the call");
    let stalled_region = &sim.data().regions[1];
    for t in &got.targets {
        if &t.region == stalled_region {
            assert_eq!(t.error.as_ref().unwrap().kind, "deadline_exceeded", "{t:?}");
        } else {
            assert!(t.ok, "{t:?}");
        }
    }
    assert_eq!(got.summary.unwrap().targets_ok, 6);
}

#[tokio::test]
async fn connections_that_never_speak_are_closed_and_bounded() {
    let (_sim, gw) = {
        let sim = start_sim(&small_spec(), sim_options()).await;
        let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
        let gw = start_gateway_with(
            targets,
            GatewaySetup {
                server: ServerOptions {
                    handshake_timeout: Duration::from_secs(1),
                    max_connections: 2,
                    ..ServerOptions::default()
                },
                ..GatewaySetup::default()
            },
        )
        .await;
        (sim, gw)
    };
    // The test's own client holds one of the two connections: one idle one fills the bound.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // A connection that never sends the HTTP/2 preface is closed by the gateway (after its
    // own SETTINGS frame).
    let mut buf = Vec::new();
    let read = tokio::time::timeout(HANG, idle.read_to_end(&mut buf))
        .await
        .expect("the idle connection was left open");
    assert!(buf.len() < 100, "only the server's SETTINGS: {read:?}");
    // Its slot is free again: a new client is served.
    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = tokio::time::timeout(
        HANG,
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .expect("not served after the idle connection was closed")
    .unwrap();
    assert_eq!(answer.into_inner().status, 1, "SERVING");
}

#[tokio::test]
async fn over_the_connection_bound_a_client_waits_until_a_connection_closes() {
    let sim = start_sim(&small_spec(), sim_options()).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let gw = start_gateway_with(
        targets,
        GatewaySetup {
            server: ServerOptions {
                max_connections: 2,
                ..ServerOptions::default()
            },
            ..GatewaySetup::default()
        },
    )
    .await;
    // The test's client holds one connection, an idle one the other.
    let idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Served at all, within a short while (a connection over the bound is not served at all).
    let served = || async {
        let channel = Channel::from_shared(format!("http://{}", gw.addr))
            .unwrap()
            .connect_lazy();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let check = health.check(tonic_health::pb::HealthCheckRequest::default());
        matches!(
            tokio::time::timeout(Duration::from_millis(300), check).await,
            Ok(Ok(_))
        )
    };
    assert!(!served().await, "a connection over the bound was served");
    drop(idle);
    assert!(
        tokio::time::timeout(HANG, async {
            // The gateway sees the idle connection close, then takes the next one.
            while !served().await {}
        })
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn when_no_target_answers_in_time_the_call_ends_deadline_exceeded() {
    let mut options = sim_options();
    options.faults = FaultPlan {
        all: Faults {
            fail_with: Some(FailWith::Stall),
            ..Faults::default()
        },
        ..FaultPlan::default()
    };
    let sim = start_sim(&small_spec(), options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let mut request = tonic::Request::new(pb::ListBackupsRequest::default());
    request.set_timeout(Duration::from_secs(1));
    let got = try_list(&mut gw.client, request).await.unwrap();
    assert_eq!(got.summary.unwrap().targets_failed, 9);
    assert_eq!(got.status.unwrap().code(), tonic::Code::DeadlineExceeded);
}

#[tokio::test]
async fn after_the_shutdown_grace_open_calls_end_unavailable() {
    let spec = DataSpec {
        backups_per_instance: 1000,
        ..small_spec()
    };
    let sim = start_sim(&spec, sim_options()).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let mut gw = start_gateway_with(
        targets,
        GatewaySetup {
            server: ServerOptions {
                shutdown_grace: Duration::from_millis(200),
                ..ServerOptions::default()
            },
            ..GatewaySetup::default()
        },
    )
    .await;
    let mut client = gw.client.clone();
    let mut stream = client
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut backups = stream.message().await.unwrap().unwrap().backups.len();
    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, 1, "SERVING");
    gw.shut_down();
    // Health turns NOT_SERVING at once…
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        2,
        "NOT_SERVING"
    );
    // …and a reader too slow for the grace period keeps what arrived, then gets UNAVAILABLE.
    let status = tokio::time::timeout(HANG, async {
        loop {
            match stream.message().await {
                Ok(Some(m)) => backups += m.backups.len(),
                Ok(None) => panic!("the stream ended normally"),
                Err(status) => return status,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stream outlived the grace period");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert!(backups > 0 && backups < 27_000, "{backups}");
}

#[tokio::test]
async fn a_stalled_region_does_not_take_every_upstream_slot() {
    let (sim, targets) = with_region_faults(
        backupgw::sim::data::region_name(1).unwrap(),
        Faults {
            fail_with: Some(FailWith::Stall),
            ..Faults::default()
        },
    )
    .await;
    // Three global slots; the stalled region has three targets. Without a share per region its
    // first pages would hold all three until the deadline.
    let limits = Limits {
        max_concurrent_requests: 3,
        ..Limits::default()
    };
    let mut gw = start_gateway(targets, limits, test_client_options()).await;
    let mut request = tonic::Request::new(pb::ListBackupsRequest::default());
    request.set_timeout(Duration::from_secs(3));
    let got = try_list(&mut gw.client, request).await.unwrap();
    let stalled = &sim.data().regions[1];
    for t in &got.targets {
        assert_eq!(t.ok, &t.region != stalled, "{t:?}");
    }
    assert_eq!(got.summary.unwrap().targets_ok, 6);
}

#[tokio::test]
async fn waiting_for_a_slot_is_not_the_upstream_timing_out() {
    // One slot, 200 ms a request, 800 ms for one exchange: the ninth request waits ≈ 1.6 s
    // for its slot, which is no reason to call the upstream slow.
    let spec = DataSpec {
        backups_per_instance: 10,
        ..small_spec()
    };
    let mut options = sim_options();
    options.latency = Duration::from_millis(200);
    let sim = start_sim(&spec, options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let limits = Limits {
        max_concurrent_requests: 1,
        ..Limits::default()
    };
    // No retries, which would hide a timeout.
    let client = backupgw::ddm::ClientOptions {
        request_timeout: Duration::from_millis(800),
        retry: backupgw::ddm::RetryPolicy {
            max_attempts: 1,
            ..test_client_options().retry
        },
        ..test_client_options()
    };
    let mut gw = start_gateway(targets, limits, client).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(got.targets.iter().all(|t| t.ok), "{:?}", got.targets);
    assert_eq!(sim.stats().list_requests, 9, "no attempt was retried");
}
