//! Replicas sharing Redis against one replica alone.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use backupgw::pb;

use super::harness::*;
use super::inventory::{inventory_limits, start_inventory_sim};

/// A redis-server of the bench's own, on a free port; killed when dropped.
pub fn start_redis() -> Option<(Proc, u16)> {
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
pub async fn timed<T>(sim: &Sim, query: impl Future<Output = T>) -> (f64, u64) {
    let before = sim_list_requests(sim).await;
    let start = Instant::now();
    query.await;
    (
        start.elapsed().as_secs_f64(),
        sim_list_requests(sim).await - before,
    )
}

/// The inventory of rows 1–4 through one replica, and through two sharing a Redis.
pub async fn replicas(reps: usize, dir: &Path) -> Vec<Row> {
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
