//! The metrics: one registry, every name in this file. RPC metrics come from a tower layer at
//! the server (`rpc.rs`), upstream metrics from where the request leaves (`ddm/client.rs`),
//! cache metrics from the cache. Served as Prometheus text at `/metrics` on a listener of its own.
//! The shared state's metrics are there only when it is (`[shared]`): a gateway of one replica
//! does not say that Redis is down.

mod rpc;

use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub use rpc::{CallerSlot, RpcMetrics, RpcMetricsLayer};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionStatus {
    region: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabel {
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionReason {
    region: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    method: String,
    code: String,
    caller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    // Shared with the targets: 100,000 targets' series hold no copies of their names.
    project_id: Arc<str>,
    region: Arc<str>,
}

struct Inner {
    registry: Mutex<Registry>,
    shared_registered: Once,
    upstream_requests: Family<RegionStatus, Counter>,
    upstream_duration: Family<RegionLabel, Histogram>,
    upstream_retries: Family<RegionReason, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_bytes: Gauge,
    rpc_requests: Family<Rpc, Counter>,
    streams_open: Family<Method, Gauge>,
    target_last_success: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    target_up: Family<TargetLabels, Gauge>,
    shared_up: Gauge,
    shared_hits: Counter,
    shared_refusals: Counter,
}

impl Inner {
    /// Every metric under its name, with its help text. Counters get their `_total` suffix
    /// from the encoder.
    fn register(&self) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.register(
            "backupgw_upstream_requests",
            "Upstream HTTP attempts, by region and HTTP status (\"transport\": no answer)",
            self.upstream_requests.clone(),
        );
        registry.register(
            "backupgw_upstream_request_duration_seconds",
            "Time of one upstream HTTP attempt, body included",
            self.upstream_duration.clone(),
        );
        registry.register(
            "backupgw_upstream_retries",
            "Upstream attempts that are retried, by region and reason",
            self.upstream_retries.clone(),
        );
        registry.register(
            "backupgw_cache_hits",
            "Pages served from the cache",
            self.cache_hits.clone(),
        );
        registry.register(
            "backupgw_cache_misses",
            "Pages fetched from the upstream",
            self.cache_misses.clone(),
        );
        registry.register(
            "backupgw_cache_bytes",
            "Bytes the page cache holds",
            self.cache_bytes.clone(),
        );
        registry.register(
            "backupgw_rpc_requests",
            "gRPC calls of backupgw.v1.BackupGateway, by method, final code and caller",
            self.rpc_requests.clone(),
        );
        registry.register(
            "backupgw_streams_open",
            "backupgw.v1.BackupGateway calls in progress",
            self.streams_open.clone(),
        );
        registry.register(
            "backupgw_target_last_success_timestamp_seconds",
            "When every page of the target was last read (Unix seconds)",
            self.target_last_success.clone(),
        );
        registry.register(
            "backupgw_target_up",
            "1 when the target's last read succeeded, else 0",
            self.target_up.clone(),
        );
    }

    /// The shared state's metrics.
    fn register_shared(&self) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.register(
            "backupgw_shared_up",
            "1 while the shared state (Redis) answers, 0 while replicas fall back to their own",
            self.shared_up.clone(),
        );
        registry.register(
            "backupgw_shared_cache_hits",
            "Pages and instance lists another replica fetched, read from the shared cache",
            self.shared_hits.clone(),
        );
        registry.register(
            "backupgw_shared_refusals",
            "Operations the shared state (Redis) refused while answering (full, read-only, not permitted): each skipped, Redis still in use",
            self.shared_refusals.clone(),
        );
    }
}

