//! The shared state when Redis is not well: not there, hanging, full, refusing some commands,
//! read-only, asking for a password, a cluster node, or holding what a replica cannot read.
//! Never a failed query; said once; Redis kept in use while it answers.

use std::time::Duration;

use backupgw::cache::Origin;
use backupgw::shared::{SharedOptions, Subscription};

use crate::common::*;
use crate::redis::{Redis, free_port};
use crate::shared::read_page;

#[tokio::test(flavor = "current_thread")]
async fn a_redis_that_is_not_there_is_said_once_and_fails_nothing() {
    // As the leak test does: a global subscriber keeps every line's interest on.
    let log = LogCapture::start();
    let options = SharedOptions {
        retry_after: Duration::ZERO,
        ..SharedOptions::new(format!("redis://127.0.0.1:{}/0", free_port()))
    };
    let (shared, metrics) = with_metrics(options);
    for _ in 0..3 {
        assert_eq!(origin_of_page(&shared).await, Origin::Upstream);
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
    let read = |name: &'static str, total| {
        let shared = &shared;
        async move {
            let (total, _, origin) = read_page(shared, name, MINUTE, total).await;
            (total, origin)
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

/// `[shared]` pointed at one node of a cluster of several: the node answers for its own keys and
/// `MOVED` for the others'. The replica sets it aside at the first `MOVED`, says so once with
/// what to point it at instead, and is not taken back and forth with each key it asks for.
#[tokio::test(flavor = "current_thread")]
async fn a_node_of_a_cluster_of_several_is_set_aside_not_used_key_by_key() {
    if !Redis::available() {
        return;
    }
    let (node, _other) = Redis::start_two_node_cluster().await;
    let log = LogCapture::start();
    // Left alone for no time at all after an ordinary failure.
    let (shared, metrics) = with_metrics(node.options());
    for i in 0..32 {
        let (_, _, origin) = read_page(&shared, &format!("page {i}"), MINUTE, i).await;
        assert_eq!(origin, Origin::Upstream);
    }
    assert!(!shared.is_up());
    assert!(metrics.render().contains("backupgw_shared_up 0"));
    let logs = log.text();
    assert_eq!(logs.matches("unreachable").count(), 1, "{logs}");
    assert_eq!(logs.matches("answers again").count(), 0, "{logs}");
    assert!(
        logs.contains("MOVED") && logs.contains("needs a standalone Redis"),
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
            .arg(format!("backupgw:page:{{{name}}}"))
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
    with_metrics(SharedOptions {
        retry_after: Duration::from_secs(600),
        ..redis.options()
    })
}

/// The shared state with `options`, and its metrics.
fn with_metrics(options: SharedOptions) -> (backupgw::shared::Shared, backupgw::metrics::Metrics) {
    let metrics = backupgw::metrics::Metrics::new();
    let shared = backupgw::shared::Shared::new(options, Some(metrics.clone())).unwrap();
    (shared, metrics)
}

/// Where page "p" comes from when `shared` is asked for it (an empty page, if fetched).
async fn origin_of_page(shared: &backupgw::shared::Shared) -> Origin {
    read_page(shared, "p", MINUTE, 0).await.2
}

/// The same for page "q".
async fn origin_of_other_page(shared: &backupgw::shared::Shared) -> Origin {
    read_page(shared, "q", MINUTE, 0).await.2
}

const MINUTE: Duration = Duration::from_secs(60);

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
        with_metrics(SharedOptions {
            password: password.map(|p| p.to_owned().into()),
            ..redis.options()
        })
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
