//! Several replicas sharing a real `redis-server`: the second-level page cache, one fetch of a
//! page across replicas, a region's rate for all replicas together, and Redis going away and
//! coming back without a query failing.

use std::time::Duration;

use backupgw::cache::Origin;
use backupgw::inventory::{Limits, RegionLimits};
use backupgw::pb;
use backupgw::shared::{SharedOptions, Subscription};
use backupgw::sim::{DataSpec, FaultPlan, Faults, SimOptions};

use crate::common::*;
use crate::redis::Redis;

fn spec() -> DataSpec {
    DataSpec {
        regions: 2,
        projects_per_region: 3,
        instances_per_project: 2,
        backups_per_instance: 150,
        ..DataSpec::default()
    }
}

/// Pages the data set has: every project holds 300 backups, 3 pages of 128.
const PAGES: u64 = 2 * 3 * 3;

async fn replica(sim: &backupgw::sim::Simulator, shared: Option<SharedOptions>) -> Gateway {
    let targets = backupgw::demo::sim_targets(sim, token_credential("test", TOKEN));
    start_gateway_with(
        targets,
        GatewaySetup {
            shared,
            ..GatewaySetup::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_replica_answers_what_another_just_read_without_asking_the_upstream() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let sim = start_sim(&spec(), sim_options()).await;
    let mut a = replica(&sim, Some(redis.options())).await;
    let mut b = replica(&sim, Some(redis.options())).await;
    let from_a = list(&mut a.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(sim.stats().list_requests, PAGES);
    let from_b = list(&mut b.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(
        sim.stats().list_requests,
        PAGES,
        "B asked the upstream nothing"
    );
    let summary = from_b.summary.unwrap();
    assert_eq!((summary.upstream_requests, summary.cache_hits), (0, PAGES));
    assert_eq!(from_b.by_key(), from_a.by_key());
    assert_eq!(from_b.by_key().len(), spec().total_backups());
    let metrics = b.inventory.metrics().unwrap().render();
    assert!(
        metrics.contains(&format!("backupgw_shared_cache_hits_total {PAGES}")),
        "{metrics}"
    );
    assert!(metrics.contains("backupgw_shared_up 1"), "{metrics}");
    // Pages live in Redis with the cache's TTL (300 s in these gateways).
    let pages = redis.keys("backupgw:page:*").await;
    assert_eq!(pages.len() as u64, PAGES);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&pages[0])
        .query_async(&mut redis.connect().await)
        .await
        .unwrap();
    assert!((1..=300_000).contains(&ttl), "{ttl}");
    // max_age holds across replicas: a page fetched by A is too old for B at max_age 0…
    list(&mut b.client, fresh_request()).await;
    assert_eq!(sim.stats().list_requests, 2 * PAGES);
    // …and a replica without Redis reads everything itself.
    let mut alone = replica(&sim, None).await;
    list(&mut alone.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(sim.stats().list_requests, 3 * PAGES);
}

/// The protection report's instance lists travel between replicas like pages.
#[tokio::test]
async fn a_replica_reports_from_the_instance_lists_another_just_read() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let sim = start_sim(&spec(), sim_options()).await;
    let mut a = replica(&sim, Some(redis.options())).await;
    let mut b = replica(&sim, Some(redis.options())).await;
    let report = |gw: &mut Gateway| {
        let mut client = gw.client.clone();
        async move {
            let mut stream = client
                .summarize_backups(pb::SummarizeBackupsRequest::default())
                .await
                .unwrap()
                .into_inner();
            let mut rows = Vec::new();
            while let Some(m) = stream.message().await.unwrap() {
                rows.extend(m.instances.into_iter().map(|i| {
                    (
                        i.instance_id,
                        i.instance_status,
                        i.protection,
                        i.backup_count,
                    )
                }));
            }
            rows.sort();
            rows
        }
    };
    let from_a = report(&mut a).await;
    let projects = 2 * 3;
    assert_eq!(sim.stats().instance_requests, projects);
    let from_b = report(&mut b).await;
    assert_eq!(
        (sim.stats().instance_requests, sim.stats().list_requests),
        (projects, PAGES),
        "B asked the upstream nothing"
    );
    assert_eq!(from_b, from_a);
    // Only the instance lists know of an instance without backups, and of statuses.
    assert!(
        from_b
            .iter()
            .any(|(_, status, _, backups)| *backups == 0 && !status.is_empty()),
        "{from_b:?}"
    );
    let lists = redis.keys("backupgw:instances:*").await;
    assert_eq!(lists.len() as u64, projects);
}

/// A simulator 40 ms away, and two replicas of it sharing Redis with `options`.
async fn two_replicas(options: SharedOptions) -> (backupgw::sim::Simulator, Gateway, Gateway) {
    let sim_options = SimOptions {
        latency: Duration::from_millis(40),
        ..sim_options()
    };
    let sim = start_sim(&spec(), sim_options).await;
    let a = replica(&sim, Some(options.clone())).await;
    let b = replica(&sim, Some(options)).await;
    (sim, a, b)
}

/// Once the news of other replicas' fetches reach `gw`.
async fn subscribed(gw: &Gateway) {
    let shared = gw.inventory.cache().shared().unwrap();
    let mut subscription = shared.subscription();
    subscription
        .wait_for(|s| *s == Subscription::Subscribed)
        .await
        .unwrap();
}

/// The same cold inventory asked of both replicas at once: every page is read from the
/// upstream once, and both answer it whole.
async fn both_at_once(
    sim: &backupgw::sim::Simulator,
    a: &mut Gateway,
    b: &mut Gateway,
) -> (Collected, Collected) {
    let (from_a, from_b) = tokio::join!(
        list(&mut a.client, pb::ListBackupsRequest::default()),
        list(&mut b.client, pb::ListBackupsRequest::default()),
    );
    assert_eq!(sim.stats().list_requests, PAGES, "every page read once");
    assert_eq!(from_a.by_key(), from_b.by_key());
    assert_eq!(from_a.by_key().len(), spec().total_backups());
    (from_a, from_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_queries_on_two_replicas_read_each_page_once() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let (sim, mut a, mut b) = two_replicas(redis.options()).await;
    let (from_a, from_b) = both_at_once(&sim, &mut a, &mut b).await;
    let upstream = |c: &Collected| c.summary.as_ref().unwrap().upstream_requests;
    assert_eq!(upstream(&from_a) + upstream(&from_b), PAGES);
}

/// A replica waiting for a page that another fetches is told when the fetch ends (Redis
/// pub/sub): here it never looks again by itself, and still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waiting_for_anothers_fetch_is_told_when_it_ends() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let told_only = SharedOptions {
        lease: Duration::from_secs(3600),
        look_while_told: Duration::from_secs(3600),
        ..redis.options()
    };
    let (sim, mut a, mut b) = two_replicas(told_only).await;
    for gw in [&a, &b] {
        subscribed(gw).await;
    }
    // Untold, a waiter would wait for the hour-long lease.
    tokio::time::timeout(Duration::from_secs(60), both_at_once(&sim, &mut a, &mut b))
        .await
        .expect("the waiting replica was told");
}

/// A Redis whose ACL refuses the channel of the news: replicas still share every page, each
/// read once, and Redis is never taken for gone (waiters look for the pages by themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_the_news_still_shares_every_page_once() {
    if !Redis::available() {
        return;
    }
    both_share_every_page_once(&Redis::start_without_channels()).await;
}

/// Two replicas on `redis` asked the same cold inventory at once: each page is read once, and
/// Redis is never taken for gone (it would be left alone for the rest of the test). Their
/// metrics.
async fn both_share_every_page_once(redis: &Redis) -> [String; 2] {
    let patient = SharedOptions {
        retry_after: Duration::from_secs(3600),
        ..redis.options()
    };
    let (sim, mut a, mut b) = two_replicas(patient).await;
    both_at_once(&sim, &mut a, &mut b).await;
    [a, b].map(|gw| {
        let metrics = gw.inventory.metrics().unwrap().render();
        assert!(metrics.contains("backupgw_shared_up 1"), "{metrics}");
        metrics
    })
}

/// A Redis that places keys by hash slot (a cluster proxy; here a cluster of one node serving
/// every slot) runs a script only over keys of one slot. A page and its lease share theirs, so
/// replicas still read each page once, and Redis refuses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_through_a_redis_that_places_keys_by_slot() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start_one_node_cluster().await;
    for metrics in both_share_every_page_once(&redis).await {
        assert!(
            metrics.contains("backupgw_shared_refusals_total 0"),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_together_keep_to_a_regions_rate() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let spec = DataSpec {
        regions: 1,
        projects_per_region: 4,
        instances_per_project: 2,
        backups_per_instance: 320, // 5 pages a project
        ..DataSpec::default()
    };
    // The upstream allows 40 requests a second (and a burst of 8); the gateways promise 40
    // with a burst of 4, each read everything afresh (max_age 0: no sharing of pages).
    let region = backupgw::sim::data::region_name(0).unwrap().to_owned();
    let mut faults = FaultPlan::default();
    faults.regions.insert(
        region.clone(),
        Faults {
            throttle_rps: Some(40.0),
            throttle_burst: 8,
            ..Faults::default()
        },
    );
    let sim = start_sim(
        &spec,
        SimOptions {
            faults,
            ..sim_options()
        },
    )
    .await;
    let limits = Limits {
        region: RegionLimits {
            max_concurrent_requests: Some(8),
            requests_per_second: Some(40.0),
            burst: 4,
        },
        ..Limits::default()
    };
    let start = |shared: Option<SharedOptions>| {
        let limits = limits.clone();
        let sim = &sim;
        async move {
            let targets = backupgw::demo::sim_targets(sim, token_credential("test", TOKEN));
            start_gateway_with(
                targets,
                GatewaySetup {
                    limits,
                    shared,
                    ..GatewaySetup::default()
                },
            )
            .await
        }
    };
    let mut a = start(Some(redis.options())).await;
    let mut b = start(Some(redis.options())).await;
    let (x, y) = tokio::join!(
        list(&mut a.client, fresh_request()),
        list(&mut b.client, fresh_request())
    );
    assert!(x.targets.iter().chain(&y.targets).all(|t| t.ok));
    assert_eq!(sim.stats().list_requests, 2 * 4 * 5);
    assert_eq!(
        sim.stats().throttled,
        0,
        "together within the region's rate"
    );
    // Where the region's pace is kept: replicas of other versions in a rolling upgrade share
    // it only under the same name.
    assert_eq!(
        redis.keys("backupgw:pace:*").await,
        [format!("backupgw:pace:{region}")]
    );

    // Each on its own pace, the two replicas ask twice the rate: the upstream throttles.
    let mut a = start(None).await;
    let mut b = start(None).await;
    tokio::join!(
        list(&mut a.client, fresh_request()),
        list(&mut b.client, fresh_request())
    );
    assert!(sim.stats().throttled > 0, "the test can tell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_no_query_and_sharing_resumes_when_it_is_back() {
    if !Redis::available() {
        return;
    }
    let mut redis = Redis::start();
    let port = redis.port;
    let options = SimOptions {
        latency: Duration::from_millis(10),
        ..sim_options()
    };
    let sim = start_sim(&spec(), options).await;
    let mut a = replica(&sim, Some(redis.options())).await;
    let mut b = replica(&sim, Some(redis.options())).await;
    // Killed mid-query: the answer completes from the upstream.
    let mut stream = a
        .client
        .list_backups(fresh_request())
        .await
        .unwrap()
        .into_inner();
    let mut got = Collected::default();
    let first = stream.message().await.unwrap().unwrap();
    got.backups.extend(first.backups);
    got.targets.extend(first.targets);
    redis.kill();
    while let Some(m) = stream.message().await.unwrap() {
        got.backups.extend(m.backups);
        got.targets.extend(m.targets);
        got.summary = m.summary.or(got.summary);
    }
    assert_eq!(got.summary.unwrap().targets_failed, 0);
    assert_eq!(got.by_key().len(), spec().total_backups());
    // B, with Redis gone, still answers (from the upstream), and says Redis is down.
    let without = list(&mut b.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(without.by_key().len(), spec().total_backups());
    let metrics = b.inventory.metrics().unwrap().render();
    assert!(metrics.contains("backupgw_shared_up 0"), "{metrics}");

    // Back: A's next read is shared again, and B answers it without the upstream.
    let _redis = Redis::start_on(port);
    list(&mut a.client, fresh_request()).await;
    let asked = sim.stats().list_requests;
    let mut c = replica(&sim, Some(_redis.options())).await;
    let shared = list(&mut c.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(sim.stats().list_requests, asked, "served from Redis");
    assert_eq!(shared.by_key().len(), spec().total_backups());
    let metrics = a.inventory.metrics().unwrap().render();
    assert!(metrics.contains("backupgw_shared_up 1"), "{metrics}");
    // And the news of other replicas' fetches reach A again.
    tokio::time::timeout(Duration::from_secs(30), subscribed(&a))
        .await
        .expect("subscribed again once Redis is back");
}

#[tokio::test]
async fn replicas_share_through_a_redis_that_speaks_tls() {
    if !Redis::available() {
        return;
    }
    let dir = crate::cli::scratch_dir("redis-tls");
    let ca = TestCa::new("redis test CA");
    let (cert, key) = ca.sign(&["localhost"], "localhost");
    let (cert_file, key_file) = (dir.join("redis.crt"), dir.join("redis.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let redis = Redis::start_tls(&cert_file, &key_file);
    let options = SharedOptions {
        ca_pem: Some(ca.issuer.pem().into_bytes()),
        retry_after: Duration::ZERO,
        ..SharedOptions::new(format!("rediss://localhost:{}/0", redis.port))
    };
    let sim = start_sim(&spec(), sim_options()).await;
    let mut a = replica(&sim, Some(options.clone())).await;
    let mut b = replica(&sim, Some(options)).await;
    list(&mut a.client, pb::ListBackupsRequest::default()).await;
    let from_b = list(&mut b.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(
        sim.stats().list_requests,
        PAGES,
        "B read A's pages through TLS"
    );
    assert_eq!(from_b.by_key().len(), spec().total_backups());
    // Without the CA, the certificate is not trusted: no sharing, and still no failure.
    let mut c = replica(
        &sim,
        Some(SharedOptions::new(format!(
            "rediss://localhost:{}/0",
            redis.port
        ))),
    )
    .await;
    let alone = list(&mut c.client, pb::ListBackupsRequest::default()).await;
    assert_eq!(alone.by_key().len(), spec().total_backups());
    assert_eq!(sim.stats().list_requests, 2 * PAGES);
}

/// A replica took the lease on fetching a page and died: another that asks for the page waits
/// for it while the lease stands, then fetches it itself, once.
#[tokio::test]
async fn a_waiter_whose_lease_holder_died_fetches_the_page_itself_once_the_lease_ends() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let mut c = redis.connect().await;
    let lease = "backupgw:page-lease:{p}";
    redis::cmd("SET")
        .arg(lease)
        .arg("a-replica-that-died")
        .arg("PX")
        .arg(300)
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let shared = backupgw::shared::Shared::new(redis.options(), None).unwrap();
    let fetches = std::sync::atomic::AtomicUsize::new(0);
    let minute = Duration::from_secs(60);
    let fetch = || async {
        fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let holder: Option<String> = redis::cmd("GET")
            .arg(lease)
            .query_async(&mut redis.connect().await)
            .await
            .unwrap();
        assert_ne!(
            holder.as_deref(),
            Some("a-replica-that-died"),
            "fetched while the dead replica's lease stood"
        );
        Ok(backupgw::wire::EncodedPage::default())
    };
    let (_, _, origin) = tokio::time::timeout(
        Duration::from_secs(30),
        shared.stored_or_fetch::<backupgw::wire::EncodedPage, _>("p", minute, minute, fetch),
    )
    .await
    .expect("the waiter gave up waiting")
    .unwrap();
    assert_eq!(origin, Origin::Upstream);
    assert_eq!(fetches.into_inner(), 1);
    assert_eq!(
        redis.keys("backupgw:page:*").await.len(),
        1,
        "and stored it"
    );
}

/// `max_age` holds across replicas: a stored page's age is counted from when its replica fetched
/// it, not from when this one read it from Redis.
#[tokio::test]
async fn a_stored_pages_age_counts_from_its_fetch_by_another_replica() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    // Stored by a replica that fetched it ten minutes ago (fetch time, then the page).
    let fetched = std::time::SystemTime::now() - Duration::from_secs(600);
    let fetched_ms = fetched
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut page = backupgw::wire::EncodedPage::default();
    page.total = 7;
    let mut value = fetched_ms.to_le_bytes().to_vec();
    value.extend_from_slice(&page.to_stored());
    redis::cmd("SET")
        .arg("backupgw:page:{p}")
        .arg(value)
        .arg("PX")
        .arg(3_600_000)
        .query_async::<()>(&mut redis.connect().await)
        .await
        .unwrap();
    let shared = backupgw::shared::Shared::new(redis.options(), None).unwrap();
    let (hour, five_minutes) = (Duration::from_secs(3600), Duration::from_secs(300));
    let (total, age, origin) = read_page(&shared, "p", hour, 8).await;
    assert_eq!((total, origin), (7, Origin::Cache));
    assert!(age >= Duration::from_secs(600), "{age:?}");
    assert!(age < Duration::from_secs(660), "{age:?}");
    // Too old for five minutes, though it has just been read from Redis.
    let (total, age, origin) = read_page(&shared, "p", five_minutes, 9).await;
    assert_eq!((total, origin, age), (9, Origin::Upstream, Duration::ZERO));
}

/// Page `name` through `shared` at `max_age`, a fetch giving a page that announces
/// `fetched_total`: the page's total, its age, and where it came from.
pub async fn read_page(
    shared: &backupgw::shared::Shared,
    name: &str,
    max_age: Duration,
    fetched_total: u64,
) -> (u64, Duration, Origin) {
    let ttl = Duration::from_secs(3600);
    let fetch = || async move {
        let mut page = backupgw::wire::EncodedPage::default();
        page.total = fetched_total;
        Ok(page)
    };
    let (page, age, origin) = shared
        .stored_or_fetch::<backupgw::wire::EncodedPage, _>(name, max_age, ttl, fetch)
        .await
        .unwrap();
    (page.total, age, origin)
}
