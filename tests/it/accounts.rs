//! Many accounts: the simulator's organization (5 members: payments-prod, orders-prod,
//! analytics-prod whose agency covers only the first region, legacy-erp without the agency,
//! sandbox-dev suspended), read through agencies from a configuration file.

use std::path::Path;
use std::sync::Arc;

use backupgw::accounts::AccountSource;
use backupgw::config::Settings;
use backupgw::pb;
use backupgw::sim::data::SIM_AGENCY;
use backupgw::sim::{AuthOptions, DataSpec, SimOptions, SimUser, Simulator};
use secrecy::SecretString;
use tonic::Code;

use crate::cli::scratch_dir;
use crate::common::{
    Collected, Gateway, GatewaySetup, fresh_request, list, start_gateway_with, start_sim, try_list,
};

pub const CENTRAL_PASSWORD: &str = "central-password-0123";

pub fn org_spec() -> DataSpec {
    DataSpec {
        regions: 2,
        projects_per_region: 2,
        instances_per_project: 2,
        backups_per_instance: 20,
        accounts: 5,
        ..DataSpec::default()
    }
}

/// The management account's IAM user, and Organizations answering 2 accounts a page.
pub fn org_sim_options() -> SimOptions {
    SimOptions {
        auth: AuthOptions {
            tokens: vec![SecretString::from(crate::common::TOKEN)],
            users: vec![SimUser {
                domain: "acme-ops".into(),
                name: "backupgw".into(),
                password: SecretString::from(CENTRAL_PASSWORD),
            }],
            ..AuthOptions::default()
        },
        org_page_size: 2,
        ..SimOptions::default()
    }
}

/// A configuration for `sim`: its regions, the central IAM user (password in a private file)
/// and `accounts_toml` (an `[organization]` or `[[accounts]]`).
pub fn org_settings(sim: &Simulator, dir: &Path, accounts_toml: &str) -> Settings {
    use std::os::unix::fs::PermissionsExt as _;
    let password_file = dir.join("central-password");
    std::fs::write(&password_file, CENTRAL_PASSWORD).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut text = String::new();
    for (region, addr) in sim.endpoints() {
        text.push_str(&format!(
            "[regions.{region}]\nendpoint = \"http://{addr}\"\n"
        ));
    }
    let iam = sim.endpoint(&sim.data().regions[0]).unwrap();
    text.push_str(&format!(
        "[credentials.central]\nkind = \"iam_password\"\niam_endpoint = \"{iam}\"\ndomain = \"acme-ops\"\nuser = \"backupgw\"\npassword_file = \"central-password\"\n{}\n",
        accounts_toml.replace("{iam}", &iam)
    ));
    Settings::parse(&text, dir).unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

pub fn organization_toml() -> String {
    format!(
        "[organization]\ncredential = \"central\"\nendpoint = \"{{iam}}\"\nagency = \"{SIM_AGENCY}\"\nregions = [\"*\"]\n"
    )
}

/// A simulator with an organization, and a gateway whose account source has refreshed once.
pub async fn org_pair(name: &str, extra: &str) -> (Simulator, Gateway, Arc<AccountSource>) {
    let sim = start_sim(&org_spec(), org_sim_options()).await;
    let dir = scratch_dir(name);
    let settings = org_settings(&sim, &dir, &format!("{}{extra}", organization_toml()));
    let gw = start_gateway_with(
        settings.targets.clone(),
        GatewaySetup {
            callers: Arc::clone(&settings.callers),
            ..GatewaySetup::default()
        },
    )
    .await;
    let source = Arc::clone(&settings.accounts[0]);
    source.refresh(&gw.inventory).await.unwrap();
    (sim, gw, source)
}

fn results_of<'a>(got: &'a Collected, account: &str) -> Vec<&'a pb::TargetResult> {
    got.targets
        .iter()
        .filter(|t| t.account_name == account)
        .collect()
}

