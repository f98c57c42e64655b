//! The DDM simulator: a real HTTP server, one listener per region as the real cloud has, serving
//! a deterministic data set with real auth checks and optional latency. It is the gateway's
//! embedded default and what every test and benchmark runs against.

pub mod auth;
pub mod data;
pub mod faults;
mod generate;
mod http;
mod iam;
pub mod instances;
mod org;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt as _;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::rate::TokenBucket;

pub use auth::{AuthOptions, SimKey, SimUser};
pub use data::{DataSet, DataSpec};
pub use faults::{FailWith, FaultPlan, Faults};

/// How the simulator behaves, beyond its data.
#[derive(Clone, Default)]
pub struct SimOptions {
    /// Who may call: static tokens, IAM users, access keys.
    pub auth: AuthOptions,
    /// Added to every ListBackups answer.
    pub latency: Duration,
    /// Up to this much more, uniformly at random.
    pub jitter: Duration,
    /// What goes wrong, where.
    pub faults: FaultPlan,
    /// How the instance list reads `offset`.
    pub instances_offset_mode: instances::OffsetMode,
    /// Accounts per page of Organizations' ListAccounts, at most (0: 200).
    pub org_page_size: usize,
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("users", &self.auth.users.len())
            .field("keys", &self.auth.keys.len())
            .field("latency", &self.latency)
            .field("jitter", &self.jitter)
            .field("faults", &self.faults)
            .finish()
    }
}

impl SimOptions {
    /// The wait before answering a ListBackups request.
    fn latency(&self, faults: &Faults) -> Duration {
        let mut wait = self.latency + faults.extra_latency();
        if !self.jitter.is_zero() {
            wait += self.jitter.mul_f64(fastrand::f64());
        }
        wait
    }
}

#[derive(Default)]
struct SimStats {
    requests: AtomicU64,
    list_requests: AtomicU64,
    instance_requests: AtomicU64,
    in_flight: AtomicI64,
    throttled: AtomicU64,
    faults: AtomicU64,
    iam_token_requests: AtomicU64,
    organizations_requests: AtomicU64,
}

/// What the simulator has served so far (also at `GET /_sim/stats` on every listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SimStatsSnapshot {
    /// Every request but the stats endpoint's.
    pub requests: u64,
    /// Requests that reached the ListBackups handler.
    pub list_requests: u64,
    /// Requests that reached the instance list handler.
    #[serde(default)]
    pub instance_requests: u64,
    /// Requests being answered now.
    pub in_flight: i64,
    /// 429s sent by the throttle.
    pub throttled: u64,
    /// Requests answered with an injected fault.
    pub faults: u64,
    /// `POST /v3/auth/tokens` requests (passwords and `assume_role`).
    #[serde(default)]
    pub iam_token_requests: u64,
    /// Organizations `ListAccounts` requests (one per page).
    #[serde(default)]
    pub organizations_requests: u64,
}

struct SimState {
    data: DataSet,
    options: SimOptions,
    stats: SimStats,
    auth: auth::AuthState,
    /// ListBackups requests per project (by index), for `fail_count` and `fail_after`.
    project_requests: Vec<AtomicU64>,
    /// A project's backups once churn has changed them (newest first); `None`: as generated.
    live: Vec<Mutex<Option<Vec<data::SimBackup>>>>,
    /// Throttles by scope ("all", a region or a project id).
    buckets: Mutex<HashMap<String, Arc<TokenBucket>>>,
    /// Member accounts that have left the organization.
    left: Mutex<Vec<String>>,
}

impl SimState {
    fn stats_snapshot(&self) -> SimStatsSnapshot {
        SimStatsSnapshot {
            requests: self.stats.requests.load(Ordering::Relaxed),
            list_requests: self.stats.list_requests.load(Ordering::Relaxed),
            instance_requests: self.stats.instance_requests.load(Ordering::Relaxed),
            in_flight: self.stats.in_flight.load(Ordering::Relaxed),
            throttled: self.stats.throttled.load(Ordering::Relaxed),
            faults: self.stats.faults.load(Ordering::Relaxed),
            iam_token_requests: self.stats.iam_token_requests.load(Ordering::Relaxed),
            organizations_requests: self.stats.organizations_requests.load(Ordering::Relaxed),
        }
    }

