//! The `backupgw` command: the demo (no arguments), `serve`, `check-config` and `sim`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use backupgw::cache::PageCache;
use backupgw::callers::CallerBook;
use backupgw::config::{DEFAULT_LISTEN, LogOptions, Settings};
use backupgw::ddm::{ClientOptions, DdmClient};
use backupgw::inventory::{Inventory, Limits};
use backupgw::metrics::Metrics;
use backupgw::server::{Generation, Live, ServerOptions};
use backupgw::sim::{DataSet, DataSpec, SimOptions, Simulator};
use backupgw::{demo, server};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

/// One gRPC endpoint for every Huawei Cloud DDM backup, in every project and region.
///
/// Without a command, runs the demo: the built-in DDM simulator and the gateway in front of it.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where the demo's gateway listens.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway with a configuration file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `listen` from the file.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Checks a configuration file and reports every problem at once; exit 0 only when clean.
    CheckConfig {
        file: PathBuf,
        /// Checks everything but reading the secrets and TLS files themselves (for CI, and for
        /// files written for another machine).
        #[arg(long)]
        no_secrets: bool,
    },
    /// Lists backups from a running gateway (exit 2 when some targets failed).
    Ls(Box<backupgw::shell::LsArgs>),
    /// Which instances are not safely backed up, from a running gateway (exit 2 when some
    /// targets failed).
    Report(Box<backupgw::shell::ReportArgs>),
    /// Lists the targets a running gateway reads for you.
    Targets(Box<backupgw::shell::TargetsArgs>),
    /// Runs the DDM simulator alone, one listener per region.
    Sim(Box<SimArgs>),
}

#[derive(Args, Clone)]
struct DataArgs {
    /// Regions in the data set.
    #[arg(long, default_value_t = 4)]
    regions: usize,
    /// Projects per region (the built-in one and sub-projects).
    #[arg(long, default_value_t = 6)]
    projects_per_region: usize,
    /// DDM instances per project.
    #[arg(long, default_value_t = 3)]
    instances_per_project: usize,
    /// Backups per instance.
    #[arg(long, default_value_t = 30)]
    backups_per_instance: usize,
    /// Seed of the data set.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The time the data set is relative to (RFC 3339); default: now.
    #[arg(long, value_parser = parse_now)]
    now: Option<i64>,
    /// Latency added to every ListBackups answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Up to this many more milliseconds, at random.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Faults to inject, per region or project (a TOML file; see README).
    #[arg(long)]
    faults: Option<PathBuf>,
    /// How the instance list reads `offset`: as an item index or a 0-based page index.
    #[arg(long, value_enum, default_value = "item")]
    instances_offset_mode: backupgw::sim::instances::OffsetMode,
}

#[derive(Args)]
struct SimArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address the listeners bind to.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Region i listens on base-port + i (0: ephemeral ports).
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// The static token accepted in X-Auth-Token (random when unset).
    #[arg(long, env = "BACKUPGW_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The IAM user's domain.
    #[arg(long, default_value = "demo-domain")]
    iam_domain: String,
    /// The IAM user's name.
    #[arg(long, default_value = "demo-reader")]
    iam_user: String,
    /// The IAM user's password (random when unset).
    #[arg(long, env = "BACKUPGW_SIM_PASSWORD", hide_env_values = true)]
    iam_password: Option<String>,
    /// The access key accepted for AK/SK signing (random when unset).
    #[arg(long, env = "BACKUPGW_SIM_ACCESS_KEY")]
    access_key: Option<String>,
    /// Its secret key (random when unset).
    #[arg(long, env = "BACKUPGW_SIM_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// How long IAM tokens live.
    #[arg(long, default_value_t = 86_400)]
    token_lifetime_seconds: u64,
    /// Writes a gateway configuration for this simulator to FILE (and its token to FILE.token).
    #[arg(long)]
    write_config: Option<PathBuf>,
}

impl DataArgs {
    fn spec(&self) -> DataSpec {
        DataSpec {
            regions: self.regions,
            projects_per_region: self.projects_per_region,
            instances_per_project: self.instances_per_project,
            backups_per_instance: self.backups_per_instance,
            seed: self.seed,
            now: self.now.unwrap_or_else(backupgw::sim::data::current_hour),
        }
    }

