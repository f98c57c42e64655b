//! State shared by the replicas of one deployment, in Redis (`[shared]`): a second-level cache of
//! pages and instance lists, with one fetch of each across replicas (`pages.rs`), and each
//! region's request rate for all replicas together (`pace.rs`).
//!
//! Redis is never a single point of failure. Every Redis operation is bounded by a short
//! timeout; when one fails, the replica serves from its own cache and the upstream under its own
//! limits, says so once in the log and in `backupgw_shared_up 0`, leaves Redis alone for
//! `retry_after` (ten minutes for a node of a Redis Cluster of several), then tries again, and
//! recovers by itself. No query fails because of Redis. Keys carry a hash tag, so that where keys
//! are placed by slot a page and its lease lie in one.
//! Redis refusing one operation (full under `noeviction`, a replica that takes no writes, an
//! ACL) is not Redis failing: that operation is skipped, said once and counted, and the others
//! still go to Redis — a full Redis still serves what it holds.

mod news;
mod pace;
mod pages;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo as _, RedisError, RedisResult};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::time::Instant;

pub use news::Subscription;
pub use pace::SharedPace;
pub use pages::{Stored, instances_key, page_key};

use crate::metrics::Metrics;

/// How to reach Redis, and how patient to be with it.
#[derive(Clone)]
pub struct SharedOptions {
    /// `redis://host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// With `rediss://`: the CA certificates (PEM) to trust instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub password: Option<SecretString>,
    /// Prefixes every key, so that deployments can share one Redis.
    pub key_prefix: String,
    /// One Redis operation, answer included.
    pub timeout: Duration,
    /// How long Redis is left alone after it failed.
    pub retry_after: Duration,
    /// How long one replica's fetch of a page keeps the others waiting for it at most.
    pub lease: Duration,
    /// How often a waiter looks for that page by itself while news of fetches reach this
    /// replica (they wake it at once; this is for news that were lost).
    pub look_while_told: Duration,
}