/// The gateway's metrics; cheap to clone (one registry behind it).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn duration_histogram() -> Histogram {
    // 5 ms … ≈ 20 s
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Metrics {
    pub fn new() -> Self {
        let inner = Inner {
            registry: Mutex::default(),
            shared_registered: Once::new(),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(duration_histogram as fn() -> _),
            upstream_retries: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_bytes: Gauge::default(),
            rpc_requests: Family::default(),
            streams_open: Family::default(),
            target_last_success: Family::default(),
            target_up: Family::default(),
            shared_up: Gauge::default(),
            shared_hits: Counter::default(),
            shared_refusals: Counter::default(),
        };
        inner.register();
        Metrics(Arc::new(inner))
    }

    /// One upstream HTTP attempt: its status (`None`: no answer) and how long it took.
    pub fn upstream_request(&self, region: &str, status: Option<u16>, took: Duration) {
        let status = status.map_or_else(|| "transport".to_owned(), |s| s.to_string());
        self.0
            .upstream_requests
            .get_or_create(&RegionStatus {
                region: region.to_owned(),
                status,
            })
            .inc();
        self.0
            .upstream_duration
            .get_or_create(&RegionLabel {
                region: region.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn upstream_retry(&self, region: &str, reason: &str) {
        self.0
            .upstream_retries
            .get_or_create(&RegionReason {
                region: region.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// From now on the shared state's metrics are served too.
    pub fn with_shared_state(&self) {
        self.0
            .shared_registered
            .call_once(|| self.0.register_shared());
    }

    pub fn shared_up(&self, up: bool) {
        self.0.shared_up.set(i64::from(up));
    }

    pub fn shared_hit(&self) {
        self.0.shared_hits.inc();
    }

    pub fn shared_refusal(&self) {
        self.0.shared_refusals.inc();
    }

    pub fn cache_hit(&self) {
        self.0.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.0.cache_misses.inc();
    }

    pub fn set_cache_bytes(&self, bytes: u64) {
        self.0.cache_bytes.set(bytes.min(i64::MAX as u64) as i64);
    }

    pub fn target_read(&self, project_id: &Arc<str>, region: &Arc<str>, ok: bool) {
        let labels = TargetLabels {
            project_id: Arc::clone(project_id),
            region: Arc::clone(region),
        };
        self.0.target_up.get_or_create(&labels).set(i64::from(ok));
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.0.target_last_success.get_or_create(&labels).set(now);
        }
    }

    fn rpc_finished(&self, method: &str, code: tonic::Code, caller: &str) {
        self.0
            .rpc_requests
            .get_or_create(&Rpc {
                method: method.to_owned(),
                code: code_name(code).to_owned(),
                caller: caller.to_owned(),
            })
            .inc();
    }

    fn stream_gauge(&self, method: &str) -> Gauge {
        self.0
            .streams_open
            .get_or_create(&Method {
                method: method.to_owned(),
            })
            .clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let registry = self.0.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Serves `/metrics` on `listener`; `refresh` runs before each scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    refresh: impl Fn() -> BoxFuture<'static, ()> + Clone + Send + Sync + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            let refresh = refresh.clone();
            async move {
                refresh().await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

/// The gRPC code's name as metrics label it (`"INVALID_ARGUMENT"`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_as_documented() {
        let m = Metrics::new();
        m.upstream_request("cn-north-4", Some(429), Duration::from_millis(3));
        m.upstream_request("cn-north-4", None, Duration::from_millis(3));
        m.upstream_retry("cn-north-4", "throttled");
        m.cache_hit();
        m.target_read(&"p1".into(), &"cn-north-4".into(), false);
        let text = m.render();
        for line in [
            "backupgw_upstream_requests_total{region=\"cn-north-4\",status=\"429\"} 1",
            "backupgw_upstream_requests_total{region=\"cn-north-4\",status=\"transport\"} 1",
            "backupgw_upstream_retries_total{region=\"cn-north-4\",reason=\"throttled\"} 1",
            "backupgw_cache_hits_total 1",
            "backupgw_target_up{project_id=\"p1\",region=\"cn-north-4\"} 0",
            "backupgw_upstream_request_duration_seconds_count{region=\"cn-north-4\"} 2",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn the_shared_states_metrics_are_served_only_with_it() {
        let m = Metrics::new();
        m.shared_up(false);
        assert!(!m.render().contains("backupgw_shared"), "{}", m.render());
        m.with_shared_state();
        m.with_shared_state();
        let text = m.render();
        for line in [
            "backupgw_shared_up 0",
            "backupgw_shared_cache_hits_total 0",
            "backupgw_shared_refusals_total 0",
        ] {
            assert_eq!(text.matches(line).count(), 1, "{line} once in\n{text}");
        }
    }
}