    fn sim_options(&self) -> Result<SimOptions> {
        let faults = match &self.faults {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid faults file {}", path.display()))?
            }
            None => Default::default(),
        };
        Ok(SimOptions {
            instances_offset_mode: self.instances_offset_mode,
            auth: backupgw::sim::AuthOptions::default(),
            latency: Duration::from_millis(self.latency_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            faults,
        })
    }
}

fn parse_now(text: &str) -> Result<i64, String> {
    text.parse::<prost_types::Timestamp>()
        .map(|t| t.seconds)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time like 2026-11-01T08:00:00Z"))
}

fn main() -> std::process::ExitCode {
    backupgw::memory::limit_malloc_arenas();
    let ran = tokio::runtime::Runtime::new()
        .context("the async runtime")
        .and_then(|runtime| runtime.block_on(run()));
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line each; a backtrace (RUST_BACKTRACE) helps no user here.
            eprintln!("backupgw: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    server::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        None => {
            init_logging(&LogOptions::default());
            run_demo(cli.listen, &cli.data).await
        }
        Some(Command::Serve { config, listen }) => run_serve(&config, listen).await,
        Some(Command::CheckConfig { file, no_secrets }) => check_config(&file, no_secrets),
        Some(Command::Ls(args)) => exit_with(backupgw::shell::ls(*args).await),
        Some(Command::Report(args)) => exit_with(backupgw::shell::report(*args).await),
        Some(Command::Targets(args)) => exit_with(backupgw::shell::targets(*args).await),
        Some(Command::Sim(args)) => {
            init_logging(&LogOptions::default());
            run_sim(*args).await
        }
    }
}

/// Ends the process with the shell client's status (0, or 2 when some targets failed); a
/// reader that stopped reading (`| head`) ends it quietly.
fn exit_with(outcome: Result<u8, backupgw::shell::ShellError>) -> Result<()> {
    match outcome {
        Ok(0) | Err(backupgw::shell::ShellError::OutputClosed) => Ok(()),
        Ok(status) => std::process::exit(i32::from(status)),
        Err(e) => Err(e.into()),
    }
}

