//! The DDM simulator: a real HTTP server, one listener per region as the real cloud has, serving
//! a deterministic data set with real auth checks and optional latency. It is the gateway's
//! embedded default and what every test and benchmark runs against.

pub mod auth;
pub mod data;
mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use auth::{AuthOptions, SimKey, SimUser};
pub use data::{DataSet, DataSpec};

/// How the simulator behaves, beyond its data.
#[derive(Clone, Default)]
pub struct SimOptions {
    /// Who may call: static tokens, IAM users, access keys.
    pub auth: AuthOptions,
    /// Added to every ListBackups answer.
    pub latency: Duration,
    /// Up to this much more, uniformly at random.
    pub jitter: Duration,
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("users", &self.auth.users.len())
            .field("keys", &self.auth.keys.len())
            .field("latency", &self.latency)
            .field("jitter", &self.jitter)
            .finish()
    }
}

impl SimOptions {
    async fn delay(&self) {
        let mut wait = self.latency;
        if !self.jitter.is_zero() {
            wait += self.jitter.mul_f64(fastrand::f64());
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[derive(Default)]
struct SimStats {
    requests: AtomicU64,
    list_requests: AtomicU64,
    in_flight: AtomicI64,
}

/// What the simulator has served so far (also at `GET /_sim/stats` on every listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SimStatsSnapshot {
    /// Every request but the stats endpoint's.
    pub requests: u64,
    /// Requests that reached the ListBackups handler.
    pub list_requests: u64,
    /// Requests being answered now.
    pub in_flight: i64,
}

struct SimState {
    data: DataSet,
    options: SimOptions,
    stats: SimStats,
    auth: auth::AuthState,
}

impl SimState {
    fn stats_snapshot(&self) -> SimStatsSnapshot {
        SimStatsSnapshot {
            requests: self.stats.requests.load(Ordering::Relaxed),
            list_requests: self.stats.list_requests.load(Ordering::Relaxed),
            in_flight: self.stats.in_flight.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulator serves {regions} regions but was given {listeners} listeners")]
    ListenerCount { regions: usize, listeners: usize },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running simulator. Dropping it stops its listeners.
pub struct Simulator {
    state: Arc<SimState>,
    endpoints: Vec<(String, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Serves `data` on `listeners`, one per region in `data.regions` order.
    pub fn serve(
        data: DataSet,
        options: SimOptions,
        listeners: Vec<TcpListener>,
    ) -> Result<Self, SimError> {
        if listeners.len() != data.regions.len() {
            return Err(SimError::ListenerCount {
                regions: data.regions.len(),
                listeners: listeners.len(),
            });
        }
        let regions = data.regions.clone();
        let state = Arc::new(SimState {
            data,
            options,
            stats: SimStats::default(),
            auth: auth::AuthState::default(),
        });
        let mut endpoints = Vec::new();
        let mut tasks = Vec::new();
        for (region, listener) in regions.into_iter().zip(listeners) {
            let addr = listener.local_addr().map_err(|source| SimError::Bind {
                addr: region.clone(),
                source,
            })?;
            let app = http::router(http::RegionState {
                shared: Arc::clone(&state),
                region: region.clone(),
            });
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "simulator listener stopped");
                }
            }));
            endpoints.push((region, addr));
        }
        Ok(Simulator {
            state,
            endpoints,
            tasks,
        })
    }

    /// Binds one ephemeral port per region on `host` and serves there.
    pub async fn bind(
        data: DataSet,
        options: SimOptions,
        host: std::net::IpAddr,
    ) -> Result<Self, SimError> {
        Self::bind_from(data, options, host, 0).await
    }

    /// Binds region `i` to `base_port + i` (or ephemeral ports when `base_port` is 0).
    pub async fn bind_from(
        data: DataSet,
        options: SimOptions,
        host: std::net::IpAddr,
        base_port: u16,
    ) -> Result<Self, SimError> {
        let mut listeners = Vec::new();
        for i in 0..data.regions.len() {
            let port = if base_port == 0 {
                0
            } else {
                base_port.saturating_add(i as u16)
            };
            let addr = SocketAddr::new(host, port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| SimError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
            listeners.push(listener);
        }
        Self::serve(data, options, listeners)
    }

    pub fn data(&self) -> &DataSet {
        &self.state.data
    }

    /// `(region, address)` of every listener.
    pub fn endpoints(&self) -> &[(String, SocketAddr)] {
        &self.endpoints
    }

    /// `http://host:port` of a region's listener.
    pub fn endpoint(&self, region: &str) -> Option<String> {
        self.endpoints
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, addr)| format!("http://{addr}"))
    }

    pub fn stats(&self) -> SimStatsSnapshot {
        self.state.stats_snapshot()
    }

    /// IAM tokens issued for a project (`""`: domain-scoped tokens).
    pub fn tokens_issued(&self, scope: &str) -> u64 {
        self.state.auth.tokens_issued(scope)
    }

    /// Every IAM token issued and every signature received so far.
    pub fn secrets_seen(&self) -> Vec<String> {
        self.state.auth.secrets_seen()
    }

    /// Makes every IAM token issued so far expired, as if a day had passed.
    pub fn expire_tokens(&self) {
        self.state.auth.expire_tokens();
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
