//! The example clients of README's "Calling it from code", run against a real gateway.

use std::path::PathBuf;
use std::process::Command;

use backupgw::pb;

use crate::common::*;

/// Runs a client and returns its stdout lines, checking the summary it prints on stderr.
fn run_client(mut command: Command, expected_backups: usize) -> Vec<String> {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{expected_backups} backups; 3 targets ok, 0 failed"
        )),
        "{stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The gateway's own answer, as the example clients print it.
async fn expected(gw: &mut Gateway, region: &str) -> Vec<String> {
    let got = list(
        &mut gw.client,
        pb::ListBackupsRequest {
            regions: vec![region.to_owned()],
            ..Default::default()
        },
    )
    .await;
    let mut lines: Vec<String> = got
        .backups
        .iter()
        .map(|b| {
            let created = b.created.map(|t| t.to_string()).unwrap_or_default();
            format!(
                "{}\t{}\t{}\t{}\t{created}",
                b.region, b.instance_name, b.name, b.status
            )
        })
        .collect();
    lines.sort();
    lines
}

// The client blocks this thread; the gateway runs on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_lists_a_region() {
    let (sim, mut gw) = start_pair(&small_spec()).await;
    let region = sim.data().regions[0].clone();
    let want = expected(&mut gw, &region).await;
    // Examples are built by `cargo test`, beside the test binaries.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/list_backups");
    let mut command = Command::new(&example);
    command.args([format!("http://{}", gw.addr), region]);
    let mut got = run_client(command, want.len());
    got.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_lists_a_region() {
    let mut imports = Command::new("python3");
    imports.args(["-c", "import grpc, grpc_tools"]);
    if !tool_runs(
        imports,
        "BACKUPGW_REQUIRE_PYTHON_GRPC",
        "python3 with grpcio and grpcio-tools (pip install grpcio grpcio-tools)",
    ) {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let generated = std::env::temp_dir().join(format!("backupgw-py-{}", std::process::id()));
    std::fs::create_dir_all(&generated).unwrap();
    let status = Command::new("python3")
        .current_dir(&root)
        .args(["-m", "grpc_tools.protoc", "-I", "proto"])
        .arg(format!("--python_out={}", generated.display()))
        .arg(format!("--grpc_python_out={}", generated.display()))
        .arg("proto/backupgw/v1/backupgw.proto")
        .status()
        .unwrap();
    assert!(status.success());

    let (sim, mut gw) = start_pair(&small_spec()).await;
    let region = sim.data().regions[0].clone();
    let want = expected(&mut gw, &region).await;
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", &generated)
        .arg(root.join("examples/list_backups.py"))
        .args([gw.addr.to_string(), region]);
    let mut got = run_client(command, want.len());
    got.sort();
    assert_eq!(got.len(), want.len());
    // Python prints times with its own formatting; the rest is the same.
    let strip = |l: &String| l.rsplit_once('\t').unwrap().0.to_owned();
    assert_eq!(
        got.iter().map(strip).collect::<Vec<_>>(),
        want.iter().map(strip).collect::<Vec<_>>()
    );
}