impl std::fmt::Debug for SharedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only its scheme and host are shown.
        let host = self
            .url
            .rsplit_once('@')
            .map_or(self.url.as_str(), |(_, host)| host);
        f.debug_struct("SharedOptions")
            .field("host", &host)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SharedOptions {
    pub fn new(url: impl Into<String>) -> Self {
        SharedOptions {
            url: url.into(),
            ca_pem: None,
            password: None,
            key_prefix: "backupgw:".into(),
            timeout: Duration::from_millis(250),
            retry_after: Duration::from_secs(1),
            lease: Duration::from_secs(10),
            look_while_told: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("[shared] redis_url: {0}")]
pub struct SharedError(String);

/// The connection to Redis, and whether it is answering.
pub struct Shared {
    /// For the subscription to the news of fetches (a connection of its own).
    client: redis::Client,
    conn: ConnectionManager,
    news: Arc<news::News>,
    options: SharedOptions,
    /// While Redis is failing: when to try it again.
    down: Mutex<Option<Instant>>,
    /// What was said in the log of a trouble that may repeat often (refusals, unreadable
    /// values), to say it once a while.
    said: Mutex<Said>,
    metrics: Option<Metrics>,
    /// This replica, as the holder of a lease.
    replica: String,
}

impl Shared {
    /// Prepares the connection; it is made on first use, and made again whenever it broke.
    pub fn new(options: SharedOptions, metrics: Option<Metrics>) -> Result<Self, SharedError> {
        let mut info = options
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| SharedError(format!("not a Redis URL: {}", e.category())))?;
        if let Some(password) = &options.password {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.expose_secret());
            info = info.set_redis_settings(redis);
        }
        let client = match &options.ca_pem {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| SharedError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(options.timeout);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| SharedError(e.to_string()))?;
        if let Some(m) = &metrics {
            m.with_shared_state();
            m.shared_up(true);
        }
        Ok(Shared {
            client,
            conn,
            news: Arc::new(news::News::new()),
            options,
            down: Mutex::default(),
            said: Mutex::default(),
            metrics,
            replica: format!("{:032x}", fastrand::u128(..)),
        })
    }

    pub fn options(&self) -> &SharedOptions {
        &self.options
    }

    /// Asks Redis once, at start-up, so that the log and `backupgw_shared_up` tell whether it
    /// answers before any query does (a wrong password shows at deploy time); starts listening
    /// for the news of fetches.
    pub async fn greet(&self) {
        self.listen();
        let pong: Option<String> = self
            .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await;
        if pong.is_some() {
            tracing::info!(
                shared = ?self.options,
                "shared state (Redis) answers: pages and each region's rate are shared with the other replicas"
            );
        }
    }

    /// Whether the news of other replicas' fetches reach this one; watch it change. Starts
    /// listening for them if this replica has not yet (call it inside the runtime).
    pub fn subscription(&self) -> tokio::sync::watch::Receiver<Subscription> {
        self.listen();
        self.news.subscription()
    }

    /// Starts listening for the news of fetches (once; on first use, inside the runtime).
    fn listen(&self) {
        self.news.listen(|| news::Channel {
            client: self.client.clone(),
            name: self.news_channel(),
            timeout: self.options.timeout,
            retry_after: self.options.retry_after,
        });
    }

    /// Where the end of a fetch is told.
    fn news_channel(&self) -> String {
        format!("{}fetched", self.options.key_prefix)
    }

    /// `backupgw:page:{name}`. The braces make `name` the key's hash tag: a page and its lease
    /// lie in one hash slot, so the script that reads one and takes the other also runs where
    /// keys are placed by slot (a cluster proxy, a one-node cluster).
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{{{name}}}", self.options.key_prefix)
    }

    /// A region's pace: `backupgw:pace:cn-north-4`, one key alone in its script.
    fn pace_key(&self, region: &str) -> String {
        format!("{}pace:{region}", self.options.key_prefix)
    }

    /// Whether Redis answered the last time it was asked (or has not been asked yet).
    pub fn is_up(&self) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Runs one Redis operation: `None` when Redis is being left alone, failed, or took too long.
    /// A connection that broke (Redis restarted) is made again and the operation sent once more.
    async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if let Some(again_at) = *self.down.lock().unwrap_or_else(|e| e.into_inner())
            && Instant::now() < again_at
        {
            return None;
        }
        let mut again = true;
        loop {
            match tokio::time::timeout(self.options.timeout, op(self.conn.clone())).await {
                Ok(Ok(value)) => {
                    self.mark_up();
                    return Some(value);
                }
                Ok(Err(e)) if again && (e.is_connection_dropped() || e.is_io_error()) => {
                    again = false;
                }
                Ok(Err(e)) if is_refusal(&e) => {
                    self.refused(&e);
                    return None;
                }
                Ok(Err(e)) => {
                    let pause = left_alone_for(&e, self.options.retry_after);
                    self.mark_down(&failure_reason(&e, self.options.timeout), pause);
                    return None;
                }
                Err(_) => {
                    let why = format!("no answer within {:?}", self.options.timeout);
                    self.mark_down(&why, self.options.retry_after);
                    return None;
                }
            }
        }
    }

    /// Whether a trouble of this kind is to be said in the log now.
    fn to_say(&self, kind: &str) -> bool {
        self.said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_to_be_said(kind, Instant::now())
    }

    /// Redis answered, and refused this one operation: it stays in use for the others.
    fn refused(&self, e: &RedisError) {
        self.mark_up();
        if let Some(m) = &self.metrics {
            m.shared_refusal();
        }
        // Both come from Redis: kept short.
        let code: String = e
            .code()
            .unwrap_or_else(|| e.category())
            .chars()
            .take(32)
            .collect();
        if !self.to_say(&code) {
            return;
        }
        let detail: String = e.detail().unwrap_or_default().chars().take(200).collect();
        tracing::warn!(
            code,
            detail,
            "shared state (Redis) refuses an operation: it is skipped (a page is fetched or not stored, a rate kept locally), and Redis stays in use for the others"
        );
    }

    /// Records that Redis answered; says so once if it had failed.
    fn mark_up(&self) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if down.take().is_some() {
            tracing::info!("shared state (Redis) answers again; sharing resumes");
        }
        if let Some(m) = &self.metrics {
            m.shared_up(true);
        }
    }

    /// Records that Redis failed, and leaves it alone for `pause`; says so once when it starts.
    fn mark_down(&self, why: &str, pause: Duration) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_none() {
            tracing::warn!(
                error = why,
                "shared state (Redis) unreachable; serving from this replica's cache and limits until it answers"
            );
        }
        *down = Some(Instant::now() + pause);
        if let Some(m) = &self.metrics {
            m.shared_up(false);
        }
    }
}

/// How long a node of a Redis Cluster of several is left alone. It answers for the keys of its
/// own hash slots and `MOVED` for the others': taken back at each answer, it would go up and down
/// with every key asked; and another Redis takes a restart (`[shared]`).
const CLUSTER_NODE_LEFT_ALONE: Duration = Duration::from_secs(600);

/// How long Redis is left alone after it failed with `e`: `retry_after`, or ten minutes at least
/// when it sent the operation's key to another node (a node of a Redis Cluster of several,
/// which `[shared]` does not speak to).
fn left_alone_for(e: &RedisError, retry_after: Duration) -> Duration {
    match e.code() {
        Some("MOVED" | "ASK") => retry_after.max(CLUSTER_NODE_LEFT_ALONE),
        _ => retry_after,
    }
}

