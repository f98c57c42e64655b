//! The configuration file's shapes, as written, and how a file is read into them.
//! `deny_unknown_fields` everywhere: a misspelt key is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::problems::Problems;

use crate::ddm::ClientOptions;
use crate::inventory::Limits;
use crate::server::ServerOptions;

/// The file's shapes. A wrong type or an unknown key is reported by its key, and the parse goes
/// on without that line, so that every such problem is reported at once.
pub(super) fn parse_raw(text: &str, problems: &mut Problems) -> Option<RawConfig> {
    let mut text = text.to_owned();
    for _ in 0..50 {
        match toml::from_str::<RawConfig>(&text) {
            Ok(raw) => return Some(raw),
            Err(e) => {
                let line = e.span().map(|s| line_of(&text, s.start));
                let key = line.and_then(|l| key_of_line(&text, l));
                match (line, key) {
                    (Some(line), Some((key, true))) => {
                        problems.push(key, e.message().to_owned());
                        // Leave the line out and look for more.
                        text = text
                            .lines()
                            .enumerate()
                            .map(|(i, l)| if i == line { "" } else { l })
                            .collect::<Vec<_>>()
                            .join("\n");
                    }
                    (line, key) => {
                        let key = key
                            .map(|(k, _)| k)
                            .or(line.map(|l| format!("line {}", l + 1)))
                            .unwrap_or_else(|| "config".to_owned());
                        problems.push(key, e.message().to_owned());
                        return None;
                    }
                }
            }
        }
    }
    None
}

/// The (0-based) line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count()
}

/// The dotted key a line sets (`limits.max_attempts`, `projects[2].region`), and whether it is
/// a `key = value` line (else a table header).
fn key_of_line(text: &str, line: usize) -> Option<(String, bool)> {
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        let header = if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = arrays
                .entry(name.clone())
                .and_modify(|n| *n += 1)
                .or_insert(0);
            Some(format!("{name}[{n}]"))
        } else {
            t.strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .map(|name| name.trim().to_owned())
        };
        if i == line {
            if let Some(h) = header {
                return Some((h, false));
            }
            let key = t.split('=').next()?.trim().trim_matches('"');
            if key.is_empty() || !t.contains('=') {
                return None;
            }
            let full = if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
            return Some((full, true));
        }
        if let Some(h) = header {
            table = h;
        }
    }
    None
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    #[serde(default)]
    pub(super) allow_unauthenticated: bool,
    /// Refuse secret files that others than their owner may read (else: warn).
    #[serde(default)]
    pub(super) secret_files_must_be_private: bool,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) callers: Vec<RawCaller>,
    pub(super) tls: Option<RawTls>,
    pub(super) metrics: Option<RawMetrics>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) regions: BTreeMap<String, RawRegion>,
    #[serde(default)]
    pub(super) credentials: BTreeMap<String, RawCredential>,
    #[serde(default)]
    pub(super) projects: Vec<RawProject>,
    #[serde(default)]
    pub(super) discovery: RawDiscovery,
    #[serde(default)]
    pub(super) accounts: Vec<RawAccount>,
    pub(super) organization: Option<RawOrganization>,
    pub(super) shared: Option<RawShared>,
}

/// Redis, shared by the replicas.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShared {
    pub(super) redis_url: String,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    /// With rediss://: CA certificates (PEM) to trust instead of the system's.
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default = "default_key_prefix")]
    pub(super) key_prefix: String,
    #[serde(default = "default_shared_timeout_ms")]
    pub(super) timeout_ms: u64,
    #[serde(default = "default_shared_retry_after_ms")]
    pub(super) retry_after_ms: u64,
    #[serde(default = "default_lease_ms")]
    pub(super) lease_ms: u64,
}

fn default_key_prefix() -> String {
    "backupgw:".into()
}

fn default_shared_timeout_ms() -> u64 {
    250
}

fn default_shared_retry_after_ms() -> u64 {
    1000
}

fn default_lease_ms() -> u64 {
    10_000
}

/// A member account reached through its agency.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) name: String,
    pub(super) domain_id: Option<String>,
    pub(super) domain_name: Option<String>,
    pub(super) agency: String,
    pub(super) credential: String,
    /// Region globs; absent: every known region.
    pub(super) regions: Option<Vec<String>>,
    #[serde(default)]
    pub(super) sub_projects: Vec<String>,
}

