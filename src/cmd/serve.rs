//! `backupgw serve` (the gateway on a configuration file: logs, metrics, signals, reloads) and
//! `backupgw check-config`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use backupgw::config::{LogOptions, Settings};
use backupgw::metrics::Metrics;
use backupgw::server::{self, Live};
use tokio::net::TcpListener;

use super::signals;

/// Log lines on stderr, as text or JSON; `BACKUPGW_LOG` wins over `[log] level`. Colour only on
/// a terminal.
pub fn init_logging(options: &LogOptions) {
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

pub fn check_config(file: &std::path::Path, no_secrets: bool) -> Result<()> {
    match Settings::check(file, !no_secrets) {
        Ok(settings) => {
            for warning in &settings.warnings {
                println!("warning: {warning}");
            }
            println!(
                "{}: ok ({} projects, {} discovering credentials, {} account sources{}{})",
                file.display(),
                settings.targets.len(),
                settings.discoveries.len(),
                settings.accounts.len(),
                if settings.shared.is_some() {
                    ", shared through Redis"
                } else {
                    ""
                },
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

pub async fn run_serve(config: &Path, listen: Option<SocketAddr>) -> Result<()> {
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
    backupgw::memory::trim_now();
    let live = Live::new(generation, metrics.clone());
    *live.tls.write().unwrap_or_else(|e| e.into_inner()) = settings.tls.clone();
    let mut discovery = server::start_discovery(&live.current().inventory, &settings);
    if let Some(shared) = live.current().inventory.cache().shared() {
        let shared = Arc::clone(shared);
        tokio::spawn(async move { shared.greet().await });
    }
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
        start_metrics(metrics_addr, &live).await?;
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
    let fixed = Fixed::of(&settings);
    // The running generation has what it needs; a list of 100,000 targets is 10 MB.
    drop(settings);
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
                if let Some(new) = reload(config, listen, &fixed, &live) {
                    if let Some(old) = discovery.take() {
                        old.abort();
                    }
                    discovery = server::start_discovery(&live.current().inventory, &new);
                }
            }
        }
    }
}

/// Serves `/metrics` on `addr`, in the background.
async fn start_metrics(addr: SocketAddr, live: &Arc<Live>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(server::serve_metrics(listener, Arc::clone(live)));
    tracing::info!(addr = %bound, "metrics at /metrics");
    Ok(())
}

/// What a running server keeps from its file until it restarts: its listeners, their settings,
/// its log.
#[derive(PartialEq)]
struct Fixed {
    /// The file's `listen` (`--listen` may have said otherwise, and still does).
    listen: SocketAddr,
    /// `[server]`, but `default_deadline_seconds` (which a reload applies).
    server: server::ServerOptions,
    metrics_listen: Option<SocketAddr>,
    log: LogOptions,
    /// `[shared]`, as its Debug shows it (no password).
    shared: String,
}

impl Fixed {
    fn of(settings: &Settings) -> Self {
        Fixed {
            listen: settings.listen,
            server: server::ServerOptions {
                default_deadline: std::time::Duration::ZERO,
                ..settings.server.clone()
            },
            metrics_listen: settings.metrics_listen,
            log: settings.log.clone(),
            shared: format!("{:?}", settings.shared),
        }
    }
}

/// Re-reads the configuration; a file with problems is refused and the running one kept.
fn reload(config: &Path, listen: SocketAddr, fixed: &Fixed, live: &Live) -> Option<Settings> {
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
    if Fixed::of(&settings) != *fixed {
        tracing::warn!(
            "listen, [server] (but default_deadline_seconds), [metrics], [log] and [shared] take a restart; the rest is applied"
        );
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
