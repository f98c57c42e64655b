//! Rows 1, 2 and 4: the cold and warm inventory over 200 targets at 50 ms a request, beside
//! the clients without the gateway and the protection report; many small queries.

use std::path::Path;
use std::time::{Duration, Instant};

use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;
use tonic::transport::Channel;

use super::clients::baselines;
use super::harness::*;

/// Backups in the inventory of rows 1, 2 and 4.
pub const INVENTORY_BACKUPS: u64 = 4 * 50 * 300;

/// The inventory of rows 1, 2 and 4: 4 regions × 50 projects × 300 backups (3 pages each).
pub fn start_inventory_sim(dir: &Path, latency_ms: u64) -> Sim {
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
pub fn inventory_limits() -> String {
    format!(
        "[limits]\nmax_concurrent_requests = {CONCURRENCY}\nmax_concurrent_targets = {CONCURRENCY}\nmax_pages_per_target = 8\n[cache]\nttl_seconds = 3600\nmax_bytes = 268435456"
    )
}

/// Rows 1, 2 and 4: 4 regions × 50 projects × 300 backups (3 pages each), 50 ms a request.
pub async fn inventory(quick: bool, reps: usize, dir: &Path) -> Vec<Row> {
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

/// The fewest round trips `t` targets' first pages and `requests` other requests take at
/// C = CONCURRENCY, in seconds.
pub fn round_trips(t: usize, requests: usize) -> f64 {
    ((t.div_ceil(CONCURRENCY) + requests.div_ceil(CONCURRENCY)) as u64 * LATENCY_MS) as f64 / 1000.0
}

/// "N ms = X × the"
pub fn times(secs: f64, bound: f64) -> String {
    format!("{:.0} ms = {:.2} × the", secs * 1e3, secs / bound)
}

/// Row 1: the cold inventory against its round-trip bound, on a fresh and on a running
/// gateway, beside the floor (`ideal`) and a far region (`far`: time and bound).
pub fn cold_rows(
    t: usize,
    measured: &Measured,
    ideal: f64,
    (far, far_bound): (f64, f64),
) -> Vec<Row> {
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
            format!(
                "{} bound, {:.2} × the floor",
                times(measured.cold_running, bound),
                measured.cold_running / ideal
            ),
            "≤ 1.1 × floor",
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
pub fn beside_cold_rows(
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
pub fn warm_rows(measured: &Measured) -> Vec<Row> {
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
pub async fn small_queries_rows(sim: &Sim, limits: &str, quick: bool) -> Vec<Row> {
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
pub struct Measured {
    pub cold: f64,
    pub cold_running: f64,
    pub gw_cold_cpu: f64,
    pub sim_cold_cpu: f64,
    pub warm_rate: f64,
    pub warm_decoded_rate: f64,
    pub warm_cpu: f64,
}

/// `reps` fresh gateways, each: a cold inventory, `reps` warm ones (counted, then decoded), and
/// a cold one again on the running gateway.
pub async fn measure(sim: &Sim, limits: &str, reps: usize) -> Measured {
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
pub async fn profile(sim: &Sim, limits: &str) {
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

/// The whole protection report on fresh gateways: (median seconds, instances in it).
pub async fn summarize_cold(sim: &Sim, limits: &str, reps: usize) -> (f64, usize) {
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
pub async fn summarize_all(client: &mut BackupGatewayClient<Channel>) -> usize {
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
pub async fn small_queries(
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

pub const FAR_LATENCY_MS: u64 = 200;

/// The cold row at a higher latency: what is left above the bound is CPU time, which does not
/// grow with the latency. Returns (median seconds, bound in seconds).
pub async fn cold_far_away(reps: usize, dir: &Path) -> (f64, f64) {
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
