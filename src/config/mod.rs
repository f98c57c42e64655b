//! Configuration: a TOML file, validated at start-up (and on reload) into `Settings`. Every
//! problem names its key, and every problem of a file is reported at once. Secrets are never
//! written in the file: it names an environment variable or a file instead. Relative paths
//! resolve from the file's own directory.

mod accounts;
mod chunked;
mod edge;
mod problems;
mod raw;
mod secrets;
mod targets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::callers::CallerBook;
use crate::ddm::ClientOptions;
use crate::discovery::Discovery;
use crate::inventory::{Limits, Target};
use crate::server::ServerOptions;
use crate::tls::TlsFiles;
pub use edge::LogOptions;
pub use problems::{ConfigError, ConfigErrors};
use problems::{Problems, out_of_count};
use raw::{RawConfig, parse_raw};
use secrets::SecretFiles;

/// DDM's regions (the official SDK's region table).
pub const DDM_REGIONS: &[&str] = &[
    "cn-north-1",
    "cn-north-4",
    "cn-north-9",
    "cn-east-2",
    "cn-east-3",
    "cn-south-1",
    "cn-south-2",
    "cn-southwest-2",
    "ap-southeast-1",
    "ap-southeast-3",
    "la-north-2",
    "la-south-2",
    "sa-brazil-1",
    "my-kualalumpur-1",
    "ru-moscow-1",
    "ae-ad-1",
    "eu-west-101",
];

/// DDM's public endpoint in a region.
pub fn default_endpoint(region: &str) -> Option<String> {
    match region {
        "eu-west-101" => Some("https://ddm.eu-west-101.myhuaweicloud.eu".into()),
        r if DDM_REGIONS.contains(&r) => Some(format!("https://ddm.{r}.myhuaweicloud.com")),
        _ => None,
    }
}

/// The most of anything at once a limit may allow: more is no bound at all (and a semaphore of
/// more than 2^61 permits would not start).
const MAX_AT_ONCE: u64 = 1_000_000;

/// The longest time a setting may name, in seconds: a year. Longer is no bound at all, and
/// some would not start (the cache refuses a TTL of over 1,000 years; an instant that far
/// ahead cannot be represented).
const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// Every time-valued setting, checked against `MAX_SECONDS`.
fn times_at_most_a_year(raw: &RawConfig, p: &mut Problems) {
    let (server, limits) = (&raw.server, &raw.limits);
    let (s, ms) = (MAX_SECONDS, MAX_SECONDS * 1000);
    let mut times = vec![
        ("cache.ttl_seconds", raw.cache.ttl_seconds, s),
        (
            "discovery.interval_seconds",
            raw.discovery.interval_seconds,
            s,
        ),
        (
            "limits.auth_failure_cooldown_seconds",
            limits.auth_failure_cooldown_seconds,
            s,
        ),
        (
            "server.default_deadline_seconds",
            server.default_deadline_seconds,
            s,
        ),
        (
            "server.handshake_timeout_seconds",
            server.handshake_timeout_seconds,
            s,
        ),
        (
            "server.http2_keepalive_interval_seconds",
            server.http2_keepalive_interval_seconds,
            s,
        ),
        (
            "server.shutdown_grace_seconds",
            server.shutdown_grace_seconds,
            s,
        ),
        ("limits.request_timeout_ms", limits.request_timeout_ms, ms),
        ("limits.retry_base_delay_ms", limits.retry_base_delay_ms, ms),
        ("limits.retry_max_delay_ms", limits.retry_max_delay_ms, ms),
        ("limits.throttle_delay_ms", limits.throttle_delay_ms, ms),
    ];
    if let Some(org) = &raw.organization {
        times.push(("organization.refresh_seconds", org.refresh_seconds, s));
    }
    if let Some(shared) = &raw.shared {
        times.push(("shared.timeout_ms", shared.timeout_ms, ms));
        times.push(("shared.retry_after_ms", shared.retry_after_ms, ms));
        times.push(("shared.lease_ms", shared.lease_ms, ms));
    }
    for (key, value, most) in times {
        if value > most {
            p.push(key, format!("must be at most {most} (a year)"));
        }
    }
}

