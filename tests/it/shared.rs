//! Several replicas sharing a real `redis-server`: the second-level page cache, one fetch of a
//! page across replicas, a region's rate for all replicas together, and Redis going away and
//! coming back without a query failing.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backupgw::cache::Origin;
use backupgw::inventory::{Limits, RegionLimits};
use backupgw::pb;
use backupgw::shared::{SharedOptions, Subscription};
use backupgw::sim::{DataSpec, FaultPlan, Faults, SimOptions};

use crate::common::*;

/// redis-server takes a port, not a listener: a free one, handed over.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of its own, on a free loopback port; killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    /// Whether `redis-server` is here; CI (`BACKUPGW_REQUIRE_REDIS`) insists that it is.
    pub fn available() -> bool {
        let found = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("BACKUPGW_REQUIRE_REDIS").is_none(),
                "redis-server is required here (apt-get install redis-server)"
            );
            eprintln!("redis-server not found: skipping (apt-get install redis-server)");
        }
        found
    }

    pub fn start() -> Self {
        Redis::start_on(free_port())
    }

    /// Starts on `port` and returns once it accepts connections (it says so on stdout).
    pub fn start_on(port: u16) -> Self {
        Redis::start_with(port, &["--port", &port.to_string()])
    }

    /// Speaking TLS only, with this certificate and key (PEM files).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let port = free_port();
        Redis::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ],
        )
    }

    /// With an ACL that gives its user every key and command but no pub/sub channel.
    pub fn start_without_channels() -> Self {
        let port = free_port();
        let user = [
            "--user",
            "default",
            "on",
            "nopass",
            "~*",
            "+@all",
            "resetchannels",
        ];
        Redis::start_with(port, &[&["--port", &port.to_string()], &user[..]].concat())
    }

    fn start_with(port: u16, args: &[&str]) -> Self {
        // A directory of its own: a replica's full sync writes an RDB file there, which another
        // server started in the same directory would load.
        let dir = crate::cli::scratch_dir(&format!("redis-{port}"));
        let mut child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("Ready to accept connections"));
        assert!(ready, "redis-server on {port} did not start");
        std::thread::spawn(move || lines.for_each(drop));
        Redis { child, port, dir }
    }

    /// With an ACL that gives its user every key and command but the scripts (`EVALSHA`).
    pub fn start_without_scripts() -> Self {
        let port = free_port();
        let user = [
            "--user",
            "default",
            "on",
            "nopass",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        ];
        Redis::start_with(port, &[&["--port", &port.to_string()], &user[..]].concat())
    }

    /// A read-only replica of `primary` (what a replica's address gives after a failover).
    pub fn start_replica_of(primary: &Redis) -> Self {
        let port = free_port();
        Redis::start_with(
            port,
            &[
                "--port",
                &port.to_string(),
                "--replicaof",
                "127.0.0.1",
                &primary.port.to_string(),
            ],
        )
    }

    /// A Redis Cluster node that serves no hash slot yet.
    pub fn start_cluster_node() -> Self {
        let port = free_port();
        Redis::start_with(
            port,
            &["--port", &port.to_string(), "--cluster-enabled", "yes"],
        )
    }

    /// Asking every client for this password (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        let port = free_port();
        Redis::start_with(
            port,
            &["--port", &port.to_string(), "--requirepass", password],
        )
    }

    pub fn options(&self) -> SharedOptions {
        SharedOptions {
            // Tests try Redis again at once: recovery needs no waiting.
            retry_after: Duration::ZERO,
            ..SharedOptions::new(format!("redis://127.0.0.1:{}/0", self.port))
        }
    }

    /// A connection of the test's own, to look at what the gateways stored.
    pub async fn connect(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.options().url).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// The keys that match `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.connect().await)
            .await
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
    let redis = Redis::start_without_channels();
    // A Redis taken for gone would be left alone for the rest of the test.
    let patient = SharedOptions {
        retry_after: Duration::from_secs(3600),
        ..redis.options()
    };
    let (sim, mut a, mut b) = two_replicas(patient).await;
    both_at_once(&sim, &mut a, &mut b).await;
    for gw in [&a, &b] {
        let metrics = gw.inventory.metrics().unwrap().render();
        assert!(metrics.contains("backupgw_shared_up 1"), "{metrics}");
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
    let _redis = crate::shared::Redis::start_on(port);
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

#[tokio::test(flavor = "current_thread")]
async fn a_redis_that_is_not_there_is_said_once_and_fails_nothing() {
    // As the leak test does: a global subscriber keeps every line's interest on.
    let log = LogCapture::start();
    let metrics = backupgw::metrics::Metrics::new();
    let options = SharedOptions {
        retry_after: Duration::ZERO,
        ..SharedOptions::new(format!("redis://127.0.0.1:{}/0", free_port()))
    };
    let shared = backupgw::shared::Shared::new(options, Some(metrics.clone())).unwrap();
    for _ in 0..3 {
        let (_, _, origin) = shared
            .stored_or_fetch(
                "p",
                Duration::from_secs(60),
                Duration::from_secs(60),
                || async { Ok(backupgw::wire::EncodedPage::default()) },
            )
            .await
            .unwrap();
        assert_eq!(origin, Origin::Upstream);
    }
    assert!(!shared.is_up());
    assert!(metrics.render().contains("backupgw_shared_up 0"));
    let logs = log.text();
    assert_eq!(
        logs.matches("shared state (Redis) unreachable").count(),
        1,
        "{logs}"
    );
}

/// A full Redis (`maxmemory` reached under `noeviction`) refuses every write but still answers:
/// what it holds is still served, the replica is not cut off from it (`backupgw_shared_up` stays
/// 1, nothing is "unreachable"), and the refusal is said once and counted.
#[tokio::test(flavor = "current_thread")]
async fn a_full_redis_refuses_writes_and_still_serves_what_it_holds() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let log = LogCapture::start();
    // A refusal must not count as failing (which would leave Redis alone for ten minutes).
    let (shared, metrics) = shared_on(&redis);
    let minute = Duration::from_secs(60);
    let page = |total| {
        move || async move {
            let mut page = backupgw::wire::EncodedPage::default();
            page.total = total;
            Ok(page)
        }
    };
    let read = |name: &'static str, total| {
        let shared = &shared;
        async move {
            let (page, _, origin) = shared
                .stored_or_fetch::<backupgw::wire::EncodedPage, _>(
                    name,
                    minute,
                    minute,
                    page(total),
                )
                .await
                .unwrap();
            (page.total, origin)
        }
    };
    assert_eq!(read("held", 7).await, (7, Origin::Upstream));

    // Full: from now on every write is refused.
    let mut c = redis.connect().await;
    for (key, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
    let refused = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("OOM"), "the test can tell");

    for _ in 0..3 {
        assert_eq!(read("new", 8).await, (8, Origin::Upstream));
    }
    assert_eq!(
        read("held", 9).await,
        (7, Origin::Cache),
        "still served from Redis"
    );
    assert!(shared.is_up());
    let rendered = metrics.render();
    assert!(rendered.contains("backupgw_shared_up 1"), "{rendered}");
    let refusals: u64 = rendered
        .lines()
        .find_map(|l| l.strip_prefix("backupgw_shared_refusals_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(
        refusals >= 3,
        "a refused store for each new page: {rendered}"
    );
    let logs = log.text();
    assert!(!logs.contains("unreachable"), "{logs}");
    assert_eq!(
        logs.matches("(Redis) refuses an operation").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("OOM"), "{logs}");
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
    let lease = "backupgw:page-lease:p";
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
        .arg("backupgw:page:p")
        .arg(value)
        .arg("PX")
        .arg(3_600_000)
        .query_async::<()>(&mut redis.connect().await)
        .await
        .unwrap();
    let shared = backupgw::shared::Shared::new(redis.options(), None).unwrap();
    let (hour, five_minutes) = (Duration::from_secs(3600), Duration::from_secs(300));
    let fetch = |total| {
        move || async move {
            let mut page = backupgw::wire::EncodedPage::default();
            page.total = total;
            Ok(page)
        }
    };
    let (page, age, origin) = shared
        .stored_or_fetch::<backupgw::wire::EncodedPage, _>("p", hour, hour, fetch(8))
        .await
        .unwrap();
    assert_eq!((page.total, origin), (7, Origin::Cache));
    assert!(age >= Duration::from_secs(600), "{age:?}");
    assert!(age < Duration::from_secs(660), "{age:?}");
    // Too old for five minutes, though it has just been read from Redis.
    let (page, age, origin) = shared
        .stored_or_fetch::<backupgw::wire::EncodedPage, _>("p", five_minutes, hour, fetch(9))
        .await
        .unwrap();
    assert_eq!(
        (page.total, origin, age),
        (9, Origin::Upstream, Duration::ZERO)
    );
}

