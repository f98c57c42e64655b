//! Callers: who may call, what each may see, how many calls each may have, mTLS identities, and
//! what the metrics say about it all.

use std::collections::HashSet;
use std::sync::Arc;

use backupgw::callers::{Caller, CallerBook, Credential, Patterns, Scope, api_key_sha256};
use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;
use backupgw::sim::Simulator;
use tonic::transport::Channel;

use crate::common::*;

const BILLING_KEY: &str = "billing-key-0123456789";
const AUDIT_KEY: &str = "audit-key-9876543210";

fn key_hash(key: &str) -> Credential {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(api_key_sha256(key), &mut hash).unwrap();
    Credential::ApiKeySha256(hash)
}

fn scope(projects: &[&str], regions: Option<&[&str]>) -> Scope {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Scope {
        projects: Patterns::new(&owned(projects)).unwrap(),
        regions: regions.map_or_else(Patterns::any, |r| Patterns::new(&owned(r)).unwrap()),
        accounts: None,
    }
}

/// billing: every sub-project (`*_*`) of the first region; audit: two named projects of the
/// second region, one call at a time.
async fn two_callers() -> (Simulator, Gateway) {
    two_callers_with(backupgw::sim::FaultPlan::default()).await
}

async fn two_callers_with(faults: backupgw::sim::FaultPlan) -> (Simulator, Gateway) {
    let mut options = sim_options();
    options.faults = faults;
    let sim = start_sim(&small_spec(), options).await;
    let data = sim.data();
    let audit_projects: Vec<&str> = data
        .projects
        .iter()
        .filter(|p| p.region == data.regions[1])
        .take(2)
        .map(|p| p.id.as_str())
        .collect();
    let billing = Caller::new("billing", scope(&["*_*"], Some(&[&data.regions[0]])), None);
    let audit = Caller::new("audit", scope(&audit_projects, None), Some(1));
    let callers = CallerBook::new(vec![
        (Arc::new(billing), key_hash(BILLING_KEY)),
        (Arc::new(audit), key_hash(AUDIT_KEY)),
    ]);
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let gw = start_gateway_with(
        targets,
        GatewaySetup {
            callers: Arc::new(callers),
            ..GatewaySetup::default()
        },
    )
    .await;
    (sim, gw)
}

