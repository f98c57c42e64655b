//! The binary as a user runs it: `sim --write-config`, `serve --config`, and bad configurations.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;

use crate::common::{Collected, list};

pub struct Running(Child);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the process to exit, for at most `limit` (std has no wait with a timeout).
    pub fn wait_timeout(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and waits for a line (on stdout or stderr) containing `ready`; returns
/// the rest of that line.
pub fn spawn_until(args: &[&str], ready: &str) -> (Running, String) {
    spawn_with_env(args, &[], ready)
}

pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)], ready: &str) -> (Running, String) {
    let (running, lines) = spawn_lines(args, env);
    let rest = lines
        .iter()
        .find_map(|l| l.split_once(ready).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("{args:?} never printed {ready:?}"));
    std::thread::spawn(move || lines.iter().for_each(drop));
    (running, rest)
}

/// Starts the binary; its stdout and stderr lines, as they come.
pub fn spawn_lines(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Running, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(l);
        }
    });
    (Running(child), rx)
}

/// The address in a `listening addr=…` log line.
pub fn listening_addr(rest: &str) -> String {
    rest.split_whitespace().next().unwrap().to_owned()
}

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backupgw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn serve_reads_the_configuration_the_simulator_writes() {
    let dir = scratch_dir("serve");
    let config = dir.join("gateway.toml");
    let config = config.to_str().unwrap();
    let (_sim, _) = spawn_until(
        &[
            "sim",
            "--regions",
            "2",
            "--projects-per-region",
            "2",
            "--instances-per-project",
            "1",
            "--backups-per-instance",
            "200",
            "--write-config",
            config,
        ],
        "sim ready",
    );
    let written = std::fs::read_to_string(config).unwrap();
    assert!(written.contains("token_file"), "{written}");
    let token = std::fs::read_to_string(format!("{config}.token")).unwrap();
    assert!(token.len() > 16);
    assert!(
        !written.contains(&token),
        "the token is not written into the configuration"
    );
    assert!(written.contains("[organization]"), "{written}");
    let password = std::fs::read_to_string(format!("{config}.password")).unwrap();
    assert!(!written.contains(&password), "nor is the password");
    let (_gw, lines) = spawn_lines(
        &["serve", "--config", config, "--listen", "127.0.0.1:0"],
        &[],
    );
    let mut addr = None;
    let mut refreshed = false;
    while addr.is_none() || !refreshed {
        let line = lines
            .recv()
            .expect("serve printed its address and the accounts");
        if let Some((_, rest)) = line.split_once("listening addr=") {
            addr = Some(listening_addr(rest));
        }
        refreshed |= line.contains("refreshed the member accounts");
    }
    std::thread::spawn(move || lines.iter().for_each(drop));
    let mut client = BackupGatewayClient::connect(format!("http://{}", addr.unwrap()))
        .await
        .unwrap();
    let got: Collected = list(&mut client, pb::ListBackupsRequest::default()).await;
    // Our 4 projects, and the members' region projects: payments-prod and orders-prod in both
    // regions, analytics-prod in the first (its agency covers no more); legacy-erp has no
    // agency; sandbox-dev is suspended and not read.
    assert_eq!(got.by_key().len(), (4 + 5) * 200);
    let summary = got.summary.unwrap();
    assert_eq!((summary.targets_ok, summary.targets_failed), (4 + 5, 1 + 2));
}

#[test]
fn a_bad_configuration_names_the_key_and_exits_non_zero() {
    let dir = scratch_dir("badconfig");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[credentials.ops]\nkind = \"token\"\ntoken_env = \"BACKUPGW_TEST_UNSET\"\n[[projects]]\nid = \"0123456789abcdef0123456789abcdef\"\nregion = \"cn-north-4\"\ncredential = \"ops\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env_remove("BACKUPGW_TEST_UNSET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("credentials.ops.token_env") && err.contains("BACKUPGW_TEST_UNSET"),
        "{err}"
    );
}