/// A Redis that hangs (every client paused) answers nothing within the timeout: the page is
/// fetched from the upstream, Redis is said unreachable and left alone, and nothing waits for it.
#[tokio::test(flavor = "current_thread")]
async fn a_redis_that_hangs_is_left_alone_after_one_timeout() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let log = LogCapture::start();
    let (shared, metrics) = shared_on(&redis);
    assert_eq!(origin_of_page(&shared).await, Origin::Upstream);
    assert_eq!(origin_of_page(&shared).await, Origin::Cache, "Redis in use");
    // From now on Redis answers no one for a minute.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("ALL")
        .query_async::<()>(&mut redis.connect().await)
        .await
        .unwrap();
    let fetched = tokio::time::timeout(Duration::from_secs(30), async {
        (origin_of_page(&shared).await, origin_of_page(&shared).await)
    })
    .await
    .expect("a paused Redis held the query");
    assert_eq!(fetched, (Origin::Upstream, Origin::Upstream));
    assert!(!shared.is_up());
    assert!(metrics.render().contains("backupgw_shared_up 0"));
    let logs = log.text();
    assert_eq!(logs.matches("(Redis) unreachable").count(), 1, "{logs}");
    assert!(logs.contains("no answer within"), "{logs}");
}

/// Redis refusing some commands only (an ACL without scripts: no lease, no shared rate) still
/// shares pages through the commands it allows, and stays up.
#[tokio::test]
async fn a_redis_whose_acl_forbids_scripts_still_shares_pages() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start_without_scripts();
    let ((a, _), (b, _)) = (shared_on(&redis), shared_on(&redis));
    assert_eq!(origin_of_page(&a).await, Origin::Upstream);
    assert_eq!(
        origin_of_page(&b).await,
        Origin::Cache,
        "stored by A without a lease"
    );
    assert!(a.is_up() && b.is_up());
}

