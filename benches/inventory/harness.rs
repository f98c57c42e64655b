//! The processes a benchmark drives (the simulator, gateways), streaming and counting an
//! answer, and the numbers read from /proc.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;
use tonic::transport::Channel;

pub const LATENCY_MS: u64 = 50;

/// Upstream requests in flight at once (the gateway's C, and the baselines').
pub const CONCURRENCY: usize = 400;

pub const PAGE: usize = 128;

/// A child process, killed when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and waits for a line (stdout or stderr) containing `ready`; returns the
/// rest of it. The gateway logs warnings and its `listening` line, not a line per call.
pub fn spawn_until(args: &[&str], ready: &str) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backupgw"))
        .args(args)
        .env(
            "BACKUPGW_LOG",
            "warn,backupgw=info,backupgw::inventory=warn",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the backupgw binary runs");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
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
            // Warnings still reach the terminal.
            if l.contains("WARN") || l.contains("ERROR") {
                eprintln!("{l}");
            }
            let _ = tx2.send(l);
        }
    });
    let rest = lines
        .iter()
        .find_map(|l| l.split_once(ready).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("{args:?} never printed {ready:?}"));
    std::thread::spawn(move || lines.iter().for_each(drop));
    (Proc { child }, rest)
}

pub struct Sim {
    pub proc: Proc,
    pub config: PathBuf,
    pub token: String,
    /// (project id, region endpoint)
    pub targets: Vec<(String, String)>,
}

pub fn start_sim(dir: &Path, args: &[&str]) -> Sim {
    let config = dir.join("gateway.toml");
    let mut all = vec!["sim", "--write-config", config.to_str().unwrap()];
    // Our own projects only, unless a row asks for an organization.
    if !args.contains(&"--accounts") {
        all.extend_from_slice(&["--accounts", "0"]);
    }
    all.extend_from_slice(args);
    let (proc, _) = spawn_until(&all, "sim ready");
    let text = std::fs::read_to_string(&config).unwrap();
    let token = std::fs::read_to_string(format!("{}.token", config.display())).unwrap();
    // Read the targets back from the configuration the simulator wrote.
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    let endpoints = parsed["regions"].as_table().unwrap();
    let targets = parsed["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let region = p["region"].as_str().unwrap();
            (
                p["id"].as_str().unwrap().to_owned(),
                endpoints[region]["endpoint"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Sim {
        proc,
        config,
        token,
        targets,
    }
}

pub struct Gateway {
    pub proc: Proc,
    pub url: String,
    pub channel: Channel,
    pub client: BackupGatewayClient<Channel>,
}

pub async fn start_gateway(sim: &Sim, limits: &str) -> Gateway {
    // The simulator's configuration, with these limits.
    let text = std::fs::read_to_string(&sim.config).unwrap();
    let config = sim
        .config
        .with_extension(format!("{}.toml", fastrand::u32(..)));
    std::fs::write(&config, format!("{text}\n{limits}\n")).unwrap();
    let (proc, addr) = spawn_until(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "listening addr=",
    );
    let addr = addr.split_whitespace().next().unwrap().to_owned();
    // Receive windows sized for bulk streams, as gRPC clients that tune for throughput do.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    let client = BackupGatewayClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    Gateway {
        proc,
        url: format!("http://{addr}"),
        channel,
        client,
    }
}

/// Streams a whole answer; returns (backups, seconds). `pause` slows the client down, and
/// `for_at_most` stops it early.
pub async fn stream_all(
    client: &mut BackupGatewayClient<Channel>,
    request: pb::ListBackupsRequest,
    pause: Option<Duration>,
    for_at_most: Option<Duration>,
) -> (u64, f64) {
    let start = Instant::now();
    let mut stream = client.list_backups(request).await.unwrap().into_inner();
    let mut backups = 0u64;
    while let Some(m) = stream.message().await.unwrap() {
        backups += m.backups.len() as u64;
        if let Some(s) = &m.summary {
            assert_eq!(s.targets_failed, 0, "{s:?}");
        }
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
        if for_at_most.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
    }
    (backups, start.elapsed().as_secs_f64())
}

/// A `ListBackupsResponse` that counts its backups instead of building them: what a client
/// that forwards or filters raw messages pays.
#[derive(Clone, Default, PartialEq)]
pub struct Counted {
    pub backups: u64,
    pub summary: Option<pb::Summary>,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counted({})", self.backups)
    }
}

impl prost::Message for Counted {
    fn encode_raw(&self, _: &mut impl prost::bytes::BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => {
                self.backups += 1;
                prost::encoding::skip_field(wire_type, tag, buf, ctx)
            }
            3 => prost::encoding::message::merge(
                wire_type,
                self.summary.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Streams a whole answer, counting backups without decoding them; returns (backups, seconds).
pub async fn stream_counted(channel: Channel, request: pb::ListBackupsRequest) -> (u64, f64) {
    let start = Instant::now();
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::ListBackupsRequest, Counted>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/backupgw.v1.BackupGateway/ListBackups",
    );
    let mut stream = grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await
        .unwrap()
        .into_inner();
    let mut backups = 0;
    while let Some(m) = stream.message().await.unwrap() {
        backups += m.backups;
        if let Some(s) = m.summary {
            assert_eq!(s.targets_failed, 0);
        }
    }
    (backups, start.elapsed().as_secs_f64())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:").unwrap_or(0.0)
}

/// Resident memory now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:").expect("the process's resident memory")
}

/// A size in `/proc/PID/status` (given in kB there), in MiB.
fn status_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backupgw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Row {
    pub name: String,
    pub value: String,
    pub target: String,
}

pub fn row(name: impl Into<String>, value: String, target: &str) -> Row {
    Row {
        name: name.into(),
        value,
        target: target.into(),
    }
}

/// ListBackups requests the simulator has answered so far.
pub async fn sim_list_requests(sim: &Sim) -> u64 {
    let endpoint = &sim.targets[0].1;
    let body = reqwest::get(format!("{endpoint}/_sim/stats"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    stats["list_requests"].as_u64().unwrap()
}
