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
const KEY: &str = "accounts-test-key-7";

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
async fn org_pair(name: &str, extra: &str) -> (Simulator, Gateway, Arc<AccountSource>) {
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

fn with_key<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    request
}

#[tokio::test]
async fn a_caller_allowed_some_accounts_sees_nothing_else_through_any_field() {
    let caller = format!(
        "[[callers]]\nname = \"payments\"\napi_key_sha256 = \"{}\"\nprojects = [\"*\"]\naccounts = [\"payments-*\"]\n",
        backupgw::callers::api_key_sha256(KEY)
    );
    let (sim, gw, _) = org_pair("org-callers", &caller).await;
    let mut client = gw.client.clone();
    let payments = &sim.data().accounts[0];
    let orders = &sim.data().accounts[1];
    // Everything it may see: payments-prod's projects alone.
    let visible = client
        .list_targets(with_key(pb::ListTargetsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert_eq!(visible.len(), 2);
    assert!(visible.iter().all(|t| t.account_name == payments.name));
    let got = try_list(&mut client, with_key(pb::ListBackupsRequest::default()))
        .await
        .unwrap();
    assert!(!got.backups.is_empty());
    assert!(got.backups.iter().all(|b| b.account_name == payments.name));
    assert!(got.targets.iter().all(|t| t.account_name == payments.name));
    // Its own account by id, name or glob.
    for mine in [payments.id.as_str(), payments.name.as_str(), "pay*"] {
        let got = try_list(
            &mut client,
            with_key(pb::ListBackupsRequest {
                accounts: vec![mine.into()],
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(got.targets.len(), 2, "{mine}");
    }
    // Another account, by name or id, existing or not: refused, naming the field, in every RPC.
    for other in [orders.name.as_str(), orders.id.as_str(), "no-such-account"] {
        let accounts = vec!["payments-prod".to_owned(), other.to_owned()];
        let status = client
            .list_targets(with_key(pb::ListTargetsRequest {
                accounts: accounts.clone(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().starts_with("accounts[1]"), "{status:?}");
        let status = try_list(
            &mut client,
            with_key(pb::ListBackupsRequest {
                accounts: accounts.clone(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = client
            .summarize_backups(with_key(pb::SummarizeBackupsRequest {
                accounts,
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().starts_with("accounts[1]"), "{status:?}");
    }
    // Another account's project, by id or name: as invisible as one that does not exist.
    let all = gw.inventory.targets();
    let hidden = all
        .iter()
        .find(|t| t.account.as_ref().is_some_and(|a| a.name == orders.name))
        .unwrap();
    for project in [&*hidden.project_id, "0123456789abcdef0123456789abcdef"] {
        let status = try_list(
            &mut client,
            with_key(pb::ListBackupsRequest {
                project_ids: vec![project.into()],
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(!status.message().contains(&orders.name), "{status:?}");
    }
    // The protection report: its own account's instances alone.
    let mut report = client
        .summarize_backups(with_key(pb::SummarizeBackupsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    while let Some(m) = report.message().await.unwrap() {
        for i in &m.instances {
            assert_eq!(i.account_name, payments.name);
            assert_eq!(i.account_id, payments.id);
            rows += 1;
        }
    }
    assert!(rows > 0);
}

#[tokio::test]
async fn listed_accounts_by_name_learn_their_id_and_read_sub_projects() {
    let sim = start_sim(&org_spec(), org_sim_options()).await;
    let dir = scratch_dir("org-listed");
    let regions = &sim.data().regions;
    let payments_id = sim.data().accounts[0].id.clone();
    let accounts = format!(
        "[[accounts]]\nname = \"payments\"\ndomain_name = \"payments-prod\"\nagency = \"{SIM_AGENCY}\"\ncredential = \"central\"\nregions = [\"{}\"]\nsub_projects = [\"{}_payments\"]\n\n[[accounts]]\nname = \"erp\"\ndomain_id = \"{}\"\nagency = \"backupgw-readonly\"\ncredential = \"central\"\nregions = [\"{}\"]\n",
        regions[0],
        regions[1],
        sim.data().accounts[3].id,
        regions[1],
    );
    let settings = org_settings(&sim, &dir, &accounts);
    let mut gw = start_gateway_with(Vec::new(), GatewaySetup::default()).await;
    settings.accounts[0].refresh(&gw.inventory).await.unwrap();
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    let mut seen: Vec<(&str, &str, &str, bool)> = got
        .targets
        .iter()
        .map(|t| {
            (
                t.account_name.as_str(),
                t.account_id.as_str(),
                t.project_name.as_str(),
                t.ok,
            )
        })
        .collect();
    seen.sort();
    let sub = format!("{}_payments", regions[1]);
    assert_eq!(
        seen,
        [
            (
                "erp",
                sim.data().accounts[3].id.as_str(),
                regions[1].as_str(),
                false
            ),
            ("payments", payments_id.as_str(), sub.as_str(), true),
            ("payments", payments_id.as_str(), regions[0].as_str(), true),
        ]
    );
    assert!(got.targets.iter().all(|t| {
        t.ok || t
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("backupgw-readonly")
    }));
}

#[test]
fn account_configuration_mistakes_are_named_by_key() {
    let dir = scratch_dir("org-config");
    let text = r#"
[regions.cn-north-4]
endpoint = "http://127.0.0.1:9"
[credentials.token]
kind = "token"
token_env = "BACKUPGW_TEST_ACCOUNTS_TOKEN"
[[accounts]]
name = "a"
agency = "x"
credential = "token"
regions = ["eu-*"]
sub_projects = ["nowhere_payments"]
[[accounts]]
name = "a"
domain_id = "1"
domain_name = "b"
agency = ""
credential = "missing"
[organization]
credential = "token"
agency = "x"
refresh_seconds = 0
exclude_accounts = ["["]
page_size = 5000
"#;
    let path = dir.join("accounts.toml");
    std::fs::write(&path, text).unwrap();
    let errors = Settings::check(&path, false).unwrap_err();
    // How often each source refreshes.
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[discovery]\ninterval_seconds = 120\n[credentials.central]\nkind = \"iam_password\"\ndomain = \"d\"\nuser = \"u\"\npassword_env = \"BACKUPGW_TEST_UNSET\"\n[[accounts]]\nname = \"a\"\ndomain_name = \"a\"\nagency = \"x\"\ncredential = \"central\"\n[organization]\ncredential = \"central\"\nagency = \"x\"\nrefresh_seconds = 30\n",
    )
    .unwrap();
    let settings = Settings::check(&good, false).unwrap();
    let intervals: Vec<u64> = settings
        .accounts
        .iter()
        .map(|a| a.interval.as_secs())
        .collect();
    assert_eq!(intervals, [120, 30]);
    let keys = errors.keys();
    for key in [
        "accounts[0]",
        "accounts[0].credential",
        "accounts[0].regions",
        "accounts[0].sub_projects[0]",
        "accounts[1].name",
        "accounts[1]",
        "accounts[1].agency",
        "accounts[1].credential",
        "organization.credential",
        "organization.refresh_seconds",
        "organization.exclude_accounts",
        "organization.page_size",
    ] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
    let text = errors.to_string();
    assert!(text.contains("iam_password"), "{text}");
}

// The binary blocks this thread; the gateway runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_client_selects_and_shows_accounts() {
    let (_sim, gw, _) = org_pair("org-shell", "").await;
    let addr = format!("http://{}", gw.addr);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_backupgw"))
            .args(args)
            .env_remove("BACKUPGW_API_KEY")
            .output()
            .unwrap()
    };
    let csv = run(&["ls", "--addr", &addr, "--account", "orders-*", "-o", "csv"]);
    assert_eq!(csv.status.code(), Some(0));
    let mut reader = csv::Reader::from_reader(csv.stdout.as_slice());
    let rows: Vec<backupgw::shell::BackupRow> = reader.deserialize().map(Result::unwrap).collect();
    let spec = org_spec();
    assert_eq!(
        rows.len(),
        2 * spec.instances_per_project * spec.backups_per_instance
    );
    assert!(
        rows.iter()
            .all(|r| r.account_name == "orders-prod" && !r.account_id.is_empty())
    );
    // The table names the account, and a suspended one as such.
    let table = run(&[
        "targets",
        "--addr",
        &addr,
        "--account",
        "sandbox-dev,legacy-erp",
        "-o",
        "table",
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("ACCOUNT"), "{text}");
    assert_eq!(text.matches("sandbox-dev (suspended)").count(), 2, "{text}");
    let column = |l: &&str| l.contains("  legacy-erp  ");
    assert_eq!(text.lines().filter(column).count(), 2, "{text}");
    // Some targets failed (legacy-erp has no agency): the exit status says so.
    let report = run(&[
        "report",
        "--addr",
        &addr,
        "--account",
        "legacy-erp",
        "-o",
        "json",
    ]);
    assert_eq!(report.status.code(), Some(2));
    let stderr = String::from_utf8(report.stderr).unwrap();
    let region0 = &_sim.data().regions[0];
    assert!(
        stderr.contains(&format!("(legacy-erp/{region0}, {region0}): auth")),
        "{stderr}"
    );
}
