//! Authenticating as real clients do: IAM password tokens, AK/SK signing, discovery, and no
//! secret anywhere it must not be.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::Arc;

use backupgw::ddm::auth::{AccessKey, IamPassword};
use backupgw::ddm::{Credential, CredentialKind};
use backupgw::discovery::Discovery;
use backupgw::inventory::{Limits, Target};
use backupgw::pb;
use backupgw::sim::{AuthOptions, SimKey, SimOptions, SimUser, Simulator};
use secrecy::SecretString;

use crate::accounts;
use crate::common::*;

const PASSWORD: &str = "correct-horse-battery-staple";
const AK: &str = "HPUATESTACCESSKEY001";
const SK: &str = "test-secret-key-0123456789abcdefghijklmn";

fn auth_sim_options() -> SimOptions {
    SimOptions {
        auth: AuthOptions {
            tokens: vec![SecretString::from(TOKEN)],
            users: vec![SimUser {
                domain: "acme".into(),
                name: "reader".into(),
                password: SecretString::from(PASSWORD),
            }],
            keys: vec![SimKey {
                access_key: AK.into(),
                secret_key: SecretString::from(SK),
            }],
            ..AuthOptions::default()
        },
        ..SimOptions::default()
    }
}

fn iam(sim: &Simulator, name: &str, password: &str) -> Arc<Credential> {
    let endpoint = sim.endpoint(&sim.data().regions[0]).unwrap();
    Arc::new(Credential::new(
        name,
        CredentialKind::IamPassword(IamPassword::new(
            endpoint,
            "acme".into(),
            "reader".into(),
            SecretString::from(password),
        )),
    ))
}

fn aksk(sim: &Simulator, name: &str, sk: &str) -> Arc<Credential> {
    let endpoint = sim.endpoint(&sim.data().regions[0]).unwrap();
    Arc::new(Credential::new(
        name,
        CredentialKind::AccessKey(AccessKey {
            iam_endpoint: endpoint,
            access_key: AK.into(),
            secret_key: SecretString::from(sk),
        }),
    ))
}

/// Region 0 by static token, region 1 by IAM password, region 2 by access key.
fn mixed_targets(
    sim: &Simulator,
    iam_cred: Arc<Credential>,
    aksk_cred: Arc<Credential>,
) -> Vec<Target> {
    let regions = &sim.data().regions;
    backupgw::demo::sim_targets(sim, token_credential("token", TOKEN))
        .into_iter()
        .map(|mut t| {
            if *t.region == *regions[1] {
                t.credential = Arc::clone(&iam_cred);
            } else if *t.region == *regions[2] {
                t.credential = Arc::clone(&aksk_cred);
            }
            t
        })
        .collect()
}

#[tokio::test]
async fn a_mix_of_iam_aksk_and_token_projects_is_inventoried() {
    let spec = small_spec();
    let sim = start_sim(&spec, auth_sim_options()).await;
    let targets = mixed_targets(&sim, iam(&sim, "iam", PASSWORD), aksk(&sim, "keys", SK));
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(got.targets.iter().all(|t| t.ok), "{:?}", got.targets);
    assert_eq!(got.by_key().len(), spec.total_backups());
    let regions = &sim.data().regions;
    for p in &sim.data().projects {
        // One token per IAM project, however many pages it has; none for the others.
        let expected = u64::from(p.region == regions[1]);
        assert_eq!(sim.tokens_issued(&p.id), expected, "{}", p.name);
    }
}

#[tokio::test]
async fn token_expiry_is_survived_with_exactly_one_refresh_per_project() {
    let sim = start_sim(&small_spec(), auth_sim_options()).await;
    let credential = iam(&sim, "iam", PASSWORD);
    let targets = backupgw::demo::sim_targets(&sim, credential);
    let mut gw = start_gateway(
        targets,
        Limits {
            max_pages_per_target: 8,
            ..Limits::default()
        },
        test_client_options(),
    )
    .await;
    let first = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(first.targets.iter().all(|t| t.ok));

    sim.expire_tokens();
    let fresh = fresh_request();
    let second = list(&mut gw.client, fresh).await;
    assert!(second.targets.iter().all(|t| t.ok), "{:?}", second.targets);
    assert_eq!(second.by_key(), first.by_key());
    for p in &sim.data().projects {
        assert_eq!(
            sim.tokens_issued(&p.id),
            2,
            "one token, then exactly one refresh: {}",
            p.name
        );
    }
}

