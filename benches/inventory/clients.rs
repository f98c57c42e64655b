//! Clients without the gateway over the same inventory: what users write themselves, and the
//! floor (a bare HTTP client on the ideal schedule).

use std::sync::Arc;
use std::time::Instant;

use backupgw::ddm::model::decode_page;
use tokio::sync::Semaphore;

use super::harness::*;

/// What users do today: one request at a time, pages in order (the SDK examples).
pub async fn sequential_client(sim: &Sim, targets: &[(String, String)]) -> (u64, f64) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut backups = 0;
    for (project, endpoint) in targets {
        backups += read_target_in_order(&http, &sim.token, project, endpoint).await;
    }
    (backups, start.elapsed().as_secs_f64())
}

/// How generic inventory tools page: targets concurrently, each target's pages in order.
pub async fn per_target_in_order_client(sim: &Sim) -> (u64, f64) {
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
pub async fn ideal_schedule_client(sim: &Sim) -> (u64, f64) {
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
pub fn total_of(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Total {
        total: u64,
    }
    serde_json::from_slice::<Total>(body).unwrap().total
}

pub async fn read_target_in_order(
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

/// Clients without the gateway over the same inventory: (sequential, targets concurrent with
/// pages in order, the ideal schedule), in seconds.
pub async fn baselines(sim: &Sim, quick: bool, reps: usize) -> (f64, f64, f64) {
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
