//! Many accounts as the others see them: a caller allowed some accounts, `[[accounts]]` listed
//! by name, the configuration's mistakes, the shell client. Over the organization of
//! `accounts.rs`.

use backupgw::config::Settings;
use backupgw::pb;
use backupgw::sim::data::SIM_AGENCY;
use tonic::Code;

use crate::accounts::{org_pair, org_settings, org_sim_options, org_spec};
use crate::cli::scratch_dir;
use crate::common::{GatewaySetup, list, start_gateway_with, start_sim, try_list, with_key};

const KEY: &str = "accounts-test-key-7";

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
        .list_targets(with_key(pb::ListTargetsRequest::default(), KEY))
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert_eq!(visible.len(), 2);
    assert!(visible.iter().all(|t| t.account_name == payments.name));
    let got = try_list(
        &mut client,
        with_key(pb::ListBackupsRequest::default(), KEY),
    )
    .await
    .unwrap();
    assert!(!got.backups.is_empty());
    assert!(got.backups.iter().all(|b| b.account_name == payments.name));
    assert!(got.targets.iter().all(|t| t.account_name == payments.name));
    // Its own account by id, name or glob.
    for mine in [payments.id.as_str(), payments.name.as_str(), "pay*"] {
        let got = try_list(
            &mut client,
            with_key(
                pb::ListBackupsRequest {
                    accounts: vec![mine.into()],
                    ..Default::default()
                },
                KEY,
            ),
        )
        .await
        .unwrap();
        assert_eq!(got.targets.len(), 2, "{mine}");
    }
    // Another account, by name or id, existing or not: refused, naming the field, in every RPC.
    for other in [orders.name.as_str(), orders.id.as_str(), "no-such-account"] {
        let accounts = vec!["payments-prod".to_owned(), other.to_owned()];
        let status = client
            .list_targets(with_key(
                pb::ListTargetsRequest {
                    accounts: accounts.clone(),
                    ..Default::default()
                },
                KEY,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().starts_with("accounts[1]"), "{status:?}");
        let status = try_list(
            &mut client,
            with_key(
                pb::ListBackupsRequest {
                    accounts: accounts.clone(),
                    ..Default::default()
                },
                KEY,
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let status = client
            .summarize_backups(with_key(
                pb::SummarizeBackupsRequest {
                    accounts,
                    ..Default::default()
                },
                KEY,
            ))
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
            with_key(
                pb::ListBackupsRequest {
                    project_ids: vec![project.into()],
                    ..Default::default()
                },
                KEY,
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(!status.message().contains(&orders.name), "{status:?}");
    }
    // The protection report: its own account's instances alone.
    let mut report = client
        .summarize_backups(with_key(pb::SummarizeBackupsRequest::default(), KEY))
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