/// Pointed at a read-only replica (as after a failover), a replica still reads what the
/// primary holds, and Redis stays in use though every write is refused (`READONLY`).
#[tokio::test]
async fn a_read_only_redis_replica_still_serves_what_it_holds() {
    if !Redis::available() {
        return;
    }
    let primary = Redis::start();
    let replica = Redis::start_replica_of(&primary);
    let (a, _) = shared_on(&primary);
    assert_eq!(origin_of_page(&a).await, Origin::Upstream);
    // Until the replica has it (WAIT answers once it does).
    let mut waiting = primary.connect().await;
    waiting.set_response_timeout(Duration::from_secs(30));
    let synced: i64 = tokio::time::timeout(
        Duration::from_secs(30),
        redis::cmd("WAIT").arg(1).arg(0).query_async(&mut waiting),
    )
    .await
    .expect("the replica never caught up")
    .unwrap();
    assert_eq!(synced, 1);
    let (b, _) = shared_on(&replica);
    assert_eq!(origin_of_page(&b).await, Origin::Cache);
    let refused = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async::<()>(&mut replica.connect().await)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("READONLY"), "the test can tell");
    assert_eq!(origin_of_other_page(&b).await, Origin::Upstream);
    assert_eq!(origin_of_page(&b).await, Origin::Cache, "still read");
    assert!(b.is_up());
}

/// `[shared]` pointed at a Redis Cluster node (not supported): nothing is shared, nothing
/// fails, and the log says what to point it at instead.
#[tokio::test(flavor = "current_thread")]
async fn a_redis_cluster_node_is_said_to_need_a_standalone_redis() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start_cluster_node();
    let log = LogCapture::start();
    let shared = backupgw::shared::Shared::new(redis.options(), None).unwrap();
    assert_eq!(origin_of_page(&shared).await, Origin::Upstream);
    assert!(!shared.is_up());
    let logs = log.text();
    assert!(
        logs.contains("CLUSTERDOWN") && logs.contains("needs a standalone Redis"),
        "{logs}"
    );
}