/// The member accounts Organizations lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrganization {
    pub(super) credential: String,
    pub(super) agency: String,
    pub(super) regions: Option<Vec<String>>,
    #[serde(default = "default_refresh_seconds")]
    pub(super) refresh_seconds: u64,
    #[serde(default)]
    pub(super) exclude_accounts: Vec<String>,
    /// Organizations' endpoint; default: the global one.
    pub(super) endpoint: Option<String>,
    #[serde(default = "default_org_page_size")]
    pub(super) page_size: u32,
}

fn default_refresh_seconds() -> u64 {
    600
}

fn default_org_page_size() -> u32 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDiscovery {
    /// Region patterns to keep; default: the [regions] table's keys, or every DDM region.
    pub(super) regions: Option<Vec<String>>,
    pub(super) interval_seconds: u64,
}

impl Default for RawDiscovery {
    fn default() -> Self {
        RawDiscovery {
            regions: None,
            interval_seconds: 600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCache {
    pub(super) ttl_seconds: u64,
    pub(super) max_bytes: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            ttl_seconds: 60,
            max_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    pub(super) max_concurrent_requests: usize,
    pub(super) max_concurrent_targets: usize,
    pub(super) max_pages_per_target: usize,
    pub(super) request_timeout_ms: u64,
    pub(super) max_attempts: u32,
    pub(super) retry_base_delay_ms: u64,
    pub(super) retry_max_delay_ms: u64,
    pub(super) throttle_delay_ms: u64,
    pub(super) max_body_bytes: usize,
    /// Defaults for every region (a [regions.X] entry may say otherwise).
    pub(super) region_max_concurrent_requests: Option<usize>,
    pub(super) region_requests_per_second: Option<f64>,
    pub(super) region_burst: u32,
    /// How long a credential the upstream rejected rests before it is used again.
    pub(super) auth_failure_cooldown_seconds: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        let limits = Limits::default();
        let client = ClientOptions::default();
        RawLimits {
            max_concurrent_requests: limits.max_concurrent_requests,
            max_concurrent_targets: limits.max_concurrent_targets,
            max_pages_per_target: limits.max_pages_per_target,
            request_timeout_ms: client.request_timeout.as_millis() as u64,
            max_attempts: client.retry.max_attempts,
            retry_base_delay_ms: client.retry.base_delay.as_millis() as u64,
            retry_max_delay_ms: client.retry.max_delay.as_millis() as u64,
            throttle_delay_ms: client.retry.throttle_delay.as_millis() as u64,
            max_body_bytes: client.max_body_bytes,
            region_max_concurrent_requests: None,
            region_requests_per_second: None,
            region_burst: 10,
            auth_failure_cooldown_seconds: crate::ddm::standing::DEFAULT_COOLDOWN.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegion {
    pub(super) endpoint: Option<String>,
    pub(super) max_concurrent_requests: Option<usize>,
    pub(super) requests_per_second: Option<f64>,
    pub(super) burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) kind: String,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) domain: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) access_key: Option<String>,
    pub(super) secret_key_env: Option<String>,
    pub(super) secret_key_file: Option<PathBuf>,
    pub(super) iam_endpoint: Option<String>,
    #[serde(default)]
    pub(super) discover: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProject {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) region: String,
    pub(super) credential: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) max_request_bytes: usize,
    pub(super) default_deadline_seconds: u64,
    pub(super) handshake_timeout_seconds: u64,
    pub(super) max_connections: usize,
    pub(super) max_concurrent_streams_per_connection: u32,
    pub(super) http2_keepalive_interval_seconds: u64,
    pub(super) shutdown_grace_seconds: u64,
    pub(super) health_listen: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        let d = ServerOptions::default();
        RawServer {
            max_request_bytes: d.max_request_bytes,
            default_deadline_seconds: d.default_deadline.as_secs(),
            handshake_timeout_seconds: d.handshake_timeout.as_secs(),
            max_connections: d.max_connections,
            max_concurrent_streams_per_connection: d.max_concurrent_streams_per_connection,
            http2_keepalive_interval_seconds: d.http2_keepalive_interval.as_secs(),
            shutdown_grace_seconds: d.shutdown_grace.as_secs(),
            health_listen: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaller {
    pub(super) name: String,
    pub(super) api_key_sha256: Option<String>,
    pub(super) client_cert_subject: Option<String>,
    pub(super) projects: Vec<String>,
    pub(super) regions: Option<Vec<String>>,
    /// Member accounts (ids or names, globs) it may see; absent: not restricted by account.
    pub(super) accounts: Option<Vec<String>>,
    pub(super) max_concurrent_streams: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
    pub(super) client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}
