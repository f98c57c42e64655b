//! A real simulator and a real gateway on ephemeral loopback ports, and helpers to read a stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use backupgw::cache::PageCache;
use backupgw::callers::CallerBook;
use backupgw::ddm::{ClientOptions, Credential, DdmClient, RetryPolicy};
use backupgw::inventory::{Inventory, Limits, Target};
use backupgw::metrics::Metrics;
use backupgw::pb;
use backupgw::pb::backup_gateway_client::BackupGatewayClient;
use backupgw::server::{Generation, Live, ServerOptions};
use backupgw::sim::{AuthOptions, DataSet, DataSpec, FaultPlan, Faults, SimOptions, Simulator};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const TOKEN: &str = "integration-test-token";

pub fn small_spec() -> DataSpec {
    DataSpec {
        regions: 3,
        projects_per_region: 3,
        instances_per_project: 3,
        backups_per_instance: 100,
        ..DataSpec::default()
    }
}

/// Fast retries, so failure tests do not wait for production backoff.
pub fn test_client_options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            throttle_delay: Duration::from_millis(20),
        },
        ..ClientOptions::default()
    }
}

pub async fn start_sim(spec: &DataSpec, options: SimOptions) -> Simulator {
    backupgw::server::install_crypto_provider();
    let data = DataSet::generate(spec).unwrap();
    let mut listeners = Vec::new();
    for _ in &data.regions {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    Simulator::serve(data, options, listeners).unwrap()
}

pub fn sim_options() -> SimOptions {
    SimOptions {
        auth: AuthOptions {
            tokens: vec![SecretString::from(TOKEN)],
            ..AuthOptions::default()
        },
        ..SimOptions::default()
    }
}

pub fn token_credential(name: &str, token: &str) -> Arc<Credential> {
    Arc::new(Credential::token(name, SecretString::from(token)))
}

#[allow(dead_code)] // not every test reads every field
pub struct Gateway {
    pub client: BackupGatewayClient<Channel>,
    pub addr: std::net::SocketAddr,
    pub inventory: Arc<Inventory>,
    pub live: Arc<Live>,
    /// The plaintext health listener, when `server.health_listen` asked for one.
    pub health_addr: Option<std::net::SocketAddr>,
    _stop: oneshot::Sender<()>,
}

impl Gateway {
    /// Every target, as ListTargets answers an unrestricted caller.
    pub async fn targets(&self) -> Vec<pb::Target> {
        self.client
            .clone()
            .list_targets(pb::ListTargetsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .targets
    }

    /// Starts the shutdown, as SIGTERM does.
    pub fn shut_down(&mut self) {
        let (stop, _) = oneshot::channel();
        let _ = std::mem::replace(&mut self._stop, stop).send(());
    }
}

/// How a test gateway is set up beyond its targets.
#[derive(Clone)]
pub struct GatewaySetup {
    pub limits: Limits,
    pub client: ClientOptions,
    pub server: ServerOptions,
    pub callers: Arc<CallerBook>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Redis, shared with other gateways.
    pub shared: Option<backupgw::shared::SharedOptions>,
}

impl Default for GatewaySetup {
    fn default() -> Self {
        GatewaySetup {
            limits: Limits::default(),
            client: test_client_options(),
            server: ServerOptions::default(),
            callers: Arc::new(CallerBook::open()),
            tls: None,
            shared: None,
        }
    }
}

/// Starts a gateway for `targets` and connects a client to it.
pub async fn start_gateway(
    targets: Vec<Target>,
    limits: Limits,
    options: ClientOptions,
) -> Gateway {
    start_gateway_with(
        targets,
        GatewaySetup {
            limits,
            client: options,
            ..GatewaySetup::default()
        },
    )
    .await
}

pub async fn start_gateway_with(targets: Vec<Target>, setup: GatewaySetup) -> Gateway {
    backupgw::server::install_crypto_provider();
    let metrics = Metrics::new();
    let inventory = Arc::new(
        Inventory::new(
            targets,
            DdmClient::new(setup.client)
                .unwrap()
                .with_metrics(metrics.clone()),
            match &setup.shared {
                Some(options) => PageCache::new(Duration::from_secs(300), 64 << 20)
                    .with_metrics(metrics.clone())
                    .with_shared(Arc::new(
                        backupgw::shared::Shared::new(options.clone(), Some(metrics.clone()))
                            .unwrap(),
                    )),
                None => {
                    PageCache::new(Duration::from_secs(300), 64 << 20).with_metrics(metrics.clone())
                }
            },
            setup.limits,
        )
        .with_metrics(metrics.clone()),
    );
    let live = Live::new(
        Generation {
            inventory: Arc::clone(&inventory),
            callers: setup.callers,
            default_deadline: setup.server.default_deadline,
        },
        metrics,
    );
    *live.tls.write().unwrap() = setup.tls.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = match setup.server.health_listen {
        Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        None => None,
    };
    let health_addr = health.as_ref().map(|h| h.local_addr().unwrap());
    let listeners = backupgw::server::Listeners {
        api: listener,
        health,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = Arc::clone(&live);
    let options = setup.server.clone();
    tokio::spawn(async move {
        backupgw::server::serve(listeners, serving, &options, async {
            let _ = stopped.await;
        })
        .await
    });
    let client = if setup.tls.is_some() {
        // TLS tests connect their own clients.
        BackupGatewayClient::new(Channel::from_static("http://127.0.0.1:1").connect_lazy())
    } else {
        BackupGatewayClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    };
    Gateway {
        client,
        addr,
        inventory,
        live,
        health_addr,
        _stop: stop,
    }
}

/// A simulator and a gateway over all its projects, with the right token.
pub async fn start_pair(spec: &DataSpec) -> (Simulator, Gateway) {
    start_pair_with(spec, Limits::default()).await
}

/// The same, with these limits.
pub async fn start_pair_with(spec: &DataSpec, limits: Limits) -> (Simulator, Gateway) {
    let sim = start_sim(spec, sim_options()).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    let gw = start_gateway(targets, limits, test_client_options()).await;
    (sim, gw)
}

/// Everything one ListBackups stream said.
#[derive(Debug, Default)]
pub struct Collected {
    pub backups: Vec<pb::Backup>,
    pub targets: Vec<pb::TargetResult>,
    pub summary: Option<pb::Summary>,
    pub messages: usize,
    /// The terminal status, when it was not OK.
    pub status: Option<tonic::Status>,
}

impl Collected {
    pub fn target(&self, project_id: &str) -> &pb::TargetResult {
        self.targets
            .iter()
            .find(|t| t.project_id == project_id)
            .unwrap_or_else(|| panic!("no result for {project_id}: {:?}", self.targets))
    }

    /// Backups by (project, id); panics on a duplicate.
    pub fn by_key(&self) -> HashMap<(String, String), pb::Backup> {
        let mut map = HashMap::new();
        for b in &self.backups {
            let key = (b.project_id.clone(), b.id.clone());
            assert!(
                map.insert(key.clone(), b.clone()).is_none(),
                "emitted twice: {key:?}"
            );
        }
        map
    }
}

pub async fn list(
    client: &mut BackupGatewayClient<Channel>,
    request: pb::ListBackupsRequest,
) -> Collected {
    try_list(client, tonic::Request::new(request))
        .await
        .expect("the call was refused")
}

pub async fn try_list(
    client: &mut BackupGatewayClient<Channel>,
    request: tonic::Request<pb::ListBackupsRequest>,
) -> Result<Collected, tonic::Status> {
    let mut stream = client.list_backups(request).await?.into_inner();
    let mut out = Collected::default();
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                out.messages += 1;
                assert!(out.summary.is_none(), "a message came after the summary");
                out.backups.extend(m.backups);
                out.targets.extend(m.targets);
                out.summary = m.summary.or(out.summary);
            }
            Ok(None) => break,
            Err(status) => {
                out.status = Some(status);
                break;
            }
        }
    }
    Ok(out)
}