/// Log lines on stderr, as text or JSON; `BACKUPGW_LOG` wins over `[log] level`. Colour only on
/// a terminal.
fn init_logging(options: &LogOptions) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKUPGW_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(options.level.as_deref().unwrap_or("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if options.json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn check_config(file: &std::path::Path, no_secrets: bool) -> Result<()> {
    match Settings::check(file, !no_secrets) {
        Ok(settings) => {
            for warning in &settings.warnings {
                println!("warning: {warning}");
            }
            println!(
                "{}: ok ({} projects, {} discovering credentials{})",
                file.display(),
                settings.targets.len(),
                settings.discoveries.len(),
                if no_secrets {
                    "; secrets and TLS files not read"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(problems) => {
            for p in &problems.0 {
                println!("{}: {p}", file.display());
            }
            eprintln!("{} problem(s) in {}", problems.0.len(), file.display());
            std::process::exit(1);
        }
    }
}

async fn run_demo(listen: SocketAddr, data: &DataArgs) -> Result<()> {
    let credentials = demo::DemoCredentials::random();
    let set = DataSet::generate(&data.spec()).context("simulator data set")?;
    let options = SimOptions {
        auth: credentials.sim_auth(),
        ..data.sim_options()?
    };
    let sim = Simulator::bind(set, options, IpAddr::from([127, 0, 0, 1])).await?;
    let (targets, discoveries) = demo::demo_setup(&sim, &credentials);
    let metrics = Metrics::new();
    let inventory = Arc::new(
        Inventory::new(
            targets,
            DdmClient::new(ClientOptions::default())?.with_metrics(metrics.clone()),
            PageCache::new(Duration::from_secs(60), 64 << 20).with_metrics(metrics.clone()),
            Limits::default(),
        )
        .with_metrics(metrics.clone()),
    );
    let _discovery = backupgw::discovery::start(
        Arc::clone(&inventory),
        discoveries,
        Duration::from_secs(600),
    );
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is another backupgw running? try --listen 127.0.0.1:0)")
    })?;
    let addr = listener.local_addr()?;
    let set = sim.data();
    println!(
        "backupgw demo: the built-in DDM simulator with {} regions, {} projects, {} backups",
        set.regions.len(),
        set.projects.len(),
        set.projects.iter().map(|p| p.backups.len()).sum::<usize>()
    );
    for (region, sim_addr) in sim.endpoints() {
        println!("  simulator {region:<16} http://{sim_addr}  (DDM and IAM)");
    }
    println!("  the simulator accepts (demo credentials, made up for this run):");
    println!("    X-Auth-Token  {}", credentials.token);
    println!(
        "    IAM user      {} / {} in domain {}",
        credentials.user, credentials.password, credentials.domain
    );
    println!(
        "    AK/SK         {} / {}",
        credentials.access_key, credentials.secret_key
    );
    let regions = &set.regions;
    println!(
        "  the gateway reaches {} by token, {} by IAM password, {} by AK/SK, and discovers the rest through IAM",
        regions[0],
        regions.get(1).map_or("-", String::as_str),
        regions.get(2).map_or("-", String::as_str)
    );
    println!("backupgw listening on {addr}");
    println!("\nTry:");
    println!("  grpcurl -plaintext {addr} list");
    println!("  grpcurl -plaintext {addr} backupgw.v1.BackupGateway/ListTargets");
    println!(
        "  grpcurl -plaintext -d '{{\"regions\":[\"{}\"]}}' {addr} backupgw.v1.BackupGateway/ListBackups",
        set.regions[0]
    );
    println!("  grpcurl -plaintext {addr} grpc.health.v1.Health/Check");
    let client = if addr.to_string() == DEFAULT_LISTEN {
        String::new()
    } else {
        format!(" --addr http://{addr}")
    };
    println!("  backupgw report{client} --only stale,unprotected,orphaned");
    println!(
        "  backupgw ls{client} --region {} --newest-first",
        set.regions[0]
    );
    let live = Live::new(
        Generation {
            inventory,
            callers: Arc::new(CallerBook::open()),
            default_deadline: ServerOptions::default().default_deadline,
        },
        metrics,
    );
    let (_, stop) = signals();
    backupgw::memory::start_trimming();
    server::serve(listener, live, &ServerOptions::default(), stop).await?;
    Ok(())
}

async fn run_serve(config: &std::path::Path, listen: Option<SocketAddr>) -> Result<()> {
    let settings = Settings::load(config)
        .with_context(|| format!("invalid configuration {}", config.display()))?;
    init_logging(&settings.log);
    for warning in &settings.warnings {
        tracing::warn!(config = %config.display(), "{warning}");
    }
    let listen = listen.unwrap_or(settings.listen);
    settings
        .check_exposure(listen)
        .with_context(|| format!("invalid configuration {}", config.display()))?;
    let metrics = Metrics::new();
    let generation = server::build_generation(&settings, None, &metrics)?;
    let live = Live::new(generation, metrics.clone());
    *live.tls.write().unwrap_or_else(|e| e.into_inner()) = settings.tls.clone();
    let mut discovery = server::start_discovery(&live.current().inventory, &settings);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    if let Some(warning) = settings.exposure_warning(addr) {
        tracing::warn!("{warning}");
    }
    let health_listener = match settings.server.health_listen {
        Some(health_addr) => {
            let l = TcpListener::bind(health_addr)
                .await
                .with_context(|| format!("cannot listen on {health_addr} for health"))?;
            tracing::info!(addr = %l.local_addr()?, "health (plaintext) for probes");
            Some(l)
        }
        None => None,
    };
    if let Some(metrics_addr) = settings.metrics_listen {
        let metrics_listener = TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;
        let bound = metrics_listener.local_addr()?;
        let scraped = Arc::clone(&live);
        let refresh = move || -> futures_util::future::BoxFuture<'static, ()> {
            let live = Arc::clone(&scraped);
            Box::pin(async move {
                let generation = live.current();
                let (_, bytes) = generation.inventory.cache().usage().await;
                live.metrics.set_cache_bytes(bytes);
            })
        };
        tokio::spawn(backupgw::metrics::serve(metrics_listener, metrics, refresh));
        tracing::info!(addr = %bound, "metrics at /metrics");
    }
    tracing::info!(
        %addr,
        tls = settings.tls.is_some(),
        callers = if settings.callers.is_open() { "open" } else { "configured" },
        targets = settings.targets.len(),
        discovering = settings.discoveries.len(),
        "listening"
    );
    let (mut reloads, stop) = signals();
    backupgw::memory::start_trimming();
    let options = settings.server.clone();
    let listeners = server::Listeners {
        api: listener,
        health: health_listener,
    };
    let serving = server::serve(listeners, Arc::clone(&live), &options, stop);
    tokio::pin!(serving);
    loop {
        tokio::select! {
            served = &mut serving => {
                served?;
                tracing::info!("stopped");
                return Ok(());
            }
            Some(()) = reloads.recv() => {
                if let Some(new) = reload(config, listen, &live) {
                    if let Some(old) = discovery.take() {
                        old.abort();
                    }
                    discovery = server::start_discovery(&live.current().inventory, &new);
                }
            }
        }
    }
}