#[tokio::test]
async fn a_thousand_concurrent_requests_share_one_token_fetch_and_one_refresh() {
    let sim = start_sim(&small_spec(), auth_sim_options()).await;
    let credential = iam(&sim, "iam", PASSWORD);
    let project = sim.data().projects[0].id.clone();
    let url = format!(
        "{}/v3/{project}/backups?limit=1",
        sim.endpoint(&sim.data().projects[0].region).unwrap()
    );
    let http = reqwest::Client::new();
    let authorize = |c: Arc<Credential>| {
        let (http, url, project) = (http.clone(), url.clone(), project.clone());
        async move {
            let mut request = http.get(&url).build().unwrap();
            c.authorize(&http, &mut request, Some(&project))
                .await
                .unwrap()
        }
    };
    let used: Vec<_> =
        futures_util::future::join_all((0..1000).map(|_| authorize(Arc::clone(&credential)))).await;
    assert_eq!(sim.tokens_issued(&project), 1);

    // All of them are told their token was rejected at once: one refresh.
    let renew = used
        .iter()
        .map(|u| credential.refresh_after_rejection(Some(&project), u));
    assert!(
        futures_util::future::join_all(renew)
            .await
            .into_iter()
            .all(|retry| retry)
    );
    futures_util::future::join_all((0..1000).map(|_| authorize(Arc::clone(&credential)))).await;
    assert_eq!(sim.tokens_issued(&project), 2);
}

#[tokio::test]
async fn a_wrong_password_or_secret_key_fails_only_its_own_targets() {
    let sim = start_sim(&small_spec(), auth_sim_options()).await;
    let targets = mixed_targets(
        &sim,
        iam(&sim, "iam-broken", "wrong password"),
        aksk(&sim, "keys-broken", "wrong secret"),
    );
    let mut gw = start_gateway(targets, Limits::default(), test_client_options()).await;
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    let regions = &sim.data().regions;
    for p in &sim.data().projects {
        let t = got.target(&p.id);
        let e = t.error.as_ref();
        if p.region == regions[0] {
            assert!(t.ok && t.backups == 300, "{t:?}");
        } else if p.region == regions[1] {
            let e = e.unwrap();
            assert_eq!((e.kind.as_str(), e.http_status), ("auth", 401), "{e:?}");
            assert!(
                e.message.contains("iam-broken") && e.message.contains("refused the password"),
                "{e:?}"
            );
        } else {
            let e = e.unwrap();
            assert_eq!(
                (e.kind.as_str(), e.error_code.as_str(), e.http_status),
                ("auth", "APIGW.0301", 401),
                "{e:?}"
            );
            assert!(e.message.contains("keys-broken"), "{e:?}");
            assert!(e.message.contains("verify aksk signature fail"), "{e:?}");
        }
    }
    // 3 good targets × 3 pages, and one request for all three AK/SK targets: an unproven
    // access key is tried once at a time, and after its 401 it rests (a 401 is never retried);
    // none for the IAM targets (IAM refused the password).
    assert_eq!(sim.stats().list_requests, 3 * 3 + 1);
}