pub fn region_faults(region: &str, faults: Faults) -> FaultPlan {
    FaultPlan {
        regions: BTreeMap::from([(region.to_owned(), faults)]),
        ..FaultPlan::default()
    }
}

/// Everything, every page read again from the upstream (`max_age` 0).
pub fn fresh_request() -> pb::ListBackupsRequest {
    pb::ListBackupsRequest {
        max_age: Some(prost_types::Duration::default()),
        ..Default::default()
    }
}

/// A fault plan with `faults` for one project.
pub fn project_faults(project: &str, faults: Faults) -> FaultPlan {
    FaultPlan {
        projects: BTreeMap::from([(project.to_owned(), faults)]),
        ..FaultPlan::default()
    }
}

/// The small data set, with `faults` in one region, and a target for each of its projects.
pub async fn with_region_faults(
    region: &str,
    faults: Faults,
) -> (Simulator, Vec<backupgw::inventory::Target>) {
    let mut options = sim_options();
    options.faults = region_faults(region, faults);
    let sim = start_sim(&small_spec(), options).await;
    let targets = backupgw::demo::sim_targets(&sim, token_credential("test", TOKEN));
    (sim, targets)
}

/// A caller that does not read: tiny HTTP/2 windows, an inventory of everything asked for, its
/// first message read and then nothing. Returns that message and the stream left unread.
pub async fn caller_that_does_not_read(
    addr: std::net::SocketAddr,
) -> (
    pb::ListBackupsResponse,
    tonic::Streaming<pb::ListBackupsResponse>,
) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut stream = BackupGatewayClient::new(channel)
        .list_backups(pb::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    (first, stream)
}

