//! Wiring: the live configuration (inventory, callers, options; replaced whole on reload), and
//! the gRPC server in front of it with health and reflection (v1 and v1alpha, from the same
//! descriptor sets, so grpcurl of any age works), bounded connections and a graceful shutdown.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::api::Gateway;
use crate::cache::PageCache;
use crate::callers::{Caller, CallerBook};
use crate::config::Settings;
use crate::ddm::{DdmClient, DdmError};
use crate::inventory::Inventory;
use crate::listener::{ConnInfo, ConnectionLimits, TlsSlot};
use crate::metrics::{CallerSlot, Metrics, RpcMetricsLayer};
use crate::pb;
use crate::pb::backup_gateway_server::BackupGatewayServer;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub use crate::ddm::client::install_crypto_provider;

/// How the gRPC server protects itself (`[server]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptions {
    /// Largest request message accepted.
    pub max_request_bytes: usize,
    /// The deadline of a call that sets none.
    pub default_deadline: Duration,
    /// From accept to the end of the HTTP/2 preface (TLS handshake included).
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams_per_connection: u32,
    pub http2_keepalive_interval: Duration,
    /// How long open calls may go on after SIGTERM.
    pub shutdown_grace: Duration,
    /// A plaintext listener for `grpc.health.v1` alone: Kubernetes' gRPC probes do not speak
    /// TLS. `None`: health is served on the main listener only.
    pub health_listen: Option<std::net::SocketAddr>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_request_bytes: 64 << 10,
            default_deadline: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_concurrent_streams_per_connection: 128,
            http2_keepalive_interval: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            health_listen: None,
        }
    }
}

/// What a call runs against: one configuration's inventory and callers. A reload builds a new
/// one; calls already running keep theirs.
pub struct Generation {
    pub inventory: Arc<Inventory>,
    pub callers: Arc<CallerBook>,
    pub default_deadline: Duration,
}

/// The configuration in force, and the shutdown in progress if any.
pub struct Live {
    current: RwLock<Arc<Generation>>,
    pub tls: TlsSlot,
    pub metrics: Metrics,
    /// Set to when open calls must end, once a shutdown began.
    grace_ends: watch::Sender<Option<Instant>>,
}

impl Live {
    pub fn new(generation: Generation, metrics: Metrics) -> Arc<Self> {
        Arc::new(Live {
            current: RwLock::new(Arc::new(generation)),
            tls: TlsSlot::default(),
            metrics,
            grace_ends: watch::channel(None).0,
        })
    }