/// A validated configuration.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub allow_unauthenticated: bool,
    pub server: ServerOptions,
    pub callers: Arc<CallerBook>,
    pub tls_files: Option<TlsFiles>,
    /// The loaded TLS configuration (`None` without `[tls]`, or when files were not read).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub metrics_listen: Option<SocketAddr>,
    pub log: LogOptions,
    pub cache_ttl: Duration,
    pub cache_max_bytes: u64,
    pub limits: Limits,
    pub client: ClientOptions,
    pub targets: Vec<Target>,
    /// Credentials whose projects are listed through IAM.
    pub discoveries: Vec<Discovery>,
    pub discovery_interval: Duration,
    /// Member accounts reached through agencies: `[[accounts]]` and `[organization]`.
    pub accounts: Vec<Arc<crate::accounts::AccountSource>>,
    /// Redis, shared by the replicas (`[shared]`).
    pub shared: Option<crate::shared::SharedOptions>,
    /// Things worth saying at start-up that do not stop it.
    pub warnings: Vec<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

impl Settings {
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::check(path, true)
    }

    /// Loads a file; with `read_secrets = false`, secrets and TLS files are named but not read
    /// (`check-config --no-secrets`).
    pub fn check(path: &Path, read_secrets: bool) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        Self::parse_with(&text, base, read_secrets)
    }

    /// Parses and validates a configuration; relative file names resolve from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigErrors> {
        Self::parse_with(text, base, true)
    }

    fn parse_with(text: &str, base: &Path, read_secrets: bool) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::default();
        // A file with many projects is read a thousand projects at a time; one that does not
        // read cleanly so, whole, with every problem named.
        let raw = chunked::parse(text).or_else(|| parse_raw(text, &mut problems));
        let settings = raw.and_then(|raw| validate(raw, base, read_secrets, &mut problems));
        match settings {
            Some(mut s) if problems.errors.is_empty() => {
                s.warnings = problems.warnings;
                Ok(s)
            }
            _ => Err(ConfigErrors(problems.errors)),
        }
    }

    /// What to warn about at start-up when the gateway answers anyone on a public address
    /// (which `allow_unauthenticated = true` allows).
    pub fn exposure_warning(&self, listen: SocketAddr) -> Option<String> {
        (self.callers.is_open() && !listen.ip().is_loopback()).then(|| {
            format!(
                "no [[callers]] are configured and allow_unauthenticated = true: anyone who reaches {listen} reads every backup"
            )
        })
    }

    /// Without callers the gateway answers anyone: only on a loopback address, unless the file
    /// says `allow_unauthenticated = true`.
    pub fn check_exposure(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if self.callers.is_open() && !listen.ip().is_loopback() && !self.allow_unauthenticated {
            return Err(ConfigError::new(
                "callers",
                format!(
                    "{listen} is not a loopback address and no [[callers]] are configured: anyone who reaches it would read every backup. Configure [[callers]], or set allow_unauthenticated = true"
                ),
            ));
        }
        Ok(())
    }
}

