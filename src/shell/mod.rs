//! The shell client in the same binary: `backupgw ls` (ListBackups), `backupgw report`
//! (SummarizeBackups) and `backupgw targets` (ListTargets) against a running gateway, as tables
//! for people and JSON lines or CSV for scripts. Exit status of `ls` and `report`: 0 when every
//! target was read, 2 when some failed (the output still holds everything that arrived), 1 on
//! any other error.

mod output;
mod rows;
mod when;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::pb;
use crate::pb::backup_gateway_client::BackupGatewayClient;
pub use output::Format;
pub use rows::{BACKUP_COLUMNS, BackupRow, REPORT_COLUMNS, ReportRow, TARGET_COLUMNS, TargetRow};

/// Exit status when some targets failed (what arrived was still written).
pub const EXIT_SOME_FAILED: u8 = 2;

/// Where the gateway is and how to prove who we are.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// A file holding the API key (else the BACKUPGW_API_KEY variable, if set).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the gateway's certificate: speaks TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

/// Which targets: each flag repeats or takes commas (`--project a --project b` = `--project a,b`).
#[derive(Args, Debug, Clone, Default)]
pub struct Selection {
    /// Project ids, names or globs (`*_payments`).
    #[arg(long = "project", value_delimiter = ',')]
    pub projects: Vec<String>,
    /// Regions or globs (`cn-*`).
    #[arg(long = "region", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Member accounts: ids, names or globs (`payments-*`).
    #[arg(long = "account", value_delimiter = ',')]
    pub accounts: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct LsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub selection: Selection,
    /// Only this instance (its exact name).
    #[arg(long)]
    pub instance_name: Option<String>,
    /// Backup types: the upstream's word or the enum's name (`metadata`, `BACKUP_TYPE_METADATA`).
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Statuses (`normal`, …).
    #[arg(long = "status", value_delimiter = ',')]
    pub statuses: Vec<String>,
    /// Created at or after: a time ago (`7d`, `12h`) or a date (`2026-11-01`, RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before: a time ago or a date.
    #[arg(long)]
    pub until: Option<String>,
    /// Newest first, across every target (the answer is collected first).
    #[arg(long, conflicts_with = "oldest_first")]
    pub newest_first: bool,
    /// Oldest first, across every target.
    #[arg(long)]
    pub oldest_first: bool,
    /// Straight from the upstream, not from the gateway's cache.
    #[arg(long)]
    pub fresh: bool,
    /// Output: table (the default on a terminal), json (a JSON object a line; the default
    /// otherwise) or csv.
    #[arg(short = 'o', long = "output", value_enum)]
    pub format: Option<OutputFormat>,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub selection: Selection,
    /// A newest backup older than this is stale (`26h`: the daily backup plus slack).
    #[arg(long, default_value = "26h")]
    pub stale_after: String,
    /// Only these classes: protected, stale, unprotected, orphaned, unknown (totals count all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub only: Vec<Class>,
    /// Straight from the upstream, not from the gateway's cache.
    #[arg(long)]
    pub fresh: bool,
    #[arg(short = 'o', long = "output", value_enum)]
    pub format: Option<OutputFormat>,
}

/// A protection class, as the flags name it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Protected,
    Stale,
    Unprotected,
    Orphaned,
    Unknown,
}