    pub fn current(&self) -> Arc<Generation> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn replace(&self, generation: Generation) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(generation);
    }

    /// Completes when a shutdown begins.
    pub async fn grace_over_begins(&self) {
        let mut ends = self.grace_ends.subscribe();
        if ends.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes when open calls must end: the shutdown grace is over.
    pub async fn grace_over(&self) {
        let mut ends = self.grace_ends.subscribe();
        let Ok(at) = ends.wait_for(Option::is_some).await.map(|at| *at) else {
            return std::future::pending().await;
        };
        if let Some(at) = at {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// Why a generation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Client(#[from] DdmError),
    #[error(transparent)]
    Shared(#[from] crate::shared::SharedError),
}

/// A generation from settings, keeping the page cache of `previous` (the data does not change
/// with the configuration; nor does `[shared]`, which the cache holds).
pub fn build_generation(
    settings: &Settings,
    previous: Option<&Generation>,
    metrics: &Metrics,
) -> Result<Generation, BuildError> {
    let client = DdmClient::new(settings.client.clone())?.with_metrics(metrics.clone());
    let cache = match previous {
        Some(p) => p.inventory.cache().clone(),
        None => {
            let cache = PageCache::new(settings.cache_ttl, settings.cache_max_bytes)
                .with_metrics(metrics.clone());
            match &settings.shared {
                Some(options) => cache.with_shared(Arc::new(crate::shared::Shared::new(
                    options.clone(),
                    Some(metrics.clone()),
                )?)),
                None => cache,
            }
        }
    };
    let mut inventory = Inventory::new(
        settings.targets.clone(),
        client,
        cache,
        settings.limits.clone(),
    )
    .with_metrics(metrics.clone());
    if let Some(previous) = previous {
        let discovering: Vec<_> = settings
            .discoveries
            .iter()
            .map(|d| Arc::clone(&d.credential))
            .collect();
        let sources: Vec<&str> = settings.accounts.iter().map(|a| a.label()).collect();
        inventory = inventory.carry_over(&previous.inventory, &discovering, &sources);
    }
    let inventory = Arc::new(inventory);
    Ok(Generation {
        inventory,
        callers: Arc::clone(&settings.callers),
        default_deadline: settings.server.default_deadline,
    })
}

/// Serves `/metrics` on `listener`, the cache's size read at each scrape.
pub async fn serve_metrics(listener: TcpListener, live: Arc<Live>) -> std::io::Result<()> {
    let metrics = live.metrics.clone();
    let refresh = move || -> futures_util::future::BoxFuture<'static, ()> {
        let live = Arc::clone(&live);
        Box::pin(async move {
            let (_, bytes) = live.current().inventory.cache().usage().await;
            live.metrics.set_cache_bytes(bytes);
        })
    };
    crate::metrics::serve(listener, metrics, refresh).await
}

/// Runs the configured discoveries and account sources in the background: start-up never
/// waits for IAM or Organizations.
pub fn start_discovery(
    inventory: &Arc<Inventory>,
    settings: &Settings,
) -> Option<tokio::task::JoinHandle<()>> {
    if settings.discoveries.is_empty() && settings.accounts.is_empty() {
        return None;
    }
    let discoveries = (!settings.discoveries.is_empty()).then(|| {
        crate::discovery::start(
            Arc::clone(inventory),
            settings.discoveries.clone(),
            settings.discovery_interval,
        )
    });
    let accounts = (!settings.accounts.is_empty())
        .then(|| crate::accounts::start(Arc::clone(inventory), settings.accounts.clone()));
    // One handle for both: aborting it (a reload) stops both.
    Some(tokio::spawn(async move {
        let _stop = AbortOnDrop(discoveries.into_iter().chain(accounts).collect());
        std::future::pending::<()>().await;
    }))
}

/// Aborts its tasks when dropped (when the task holding it is aborted).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Where the server listens: the API, and optionally health alone in plaintext.
pub struct Listeners {
    pub api: TcpListener,
    pub health: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Listeners { api, health: None }
    }
}

/// Serves the API until `shutdown` completes; then health turns NOT_SERVING, no new
/// connection or call is taken, and open calls have `options.shutdown_grace` to finish before
/// they end with UNAVAILABLE. Returns soon after, even if a client never reads.
pub async fn serve(
    listeners: impl Into<Listeners>,
    live: Arc<Live>,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Listeners {
        api: listener,
        health: health_listener,
    } = listeners.into();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<BackupGatewayServer<Gateway>>().await;
    if let Some(health_listener) = health_listener {
        serve_health_only(health_listener, health_service.clone(), Arc::clone(&live));
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.BadRequest, so grpcurl can show field violations.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let gateway = BackupGatewayServer::new(Gateway::new(Arc::clone(&live)))
        .max_decoding_message_size(options.max_request_bytes);
    let identify = {
        let live = Arc::clone(&live);
        move |request: tonic::Request<()>| identify_caller(&live, request)
    };
    let incoming = crate::listener::incoming(
        listener,
        ConnectionLimits {
            max_connections: options.max_connections,
            handshake_timeout: options.handshake_timeout,
        },
        Arc::clone(&live.tls),
    );
    let grace = options.shutdown_grace;
    let signal = {
        let live = Arc::clone(&live);
        async move {
            shutdown.await;
            tracing::info!(?grace, "shutting down: no new calls; open calls may finish");
            health
                .set_not_serving::<BackupGatewayServer<Gateway>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            let _ = live.grace_ends.send(Some(Instant::now() + grace));
        }
    };
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(options.max_concurrent_streams_per_connection)
        .http2_keepalive_interval(Some(options.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(RpcMetricsLayer::new(live.metrics.clone()))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(InterceptedService::new(gateway, identify))
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(server);
    // After the grace, calls end with UNAVAILABLE; a client that does not even read that is
    // not waited for.
    let abandon = async {
        live.grace_over().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        served = &mut server => served?,
        () = abandon => tracing::warn!("connections still open after the shutdown grace; closing them"),
    }
    Ok(())
}

/// Health alone, in plaintext, on a listener of its own; it stops taking connections when the
/// shutdown begins.
fn serve_health_only(listener: TcpListener, health: HealthServer<impl Health>, live: Arc<Live>) {
    let health_only = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move { live.grace_over_begins().await },
        );
    tokio::spawn(health_only);
}

/// The interceptor in front of `BackupGateway` (health and reflection stay open): establishes
/// the caller and puts it in the request for the domain to use.
fn identify_caller(
    live: &Live,
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let generation = live.current();
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|v| v.as_bytes());
    let conn = request.extensions().get::<ConnInfo>();
    let caller: Arc<Caller> = generation
        .callers
        .identify(authorization, conn)
        .map_err(|e| crate::api::caller_status(&e))?;
    if let Some(slot) = request.extensions().get::<CallerSlot>() {
        slot.set(&caller.name);
    }
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(generation);
    Ok(request)
}