#[tokio::test]
async fn without_a_known_key_no_call_is_answered_but_health_is() {
    let (sim, mut gw) = two_callers().await;
    let missing = gw
        .client
        .list_targets(pb::ListTargetsRequest::default())
        .await
        .unwrap_err();
    let wrong = gw
        .client
        .list_backups(with_key(pb::ListBackupsRequest::default(), "guess"))
        .await
        .unwrap_err();
    for status in [&missing, &wrong] {
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    assert_eq!(
        missing.message(),
        wrong.message(),
        "nothing to learn by guessing"
    );
    assert_eq!(sim.stats().list_requests, 0);

    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(with_key(
            tonic_health::pb::HealthCheckRequest::default(),
            "guess",
        ))
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status, 1, "SERVING");
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_request};
    let list = ServerReflectionRequest {
        message_request: Some(server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
        ..Default::default()
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([list]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answers.message().await.unwrap().is_some(),
        "reflection is open"
    );
}

/// What the billing caller of `two_callers` may see (its projects' ids), one of them, and a
/// project of another region that it may not.
fn billing_scope(sim: &Simulator) -> (HashSet<String>, String, backupgw::sim::data::SimProject) {
    let data = sim.data();
    let billing_ids: HashSet<String> = data
        .projects
        .iter()
        .filter(|p| p.region == data.regions[0] && p.name.contains('_'))
        .map(|p| p.id.clone())
        .collect();
    assert!(!billing_ids.is_empty());
    let theirs = data
        .projects
        .iter()
        .find(|p| p.region == data.regions[1])
        .unwrap()
        .clone();
    let ours = billing_ids.iter().next().unwrap().clone();
    (billing_ids, ours, theirs)
}

#[tokio::test]
async fn a_caller_that_selects_nothing_sees_everything_it_may_and_never_more() {
    let (sim, mut gw) = two_callers().await;
    let (billing_ids, _, _) = billing_scope(&sim);
    let targets = gw
        .client
        .list_targets(with_key(pb::ListTargetsRequest::default(), BILLING_KEY))
        .await
        .unwrap()
        .into_inner()
        .targets;
    let listed: HashSet<_> = targets.iter().map(|t| t.project_id.clone()).collect();
    assert_eq!(listed, billing_ids);
    let got = try_list(
        &mut gw.client,
        with_key(pb::ListBackupsRequest::default(), BILLING_KEY),
    )
    .await
    .unwrap();
    let seen: HashSet<_> = got.backups.iter().map(|b| b.project_id.clone()).collect();
    assert_eq!(seen, billing_ids);
    assert_eq!(got.backups.len(), billing_ids.len() * 300);
}

/// Naming what is outside its scope, in any field of either RPC, is refused by field name,
/// whether or not the target exists.
#[tokio::test]
async fn a_caller_naming_what_it_may_not_see_is_refused_by_field() {
    let (sim, mut gw) = two_callers().await;
    let (_, ours, theirs) = billing_scope(&sim);
    let nowhere = "f".repeat(32);
    let cases = [
        (
            vec![ours.clone(), theirs.id.clone()],
            vec![],
            "project_ids[1]",
        ),
        (vec![nowhere.clone()], vec![], "project_ids[0]"),
        (vec![], vec![theirs.region.clone()], "regions[0]"),
        (vec![], vec!["ap-nowhere-9".into()], "regions[0]"),
    ];
    for (project_ids, regions, field) in cases {
        let status = gw
            .client
            .list_backups(with_key(
                pb::ListBackupsRequest {
                    project_ids: project_ids.clone(),
                    regions: regions.clone(),
                    ..Default::default()
                },
                BILLING_KEY,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
        let status = gw
            .client
            .list_targets(with_key(
                pb::ListTargetsRequest {
                    project_ids,
                    regions,
                    ..Default::default()
                },
                BILLING_KEY,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }
}

/// Globs select within the scope, never beyond it (a name outside it is refused), and the
/// fields passed down to the upstream only ever reach the caller's own targets.
#[tokio::test]
async fn a_callers_globs_and_upstream_filters_stay_within_its_scope() {
    let (sim, mut gw) = two_callers().await;
    let (billing_ids, _, theirs) = billing_scope(&sim);
    let data = sim.data();
    let got = try_list(
        &mut gw.client,
        with_key(
            pb::ListBackupsRequest {
                project_ids: vec!["*".into()],
                regions: vec!["*".into()],
                ..Default::default()
            },
            BILLING_KEY,
        ),
    )
    .await
    .unwrap();
    let seen: HashSet<_> = got.backups.iter().map(|b| b.project_id.clone()).collect();
    assert_eq!(seen, billing_ids);
    let status = gw
        .client
        .list_backups(with_key(
            pb::ListBackupsRequest {
                project_ids: vec![data.regions[0].clone()],
                ..Default::default()
            },
            BILLING_KEY,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let their_instance = &theirs.instances[0];
    let got = try_list(
        &mut gw.client,
        with_key(
            pb::ListBackupsRequest {
                instance_id: their_instance.id.clone(),
                instance_name: their_instance.name.clone(),
                ..Default::default()
            },
            BILLING_KEY,
        ),
    )
    .await
    .unwrap();
    assert!(got.backups.is_empty(), "{:?}", got.backups.first());
    assert!(
        got.targets
            .iter()
            .all(|t| billing_ids.contains(&t.project_id)),
        "{:?}",
        got.targets
    );
}

#[tokio::test]
async fn a_caller_over_its_stream_bound_is_told_to_wait() {
    let (_sim, mut gw) = two_callers().await;
    let mut first = gw
        .client
        .list_backups(with_key(pb::ListBackupsRequest::default(), AUDIT_KEY))
        .await
        .unwrap()
        .into_inner();
    let status = gw
        .client
        .list_targets(with_key(pb::ListTargetsRequest::default(), AUDIT_KEY))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("audit"), "{status:?}");
    // Another caller is not affected.
    gw.client
        .list_targets(with_key(pb::ListTargetsRequest::default(), BILLING_KEY))
        .await
        .unwrap();
    // Once the first call ended, the next one is taken.
    while first.message().await.unwrap().is_some() {}
    gw.client
        .list_targets(with_key(pb::ListTargetsRequest::default(), AUDIT_KEY))
        .await
        .unwrap();
}

#[tokio::test]
async fn mtls_identifies_callers_by_certificate_and_refuses_other_cas() {
    let dir = std::env::temp_dir().join(format!("backupgw-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("backupgw test CA");
    let (server_cert, server_key) = ca.sign(&["localhost"], "backupgw");
    std::fs::write(dir.join("server.pem"), &server_cert).unwrap();
    std::fs::write(dir.join("server.key"), &server_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.issuer.pem()).unwrap();
    let files = backupgw::tls::TlsFiles {
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        client_ca_file: Some(dir.join("ca.pem")),
    };
    let tls = Arc::new(files.load().unwrap());

    let sim = start_sim(&small_spec(), sim_options()).await;
    let ops = Caller::new("ops", scope(&["*"], None), None);
    let callers = CallerBook::new(vec![(
        Arc::new(ops),
        Credential::ClientCertSubject("CN=ops.backup.svc".into()),
    )]);
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let gw = start_gateway_with(
        targets,
        GatewaySetup {
            callers: Arc::new(callers),
            tls: Some(tls),
            server: backupgw::server::ServerOptions {
                health_listen: Some("127.0.0.1:0".parse().unwrap()),
                ..Default::default()
            },
            ..GatewaySetup::default()
        },
    )
    .await;
    let port = gw.addr.port();
    let connect = |identity| list_targets_over_tls(port, &ca, identity);
    let ok: Result<_, Box<dyn std::error::Error>> =
        connect(Some(ca.sign(&[], "ops.backup.svc"))).await;
    assert_eq!(
        ok.unwrap().into_inner().targets.len(),
        9,
        "ops sees everything"
    );

    // A certificate of this CA for a subject that is no caller: no call.
    let stranger = connect(Some(ca.sign(&[], "stranger"))).await;
    let status = stranger.unwrap_err();
    assert!(
        format!("{status:?}").contains("Unauthenticated"),
        "{status:?}"
    );
    // A certificate from another CA, or none: not even a connection.
    let other_ca = TestCa::new("someone else's CA");
    assert!(
        connect(Some(other_ca.sign(&[], "ops.backup.svc")))
            .await
            .is_err()
    );
    assert!(connect(None).await.is_err());
    assert_eq!(sim.stats().list_requests, 0);

    // Probes (which do not speak TLS) reach health alone, in plaintext, on its own listener.
    let plain = Channel::from_shared(format!("http://{}", gw.health_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status, 1, "SERVING");
    let status = BackupGatewayClient::new(plain)
        .list_targets(pb::ListTargetsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unimplemented,
        "health alone: {status:?}"
    );
}

#[tokio::test]
async fn metrics_count_calls_upstream_requests_cache_and_target_health() {
    // One of billing's targets answers 500 once: retried.
    let probe = backupgw::sim::DataSet::generate(&small_spec()).unwrap();
    let flaky = probe
        .projects
        .iter()
        .filter(|p| p.region == probe.regions[0] && p.name.contains('_'))
        .nth(1)
        .unwrap()
        .id
        .clone();
    let faults = backupgw::sim::FaultPlan {
        projects: [(
            flaky,
            backupgw::sim::Faults {
                fail_with: Some(backupgw::sim::FailWith::ServerError),
                fail_count: Some(1),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let (sim, mut gw) = two_callers_with(faults).await;
    let data = sim.data();
    // One of billing's targets fails: its token is wrong.
    let billing: Vec<_> = data
        .projects
        .iter()
        .filter(|p| p.region == data.regions[0] && p.name.contains('_'))
        .collect();
    let failing = billing[0].id.clone();
    let targets = gw.inventory.targets();
    let mut changed: Vec<_> = targets.iter().map(|t| (**t).clone()).collect();
    for t in &mut changed {
        if *t.project_id == failing {
            t.credential = token_credential("stale", "not-the-token");
        }
    }
    gw = start_gateway_with(
        changed,
        GatewaySetup {
            callers: Arc::clone(&gw.live.current().callers),
            ..GatewaySetup::default()
        },
    )
    .await;
    let got = try_list(
        &mut gw.client,
        with_key(pb::ListBackupsRequest::default(), BILLING_KEY),
    )
    .await
    .unwrap();
    assert_eq!(got.summary.as_ref().unwrap().targets_failed, 1);
    let _ = try_list(
        &mut gw.client,
        with_key(pb::ListBackupsRequest::default(), BILLING_KEY),
    )
    .await
    .unwrap();
    let _ = gw
        .client
        .list_targets(pb::ListTargetsRequest::default())
        .await
        .unwrap_err();
    // Made-up method names do not become label values.
    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for made_up in ["Nope1", "Nope2"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = format!("/backupgw.v1.BackupGateway/{made_up}")
            .parse()
            .unwrap();
        let status = grpc
            .unary::<_, pb::ListTargetsResponse, _>(
                with_key(pb::ListTargetsRequest::default(), BILLING_KEY),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }

    // Scraped over HTTP, as Prometheus does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(backupgw::server::serve_metrics(
        listener,
        Arc::clone(&gw.live),
    ));
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(
        !text.contains("backupgw_shared"),
        "no shared state, none of its metrics: {text}"
    );
    let region = &data.regions[0];
    let ok_targets = billing.len() - 1;
    // The first call read every page of the good targets and the failing one's first page
    // (a 401 is not retried); the second was served from the cache but for the failing one.
    assert_eq!(
        value(&format!(
            "backupgw_upstream_requests_total{{region=\"{region}\",status=\"200\"}}"
        )),
        (ok_targets * 3) as f64
    );
    assert_eq!(
        value(&format!(
            "backupgw_upstream_requests_total{{region=\"{region}\",status=\"401\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            "backupgw_upstream_requests_total{{region=\"{region}\",status=\"500\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "backupgw_upstream_retries_total{{region=\"{region}\",reason=\"server_error\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "backupgw_upstream_request_duration_seconds_count{{region=\"{region}\"}}"
        )),
        (ok_targets * 3 + 2 + 1) as f64
    );
    // What the cache holds, read at the scrape: the good targets' pages.
    assert!(value("backupgw_cache_bytes") > (ok_targets * 300 * 200) as f64);
    assert_eq!(
        value("backupgw_cache_misses_total"),
        (ok_targets * 3) as f64
    );
    assert_eq!(value("backupgw_cache_hits_total"), (ok_targets * 3) as f64);
    assert_eq!(
        value("backupgw_rpc_requests_total{method=\"ListBackups\",code=\"OK\",caller=\"billing\"}"),
        2.0
    );
    assert_eq!(
        value(
            "backupgw_rpc_requests_total{method=\"ListTargets\",code=\"UNAUTHENTICATED\",caller=\"\"}"
        ),
        1.0
    );
    assert_eq!(value("backupgw_streams_open{method=\"ListBackups\"}"), 0.0);
    assert!(!text.contains("Nope"), "{text}");
    assert_eq!(
        value(
            "backupgw_rpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\",caller=\"billing\"}"
        ),
        2.0
    );
    assert_eq!(
        value(&format!(
            "backupgw_target_up{{project_id=\"{failing}\",region=\"{region}\"}}"
        )),
        0.0
    );
    for p in &billing[1..] {
        let labels = format!("{{project_id=\"{}\",region=\"{region}\"}}", p.id);
        assert_eq!(value(&format!("backupgw_target_up{labels}")), 1.0);
        assert!(
            value(&format!(
                "backupgw_target_last_success_timestamp_seconds{labels}"
            )) > 1.7e9
        );
    }
    assert!(!text.contains(&format!(
        "last_success_timestamp_seconds{{project_id=\"{failing}\""
    )));
}