/// A CA, and a certificate it signs for `name` (a server's DNS name or a client's CN).
pub struct TestCa {
    pub issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// (certificate PEM, key PEM)
    pub fn sign(&self, dns_names: &[&str], common_name: &str) -> (String, String) {
        let names: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// ListTargets over TLS to `localhost:port`, trusting `ca`, with a client certificate when
/// `identity` (certificate PEM, key PEM) is given.
pub async fn list_targets_over_tls(
    port: u16,
    ca: &TestCa,
    identity: Option<(String, String)>,
) -> Result<tonic::Response<pb::ListTargetsResponse>, Box<dyn std::error::Error>> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.issuer.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{port}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(BackupGatewayClient::new(channel)
        .list_targets(pb::ListTargetsRequest::default())
        .await?)
}

/// Waits (boundedly) for a condition that the system under test must reach by itself.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The log as it is written on this thread while the capture lives (the tests that read it run
/// on a current-thread runtime).
pub struct LogCapture {
    written: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    /// Lines of level INFO and above.
    pub fn start() -> Self {
        LogCapture::at_most(tracing::Level::INFO)
    }

    /// Every line, TRACE included (and the `log` records of reqwest and hyper).
    pub fn everything() -> Self {
        LogCapture::at_most(tracing::Level::TRACE)
    }

    fn at_most(level: tracing::Level) -> Self {
        use tracing_subscriber::util::SubscriberInitExt as _;
        // tracing caches each log line's interest process-wide, decided by the first thread that
        // reaches it: a parallel test thread without a subscriber would switch lines off for this
        // capture too. A global subscriber that takes everything (and writes nothing) prevents
        // that.
        let _ = tracing_subscriber::registry().try_init();
        let written = Arc::<std::sync::Mutex<Vec<u8>>>::default();
        let writer = Written(written.clone());
        let _guard = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(move || writer.clone())
            .set_default();
        LogCapture { written, _guard }
    }

    /// What has been written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.written.lock().unwrap()).into_owned()
    }
}

#[derive(Clone)]
struct Written(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Written {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `command` runs and succeeds here (a tool some tests need: `what`, with how to install
/// it). Without it the test is skipped, unless CI set `required_by` (then it fails).
pub fn tool_runs(mut command: std::process::Command, required_by: &str, what: &str) -> bool {
    let found = command.output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os(required_by).is_none(),
            "{what} is required here"
        );
        eprintln!("{what} not found: skipping");
    }
    found
}

/// A request carrying the API key `key` (`authorization: Bearer …`).
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}
