//! The `backupgw` command: the demo (no arguments), `serve`, `check-config`, the shell client
//! (`ls`, `report`, `targets`) and `sim`. This file parses the command line; `cmd/` runs each.

mod cmd;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use backupgw::config::{DEFAULT_LISTEN, LogOptions};
use backupgw::server;
use backupgw::sim::{DataSpec, SimOptions};
use clap::{Args, Parser, Subcommand};

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
    /// Member accounts of the organization besides ours, each with its own projects; the third
    /// member's agency covers only the first region, the fourth has none, the fifth is suspended.
    #[arg(long, default_value_t = 5)]
    accounts: usize,
    /// Accounts per page of Organizations' ListAccounts, at most.
    #[arg(long, default_value_t = 200)]
    org_page_size: usize,
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
            accounts: self.accounts,
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
            org_page_size: self.org_page_size.max(1),
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
            cmd::serve::init_logging(&LogOptions::default());
            cmd::demo::run_demo(cli.listen, &cli.data).await
        }
        Some(Command::Serve { config, listen }) => cmd::serve::run_serve(&config, listen).await,
        Some(Command::CheckConfig { file, no_secrets }) => {
            cmd::serve::check_config(&file, no_secrets)
        }
        Some(Command::Ls(args)) => exit_with(backupgw::shell::ls(*args).await),
        Some(Command::Report(args)) => exit_with(backupgw::shell::report(*args).await),
        Some(Command::Targets(args)) => exit_with(backupgw::shell::targets(*args).await),
        Some(Command::Sim(args)) => {
            cmd::serve::init_logging(&LogOptions::default());
            cmd::sim::run_sim(*args).await
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