#[tokio::test]
async fn organizations_is_read_page_by_page_and_every_member_is_listed() {
    let (sim, gw, _) = org_pair("org-pages", "").await;
    // 5 members, 2 a page: 3 pages.
    assert_eq!(sim.stats().organizations_requests, 3);
    let targets = gw.targets().await;
    let mut accounts: Vec<(&str, &str)> = targets
        .iter()
        .map(|t| (t.account_name.as_str(), t.account_status.as_str()))
        .collect();
    accounts.dedup();
    assert_eq!(
        accounts,
        [
            ("payments-prod", "active"),
            ("orders-prod", "active"),
            ("analytics-prod", "active"),
            ("legacy-erp", "active"),
            ("sandbox-dev", "suspended")
        ]
    );
    assert_eq!(targets.len(), 5 * 2, "one target per member and region");
    for t in &targets {
        assert_eq!(t.source, "organization");
        let member = sim
            .data()
            .accounts
            .iter()
            .find(|a| a.name == t.account_name)
            .unwrap();
        assert_eq!(t.account_id, member.id);
        // The project id is the agency token's: the member's own project of that region.
        if !t.project_id.is_empty() {
            let project = sim.data().project(&t.project_id).unwrap();
            assert_eq!(
                (project.name.as_str(), project.region.as_str()),
                (t.project_name.as_str(), t.region.as_str())
            );
            assert_eq!(
                sim.data().accounts[project.account as usize - 1].name,
                t.account_name
            );
        }
    }
    let discovery = gw
        .client
        .clone()
        .list_targets(pb::ListTargetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .discoveries;
    assert!(
        discovery
            .iter()
            .any(|d| d.source == "organization" && d.accounts == 5 && d.targets == 10),
        "{discovery:?}"
    );
}

#[tokio::test]
async fn excluded_accounts_are_neither_listed_nor_read() {
    let spec = org_spec();
    let sim = start_sim(&spec, org_sim_options()).await;
    let orders = sim.data().accounts[1].id.clone();
    let extra = format!("exclude_accounts = [\"sandbox-*\", \"{orders}\"]\n");
    drop(sim);
    let (sim, gw, _) = org_pair("org-exclude", &extra).await;
    let mut names: Vec<String> = gw
        .targets()
        .await
        .into_iter()
        .map(|t| t.account_name)
        .collect();
    names.dedup();
    assert_eq!(names, ["payments-prod", "analytics-prod", "legacy-erp"]);
    assert_eq!(sim.assume_requests("orders-prod"), 0);
}

#[tokio::test]
async fn agency_tokens_are_cached_per_account_and_project_and_renewed_once_expired() {
    let (sim, mut gw, source) = org_pair("org-tokens", "").await;
    let readable = [
        ("payments-prod", 2),
        ("orders-prod", 2),
        ("analytics-prod", 1),
    ];
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    let ok: Vec<_> = got.targets.iter().filter(|t| t.ok).collect();
    assert_eq!(ok.len(), 5, "{:?}", got.targets);
    for (account, regions) in readable {
        assert_eq!(
            results_of(&got, account).iter().filter(|t| t.ok).count(),
            regions,
            "{account}"
        );
    }
    // Every backup of the readable projects, tagged with its account.
    let spec = org_spec();
    let per_project = spec.instances_per_project * spec.backups_per_instance;
    assert_eq!(got.by_key().len(), 5 * per_project);
    assert!(got.backups.iter().all(|b| !b.account_id.is_empty()
        && ["payments-prod", "orders-prod", "analytics-prod"].contains(&b.account_name.as_str())));
    // IAM was asked for one user token and once per (active member, region) with an agency.
    assert_eq!(sim.stats().iam_token_requests, 1 + 4 * 2);
    // One agency token per (account, project), one user token for the central account.
    for t in &ok {
        assert_eq!(sim.tokens_issued(&t.project_id), 1, "{}", t.project_name);
    }
    assert_eq!(sim.tokens_issued(""), 1);

    // Cached: another query and another refresh ask IAM for nothing new.
    let fresh = fresh_request();
    list(&mut gw.client, fresh.clone()).await;
    source.refresh(&gw.inventory).await.unwrap();
    for t in &ok {
        assert_eq!(sim.tokens_issued(&t.project_id), 1, "{}", t.project_name);
    }

    // A day later every token has expired: each is renewed once, with one new user token.
    sim.expire_tokens();
    let again = list(&mut gw.client, fresh).await;
    assert_eq!(
        again.targets.iter().filter(|t| t.ok).count(),
        5,
        "{:?}",
        again.targets
    );
    assert_eq!(again.by_key().len(), 5 * per_project);
    for t in &ok {
        assert_eq!(sim.tokens_issued(&t.project_id), 2, "{}", t.project_name);
    }
    assert_eq!(sim.tokens_issued(""), 2);
}

#[tokio::test]
async fn our_own_token_does_not_reach_a_member_project() {
    let (_sim, gw, _) = org_pair("org-own-token", "").await;
    let member = gw
        .targets()
        .await
        .into_iter()
        .find(|t| !t.project_id.is_empty())
        .unwrap();
    let answer = reqwest::Client::new()
        .get(format!(
            "{}/v3/{}/backups",
            member.endpoint, member.project_id
        ))
        .header("x-auth-token", crate::common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
}

#[tokio::test]
async fn a_suspended_account_is_listed_and_never_read() {
    let (sim, mut gw, _) = org_pair("org-suspended", "").await;
    let suspended: Vec<_> = gw
        .targets()
        .await
        .into_iter()
        .filter(|t| t.account_name == "sandbox-dev")
        .collect();
    assert_eq!(suspended.len(), 2);
    assert!(
        suspended
            .iter()
            .all(|t| t.account_status == "suspended" && t.project_id.is_empty())
    );
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(
        results_of(&got, "sandbox-dev").is_empty(),
        "{:?}",
        got.targets
    );
    // Even when asked for by name.
    let only = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            accounts: vec!["sandbox-dev".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(
        only.targets.is_empty() && only.backups.is_empty(),
        "{only:?}"
    );
    assert_eq!(sim.assume_requests("sandbox-dev"), 0, "IAM was never asked");
}

#[tokio::test]
async fn an_account_without_the_agency_fails_exactly_its_targets_and_is_not_asked_again() {
    let (sim, mut gw, source) = org_pair("org-noagency", "").await;
    assert_eq!(sim.assume_requests("legacy-erp"), 2, "once per region");
    let requests = sim.stats().list_requests;
    let fresh = fresh_request();
    for _ in 0..2 {
        let got = list(&mut gw.client, fresh.clone()).await;
        let failed: Vec<_> = got.targets.iter().filter(|t| !t.ok).collect();
        // legacy-erp in both regions, analytics-prod in the region its agency does not cover.
        assert_eq!(failed.len(), 3, "{failed:?}");
        for t in &failed {
            let e = t.error.as_ref().unwrap();
            assert_eq!(e.kind, "auth", "{e:?}");
            assert!(e.message.contains(SIM_AGENCY), "{e:?}");
            assert!(e.message.contains(&format!("region {}", t.region)), "{e:?}");
            assert!(
                e.message.contains(&format!("account {:?}", t.account_name)),
                "{e:?}"
            );
            assert!(!e.retryable, "{e:?}");
        }
        assert_eq!(results_of(&got, "legacy-erp").len(), 2);
        let analytics = results_of(&got, "analytics-prod");
        let region0 = &sim.data().regions[0];
        assert!(
            analytics.iter().all(|t| t.ok == (&t.region == region0)),
            "{analytics:?}"
        );
    }
    // Not asked again, from IAM or DDM, before the next refresh…
    assert_eq!(sim.assume_requests("legacy-erp"), 2);
    assert_eq!(sim.assume_requests("analytics-prod"), 2);
    assert_eq!(
        sim.stats().list_requests - requests,
        2 * 5,
        "only the readable targets"
    );
    // …and ListTargets says why.
    let listed = gw.targets().await;
    let refused = listed
        .iter()
        .find(|t| t.account_name == "legacy-erp")
        .unwrap();
    assert_eq!(refused.last_error.as_ref().unwrap().kind, "auth");
    // Selected alone, nothing can be read, every target for its credentials.
    let alone = try_list(
        &mut gw.client,
        tonic::Request::new(pb::ListBackupsRequest {
            accounts: vec!["legacy-erp".into()],
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(alone.targets.len(), 2);
    assert_eq!(alone.status.unwrap().code(), Code::FailedPrecondition);
    // The next refresh asks once more.
    source.refresh(&gw.inventory).await.unwrap();
    assert_eq!(sim.assume_requests("legacy-erp"), 4);
}

#[tokio::test]
async fn members_joining_and_leaving_are_picked_up_by_the_next_refresh() {
    let (sim, mut gw, source) = org_pair("org-members", "").await;
    let accounts = |targets: &[pb::Target]| {
        let mut names: Vec<String> = targets.iter().map(|t| t.account_name.clone()).collect();
        names.dedup();
        names
    };
    assert!(accounts(&gw.targets().await).contains(&"orders-prod".to_owned()));
    // A stream that started before orders-prod leaves…
    let mut open = gw
        .client
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = open.message().await.unwrap().unwrap();
    sim.set_member("orders-prod", false);
    source.refresh(&gw.inventory).await.unwrap();
    assert!(!accounts(&gw.targets().await).contains(&"orders-prod".to_owned()));
    let without = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert!(results_of(&without, "orders-prod").is_empty());
    // …reads to its end with the targets it started with.
    let mut results = first.targets;
    let mut summary = None;
    while let Some(m) = open.message().await.unwrap() {
        results.extend(m.targets);
        summary = m.summary.or(summary);
    }
    assert_eq!(
        results
            .iter()
            .filter(|t| t.account_name == "orders-prod" && t.ok)
            .count(),
        2
    );
    assert_eq!(summary.unwrap().targets_ok, 5);
    // Back in the organization: back in the inventory.
    sim.set_member("orders-prod", true);
    source.refresh(&gw.inventory).await.unwrap();
    let back = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(
        results_of(&back, "orders-prod")
            .iter()
            .filter(|t| t.ok)
            .count(),
        2
    );
}