#[tokio::test]
async fn discovery_finds_the_simulators_projects_and_regions() {
    let spec = backupgw::sim::DataSpec {
        regions: 4,
        projects_per_region: 3,
        ..small_spec()
    };
    let sim = start_sim(&spec, auth_sim_options()).await;
    let endpoints = sim
        .endpoints()
        .iter()
        .map(|(r, a)| (r.clone(), format!("http://{a}")))
        .collect();
    let gw = start_gateway(Vec::new(), Limits::default(), test_client_options()).await;
    // By IAM password: the cn-* regions only.
    let by_iam = Discovery {
        credential: iam(&sim, "iam", PASSWORD),
        regions: backupgw::callers::Patterns::new(&["cn-*".into()]).unwrap(),
        endpoints,
    };
    assert_eq!(by_iam.refresh(&gw.inventory).await.unwrap(), 9);
    let listed = gw.targets().await;
    let expected: HashSet<_> = sim
        .data()
        .projects
        .iter()
        .filter(|p| p.region.starts_with("cn-"))
        .map(|p| (p.id.clone(), p.name.clone(), p.region.clone()))
        .collect();
    let found: HashSet<_> = listed
        .iter()
        .map(|t| {
            (
                t.project_id.clone(),
                t.project_name.clone(),
                t.region.clone(),
            )
        })
        .collect();
    assert_eq!(found, expected, "MOS and other regions are skipped");
    assert!(
        listed
            .iter()
            .all(|t| t.source == "discovered" && t.credential == "iam")
    );
    assert_eq!(
        sim.tokens_issued(""),
        1,
        "one domain-scoped token to list projects"
    );

    // By access key: every region.
    let by_key = Discovery {
        credential: aksk(&sim, "keys", SK),
        regions: backupgw::callers::Patterns::any(),
        endpoints: sim
            .endpoints()
            .iter()
            .map(|(r, a)| (r.clone(), format!("http://{a}")))
            .collect(),
    };
    assert_eq!(by_key.refresh(&gw.inventory).await.unwrap(), 12);
    let got = list(&mut gw.client.clone(), pb::ListBackupsRequest::default()).await;
    assert_eq!(got.targets.len(), 12);
    assert!(got.targets.iter().all(|t| t.ok), "{:?}", got.targets);
    assert_eq!(got.by_key().len(), spec.total_backups());
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_appears_in_logs_errors_or_debug_output() {
    let log = LogCapture::everything();

    let sim = start_sim(&small_spec(), auth_sim_options()).await;
    let mut outputs = Vec::new();
    // A full run with good credentials, an expiry, and broken ones.
    let good = mixed_targets(&sim, iam(&sim, "iam", PASSWORD), aksk(&sim, "keys", SK));
    let mut gw = start_gateway(good.clone(), Limits::default(), test_client_options()).await;
    outputs.push(format!(
        "{:?}",
        list(&mut gw.client, pb::ListBackupsRequest::default()).await
    ));
    sim.expire_tokens();
    outputs.push(format!("{:?}", list(&mut gw.client, fresh_request()).await));
    outputs.push(format!("{good:?}"));
    let bad = mixed_targets(
        &sim,
        iam(&sim, "iam", "wrong-password-123"),
        aksk(&sim, "keys", "wrong-secret-456"),
    );
    let mut gw = start_gateway(bad, Limits::default(), test_client_options()).await;
    outputs.push(format!(
        "{:?}",
        list(&mut gw.client, pb::ListBackupsRequest::default()).await
    ));
    // An organization: agency tokens issued, refused, expired and renewed.
    let org = start_sim(&accounts::org_spec(), accounts::org_sim_options()).await;
    let dir = crate::cli::scratch_dir("secrets-org");
    let settings = accounts::org_settings(&org, &dir, &accounts::organization_toml());
    let mut gw = start_gateway(Vec::new(), Limits::default(), test_client_options()).await;
    settings.accounts[0].refresh(&gw.inventory).await.unwrap();
    outputs.push(format!(
        "{:?}",
        list(&mut gw.client, pb::ListBackupsRequest::default()).await
    ));
    org.expire_tokens();
    outputs.push(format!("{:?}", list(&mut gw.client, fresh_request()).await));
    settings.accounts[0].refresh(&gw.inventory).await.unwrap();
    outputs.push(format!("{:?} {settings:?}", gw.targets().await));

    let logs = log.text();
    assert!(logs.contains("call finished"), "the log was captured");
    assert!(
        logs.contains("refreshed the member accounts") && logs.contains("agency refused"),
        "the organization's log was captured"
    );
    assert!(
        logs.contains("reqwest") || logs.contains("hyper"),
        "the HTTP stack's log was captured"
    );
    std::fs::write(
        std::env::temp_dir().join("backupgw-secrets-test.log"),
        &logs,
    )
    .unwrap();
    let mut secrets: Vec<String> = vec![
        TOKEN.into(),
        PASSWORD.into(),
        SK.into(),
        "wrong-password-123".into(),
        "wrong-secret-456".into(),
        accounts::CENTRAL_PASSWORD.into(),
    ];
    secrets.extend(sim.secrets_seen());
    let agency_tokens = org.secrets_seen();
    assert!(agency_tokens.len() > 5, "agency tokens were issued");
    secrets.extend(agency_tokens);
    assert!(
        secrets.len() > 10,
        "tokens were issued and signatures received"
    );
    assert!(
        secrets.iter().any(|s| s.starts_with("MIIT")),
        "IAM-issued tokens are looked for too"
    );
    let _ = std::io::stderr().flush();
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the log");
        for out in &outputs {
            assert!(
                !out.contains(secret.as_str()),
                "a secret is in a response or Debug output"
            );
        }
    }
}