    fn bucket(&self, scope: &str, rps: f64, burst: u32) -> Arc<TokenBucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            buckets
                .entry(scope.to_owned())
                .or_insert_with(|| Arc::new(TokenBucket::new(rps, burst))),
        )
    }

    /// One page of a project's backups as they are now, after this request's churn: the body.
    fn page(&self, index: usize, faults: &Faults, params: &http::ListParams) -> String {
        let project = &self.data.projects[index];
        let mut live = self.live[index].lock().unwrap_or_else(|e| e.into_inner());
        if faults.churn_add > 0 || faults.churn_expire > 0 {
            churn(project, &mut live, faults);
        }
        // Churned projects are rendered as they are now; the others were rendered once.
        let (backups, rendered): (&[data::SimBackup], Option<&[Box<str>]>) = match live.as_deref() {
            Some(b) => (b, None),
            None => (&project.backups, Some(&project.rendered)),
        };
        // Pushdown: instance_id and instance_name match exactly, backup_name matches a substring.
        let filtered = params.instance_id.is_some()
            || params.instance_name.is_some()
            || params.backup_name.is_some();
        let matches = |b: &data::SimBackup| {
            let instance = &project.instances[b.instance as usize];
            params
                .instance_id
                .as_ref()
                .is_none_or(|id| *id == instance.id)
                && params
                    .instance_name
                    .as_ref()
                    .is_none_or(|n| *n == instance.name)
                && params.backup_name.as_ref().is_none_or(|n| {
                    project
                        .render(b)
                        .name
                        .is_some_and(|name| name.contains(n.as_str()))
                })
        };
        let mut total = 0u64;
        let mut body = String::from("{\"backups\":[");
        for (i, b) in backups.iter().enumerate() {
            if filtered && !matches(b) {
                continue;
            }
            let at = total;
            total += 1;
            if at >= params.offset && at < params.offset.saturating_add(params.limit) {
                if !body.ends_with('[') {
                    body.push(',');
                }
                match rendered {
                    Some(r) => body.push_str(&r[i]),
                    None => body.push_str(&project.render_json(b)),
                }
            }
        }
        body.push_str(&format!(
            "],\"total\":{total},\"offset\":{},\"limit\":{}}}",
            params.offset, params.limit
        ));
        body
    }
}

/// New backups appear at the front, the oldest expire at the end (of the project's live list,
/// its generated one the first time).
fn churn(project: &data::SimProject, live: &mut Option<Vec<data::SimBackup>>, faults: &Faults) {
    let backups = live.get_or_insert_with(|| project.backups.clone());
    let newest = backups
        .first()
        .map_or(project.backups.first().map_or(0, |b| b.created), |b| {
            b.created
        });
    for k in 0..faults.churn_add {
        let created = newest + 60 * i64::from(k + 1);
        let instances = project.instances.len().max(1) as u32;
        backups.insert(
            0,
            data::SimBackup {
                id: fastrand::u128(..),
                instance: fastrand::u32(..instances),
                kind: data::BackupKind::Metadata,
                created,
                updated: created + 10,
                status: "normal",
                size_kb: 4.0,
            },
        );
    }
    for _ in 0..faults.churn_expire {
        backups.pop();
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
        let data_len = data.projects.len();
        let state = Arc::new(SimState {
            data,
            options,
            stats: SimStats::default(),
            auth: auth::AuthState::default(),
            project_requests: (0..data_len).map(|_| AtomicU64::new(0)).collect(),
            live: (0..data_len).map(|_| Mutex::new(None)).collect(),
            buckets: Mutex::default(),
            left: Mutex::default(),
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
                // As real front ends do: responses leave at once, not after the client's ACK.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
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

    /// The ids of a project's backups as they are now (churn included), newest first.
    pub fn current_backup_ids(&self, project_id: &str) -> Vec<String> {
        let Some(index) = self.state.data.project_index(project_id) else {
            return Vec::new();
        };
        let project = &self.state.data.projects[index];
        let live = self.state.live[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        live.as_deref()
            .unwrap_or(&project.backups)
            .iter()
            .map(data::SimProject::backup_id)
            .collect()
    }

    /// Changes a project's list now, as churn does at a request: `add` new backups at the front,
    /// the `expire` oldest gone.
    pub fn churn_now(&self, project_id: &str, add: u32, expire: u32) {
        let Some(index) = self.state.data.project_index(project_id) else {
            return;
        };
        let project = &self.state.data.projects[index];
        let mut live = self.state.live[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let change = Faults {
            churn_add: add,
            churn_expire: expire,
            ..Faults::default()
        };
        churn(project, &mut live, &change);
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

    /// `assume_role` requests IAM answered for a member account (by name), refusals included.
    pub fn assume_requests(&self, account: &str) -> u64 {
        self.state.auth.assume_requests(account)
    }

    /// Takes a member account out of the organization (`false`) or back in: Organizations
    /// lists it or not from the next request on.
    pub fn set_member(&self, account: &str, member: bool) {
        let mut left = self.state.left.lock().unwrap_or_else(|e| e.into_inner());
        if member {
            left.retain(|a| a != account);
        } else if !left.iter().any(|a| a == account) {
            left.push(account.to_owned());
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