/// What to say of Redis failing: its own words when it answered (`NOAUTH Authentication
/// required.`), and what to do about a cluster, which `[shared]` does not speak to. (`CROSSSLOT`
/// is a refusal of one operation, not failing: `is_refusal`.)
fn failure_reason(e: &RedisError, timeout: Duration) -> String {
    const ADVICE: &str = "[shared] needs a standalone Redis, or a proxy in front of the cluster";
    let detail: String = e.detail().unwrap_or_default().chars().take(200).collect();
    match e.code() {
        Some(code @ ("MOVED" | "ASK")) => format!(
            "{code} {detail} (a node of a Redis Cluster: {ADVICE}; left alone for {} minutes)",
            CLUSTER_NODE_LEFT_ALONE.as_secs() / 60
        ),
        Some(code @ "CLUSTERDOWN") => format!("{code} {detail} (a Redis Cluster node: {ADVICE})"),
        Some(code) => format!("{code} {detail}"),
        // The connection's own response timeout, the same as the operation's.
        None if e.is_timeout() => format!("no answer within {timeout:?}"),
        None => e.category().to_owned(),
    }
}

/// How long a kind of trouble is not said again while it keeps happening.
const SAY_AGAIN_AFTER: Duration = Duration::from_secs(600);

/// Troubles said in the log, by kind (a refusal's code from Redis, an unreadable value's
/// kind), and when: each kind is said once, and again if it still happens `SAY_AGAIN_AFTER`
/// later.
#[derive(Default)]
struct Said(Vec<(String, Instant)>);

impl Said {
    /// Whether a trouble of `kind` at `now` is to be said (and notes it if so).
    fn is_to_be_said(&mut self, kind: &str, now: Instant) -> bool {
        match self.0.iter_mut().find(|(k, _)| k == kind) {
            Some((_, at)) if now.duration_since(*at) < SAY_AGAIN_AFTER => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                // Codes come from Redis: only the latest few are remembered.
                if self.0.len() >= 16 {
                    self.0.remove(0);
                }
                self.0.push((kind.to_owned(), now));
                true
            }
        }
    }
}

/// Whether Redis answered and refused this one operation — full under `noeviction` (`OOM`), a
/// replica that takes no writes, an ACL that forbids the command, a key of another type — rather
/// than being out of reach or refusing everything (no or a wrong password, loading, a script
/// that blocks it, cluster down), which is failing.
fn is_refusal(e: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind as Server};
    match e.kind() {
        ErrorKind::Extension => !matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "BUSY")),
        ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Server(kind) => matches!(
            kind,
            Server::ResponseError
                | Server::ExecAbort
                | Server::NoScript
                | Server::ReadOnly
                | Server::NoPerm
                | Server::CrossSlot
                | Server::NoSub
                | Server::NotBusy
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error as Redis answers it (`-MOVED 3999 127.0.0.1:6381`).
    fn answered(error: &str) -> RedisError {
        let reply = format!("-{error}\r\n");
        redis::parse_redis_value(reply.as_bytes())
            .and_then(redis::Value::extract_error)
            .unwrap_err()
    }

    #[test]
    fn a_node_of_a_cluster_of_several_is_left_alone_ten_minutes_and_other_failures_retry_after() {
        let second = Duration::from_secs(1);
        let moved = answered("MOVED 3999 127.0.0.1:6381");
        assert_eq!(moved.code(), Some("MOVED"), "the test can tell");
        assert_eq!(left_alone_for(&moved, second), Duration::from_secs(600));
        let ask = answered("ASK 3999 127.0.0.1:6381");
        assert_eq!(left_alone_for(&ask, second), Duration::from_secs(600));
        let longer = Duration::from_secs(3600);
        assert_eq!(left_alone_for(&moved, longer), longer);
        for other in [
            "NOAUTH Authentication required.",
            "CLUSTERDOWN Hash slot not served",
        ] {
            assert_eq!(left_alone_for(&answered(other), second), second, "{other}");
        }
    }

    #[test]
    fn a_trouble_is_said_once_for_its_kind_and_again_after_a_while() {
        let mut said = Said::default();
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert!(said.is_to_be_said("OOM", at(0)));
        assert!(!said.is_to_be_said("OOM", at(1)));
        assert!(said.is_to_be_said("NOPERM", at(2)), "another code is said");
        assert!(!said.is_to_be_said("OOM", at(599)));
        assert!(
            said.is_to_be_said("OOM", at(600)),
            "still refused ten minutes on"
        );
        assert!(!said.is_to_be_said("OOM", at(601)));
    }
}