/// Values a replica cannot read (another version's, or anything else under our prefix) are
/// fetched again and replaced, and said once, not once each.
#[tokio::test(flavor = "current_thread")]
async fn unreadable_values_in_redis_are_fetched_again_and_said_once() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start();
    let log = LogCapture::start();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut unreadable = now_ms.to_le_bytes().to_vec();
    unreadable.extend_from_slice(b"\x09 a page of a version this replica does not know");
    let mut c = redis.connect().await;
    for name in ["p", "q"] {
        redis::cmd("SET")
            .arg(format!("backupgw:page:{name}"))
            .arg(&unreadable)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
    let (shared, _) = shared_on(&redis);
    assert_eq!(origin_of_page(&shared).await, Origin::Upstream);
    assert_eq!(origin_of_other_page(&shared).await, Origin::Upstream);
    assert_eq!(origin_of_page(&shared).await, Origin::Cache, "replaced");
    let logs = log.text();
    assert_eq!(logs.matches("is unreadable").count(), 1, "{logs}");
}

/// The shared state on `redis`, and its metrics. Once Redis has failed it is left alone for ten
/// minutes: within a test, a replica that took Redis for failing never uses it again.
fn shared_on(redis: &Redis) -> (backupgw::shared::Shared, backupgw::metrics::Metrics) {
    let options = SharedOptions {
        retry_after: Duration::from_secs(600),
        ..redis.options()
    };
    let metrics = backupgw::metrics::Metrics::new();
    let shared = backupgw::shared::Shared::new(options, Some(metrics.clone())).unwrap();
    (shared, metrics)
}

/// Where page "p" comes from when `shared` is asked for it (an empty page, if fetched).
async fn origin_of_page(shared: &backupgw::shared::Shared) -> Origin {
    origin_of(shared, "p").await
}

/// The same for page "q".
async fn origin_of_other_page(shared: &backupgw::shared::Shared) -> Origin {
    origin_of(shared, "q").await
}

async fn origin_of(shared: &backupgw::shared::Shared, name: &str) -> Origin {
    let minute = Duration::from_secs(60);
    let (_, _, origin) = shared
        .stored_or_fetch::<backupgw::wire::EncodedPage, _>(name, minute, minute, || async {
            Ok(backupgw::wire::EncodedPage::default())
        })
        .await
        .unwrap();
    origin
}

/// A Redis that asks for a password: with it, replicas share; without it, or with a wrong one,
/// nothing is shared (Redis is as good as unreachable, and said to be), nothing fails, and the
/// password is never written.
#[tokio::test(flavor = "current_thread")]
async fn a_redis_that_wants_a_password_is_used_with_it_and_said_unreachable_without() {
    if !Redis::available() {
        return;
    }
    const PASSWORD: &str = "redis-test-password-7f3a";
    let redis = Redis::start_with_password(PASSWORD);
    let log = LogCapture::start();
    let with = |password: Option<&str>| {
        let options = SharedOptions {
            password: password.map(|p| p.to_owned().into()),
            ..redis.options()
        };
        let metrics = backupgw::metrics::Metrics::new();
        let shared = backupgw::shared::Shared::new(options, Some(metrics.clone())).unwrap();
        (shared, metrics)
    };

    let (a, _) = with(Some(PASSWORD));
    let (b, _) = with(Some(PASSWORD));
    assert_eq!(origin_of_page(&a).await, Origin::Upstream);
    assert_eq!(origin_of_page(&b).await, Origin::Cache, "B shares A's page");

    for password in [None, Some("not-the-password")] {
        let (c, metrics) = with(password);
        assert_eq!(origin_of_page(&c).await, Origin::Upstream, "{password:?}");
        assert!(!c.is_up(), "{password:?}");
        let rendered = metrics.render();
        assert!(rendered.contains("backupgw_shared_up 0"), "{rendered}");
    }
    let logs = log.text();
    assert_eq!(logs.matches("(Redis) unreachable").count(), 2, "{logs}");
    assert!(
        logs.contains("NOAUTH"),
        "Redis' own reason is given: {logs}"
    );
    assert!(
        !logs.contains(PASSWORD) && !logs.contains("not-the-password"),
        "{logs}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_redis_that_refuses_the_news_is_said() {
    if !Redis::available() {
        return;
    }
    let redis = Redis::start_without_channels();
    let log = LogCapture::start();
    let shared = backupgw::shared::Shared::new(redis.options(), None).unwrap();
    shared
        .subscription()
        .wait_for(|s| *s == Subscription::Refused)
        .await
        .unwrap();
    let logs = log.text();
    assert!(
        logs.contains("Redis refuses this replica the news") && logs.contains("NOPERM"),
        "{logs}"
    );
}
