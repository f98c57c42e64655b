//! The binary as a user runs it: `sim --write-config`, `serve --config`, and bad configurations.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;

use crate::common::{Collected, list};

pub struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and waits for a line starting with `ready`; returns the rest of that line.
pub fn spawn_until(args: &[&str], ready: &str) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let rest = lines
        .find_map(|l| l.strip_prefix(ready).map(str::to_owned))
        .unwrap_or_else(|| panic!("{args:?} never printed {ready:?}"));
    std::thread::spawn(move || lines.for_each(drop));
    (Running(child), rest)
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
    let (_gw, addr) = spawn_until(
        &["serve", "--config", config, "--listen", "127.0.0.1:0"],
        "backupgw listening on ",
    );
    let mut client = BackupGatewayClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let got: Collected = list(&mut client, pb::ListBackupsRequest::default()).await;
    assert_eq!(got.by_key().len(), 4 * 200);
    assert_eq!(got.summary.unwrap().targets_ok, 4);
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