/// Re-reads the configuration; a file with problems is refused and the running one kept.
fn reload(config: &std::path::Path, listen: SocketAddr, live: &Live) -> Option<Settings> {
    let settings = match Settings::load(config).and_then(|s| {
        s.check_exposure(listen)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(config = %config.display(), error = %e, "reload refused; the running configuration stays");
            return None;
        }
    };
    let current = live.current();
    let generation = match server::build_generation(&settings, Some(&current), &live.metrics) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the running configuration stays");
            return None;
        }
    };
    if settings.listen != listen {
        tracing::warn!(listen = %settings.listen, "a new listen address takes a restart");
    }
    for warning in &settings.warnings {
        tracing::warn!(config = %config.display(), "{warning}");
    }
    live.replace(generation);
    *live.tls.write().unwrap_or_else(|e| e.into_inner()) = settings.tls.clone();
    tracing::info!(
        config = %config.display(),
        targets = settings.targets.len(),
        tls = settings.tls.is_some(),
        "configuration reloaded"
    );
    Some(settings)
}

async fn run_sim(args: SimArgs) -> Result<()> {
    // Whatever is not given is made up, and printed below.
    let random = demo::DemoCredentials::random();
    let credentials = demo::DemoCredentials {
        token: args.token.clone().unwrap_or(random.token),
        domain: args.iam_domain.clone(),
        user: args.iam_user.clone(),
        password: args.iam_password.clone().unwrap_or(random.password),
        access_key: args.access_key.clone().unwrap_or(random.access_key),
        secret_key: args.secret_key.clone().unwrap_or(random.secret_key),
    };
    if args.token_lifetime_seconds == 0 {
        anyhow::bail!("--token-lifetime-seconds must be at least 1");
    }
    let set = DataSet::generate(&args.data.spec()).context("simulator data set")?;
    let options = SimOptions {
        auth: backupgw::sim::AuthOptions {
            token_lifetime: Duration::from_secs(args.token_lifetime_seconds),
            ..credentials.sim_auth()
        },
        ..args.data.sim_options()?
    };
    let sim = Simulator::bind_from(set, options, args.host, args.base_port).await?;
    if let Some(path) = &args.write_config {
        let token_path = PathBuf::from(format!("{}.token", path.display()));
        write_private(&token_path, &credentials.token)?;
        let text = demo::sim_config_toml(&sim, DEFAULT_LISTEN, &std::path::absolute(&token_path)?);
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let set = sim.data();
    println!(
        "backupgw sim: {} regions, {} projects, {} backups",
        set.regions.len(),
        set.projects.len(),
        set.projects.iter().map(|p| p.backups.len()).sum::<usize>()
    );
    if args.token.is_none() {
        println!("  X-Auth-Token  {}", credentials.token);
    }
    if args.iam_password.is_none() {
        println!(
            "  IAM user      {} / {} in domain {}",
            credentials.user, credentials.password, credentials.domain
        );
    }
    if args.access_key.is_none() || args.secret_key.is_none() {
        println!(
            "  AK/SK         {} / {}",
            credentials.access_key, credentials.secret_key
        );
    }
    for (region, addr) in sim.endpoints() {
        println!("  {region:<16} http://{addr}  (DDM and IAM)");
    }
    println!("sim ready");
    shutdown_signal().await;
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// SIGHUP asks for a reload (a message on the channel); SIGTERM or Ctrl-C for a shutdown (the
/// future completes).
fn signals() -> (
    tokio::sync::mpsc::Receiver<()>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hangup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    let _ = reload_tx.try_send(());
                }
            });
        }
    }
    #[cfg(not(unix))]
    drop(reload_tx);
    (reload_rx, shutdown_signal())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
