//! `cargo bench --bench inventory`: the release binary's simulator and gateway as separate
//! processes on loopback, a client here, several repetitions, medians, one table.
//!
//! Set BACKUPGW_BENCH_QUICK=1 for a smaller, faster run (fewer repetitions, no sequential
//! baseline over the whole inventory), and BACKUPGW_BENCH_PROFILE=1 to only stream warm
//! inventories for 30 s (to profile the gateway with `perf record -p PID`; `=cold` to read every
//! page from the simulator each time).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backupgw::ddm::model::decode_page;
use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

const LATENCY_MS: u64 = 50;
/// Upstream requests in flight at once (the gateway's C, and the baselines').
const CONCURRENCY: usize = 400;
const PAGE: usize = 128;

/// A child process, killed when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
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
fn spawn_until(args: &[&str], ready: &str) -> (Proc, String) {
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

struct Sim {
    proc: Proc,
    config: PathBuf,
    token: String,
    /// (project id, region endpoint)
    targets: Vec<(String, String)>,
}

fn start_sim(dir: &Path, args: &[&str]) -> Sim {
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

struct Gateway {
    proc: Proc,
    url: String,
    channel: Channel,
    client: BackupGatewayClient<Channel>,
}

async fn start_gateway(sim: &Sim, limits: &str) -> Gateway {
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
async fn stream_all(
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
struct Counted {
    backups: u64,
    summary: Option<pb::Summary>,
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
async fn stream_counted(channel: Channel, request: pb::ListBackupsRequest) -> (u64, f64) {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

/// What users do today: one request at a time, pages in order (the SDK examples).
async fn sequential_client(sim: &Sim, targets: &[(String, String)]) -> (u64, f64) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut backups = 0;
    for (project, endpoint) in targets {
        backups += read_target_in_order(&http, &sim.token, project, endpoint).await;
    }
    (backups, start.elapsed().as_secs_f64())
}

/// How generic inventory tools page: targets concurrently, each target's pages in order.
async fn per_target_in_order_client(sim: &Sim) -> (u64, f64) {
    let http = reqwest::Client::new();
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (project, endpoint) in sim.targets.clone() {
        let (http, token, slots) = (http.clone(), sim.token.clone(), Arc::clone(&slots));
        tasks.spawn(async move {
            let _slot = slots.acquire().await.unwrap();
            read_target_in_order(&http, &token, &project, &endpoint).await
        });
    }
    let mut backups = 0;
    while let Some(n) = tasks.join_next().await {
        backups += n.unwrap();
    }
    (backups, start.elapsed().as_secs_f64())
}

/// What bounds the cold row on this machine: every page fetched by a bare HTTP client in the
/// ideal schedule (all first pages at once, each target's other pages as soon as its first
/// arrives), bodies read but not parsed, nothing sent on.
async fn ideal_schedule_client(sim: &Sim) -> (u64, f64) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut targets = tokio::task::JoinSet::new();
    for (project, endpoint) in sim.targets.clone() {
        let (http, token) = (http.clone(), sim.token.clone());
        targets.spawn(async move {
            let fetch = |offset: u64| {
                let url = format!("{endpoint}/v3/{project}/backups?limit={PAGE}&offset={offset}");
                let request = http.get(url).header("X-Auth-Token", &token);
                async move { request.send().await.unwrap().bytes().await.unwrap() }
            };
            let first = fetch(0).await;
            let total = total_of(&first);
            let rest = (PAGE as u64..total)
                .step_by(PAGE)
                .map(fetch)
                .collect::<futures_util::future::JoinAll<_>>()
                .await;
            rest.iter()
                .chain([&first])
                .map(|b| b.len() as u64)
                .sum::<u64>()
        });
    }
    let mut bytes = 0;
    while let Some(n) = targets.join_next().await {
        bytes += n.unwrap();
    }
    (bytes, start.elapsed().as_secs_f64())
}

/// A page's `total`, read without decoding its backups.
fn total_of(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Total {
        total: u64,
    }
    serde_json::from_slice::<Total>(body).unwrap().total
}

async fn read_target_in_order(
    http: &reqwest::Client,
    token: &str,
    project: &str,
    endpoint: &str,
) -> u64 {
    let mut offset = 0;
    let mut backups = 0;
    loop {
        let url = format!("{endpoint}/v3/{project}/backups?limit={PAGE}&offset={offset}");
        let body = http
            .get(&url)
            .header("X-Auth-Token", token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let owner = backupgw::wire::Owner {
            project_id: project,
            ..Default::default()
        };
        let page = decode_page(&body, owner).unwrap();
        backups += page.len() as u64;
        offset += PAGE as u64;
        if offset >= page.total {
            return backups;
        }
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("backupgw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Row {
    name: String,
    value: String,
    target: String,
}

#[tokio::main]
async fn main() {
    backupgw::ddm::client::install_crypto_provider();
    let quick = std::env::var_os("BACKUPGW_BENCH_QUICK").is_some();
    let reps = if quick { 3 } else { 5 };
    let dir = scratch();
    let mut rows = Vec::new();

    let only = std::env::var("BACKUPGW_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "inventory" {
        rows.extend(inventory(quick, reps, &dir).await);
    }
    if only.is_empty() || only == "memory" {
        rows.extend(memory(quick, &dir).await);
    }
    if only.is_empty() || only == "replicas" {
        rows.extend(replicas(reps, &dir).await);
    }
    if only.is_empty() || only == "scale" {
        rows.extend(scale(&dir).await);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let vwidth = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "\n{:<width$}  {:<vwidth$}  target",
        "benchmark (medians)", "result"
    );
    for r in rows {
        println!("{:<width$}  {:<vwidth$}  {}", r.name, r.value, r.target);
    }
}

/// Backups in the inventory of rows 1, 2 and 4.
const INVENTORY_BACKUPS: u64 = 4 * 50 * 300;

/// The inventory of rows 1, 2 and 4: 4 regions × 50 projects × 300 backups (3 pages each).
fn start_inventory_sim(dir: &Path, latency_ms: u64) -> Sim {
    start_sim(
        dir,
        &[
            "--regions",
            "4",
            "--projects-per-region",
            "50",
            "--instances-per-project",
            "10",
            "--backups-per-instance",
            "30",
            "--latency-ms",
            &latency_ms.to_string(),
        ],
    )
}

/// C for the gateway, and a cache that holds the whole inventory.
fn inventory_limits() -> String {
    format!(
        "[limits]\nmax_concurrent_requests = {CONCURRENCY}\nmax_concurrent_targets = {CONCURRENCY}\nmax_pages_per_target = 8\n[cache]\nttl_seconds = 3600\nmax_bytes = 268435456"
    )
}

/// Rows 1, 2 and 4: 4 regions × 50 projects × 300 backups (3 pages each), 50 ms a request.
async fn inventory(quick: bool, reps: usize, dir: &Path) -> Vec<Row> {
    let sim = start_inventory_sim(dir, LATENCY_MS);
    let limits = inventory_limits();
    if std::env::var_os("BACKUPGW_BENCH_PROFILE").is_some() {
        profile(&sim, &limits).await;
        return Vec::new();
    }
    let measured = measure(&sim, &limits, reps).await;
    let clients = baselines(&sim, quick, reps).await;
    let far = cold_far_away(reps, dir).await;
    let summary = summarize_cold(&sim, &limits, reps).await;
    let targets = sim.targets.len();
    let mut rows = cold_rows(targets, &measured, clients.2, far);
    rows.extend(beside_cold_rows(
        targets, &measured, clients, summary, quick,
    ));
    rows.extend(warm_rows(&measured));
    rows.extend(small_queries_rows(&sim, &limits, quick).await);
    rows
}

fn row(name: impl Into<String>, value: String, target: &str) -> Row {
    Row {
        name: name.into(),
        value,
        target: target.into(),
    }
}

/// The fewest round trips `t` targets' first pages and `requests` other requests take at
/// C = CONCURRENCY, in seconds.
fn round_trips(t: usize, requests: usize) -> f64 {
    ((t.div_ceil(CONCURRENCY) + requests.div_ceil(CONCURRENCY)) as u64 * LATENCY_MS) as f64 / 1000.0
}

/// "N ms = X × the"
fn times(secs: f64, bound: f64) -> String {
    format!("{:.0} ms = {:.2} × the", secs * 1e3, secs / bound)
}

/// Row 1: the cold inventory against its round-trip bound, on a fresh and on a running
/// gateway, beside the floor (`ideal`) and a far region (`far`: time and bound).
fn cold_rows(t: usize, measured: &Measured, ideal: f64, (far, far_bound): (f64, f64)) -> Vec<Row> {
    let bound = round_trips(t, 2 * t);
    vec![
        row(
            format!(
                "cold inventory, {t} targets × 300 = {INVENTORY_BACKUPS} backups, C = {CONCURRENCY}"
            ),
            format!(
                "{} {:.0} ms round-trip bound",
                times(measured.cold, bound),
                bound * 1e3
            ),
            "≤ 1.5 × bound",
        ),
        row(
            "  the same on a running gateway (max_age = 0: every page read again)",
            format!("{} bound", times(measured.cold_running, bound)),
            "",
        ),
        row(
            "  floor: a bare HTTP client, ideal schedule, bodies not even parsed",
            format!("{} bound", times(ideal, bound)),
            "",
        ),
        row(
            format!("  the same at {FAR_LATENCY_MS} ms a request (a far region)"),
            format!("{} {:.0} ms bound", times(far, far_bound), far_bound * 1e3),
            "",
        ),
        row(
            "  CPU used meanwhile: gateway, simulator (of 2 cores)",
            format!(
                "{:.0} ms, {:.0} ms",
                measured.gw_cold_cpu * 1e3,
                measured.sim_cold_cpu * 1e3
            ),
            "",
        ),
    ]
}

/// Row 1, continued: the protection report over the same inventory (`summary`: time and
/// instances), and the clients users write themselves (`clients`: sequential, pages in order).
fn beside_cold_rows(
    t: usize,
    measured: &Measured,
    (sequential, in_order, _): (f64, f64, f64),
    (summary, instances): (f64, usize),
    quick: bool,
) -> Vec<Row> {
    // Every target's instance list is asked for beside its first page.
    let summary_bound = round_trips(2 * t, 2 * t);
    let cold = measured.cold;
    vec![
        row(
            format!("  SummarizeBackups over it and {t} instance lists ({instances} instances)"),
            format!(
                "{} {:.0} ms round-trip bound",
                times(summary, summary_bound),
                summary_bound * 1e3
            ),
            "≈ the cold inventory",
        ),
        row(
            format!(
                "  vs sequential client (one request at a time){}",
                if quick {
                    ", extrapolated from 20 targets"
                } else {
                    ""
                }
            ),
            format!(
                "{sequential:.1} s: backupgw is {:.0} × faster",
                sequential / cold
            ),
            "≥ 100 ×",
        ),
        row(
            "  vs targets concurrent, pages in order",
            format!(
                "{:.0} ms: backupgw is {:.1} × faster",
                in_order * 1e3,
                in_order / cold
            ),
            "",
        ),
    ]
}

/// Row 2: the warm inventory, from the cache.
fn warm_rows(measured: &Measured) -> Vec<Row> {
    vec![
        row(
            "warm inventory (from cache), backups/s delivered to the client",
            format!(
                "{:.2} M/s; gateway CPU {:.2} s per million backups",
                measured.warm_rate / 1e6,
                measured.warm_cpu
            ),
            "≥ 1 M/s",
        ),
        row(
            "  the same, the client decoding every backup into objects",
            format!("{:.2} M/s", measured.warm_decoded_rate / 1e6),
            "",
        ),
    ]
}

/// Row 4: many small queries: one cached target, 64 callers; then again while a caller that
/// does not read holds a cold inventory of every target open.
async fn small_queries_rows(sim: &Sim, limits: &str, quick: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let gw = start_gateway(sim, limits).await;
    let one = pb::ListBackupsRequest {
        project_ids: vec![sim.targets[0].0.clone()],
        ..Default::default()
    };
    stream_counted(gw.channel.clone(), one.clone()).await; // fills the cache
    let run_for = Duration::from_secs(if quick { 2 } else { 5 });
    let (rate, p50, p99) = small_queries(&gw, &one, run_for).await;
    rows.push(Row {
        name: "many small queries: 1 cached target (300 backups), 64 callers".into(),
        value: format!(
            "{rate:.0} queries/s; p50 {:.1} ms, p99 {:.1} ms",
            p50 * 1e3,
            p99 * 1e3
        ),
        target: String::new(),
    });
    let slow_channel = Channel::from_shared(gw.url.clone())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = BackupGatewayClient::new(slow_channel)
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    slow.message().await.unwrap();
    let (slow_rate, slow_p50, slow_p99) = small_queries(&gw, &one, run_for).await;
    rows.push(Row {
        name:
            "  the same while a caller that does not read holds an inventory of every target open"
                .into(),
        value: format!(
            "{slow_rate:.0} queries/s; p50 {:.1} ms, p99 {:.1} ms",
            slow_p50 * 1e3,
            slow_p99 * 1e3
        ),
        target: "rate and p99 unmoved".into(),
    });
    drop(slow);
    drop(gw);
    rows
}

/// Medians of the gateway's own rows: cold (fresh, then running) and warm.
struct Measured {
    cold: f64,
    cold_running: f64,
    gw_cold_cpu: f64,
    sim_cold_cpu: f64,
    warm_rate: f64,
    warm_decoded_rate: f64,
    warm_cpu: f64,
}

/// `reps` fresh gateways, each: a cold inventory, `reps` warm ones (counted, then decoded), and
/// a cold one again on the running gateway.
async fn measure(sim: &Sim, limits: &str, reps: usize) -> Measured {
    let (mut cold, mut cold_cpu, mut cold_running) = (Vec::new(), Vec::new(), Vec::new());
    // Every page read from the upstream again.
    let fresh = pb::ListBackupsRequest {
        max_age: Some(prost_types::Duration::default()),
        ..Default::default()
    };
    let (mut warm_rate, mut warm_decoded_rate, mut warm_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let everything = pb::ListBackupsRequest::default();
    let mut backups = 0;
    for _ in 0..reps {
        let mut gw = start_gateway(sim, limits).await;
        let (gw_cpu, sim_cpu) = (cpu_seconds(gw.proc.pid()), cpu_seconds(sim.proc.pid()));
        // The client counts what it receives: the time is the gateway's, not a decoder's.
        let (n, secs) = stream_counted(gw.channel.clone(), everything.clone()).await;
        cold_cpu.push((
            cpu_seconds(gw.proc.pid()) - gw_cpu,
            cpu_seconds(sim.proc.pid()) - sim_cpu,
        ));
        backups = n;
        cold.push(secs);
        for _ in 0..reps {
            let cpu = cpu_seconds(gw.proc.pid());
            let (n, secs) = stream_counted(gw.channel.clone(), everything.clone()).await;
            let used = cpu_seconds(gw.proc.pid()) - cpu;
            warm_rate.push(n as f64 / secs);
            warm_cpu.push(used / n as f64 * 1e6);
            let (n, secs) = stream_all(&mut gw.client, everything.clone(), None, None).await;
            warm_decoded_rate.push(n as f64 / secs);
        }
        // Cold again, on a gateway that has run before (its connections open, its heap grown).
        let (n, secs) = stream_counted(gw.channel.clone(), fresh.clone()).await;
        assert_eq!(n, INVENTORY_BACKUPS);
        cold_running.push(secs);
    }
    assert_eq!(backups, INVENTORY_BACKUPS);
    Measured {
        cold: median(cold),
        cold_running: median(cold_running),
        gw_cold_cpu: median(cold_cpu.iter().map(|c| c.0).collect()),
        sim_cold_cpu: median(cold_cpu.iter().map(|c| c.1).collect()),
        warm_rate: median(warm_rate),
        warm_decoded_rate: median(warm_decoded_rate),
        warm_cpu: median(warm_cpu),
    }
}

/// For `perf record -p PID`: warm queries (or cold ones, `BACKUPGW_BENCH_PROFILE=cold`) for
/// 30 s, then the gateway's CPU.
async fn profile(sim: &Sim, limits: &str) {
    // For `perf record -p PID`: warm queries for 30 s.
    let gw = start_gateway(sim, limits).await;
    eprintln!("gateway pid {} sim pid {}", gw.proc.pid(), sim.proc.pid());
    let start = Instant::now();
    // "cold": every page from the upstream again.
    let cold = std::env::var("BACKUPGW_BENCH_PROFILE").is_ok_and(|v| v == "cold");
    let request = pb::ListBackupsRequest {
        max_age: cold.then(prost_types::Duration::default),
        ..Default::default()
    };
    let mut queries = 0;
    while start.elapsed() < Duration::from_secs(30) {
        stream_counted(gw.channel.clone(), request.clone()).await;
        queries += 1;
    }
    eprintln!(
        "{queries} queries, gateway CPU {:.2} s",
        cpu_seconds(gw.proc.pid())
    );
}

/// Clients without the gateway over the same inventory: (sequential, targets concurrent with
/// pages in order, the ideal schedule), in seconds.
async fn baselines(sim: &Sim, quick: bool, reps: usize) -> (f64, f64, f64) {
    let t = sim.targets.len();
    let sequential = if quick {
        let (_, secs) = sequential_client(sim, &sim.targets[..20]).await;
        secs * (t as f64 / 20.0)
    } else {
        sequential_client(sim, &sim.targets).await.1
    };
    let (mut in_order, mut ideal) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        in_order.push(per_target_in_order_client(sim).await.1);
        ideal.push(ideal_schedule_client(sim).await.1);
    }
    (sequential, median(in_order), median(ideal))
}

/// The whole protection report on fresh gateways: (median seconds, instances in it).
async fn summarize_cold(sim: &Sim, limits: &str, reps: usize) -> (f64, usize) {
    let mut summary = Vec::new();
    let mut instances = 0;
    for _ in 0..reps {
        let mut gw = start_gateway(sim, limits).await;
        let start = Instant::now();
        instances = summarize_all(&mut gw.client).await;
        summary.push(start.elapsed().as_secs_f64());
    }
    (median(summary), instances)
}

/// The whole protection report; the number of instances in it.
async fn summarize_all(client: &mut BackupGatewayClient<Channel>) -> usize {
    let mut stream = client
        .summarize_backups(pb::SummarizeBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut instances = 0;
    while let Some(m) = stream.message().await.unwrap() {
        instances += m.instances.len();
        assert!(m.targets.iter().all(|t| t.ok), "{:?}", m.targets);
    }
    instances
}

/// 64 callers asking `one` again and again for `run_for`: (queries/s, p50 s, p99 s).
async fn small_queries(
    gw: &Gateway,
    one: &pb::ListBackupsRequest,
    run_for: Duration,
) -> (f64, f64, f64) {
    let start = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (channel, one) = (gw.channel.clone(), one.clone());
        callers.spawn(async move {
            let mut latencies = Vec::new();
            while start.elapsed() < run_for {
                let t0 = Instant::now();
                let (n, _) = stream_counted(channel.clone(), one.clone()).await;
                assert_eq!(n, 300);
                latencies.push(t0.elapsed().as_secs_f64());
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(l) = callers.join_next().await {
        latencies.extend(l.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

const FAR_LATENCY_MS: u64 = 200;

/// The cold row at a higher latency: what is left above the bound is CPU time, which does not
/// grow with the latency. Returns (median seconds, bound in seconds).
async fn cold_far_away(reps: usize, dir: &Path) -> (f64, f64) {
    let far_dir = dir.join("far");
    std::fs::create_dir_all(&far_dir).unwrap();
    let sim = start_inventory_sim(&far_dir, FAR_LATENCY_MS);
    let limits = inventory_limits();
    let mut times = Vec::new();
    for _ in 0..reps {
        let gw = start_gateway(&sim, &limits).await;
        let (n, secs) = stream_counted(gw.channel.clone(), pb::ListBackupsRequest::default()).await;
        assert_eq!(n, INVENTORY_BACKUPS);
        times.push(secs);
    }
    (median(times), 2.0 * FAR_LATENCY_MS as f64 / 1000.0)
}

/// Row 3: 1,000,000 backups (1,000 targets × 1,000), no latency, cache bounded at 64 MiB.
async fn memory(quick: bool, dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let everything = pb::ListBackupsRequest::default();
    let big_dir = dir.join("big");
    std::fs::create_dir_all(&big_dir).unwrap();
    let big = start_sim(
        &big_dir,
        &[
            "--regions",
            "4",
            "--projects-per-region",
            "250",
            "--instances-per-project",
            "10",
            "--backups-per-instance",
            "100",
        ],
    );
    // With no latency, 16 requests at once keep both cores busy; each target read at once
    // costs memory of its own (its de-duplication set, the pages it has fetched), so the
    // defaults (64 and 64) are measured too.
    let limits = |at_once: usize| {
        format!(
            "[limits]\nmax_concurrent_requests = {at_once}\nmax_concurrent_targets = {at_once}\nmax_pages_per_target = 2\n[cache]\nttl_seconds = 3600\nmax_bytes = 67108864"
        )
    };
    for (at_once, name) in [
        (
            16,
            "1,000,000 backups to a fast client, 16 requests and 16 targets at once: gateway peak RSS",
        ),
        (
            64,
            "  the same with the defaults, 64 requests and 64 targets at once",
        ),
    ] {
        let mut gw = start_gateway(&big, &limits(at_once)).await;
        let (n, secs) = stream_all(&mut gw.client, everything.clone(), None, None).await;
        assert_eq!(n, 1_000_000);
        rows.push(Row {
            name: name.into(),
            value: format!(
                "{:.0} MiB ({:.1} s, {:.0} k backups/s cold)",
                peak_rss_mib(gw.proc.pid()),
                secs,
                n as f64 / secs / 1e3
            ),
            target: "< 100 MiB".into(),
        });
    }
    let mut gw = start_gateway(&big, &limits(16)).await;
    let slow_for = Duration::from_secs(if quick { 3 } else { 10 });
    let (n, _) = stream_all(
        &mut gw.client,
        everything,
        Some(Duration::from_millis(5)),
        Some(slow_for),
    )
    .await;
    rows.push(Row {
        name: format!(
            "  to a slow client (5 ms a message, {} s)",
            slow_for.as_secs()
        ),
        value: format!(
            "{:.0} MiB after {} k backups",
            peak_rss_mib(gw.proc.pid()),
            n / 1000
        ),
        target: "bounded".into(),
    });
    drop(gw);

    rows.extend(storms(&big).await);
    drop(big);
    rows
}

/// Cancellation storms: 500 inventories, 50 at a time, each cancelled after its first
/// message. Once freed memory is given back (src/memory.rs), what stays resident is the page
/// cache, up to its bound: the same storm with a 1 MiB cache leaves the gateway near its
/// starting size.
async fn storms(big: &Sim) -> Vec<Row> {
    let mut rows = Vec::new();
    for (cache_mib, name) in [
        (
            64,
            "500 inventories cancelled after their first message: RSS after (peak), 64 MiB cache",
        ),
        (1, "  the same with a 1 MiB cache"),
    ] {
        let config = format!(
            "[limits]\nmax_pages_per_target = 2\n[cache]\nttl_seconds = 3600\nmax_bytes = {}",
            cache_mib << 20
        );
        let gw = start_gateway(big, &config).await;
        let before = rss_mib(gw.proc.pid());
        for _ in 0..10 {
            // A connection per round: hyper's client closes a connection on which it cancelled
            // ~1,000 streams itself (its guard against reset floods).
            let channel = Channel::from_shared(gw.url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut storm = tokio::task::JoinSet::new();
            for _ in 0..50 {
                let mut client = BackupGatewayClient::new(channel.clone());
                let everything = pb::ListBackupsRequest::default();
                storm.spawn(async move {
                    let mut stream = client.list_backups(everything).await.unwrap().into_inner();
                    stream.message().await.unwrap();
                });
            }
            while storm.join_next().await.is_some() {}
        }
        // Freed memory is given back every 5 s after calls ended.
        tokio::time::sleep(Duration::from_secs(6)).await;
        rows.push(Row {
            name: name.into(),
            value: format!(
                "{:.0} MiB ({:.0}); {before:.0} MiB before",
                rss_mib(gw.proc.pid()),
                peak_rss_mib(gw.proc.pid())
            ),
            target: "≈ start + cache bound".into(),
        });
    }
    rows
}

/// Resident memory now, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// ListBackups requests the simulator has answered so far.
async fn sim_list_requests(sim: &Sim) -> u64 {
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

/// A redis-server of the bench's own, on a free port; killed when dropped.
fn start_redis() -> Option<(Proc, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let out = BufReader::new(child.stdout.take()?);
    let ready = out
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("Ready to accept connections"));
    ready.then_some((Proc { child }, port))
}

/// How long `query` takes, and how many ListBackups requests the simulator answered meanwhile.
async fn timed<T>(sim: &Sim, query: impl Future<Output = T>) -> (f64, u64) {
    let before = sim_list_requests(sim).await;
    let start = Instant::now();
    query.await;
    (
        start.elapsed().as_secs_f64(),
        sim_list_requests(sim).await - before,
    )
}

/// The inventory of rows 1–4 through one replica, and through two sharing a Redis.
async fn replicas(reps: usize, dir: &Path) -> Vec<Row> {
    let Some((_redis, port)) = start_redis() else {
        eprintln!("redis-server not found: the replica rows are left out");
        return Vec::new();
    };
    let sim = start_inventory_sim(dir, LATENCY_MS);
    let everything = pb::ListBackupsRequest::default();
    let shared = format!(
        "{}\n[shared]\nredis_url = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"bench{}:\"",
        inventory_limits(),
        fastrand::u32(..)
    );
    // Per row: (seconds, upstream requests) of each repetition.
    let (mut one, mut one_warm, mut two, mut two_warm, mut from_redis) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let all = |gw: &Gateway| stream_counted(gw.channel.clone(), everything.clone());
    for rep in 0..reps {
        // One replica: cold, then the same again from its own cache.
        let gw = start_gateway(&sim, &inventory_limits()).await;
        one.push(timed(&sim, all(&gw)).await);
        one_warm.push(timed(&sim, all(&gw)).await);
        drop(gw);
        // Two replicas sharing Redis (a key prefix of their own each round: cold), asked at
        // once; then the same again on both, each from its own cache.
        let shared = shared.replace("bench", &format!("bench{rep}-"));
        let (a, b) = (
            start_gateway(&sim, &shared).await,
            start_gateway(&sim, &shared).await,
        );
        two.push(timed(&sim, async { tokio::join!(all(&a), all(&b)) }).await);
        two_warm.push(timed(&sim, async { tokio::join!(all(&a), all(&b)) }).await);
        // A third replica's first query: every page from Redis.
        let c = start_gateway(&sim, &shared).await;
        from_redis.push(timed(&sim, all(&c)).await);
    }
    let row = |name: &str, samples: Vec<(f64, u64)>, target: &str| {
        let asked = samples.last().map_or(0, |s| s.1);
        let secs = median(samples.into_iter().map(|s| s.0).collect());
        Row {
            name: name.into(),
            value: format!("{:.0} ms, {asked}", secs * 1000.0),
            target: target.into(),
        }
    };
    vec![
        row(
            "1 replica, cold inventory: time, upstream requests",
            one,
            "(reference)",
        ),
        row(
            "  warm (the same again, from its cache)",
            one_warm,
            "(reference)",
        ),
        row(
            "2 replicas + Redis, the same query on both at once",
            two,
            "each page once",
        ),
        row(
            "  warm (the same again on both)",
            two_warm,
            "0 upstream requests",
        ),
        row(
            "  a new replica's first query (pages from Redis)",
            from_redis,
            "0 upstream requests",
        ),
    ]
}

/// Many targets in one process, with the default configuration.
async fn scale(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, per_region, instances, backups, goal) in [
        (
            "100,000 targets × 3 backups",
            "25000",
            "1",
            "3",
            "< 256 MiB",
        ),
        (
            "10,000 targets × 300 backups",
            "2500",
            "10",
            "30",
            "< 100 MiB",
        ),
    ] {
        let sim = start_sim(
            dir,
            &[
                "--regions",
                "4",
                "--projects-per-region",
                per_region,
                "--instances-per-project",
                instances,
                "--backups-per-instance",
                backups,
            ],
        );
        let gw = start_gateway(&sim, "").await;
        let start = Instant::now();
        let listed = gw
            .client
            .clone()
            .max_decoding_message_size(256 << 20)
            .list_targets(pb::ListTargetsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .targets
            .len();
        let list_targets = start.elapsed().as_secs_f64();
        assert_eq!(listed, sim.targets.len());
        let (n, secs) = stream_counted(gw.channel.clone(), pb::ListBackupsRequest::default()).await;
        rows.push(Row {
            name: format!("{name}: ListTargets"),
            value: format!("{list_targets:.2} s"),
            target: "< 1 s".into(),
        });
        rows.push(Row {
            name: format!(
                "  the whole inventory ({} k backups): time, peak RSS",
                n / 1000
            ),
            value: format!("{secs:.1} s, {:.0} MiB", peak_rss_mib(gw.proc.pid())),
            target: goal.into(),
        });
        drop(gw.client);
    }
    rows
}