fn validate(raw: RawConfig, base: &Path, read_secrets: bool, p: &mut Problems) -> Option<Settings> {
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = p.take(
        listen_text
            .parse::<SocketAddr>()
            .map_err(|_| format!("{listen_text:?} is not an address like 127.0.0.1:50051")),
        "listen",
    );
    let server = edge::server(&raw.server, p);
    let (tls_files, tls) = edge::tls(raw.tls.as_ref(), base, read_secrets, p);
    let mtls = tls_files
        .as_ref()
        .is_some_and(|t| t.client_ca_file.is_some());
    let callers = edge::callers(&raw.callers, mtls, p);
    let metrics_listen = edge::metrics(raw.metrics.as_ref(), p);
    let log = edge::log(&raw.log, p);

    if raw.cache.ttl_seconds == 0 {
        p.push("cache.ttl_seconds", "must be at least 1");
    }
    times_at_most_a_year(&raw, p);
    let (limits, client) = targets::limits(&raw, p);
    let mut limits = limits;
    let endpoints = regions(&raw, &mut limits, p);

    let credentials = credentials(&raw, base, read_secrets, p);
    let mut warnings = Vec::new();
    let mut files = SecretFiles {
        base,
        read: read_secrets,
        must_be_private: raw.secret_files_must_be_private,
        warnings: &mut warnings,
    };
    let shared = edge::shared(raw.shared.as_ref(), &mut files, p);
    p.warnings.extend(warnings);

    let (discoveries, region_patterns) = targets::discoveries(&raw, &endpoints, &credentials, p);
    let discovering = raw.credentials.values().any(|c| c.discover);

    let account_sources = accounts::sources(&raw, &endpoints, &credentials, p);
    if raw.projects.is_empty()
        && !discovering
        && raw.accounts.is_empty()
        && raw.organization.is_none()
    {
        p.push(
            "projects",
            "no project is configured: add a [[projects]], set discover = true on a credential, or add [[accounts]] or [organization]",
        );
    }
    let targets = targets::projects(&raw, &endpoints, &credentials, p);
    targets::unused(&raw, region_patterns.as_ref(), p);

    let settings = Settings {
        listen: listen?,
        allow_unauthenticated: raw.allow_unauthenticated,
        server,
        callers,
        tls_files,
        tls,
        metrics_listen,
        log,
        cache_ttl: Duration::from_secs(raw.cache.ttl_seconds),
        cache_max_bytes: raw.cache.max_bytes,
        limits,
        client,
        targets,
        discoveries,
        discovery_interval: Duration::from_secs(raw.discovery.interval_seconds),
        accounts: account_sources,
        shared,
        warnings: Vec::new(),
    };
    if let Err(e) = settings.check_exposure(settings.listen) {
        p.add(e);
    }
    Some(settings)
}

/// Each `[regions.NAME]`: its endpoint (given, or the known one), and its own limits where they
/// differ from the default.
fn regions(raw: &RawConfig, limits: &mut Limits, p: &mut Problems) -> BTreeMap<String, String> {
    let region_default = limits.region.clone();
    let mut endpoints = BTreeMap::new();
    for (region, r) in &raw.regions {
        let key = format!("regions.{region}");
        let endpoint = match &r.endpoint {
            Some(e) => p.keep(validate_endpoint(&format!("{key}.endpoint"), e)),
            None => p.take(
                default_endpoint(region)
                    .ok_or_else(|| "not a known DDM region: give its endpoint".to_owned()),
                &key,
            ),
        };
        if let Some(endpoint) = endpoint {
            endpoints.insert(region.clone(), endpoint);
        }
        if let Some(own) = p.keep(targets::region_limits(
            &format!("{key}."),
            r.max_concurrent_requests,
            r.requests_per_second,
            r.burst,
            &region_default,
        )) && own != region_default
        {
            limits.regions.insert(region.clone(), own);
        }
    }
    endpoints
}

/// Each `[credentials.NAME]`, with its secrets read (unless only checking); every broken one is
/// reported.
fn credentials(
    raw: &RawConfig,
    base: &Path,
    read_secrets: bool,
    p: &mut Problems,
) -> BTreeMap<String, Arc<crate::ddm::auth::Credential>> {
    let cooldown = Duration::from_secs(raw.limits.auth_failure_cooldown_seconds);
    let mut files = SecretFiles {
        base,
        read: read_secrets,
        must_be_private: raw.secret_files_must_be_private,
        warnings: &mut p.warnings,
    };
    let mut credentials = BTreeMap::new();
    let mut broken = Vec::new();
    for (name, c) in &raw.credentials {
        match secrets::credential(name, c, &mut files) {
            Ok(credential) => {
                credentials.insert(name.clone(), Arc::new(credential.with_cooldown(cooldown)));
            }
            Err(e) => broken.push(e),
        }
    }
    for e in broken {
        p.add(e);
    }
    credentials
}

pub fn is_project_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn validate_endpoint(key: &str, endpoint: &str) -> Result<String, ConfigError> {
    let trimmed = endpoint.trim_end_matches('/');
    let ok = match reqwest::Url::parse(trimmed) {
        Ok(url) => {
            matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.path() == "/"
                && url.query().is_none()
        }
        Err(_) => false,
    };
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(ConfigError::new(
            key,
            format!(
                "{endpoint:?} is not an endpoint like https://ddm.cn-north-4.myhuaweicloud.com"
            ),
        ))
    }
}