impl From<Class> for pb::Protection {
    fn from(c: Class) -> Self {
        match c {
            Class::Protected => pb::Protection::Protected,
            Class::Stale => pb::Protection::Stale,
            Class::Unprotected => pb::Protection::Unprotected,
            Class::Orphaned => pb::Protection::Orphaned,
            Class::Unknown => pb::Protection::Unknown,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct TargetsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub selection: Selection,
    #[arg(short = 'o', long = "output", value_enum)]
    pub format: Option<OutputFormat>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// What went wrong on the client's side, said plainly.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the gateway at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("the gateway refused the call: {}: {message}", crate::metrics::code_name(*code))]
    Refused { code: tonic::Code, message: String },
    #[error("cannot write the output: {0}")]
    Output(String),
    /// Whoever read the output stopped reading (`| head`): a quiet end.
    #[error("the output was closed")]
    OutputClosed,
}

impl From<tonic::Status> for ShellError {
    fn from(status: tonic::Status) -> Self {
        ShellError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

impl Connection {
    async fn client(&self) -> Result<(BackupGatewayClient<Channel>, Option<String>), ShellError> {
        let connect = |message: String| ShellError::Connect {
            addr: self.addr.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(self.addr.clone())
            .map_err(|e| ShellError::Usage(format!("--addr {:?}: {e}", self.addr)))?
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| ShellError::Usage(format!("--ca-file {}: {e}", ca.display())))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| connect(e.to_string()))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| connect(crate::ddm::client::error_chain(&e)))?;
        let key = match &self.api_key_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        ShellError::Usage(format!("--api-key-file {}: {e}", file.display()))
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("BACKUPGW_API_KEY").ok(),
        };
        let client = BackupGatewayClient::new(channel).max_decoding_message_size(64 << 20);
        Ok((client, key))
    }

    fn request<T>(&self, message: T, key: Option<&str>) -> Result<tonic::Request<T>, ShellError> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_secs(self.timeout_seconds));
        if let Some(key) = key {
            let value = format!("Bearer {key}")
                .parse()
                .map_err(|_| ShellError::Usage("the API key is not valid in a header".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

fn format_of(asked: Option<OutputFormat>) -> Format {
    match asked {
        Some(OutputFormat::Table) => Format::Table,
        Some(OutputFormat::Json) => Format::Json,
        Some(OutputFormat::Csv) => Format::Csv,
        None if std::io::stdout().is_terminal() => Format::Table,
        None => Format::Json,
    }
}

/// `backupgw ls`: returns the exit status.
pub async fn ls(args: LsArgs) -> Result<u8, ShellError> {
    let now = std::time::SystemTime::now();
    let since = args
        .since
        .as_deref()
        .map(|s| when::parse(s, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| when::parse(s, now))
        .transpose()?;
    let (mut client, key) = args.connection.client().await?;
    let order = if args.newest_first {
        pb::Order::NewestFirst
    } else if args.oldest_first {
        pb::Order::OldestFirst
    } else {
        pb::Order::Unspecified
    };
    let request = pb::ListBackupsRequest {
        project_ids: args.selection.projects.clone(),
        regions: args.selection.regions.clone(),
        accounts: args.selection.accounts.clone(),
        instance_name: args.instance_name.clone().unwrap_or_default(),
        backup_types: args.types.clone(),
        statuses: args.statuses.clone(),
        created_after: since,
        created_before: until,
        max_age: args.fresh.then(prost_types::Duration::default),
        order: order as i32,
        ..Default::default()
    };
    let progress = progress(
        &mut client,
        &args.connection,
        key.as_deref(),
        &args.selection,
    )
    .await?;
    let mut stream = client
        .list_backups(args.connection.request(request, key.as_deref())?)
        .await?
        .into_inner();
    let mut out = output::Writer::new(
        format_of(args.format),
        std::io::stdout().lock(),
        &BACKUP_COLUMNS,
    )?;
    let mut failed = Vec::new();
    let outcome = drain(&mut stream, |message: pb::ListBackupsResponse| {
        for b in &message.backups {
            out.backup(&BackupRow::from(b))?;
        }
        if let Some(p) = &progress {
            p.advance(message.targets.len() as u64, message.backups.len() as u64);
        }
        failed.extend(message.targets.into_iter().filter(|t| !t.ok));
        Ok(())
    })
    .await?;
    out.finish()?;
    if let Some(p) = progress {
        p.finish();
    }
    exit_status(&failed, outcome)
}

/// Reads a stream to its end, handing each message to `each` (whose error, from writing the
/// output, ends it at once). The status that ended the stream, if not OK, is the inner result:
/// what arrived before it was still written.
async fn drain<M>(
    stream: &mut tonic::Streaming<M>,
    mut each: impl FnMut(M) -> Result<(), ShellError>,
) -> Result<Result<(), ShellError>, ShellError> {
    loop {
        match stream.message().await {
            Ok(Some(message)) => each(message)?,
            Ok(None) => return Ok(Ok(())),
            Err(status) => return Ok(Err(ShellError::from(status))),
        }
    }
}

/// A progress bar (targets done of all, backups so far) on stderr, only when it is a terminal;
/// the number of targets comes from ListTargets.
async fn progress(
    client: &mut BackupGatewayClient<Channel>,
    connection: &Connection,
    key: Option<&str>,
    selection: &Selection,
) -> Result<Option<output::Progress>, ShellError> {
    if !std::io::stderr().is_terminal() {
        return Ok(None);
    }
    let listed = client
        .list_targets(connection.request(
            pb::ListTargetsRequest {
                project_ids: selection.projects.clone(),
                regions: selection.regions.clone(),
                accounts: selection.accounts.clone(),
            },
            key,
        )?)
        .await?
        .into_inner();
    Ok(Some(output::Progress::new(listed.targets.len() as u64)))
}

/// The exit status of a streamed call: failed targets listed on stderr first.
fn exit_status(
    failed: &[pb::TargetResult],
    outcome: Result<(), ShellError>,
) -> Result<u8, ShellError> {
    report_failed(failed);
    match outcome {
        // Nothing could be read: the failures above say why.
        Err(ShellError::Refused { .. }) if !failed.is_empty() => Ok(EXIT_SOME_FAILED),
        Err(e) => Err(e),
        Ok(()) if failed.is_empty() => Ok(0),
        Ok(()) => Ok(EXIT_SOME_FAILED),
    }
}

/// Failed targets, on stderr, after the output.
fn report_failed(failed: &[pb::TargetResult]) {
    if failed.is_empty() {
        return;
    }
    eprintln!("{} target(s) failed:", failed.len());
    for t in failed {
        let e = t.error.clone().unwrap_or_default();
        let code = if e.error_code.is_empty() {
            String::new()
        } else {
            format!(" {}", e.error_code)
        };
        // `project (name, region)`; a member account's project as `account/name (region)` when
        // its id is not known (its agency was refused).
        let name = if t.project_name.is_empty() {
            "-"
        } else {
            &t.project_name
        };
        let name = match t.account_name.as_str() {
            "" => name.to_owned(),
            account => format!("{account}/{name}"),
        };
        let id = if t.project_id.is_empty() {
            String::new()
        } else {
            format!("{} ", t.project_id)
        };
        eprintln!(
            "  {id}({name}, {}): {}{code}: {}",
            t.region, e.kind, e.message
        );
    }
}

/// `backupgw report`: returns the exit status.
pub async fn report(args: ReportArgs) -> Result<u8, ShellError> {
    let stale_after = when::duration(&args.stale_after)?;
    let (mut client, key) = args.connection.client().await?;
    let request = pb::SummarizeBackupsRequest {
        project_ids: args.selection.projects.clone(),
        regions: args.selection.regions.clone(),
        accounts: args.selection.accounts.clone(),
        stale_after: prost_types::Duration::try_from(stale_after).ok(),
        protections: args
            .only
            .iter()
            .map(|c| pb::Protection::from(*c) as i32)
            .collect(),
        max_age: args.fresh.then(prost_types::Duration::default),
    };
    let format = format_of(args.format);
    let progress = progress(
        &mut client,
        &args.connection,
        key.as_deref(),
        &args.selection,
    )
    .await?;
    let mut stream = client
        .summarize_backups(args.connection.request(request, key.as_deref())?)
        .await?
        .into_inner();
    let mut out = output::Writer::new(format, std::io::stdout().lock(), &REPORT_COLUMNS)?;
    let (mut failed, mut totals) = (Vec::new(), Vec::new());
    let outcome = drain(&mut stream, |message: pb::SummarizeBackupsResponse| {
        for r in &message.instances {
            out.instance(&ReportRow::from(r))?;
        }
        if let Some(p) = &progress {
            let backups = message.targets.iter().map(|t| t.backups).sum();
            p.advance(message.targets.len() as u64, backups);
        }
        failed.extend(message.targets.into_iter().filter(|t| !t.ok));
        totals.extend(message.totals);
        Ok(())
    })
    .await?;
    out.finish()?;
    if let Some(p) = progress {
        p.finish();
    }
    if format == Format::Table
        && let Some(all) = totals.iter().find(|t| t.region.is_empty())
    {
        println!(
            "\n{} instances: {} protected, {} stale, {} unprotected, {} orphaned, {} unknown; {} backups, {}",
            all.protected + all.stale + all.unprotected + all.orphaned + all.unknown,
            all.protected,
            all.stale,
            all.unprotected,
            all.orphaned,
            all.unknown,
            all.backups,
            output::human_size(all.total_size_kb)
        );
    }
    exit_status(&failed, outcome)
}

/// `backupgw targets`: returns the exit status.
pub async fn targets(args: TargetsArgs) -> Result<u8, ShellError> {
    let (mut client, key) = args.connection.client().await?;
    let listed = client
        .list_targets(args.connection.request(
            pb::ListTargetsRequest {
                project_ids: args.selection.projects.clone(),
                regions: args.selection.regions.clone(),
                accounts: args.selection.accounts.clone(),
            },
            key.as_deref(),
        )?)
        .await?
        .into_inner();
    let mut out = output::Writer::new(
        format_of(args.format),
        std::io::stdout().lock(),
        &TARGET_COLUMNS,
    )?;
    for t in &listed.targets {
        out.target(&TargetRow::from(t))?;
    }
    out.finish()?;
    Ok(0)
}
