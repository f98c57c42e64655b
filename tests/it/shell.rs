//! `backupgw ls` and `backupgw targets` against a running gateway: every output parsed back and
//! compared with what the API answers, and the exit status that scripts rely on.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use backupgw::pb;
use backupgw::shell::{BACKUP_COLUMNS, BackupRow, TargetRow};

use crate::common::*;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args(args)
        .env_remove("BACKUPGW_API_KEY")
        .output()
        .unwrap()
}

/// The API's own answer, as rows keyed by (project, backup id).
async fn expected(gw: &mut Gateway) -> BTreeMap<(String, String), BackupRow> {
    let got = list(&mut gw.client, pb::ListBackupsRequest::default()).await;
    got.backups
        .iter()
        .map(|b| ((b.project_id.clone(), b.id.clone()), BackupRow::from(b)))
        .collect()
}

fn keyed(rows: Vec<BackupRow>) -> BTreeMap<(String, String), BackupRow> {
    let n = rows.len();
    let map: BTreeMap<_, _> = rows
        .into_iter()
        .map(|r| ((r.project_id.clone(), r.backup_id.clone()), r))
        .collect();
    assert_eq!(map.len(), n, "a backup written twice");
    map
}

// The binary blocks this thread; the gateway runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_writes_csv_json_and_tables_that_read_back_as_the_api_answered() {
    let (_sim, mut gw) = start_pair(&small_spec()).await;
    let want = expected(&mut gw).await;
    let addr = format!("http://{}", gw.addr);

    let csv = run(&["ls", "--addr", &addr, "-o", "csv"]);
    assert_eq!(csv.status.code(), Some(0));
    let mut reader = csv::Reader::from_reader(csv.stdout.as_slice());
    assert_eq!(reader.headers().unwrap(), BACKUP_COLUMNS.as_slice());
    let rows: Vec<BackupRow> = reader.deserialize().map(Result::unwrap).collect();
    assert_eq!(keyed(rows), want);

    let json = run(&["ls", "--addr", &addr, "-o", "json"]);
    let rows: Vec<BackupRow> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(keyed(rows), want);

    let table = run(&["ls", "--addr", &addr, "-o", "table"]);
    let text = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("CREATED (UTC)"), "{}", lines[0]);
    assert_eq!(lines.len(), want.len() + 1);
    let any = want.values().next().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&any.backup_name) && l.contains(&any.instance_name)),
        "{text}"
    );
    // Not on a terminal: no progress bar, nothing on stderr at all.
    assert!(
        table.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_flags_select_and_filter_as_the_request_fields_do() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let addr = format!("http://{}", gw.addr);
    let region = sim.data().regions[1].clone();
    let api = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            project_ids: vec!["*_payments".into(), "*_orders".into()],
            regions: vec![region.clone()],
            backup_types: vec!["metadata".into()],
            order: pb::Order::NewestFirst as i32,
            ..Default::default()
        },
    )
    .await;
    let out = run(&[
        "ls",
        "--addr",
        &addr,
        "--project",
        "*_payments,*_orders",
        "--region",
        &region,
        "--type",
        "BACKUP_TYPE_METADATA",
        "--newest-first",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<BackupRow> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<BackupRow> = api.backups.iter().map(BackupRow::from).collect();
    assert!(!want.is_empty());
    assert_eq!(rows, want, "the same backups, in the same order");
    // Repeating a flag is the same as commas.
    let repeated = run(&[
        "ls",
        "--addr",
        &addr,
        "--project",
        "*_payments",
        "--project",
        "*_orders",
        "--region",
        &region,
        "--type",
        "metadata",
        "--newest-first",
        "-o",
        "json",
    ]);
    let again: Vec<BackupRow> = String::from_utf8(repeated.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_exits_2_when_a_target_failed_and_still_writes_the_rest() {
    let sim = start_sim(&small_spec(), sim_options()).await;
    let mut targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let broken = targets[4].project_id.to_string();
    targets[4].credential = token_credential("stale", "not-the-token");
    let gw = start_gateway(
        targets,
        backupgw::inventory::Limits::default(),
        test_client_options(),
    )
    .await;
    let out = run(&["ls", "--addr", &format!("http://{}", gw.addr), "-o", "csv"]);
    assert_eq!(out.status.code(), Some(2));
    let rows: Vec<BackupRow> = csv::Reader::from_reader(out.stdout.as_slice())
        .deserialize()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 8 * 300, "everything that arrived");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the failed targets and nothing else: {stderr}"
    );
    assert_eq!(lines[0], "1 target(s) failed:");
    assert!(
        lines[1].contains(&broken) && lines[1].contains("auth"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_lists_what_the_gateway_reads_and_errors_exit_1() {
    let (_sim, gw) = start_pair(&small_spec()).await;
    let addr = format!("http://{}", gw.addr);
    let out = run(&["targets", "--addr", &addr, "-o", "csv"]);
    assert_eq!(out.status.code(), Some(0));
    let rows: Vec<TargetRow> = csv::Reader::from_reader(out.stdout.as_slice())
        .deserialize()
        .map(Result::unwrap)
        .collect();
    let api = gw.targets().await;
    assert_eq!(rows, api.iter().map(TargetRow::from).collect::<Vec<_>>());

    // A refused call, an unreachable gateway, a bad flag: 1, with the reason on stderr.
    for args in [
        vec!["ls", "--addr", addr.as_str(), "--project", "nope"],
        vec!["ls", "--addr", "http://127.0.0.1:1"],
        vec!["ls", "--addr", addr.as_str(), "--since", "yesterday"],
        vec!["targets", "--addr", addr.as_str(), "--region", "mars-1"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("backupgw: "), "{stderr}");
        assert!(!stderr.contains("backtrace"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_ends_ls_quietly() {
    use std::io::{BufRead as _, BufReader};
    let (_sim, gw) = start_pair(&small_spec()).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args(["ls", "--addr", &format!("http://{}", gw.addr), "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: one line, then the pipe is closed.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_writes_what_summarize_backups_answers_and_exits_2_on_a_failed_target() {
    use backupgw::shell::{REPORT_COLUMNS, ReportRow};
    let spec = small_spec();
    let probe = backupgw::sim::DataSet::generate(&spec).unwrap();
    let failing = probe.projects[5].id.clone();
    let mut options = sim_options();
    options.faults = backupgw::sim::FaultPlan {
        projects: [(
            failing.clone(),
            backupgw::sim::Faults {
                fail_instances: true,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let sim = start_sim(&spec, options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let mut gw = start_gateway(targets, Default::default(), test_client_options()).await;
    let mut api = Vec::new();
    let mut stream = gw
        .client
        .summarize_backups(pb::SummarizeBackupsRequest {
            protections: vec![
                pb::Protection::Stale as i32,
                pb::Protection::Orphaned as i32,
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(m)) = stream.message().await {
        api.extend(m.instances.iter().map(ReportRow::from));
    }
    assert!(!api.is_empty());

    let out = run(&[
        "report",
        "--addr",
        &format!("http://{}", gw.addr),
        "--only",
        "stale,orphaned",
        "-o",
        "csv",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "one target's instance list failed"
    );
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(reader.headers().unwrap(), REPORT_COLUMNS.as_slice());
    let rows: Vec<ReportRow> = reader.deserialize().map(Result::unwrap).collect();
    assert_eq!(rows, api);
    assert!(
        rows.iter()
            .all(|r| r.protection == "stale" || r.protection == "orphaned")
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&failing) && stderr.contains("DBS.200412"),
        "{stderr}"
    );

    // A table ends with the totals.
    let table = run(&[
        "report",
        "--addr",
        &format!("http://{}", gw.addr),
        "-o",
        "table",
    ]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().starts_with("PROTECTION"),
        "{text}"
    );
    let last = text.lines().last().unwrap();
    assert!(
        last.contains("protected") && last.contains("orphaned"),
        "{last}"
    );
    let bad = run(&[
        "report",
        "--addr",
        &format!("http://{}", gw.addr),
        "--stale-after",
        "soon",
    ]);
    assert_eq!(bad.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_speaks_tls_with_ca_file_and_sends_the_key_from_api_key_file() {
    use backupgw::callers::{Caller, CallerBook, Credential, Scope, api_key_sha256};
    use std::sync::Arc;
    let dir = crate::cli::scratch_dir("shell-tls");
    let ca = TestCa::new("shell test CA");
    let (cert, key) = ca.sign(&["localhost"], "backupgw");
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.issuer.pem()).unwrap();
    std::fs::write(dir.join("api-key"), "shell-test-key\n").unwrap();
    let tls = backupgw::tls::TlsFiles {
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        client_ca_file: None,
    }
    .load()
    .unwrap();
    let mut hash = [0u8; 32];
    hex::decode_to_slice(api_key_sha256("shell-test-key"), &mut hash).unwrap();
    let callers = CallerBook::new(vec![(
        Arc::new(Caller::new("shell", Scope::everything(), None)),
        Credential::ApiKeySha256(hash),
    )]);
    let sim = start_sim(&small_spec(), sim_options()).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let gw = start_gateway_with(
        targets,
        GatewaySetup {
            callers: Arc::new(callers),
            tls: Some(Arc::new(tls)),
            ..GatewaySetup::default()
        },
    )
    .await;
    let addr = format!("https://localhost:{}", gw.addr.port());
    let ca_file = dir.join("ca.pem");
    let key_file = dir.join("api-key");
    let ok = run(&[
        "ls",
        "--addr",
        &addr,
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--api-key-file",
        key_file.to_str().unwrap(),
        "-o",
        "csv",
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let rows = csv::Reader::from_reader(ok.stdout.as_slice())
        .records()
        .count();
    assert_eq!(rows, small_spec().total_backups());
    // Without the key: refused, exit 1, saying why.
    let refused = run(&[
        "ls",
        "--addr",
        &addr,
        "--ca-file",
        ca_file.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("UNAUTHENTICATED"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
