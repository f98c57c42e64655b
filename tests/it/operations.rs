//! The binary as an operator runs it: JSON logs with the caller on them, SIGTERM with a slow
//! stream open, SIGHUP with a broken and then a valid file, `check-config`, and refusing to
//! serve everyone on a public address.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use backupgw::callers::api_key_sha256;
use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;
use tonic::transport::Channel;

use crate::cli::{Running, scratch_dir, spawn_lines, spawn_until};
use crate::common::with_key;

const KEY: &str = "operations-test-key-42";
const HANG: Duration = Duration::from_secs(60);

/// A simulator (2 regions × 2 projects × 2,000 backups) and the configuration it wrote.
fn simulator(dir: &Path) -> (Running, PathBuf, String) {
    let config = dir.join("gateway.toml");
    let (sim, _) = spawn_until(
        &[
            "sim",
            "--regions",
            "2",
            "--projects-per-region",
            "2",
            "--instances-per-project",
            "2",
            "--backups-per-instance",
            "1000",
            "--accounts",
            "0",
            "--write-config",
            config.to_str().unwrap(),
        ],
        "sim ready",
    );
    let written = std::fs::read_to_string(&config).unwrap();
    (sim, config, written)
}

fn caller_section(name: &str) -> String {
    format!(
        "[[callers]]\nname = \"{name}\"\napi_key_sha256 = \"{}\"\nprojects = [\"*\"]\n",
        api_key_sha256(KEY)
    )
}

/// Starts `serve` on the file; its log lines, and its address.
fn serve(config: &Path) -> (Running, Receiver<String>, String) {
    let (gw, lines) = spawn_lines(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let addr = wait_for(&lines, "listening")
        .split_once("addr")
        .map(|(_, rest)| {
            rest.trim_start_matches(['=', '"', ':'])
                .split(['"', ' '])
                .next()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    (gw, lines, addr)
}

fn wait_for(lines: &Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(HANG) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?}: {e}"),
        }
    }
}

async fn client(addr: &str) -> BackupGatewayClient<Channel> {
    BackupGatewayClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn signal(gw: &Running, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn json_logs_carry_the_caller_and_every_line_parses() {
    let dir = scratch_dir("json-logs");
    let (_sim, config, written) = simulator(&dir);
    // One more project, which the simulator does not know: a failing target.
    let unknown = "fedcba9876543210fedcba9876543210";
    let region = written
        .lines()
        .find_map(|l| l.strip_prefix("region = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    std::fs::write(
        &config,
        format!(
            "{written}\n[[projects]]\nid = \"{unknown}\"\nregion = \"{region}\"\ncredential = \"sim\"\n[log]\nformat = \"json\"\n{}",
            caller_section("billing")
        ),
    )
    .unwrap();
    let (gw, lines, addr) = serve(&config);
    let mut client = client(&addr).await;
    let mut stream = client
        .list_backups(with_key(pb::ListBackupsRequest::default(), KEY))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    let failed = wait_for(&lines, "target failed");
    let finished = wait_for(&lines, "call finished");
    // A refused call has its line too.
    let _ = client.list_targets(pb::ListTargetsRequest::default()).await;
    let refused = wait_for(&lines, "call refused");
    drop(gw);
    let mut all: Vec<String> = vec![finished, refused.clone(), failed.clone()];
    all.extend(lines.iter());
    for line in &all {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            parsed["level"].is_string() && parsed["timestamp"].is_string(),
            "{line}"
        );
    }
    let call: serde_json::Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(call["caller"], "billing", "{call}");
    // Every line logged within the call carries the caller, through its span.
    assert_eq!(call["span"]["caller"], "billing", "{call}");
    assert_eq!(call["method"], "ListBackups");
    assert_eq!((&call["ok"], &call["failed"]), (&4.into(), &1.into()));
    assert_eq!(call["backups"], 8000);
    // One WARN per failed target, with what support asks for.
    let failed: serde_json::Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["project"], unknown);
    assert_eq!(failed["region"], region.as_str());
    assert_eq!(failed["credential"], "sim");
    assert_eq!(
        (&failed["kind"], &failed["code"]),
        (&"upstream".into(), &"APIGW.0310".into())
    );
    assert_eq!(failed["request_id"].as_str().unwrap().len(), 32, "{failed}");
    assert_eq!(failed["span"]["caller"], "billing");
    assert!(
        !all.iter().any(|l| l.contains(KEY)),
        "the API key is never logged"
    );
}

#[tokio::test]
async fn sigterm_lets_a_slow_stream_finish_and_exits_zero() {
    let dir = scratch_dir("sigterm");
    let (_sim, config, written) = simulator(&dir);
    std::fs::write(
        &config,
        format!("{written}\n[server]\nshutdown_grace_seconds = 60\n"),
    )
    .unwrap();
    let (mut gw, lines, addr) = serve(&config);
    let mut client = client(&addr).await;
    let mut stream = client
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut backups = stream.message().await.unwrap().unwrap().backups.len();
    signal(&gw, "TERM");
    wait_for(&lines, "shutting down");
    // A slow reader, well inside the grace period.
    let mut summary = None;
    while let Some(m) = stream.message().await.unwrap() {
        backups += m.backups.len();
        summary = m.summary.or(summary);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(backups, 8000);
    assert_eq!(summary.unwrap().targets_ok, 4);
    // No new calls.
    assert!(
        BackupGatewayClient::connect(format!("http://{addr}"))
            .await
            .is_err()
    );
    drop((stream, client));
    let status = gw.wait_timeout(HANG).expect("exited");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_does_not_wait_for_a_caller_that_never_reads() {
    let dir = scratch_dir("sigterm-stuck");
    let (_sim, config, written) = simulator(&dir);
    std::fs::write(
        &config,
        format!("{written}\n[server]\nshutdown_grace_seconds = 1\n"),
    )
    .unwrap();
    let (mut gw, _lines, addr) = serve(&config);
    let (_, stream) = crate::common::caller_that_does_not_read(addr.parse().unwrap()).await;
    signal(&gw, "TERM");
    let status = gw
        .wait_timeout(HANG)
        .expect("waited for a caller that does not read");
    assert_eq!(status.code(), Some(0));
    drop(stream);
}

#[tokio::test]
async fn sighup_keeps_serving_on_a_broken_file_and_applies_a_valid_one() {
    let dir = scratch_dir("sighup");
    let (_sim, config, written) = simulator(&dir);
    std::fs::write(&config, &written).unwrap();
    let (gw, lines, addr) = serve(&config);
    let mut client = client(&addr).await;
    let targets = |c: &mut BackupGatewayClient<Channel>| {
        let mut c = c.clone();
        async move {
            c.list_targets(with_key(pb::ListTargetsRequest::default(), KEY))
                .await
                .map(|r| r.into_inner().targets.len())
        }
    };
    assert_eq!(targets(&mut client).await.unwrap(), 4);
    // Every target read once: its last success is known.
    let mut all = client
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    while all.message().await.unwrap().is_some() {}
    // A slow stream, open across both reloads.
    let mut open = client
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut backups = open.message().await.unwrap().unwrap().backups.len();

    std::fs::write(
        &config,
        format!("{written}\n[limits]\nmax_attempts = \"many\"\n"),
    )
    .unwrap();
    signal(&gw, "HUP");
    let refused = wait_for(&lines, "reload refused");
    assert!(refused.contains("limits.max_attempts"), "{refused}");
    assert_eq!(targets(&mut client).await.unwrap(), 4, "still serving");

    // A valid file: one project less, and callers now required.
    let mut text = written.clone();
    let last = text.rfind("[[projects]]").unwrap();
    text.truncate(last);
    // …and a [server] setting that only a restart applies.
    std::fs::write(
        &config,
        format!(
            "{text}\n{}\n[server]\nmax_connections = 7\n",
            caller_section("ops")
        ),
    )
    .unwrap();
    signal(&gw, "HUP");
    let restart = wait_for(&lines, "take a restart");
    assert!(restart.contains("[server]"), "{restart}");
    wait_for(&lines, "configuration reloaded");
    assert_eq!(targets(&mut client).await.unwrap(), 3);
    let listed = client
        .list_targets(with_key(pb::ListTargetsRequest::default(), KEY))
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert!(
        listed.iter().all(|t| t.last_success.is_some()),
        "what the gateway knew of its targets survives a reload: {listed:?}"
    );
    let status = client
        .list_targets(pb::ListTargetsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // The stream opened before either reload went on undisturbed.
    while let Some(m) = open.message().await.unwrap() {
        backups += m.backups.len();
    }
    assert_eq!(backups, 8000);
}

#[test]
fn check_config_reports_every_problem_at_once() {
    let dir = scratch_dir("check-config");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:50051\"\n[limits]\nmax_attempts = \"four\"\n[regions.mars-1]\nendpoint = \"http://127.0.0.1:1\"\n[credentials.ops]\nkind = \"token\"\ntoken_file = \"missing-token\"\n[credentials.spare]\nkind = \"token\"\ntoken_env = \"BACKUPGW_UNSET_FOR_TEST\"\n[[projects]]\nid = \"0123456789abcdef0123456789abcdef\"\nregion = \"cn-north-4\"\ncredential = \"ops\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_backupgw"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "limits.max_attempts",
        "regions.mars-1",
        "credentials.ops.token_file",
        "credentials.spare",
        "callers",
    ] {
        assert!(text.contains(&format!(": {key}:")), "{key} not in\n{text}");
    }
    // Without reading secrets, the missing token file is not a problem; the rest still is.
    let out = run(&["check-config", "--no-secrets", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(!text.contains("token_file"), "{text}");

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[credentials.ops]\nkind = \"token\"\ntoken_file = \"/run/secrets/not-here\"\n[[projects]]\nid = \"0123456789abcdef0123456789abcdef\"\nregion = \"cn-north-4\"\ncredential = \"ops\"\n",
    )
    .unwrap();
    let out = run(&["check-config", "--no-secrets", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        run(&["check-config", good.to_str().unwrap()]).status.code(),
        Some(1)
    );
}

#[test]
fn an_open_gateway_refuses_a_public_address() {
    let dir = scratch_dir("public");
    let file = dir.join("open.toml");
    std::fs::write(
        &file,
        "[credentials.ops]\nkind = \"token\"\ntoken_env = \"PATH\"\n[[projects]]\nid = \"0123456789abcdef0123456789abcdef\"\nregion = \"cn-north-4\"\ncredential = \"ops\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no [[callers]] are configured"), "{err}");
    assert!(err.contains("allow_unauthenticated"), "{err}");
    assert!(
        !err.contains("backtrace"),
        "reads well whatever RUST_BACKTRACE says: {err}"
    );
}

#[tokio::test]
async fn start_up_does_not_wait_for_an_iam_that_never_answers() {
    let dir = scratch_dir("iam-hang");
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file = dir.join("discover.toml");
    std::fs::write(
        &file,
        format!(
            "[regions.cn-north-4]\nendpoint = \"http://127.0.0.1:1\"\n[credentials.iam]\nkind = \"iam_password\"\ndomain = \"acme\"\nuser = \"reader\"\npassword_env = \"PATH\"\niam_endpoint = \"http://{}\"\ndiscover = true\n",
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let (_gw, _lines, addr) = serve(&file);
    let answer = tokio::time::timeout(
        HANG,
        client(&addr)
            .await
            .list_targets(pb::ListTargetsRequest::default()),
    )
    .await
    .expect("ListTargets waited for IAM")
    .unwrap()
    .into_inner();
    assert!(answer.targets.is_empty(), "nothing discovered yet");
}

#[tokio::test]
async fn sighup_reads_the_tls_certificate_again() {
    let dir = scratch_dir("tls-reload");
    let (_sim, config, written) = simulator(&dir);
    let write_cert = |ca: &crate::common::TestCa| {
        let (cert, key) = ca.sign(&["localhost"], "backupgw");
        std::fs::write(dir.join("server.crt"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
    };
    let (first, second) = (
        crate::common::TestCa::new("first CA"),
        crate::common::TestCa::new("second CA"),
    );
    write_cert(&first);
    std::fs::write(
        &config,
        format!("{written}\n[tls]\ncert_file = \"server.crt\"\nkey_file = \"server.key\"\n"),
    )
    .unwrap();
    let (gw, lines, addr) = serve(&config);
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let trusting = |ca| crate::common::list_targets_over_tls(port, ca, None);
    assert!(trusting(&first).await.is_ok());
    assert!(trusting(&second).await.is_err());
    write_cert(&second);
    signal(&gw, "HUP");
    wait_for(&lines, "configuration reloaded");
    // New connections get the new certificate.
    assert!(trusting(&second).await.is_ok());
    assert!(trusting(&first).await.is_err());
}

/// `[shared]` is asked at start-up: the log and `backupgw_shared_up` say whether Redis answers
/// before any query does, so a wrong password shows when a replica is deployed. The password is
/// never in the log.
#[tokio::test]
async fn a_replica_says_at_start_whether_its_redis_answers() {
    use std::os::unix::fs::PermissionsExt as _;
    if !crate::redis::Redis::available() {
        return;
    }
    let redis = crate::redis::Redis::start_with_password("the-right-one");
    let dir = scratch_dir("ops-shared");
    let (_sim, config, written) = simulator(&dir);
    let password_file = dir.join("redis-password");
    for (password, said, up) in [
        ("the-right-one", "shared state (Redis) answers", 1),
        ("a-wrong-one", "shared state (Redis) unreachable", 0),
    ] {
        std::fs::write(&password_file, password).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shared = format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n[shared]\nredis_url = \"redis://127.0.0.1:{}/0\"\npassword_file = \"redis-password\"\n",
            redis.port
        );
        std::fs::write(&config, format!("{written}\n{shared}")).unwrap();
        let args = ["serve", "--config", config.to_str().unwrap()];
        let (_gw, lines) = spawn_lines(&[&args[..], &["--listen", "127.0.0.1:0"]].concat(), &[]);
        // In whichever order they come: where the metrics are, and what Redis said.
        let (mut metrics, mut redis_said) = (None, None);
        while metrics.is_none() || redis_said.is_none() {
            let line = lines.recv_timeout(HANG).expect("start-up logged both");
            if line.contains("metrics at /metrics") {
                let (_, rest) = line.split_once("addr=").unwrap();
                metrics = Some(rest.split_whitespace().next().unwrap().to_owned());
            } else if line.contains("shared state (Redis)") {
                redis_said = Some(line);
            }
        }
        let redis_said = redis_said.unwrap();
        assert!(redis_said.contains(said), "{redis_said}");
        assert!(!redis_said.contains(password), "{redis_said}");
        backupgw::server::install_crypto_provider();
        let text = reqwest::get(format!("http://{}/metrics", metrics.unwrap()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(&format!("backupgw_shared_up {up}")), "{text}");
    }
}
