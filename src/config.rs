//! Configuration: a TOML file, validated at start-up into `Settings`. Every problem names its key.
//! Secrets are never written in the file: it names an environment variable or a file instead.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::ddm::auth::{AccessKey, DEFAULT_IAM_ENDPOINT, IamPassword};
use crate::ddm::{ClientOptions, Credential, CredentialKind, RetryPolicy};
use crate::discovery::Discovery;
use crate::inventory::{Limits, RegionLimits, Target, TargetSource};

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

#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    regions: BTreeMap<String, RawRegion>,
    #[serde(default)]
    credentials: BTreeMap<String, RawCredential>,
    #[serde(default)]
    projects: Vec<RawProject>,
    #[serde(default)]
    discovery: RawDiscovery,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDiscovery {
    /// Region patterns to keep; default: the [regions] table's keys, or every DDM region.
    regions: Option<Vec<String>>,
    interval_seconds: u64,
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
struct RawCache {
    ttl_seconds: u64,
    max_bytes: u64,
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
struct RawLimits {
    max_concurrent_requests: usize,
    max_concurrent_targets: usize,
    max_pages_per_target: usize,
    request_timeout_ms: u64,
    max_attempts: u32,
    retry_base_delay_ms: u64,
    retry_max_delay_ms: u64,
    throttle_delay_ms: u64,
    max_body_bytes: usize,
    /// Defaults for every region (a [regions.X] entry may say otherwise).
    region_max_concurrent_requests: Option<usize>,
    region_requests_per_second: Option<f64>,
    region_burst: u32,
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    endpoint: Option<String>,
    max_concurrent_requests: Option<usize>,
    requests_per_second: Option<f64>,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    kind: String,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    domain: Option<String>,
    user: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    access_key: Option<String>,
    secret_key_env: Option<String>,
    secret_key_file: Option<PathBuf>,
    iam_endpoint: Option<String>,
    #[serde(default)]
    discover: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    id: String,
    name: Option<String>,
    region: String,
    credential: String,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub cache_ttl: Duration,
    pub cache_max_bytes: u64,
    pub limits: Limits,
    pub client: ClientOptions,
    pub targets: Vec<Target>,
    /// Credentials whose projects are listed through IAM.
    pub discoveries: Vec<Discovery>,
    pub discovery_interval: Duration,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

impl Settings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates a configuration; relative `token_file`s are read from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let key = e.span().map(|s| key_at(text, s.start)).unwrap_or_default();
            ConfigError::new(
                if key.is_empty() {
                    "config".to_owned()
                } else {
                    key
                },
                e.message().to_owned(),
            )
        })?;
        validate(raw, base)
    }
}

/// The line a parse error points at, for messages (`line 7`).
fn key_at(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

fn validate(raw: RawConfig, base: &Path) -> Result<Settings, ConfigError> {
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ConfigError::new(
            "listen",
            format!("{listen_text:?} is not an address like 127.0.0.1:50051"),
        )
    })?;

    if raw.cache.ttl_seconds == 0 {
        return Err(ConfigError::new("cache.ttl_seconds", "must be at least 1"));
    }
    let l = &raw.limits;
    for (key, value) in [
        ("limits.max_concurrent_requests", l.max_concurrent_requests),
        ("limits.max_concurrent_targets", l.max_concurrent_targets),
        ("limits.max_pages_per_target", l.max_pages_per_target),
        ("limits.max_attempts", l.max_attempts as usize),
        ("limits.request_timeout_ms", l.request_timeout_ms as usize),
        ("limits.max_body_bytes", l.max_body_bytes),
    ] {
        if value == 0 {
            return Err(ConfigError::new(key, "must be at least 1"));
        }
    }
    let region_default = region_limits(
        "limits.region_",
        l.region_max_concurrent_requests,
        l.region_requests_per_second,
        Some(l.region_burst),
        &RegionLimits::default(),
    )?;
    let mut limits = Limits {
        max_concurrent_requests: l.max_concurrent_requests,
        max_concurrent_targets: l.max_concurrent_targets,
        max_pages_per_target: l.max_pages_per_target,
        region: region_default.clone(),
        ..Limits::default()
    };
    let client = ClientOptions {
        request_timeout: Duration::from_millis(l.request_timeout_ms),
        max_body_bytes: l.max_body_bytes,
        retry: RetryPolicy {
            max_attempts: l.max_attempts,
            base_delay: Duration::from_millis(l.retry_base_delay_ms),
            max_delay: Duration::from_millis(l.retry_max_delay_ms),
            throttle_delay: Duration::from_millis(l.throttle_delay_ms),
        },
    };

    let mut endpoints = BTreeMap::new();
    for (region, r) in &raw.regions {
        let key = format!("regions.{region}");
        let endpoint = match &r.endpoint {
            Some(e) => validate_endpoint(&format!("{key}.endpoint"), e)?,
            None => default_endpoint(region).ok_or_else(|| {
                ConfigError::new(&key, "not a known DDM region: give its endpoint")
            })?,
        };
        endpoints.insert(region.clone(), endpoint);
        let own = region_limits(
            &format!("{key}."),
            r.max_concurrent_requests,
            r.requests_per_second,
            r.burst,
            &region_default,
        )?;
        if own != region_default {
            limits.regions.insert(region.clone(), own);
        }
    }

    let mut credentials = BTreeMap::new();
    for (name, c) in &raw.credentials {
        credentials.insert(name.clone(), Arc::new(credential(name, c, base)?));
    }

    let region_patterns = match &raw.discovery.regions {
        Some(patterns) => {
            if let Some(i) = patterns.iter().position(|p| p.trim().is_empty()) {
                return Err(ConfigError::new(
                    format!("discovery.regions[{i}]"),
                    "must not be empty",
                ));
            }
            patterns.clone()
        }
        None if !endpoints.is_empty() => endpoints.keys().cloned().collect(),
        None => vec!["*".to_owned()],
    };
    if raw.discovery.interval_seconds == 0 {
        return Err(ConfigError::new(
            "discovery.interval_seconds",
            "must be at least 1",
        ));
    }
    let discoveries: Vec<Discovery> = raw
        .credentials
        .iter()
        .filter(|(_, c)| c.discover)
        .map(|(name, _)| Discovery {
            credential: Arc::clone(&credentials[name]),
            regions: region_patterns.clone(),
            endpoints: endpoints.clone(),
        })
        .collect();

    if raw.projects.is_empty() && discoveries.is_empty() {
        return Err(ConfigError::new(
            "projects",
            "no project is configured: add a [[projects]] or set discover = true on a credential",
        ));
    }
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    for (i, p) in raw.projects.iter().enumerate() {
        let key = format!("projects[{i}]");
        if !is_project_id(&p.id) {
            return Err(ConfigError::new(
                format!("{key}.id"),
                format!(
                    "{:?} is not a project id (32 lowercase hex characters)",
                    p.id
                ),
            ));
        }
        if !seen.insert(p.id.clone()) {
            return Err(ConfigError::new(
                format!("{key}.id"),
                format!("project {} is listed twice", p.id),
            ));
        }
        let endpoint = match endpoints.get(&p.region) {
            Some(e) => e.clone(),
            None => default_endpoint(&p.region).ok_or_else(|| {
                ConfigError::new(
                    format!("{key}.region"),
                    format!(
                        "{:?} is not a known DDM region: add [regions.{}] with its endpoint",
                        p.region, p.region
                    ),
                )
            })?,
        };
        let credential = credentials.get(&p.credential).ok_or_else(|| {
            ConfigError::new(
                format!("{key}.credential"),
                format!("no [credentials.{}] is defined", p.credential),
            )
        })?;
        targets.push(Target {
            project_id: p.id.as_str().into(),
            project_name: p.name.clone().unwrap_or_default(),
            region: p.region.clone(),
            endpoint: endpoint.into(),
            credential: Arc::clone(credential),
            source: TargetSource::Config,
        });
    }

    Ok(Settings {
        listen,
        cache_ttl: Duration::from_secs(raw.cache.ttl_seconds),
        cache_max_bytes: raw.cache.max_bytes,
        limits,
        client,
        targets,
        discoveries,
        discovery_interval: Duration::from_secs(raw.discovery.interval_seconds),
    })
}

/// A region's limits: its own values where given, else the defaults.
fn region_limits(
    prefix: &str,
    max_concurrent_requests: Option<usize>,
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    defaults: &RegionLimits,
) -> Result<RegionLimits, ConfigError> {
    if max_concurrent_requests == Some(0) {
        return Err(ConfigError::new(
            format!("{prefix}max_concurrent_requests"),
            "must be at least 1",
        ));
    }
    if let Some(rps) = requests_per_second
        && !(rps.is_finite() && rps > 0.0)
    {
        return Err(ConfigError::new(
            format!("{prefix}requests_per_second"),
            "must be a positive number",
        ));
    }
    if burst == Some(0) {
        return Err(ConfigError::new(
            format!("{prefix}burst"),
            "must be at least 1",
        ));
    }
    Ok(RegionLimits {
        max_concurrent_requests: max_concurrent_requests.or(defaults.max_concurrent_requests),
        requests_per_second: requests_per_second.or(defaults.requests_per_second),
        burst: burst.unwrap_or(defaults.burst.max(1)),
    })
}

pub fn is_project_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_endpoint(key: &str, endpoint: &str) -> Result<String, ConfigError> {
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

fn credential(name: &str, c: &RawCredential, base: &Path) -> Result<Credential, ConfigError> {
    let key = format!("credentials.{name}");
    let set = [
        ("token_env", c.token_env.is_some()),
        ("token_file", c.token_file.is_some()),
        ("domain", c.domain.is_some()),
        ("user", c.user.is_some()),
        ("password_env", c.password_env.is_some()),
        ("password_file", c.password_file.is_some()),
        ("access_key", c.access_key.is_some()),
        ("secret_key_env", c.secret_key_env.is_some()),
        ("secret_key_file", c.secret_key_file.is_some()),
        ("iam_endpoint", c.iam_endpoint.is_some()),
    ];
    let allowed: &[&str] = match c.kind.as_str() {
        "token" => &["token_env", "token_file"],
        "iam_password" => &[
            "domain",
            "user",
            "password_env",
            "password_file",
            "iam_endpoint",
        ],
        "aksk" => &[
            "access_key",
            "secret_key_env",
            "secret_key_file",
            "iam_endpoint",
        ],
        other => {
            return Err(ConfigError::new(
                format!("{key}.kind"),
                format!(
                    "{other:?} is not a credential kind; use \"token\", \"iam_password\" or \"aksk\""
                ),
            ));
        }
    };
    if let Some((field, _)) = set
        .iter()
        .find(|(f, present)| *present && !allowed.contains(f))
    {
        return Err(ConfigError::new(
            format!("{key}.{field}"),
            format!("not used by a credential of kind {:?}", c.kind),
        ));
    }
    let iam_endpoint = match &c.iam_endpoint {
        Some(e) => validate_endpoint(&format!("{key}.iam_endpoint"), e)?,
        None => DEFAULT_IAM_ENDPOINT.to_owned(),
    };
    let required = |field: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ConfigError::new(format!("{key}.{field}"), "is required"))
    };
    let kind = match c.kind.as_str() {
        "token" => CredentialKind::Token(secret(
            &key,
            "token",
            c.token_env.as_deref(),
            c.token_file.as_deref(),
            base,
        )?),
        "iam_password" => CredentialKind::IamPassword(IamPassword::new(
            iam_endpoint,
            required("domain", &c.domain)?,
            required("user", &c.user)?,
            secret(
                &key,
                "password",
                c.password_env.as_deref(),
                c.password_file.as_deref(),
                base,
            )?,
        )),
        _ => CredentialKind::AccessKey(AccessKey {
            iam_endpoint,
            access_key: required("access_key", &c.access_key)?,
            secret_key: secret(
                &key,
                "secret_key",
                c.secret_key_env.as_deref(),
                c.secret_key_file.as_deref(),
                base,
            )?,
        }),
    };
    Ok(Credential::new(name, kind))
}

/// A secret from `{field}_env` (an environment variable) or `{field}_file`, exactly one.
fn secret(
    key: &str,
    field: &str,
    env: Option<&str>,
    file: Option<&Path>,
    base: &Path,
) -> Result<SecretString, ConfigError> {
    let value = match (env, file) {
        (Some(var), None) => std::env::var(var).map_err(|_| {
            ConfigError::new(
                format!("{key}.{field}_env"),
                format!("the environment variable {var} is not set"),
            )
        })?,
        (None, Some(path)) => {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(
                    format!("{key}.{field}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        _ => {
            return Err(ConfigError::new(
                key,
                format!(
                    "give exactly one of {field}_env or {field}_file (secrets are never written in the file)"
                ),
            ));
        }
    };
    if value.is_empty() {
        return Err(ConfigError::new(key, format!("the {field} is empty")));
    }
    if value.len() > 64 * 1024 || reqwest::header::HeaderValue::from_str(&value).is_err() {
        return Err(ConfigError::new(
            key,
            format!("the {field} is longer than 64 KiB or not valid in an HTTP header"),
        ));
    }
    Ok(SecretString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: &str = "0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("."))
    }

    fn with_project(extra: &str) -> String {
        format!(
            r#"
[credentials.ops]
kind = "token"
token_env = "BACKUPGW_TEST_CONFIG_TOKEN"
[[projects]]
id = "{PID}"
region = "cn-north-4"
credential = "ops"
{extra}"#
        )
    }

    #[test]
    fn a_good_file_loads() {
        // SAFETY: this variable is read by this module's tests only.
        unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
        let s = parse(&with_project("")).unwrap();
        assert_eq!(s.targets.len(), 1);
        assert_eq!(
            &*s.targets[0].endpoint,
            "https://ddm.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("t0k3n"), "{dbg}");
    }

    #[test]
    fn problems_name_their_key() {
        unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
        let cases = [
            (with_project("").replace(PID, "XYZ"), "projects[0].id"),
            (
                with_project("").replace("cn-north-4", "mars-1"),
                "projects[0].region",
            ),
            (
                with_project("").replace("credential = \"ops\"", "credential = \"nope\""),
                "projects[0].credential",
            ),
            (
                with_project("").replace("BACKUPGW_TEST_CONFIG_TOKEN", "BACKUPGW_UNSET_VAR_XYZ"),
                "credentials.ops.token_env",
            ),
            (
                with_project("").replace("kind = \"token\"", "kind = \"magic\""),
                "credentials.ops.kind",
            ),
            (
                format!("listen = \"nowhere\"\n{}", with_project("")),
                "listen",
            ),
            (
                format!(
                    "[limits]\nmax_concurrent_requests = 0\n{}",
                    with_project("")
                ),
                "limits.max_concurrent_requests",
            ),
            (
                format!("[regions.x]\nendpoint = \"ftp://a\"\n{}", with_project("")),
                "regions.x.endpoint",
            ),
            (format!("bogus = 1\n{}", with_project("")), "line 1"),
            ("".to_owned(), "projects"),
            (with_project("").replace("kind = \"token\"", "kind = \"iam_password\""), "credentials.ops.token_env"),
            (
                "[credentials.k]\nkind = \"aksk\"\nsecret_key_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"\ndiscover = true\n".to_owned(),
                "credentials.k.access_key",
            ),
            (
                "[credentials.k]\nkind = \"aksk\"\naccess_key = \"AK\"\nsecret_key_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"\ndiscover = true\n[discovery]\ninterval_seconds = 0\n".to_owned(),
                "discovery.interval_seconds",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
        let twice = with_project(&format!(
            "[[projects]]\nid = \"{PID}\"\nregion = \"cn-north-4\"\ncredential = \"ops\"\n"
        ));
        assert_eq!(parse(&twice).unwrap_err().key, "projects[1].id");
    }

    #[test]
    fn discovery_alone_is_enough() {
        unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
        let text = "[regions.cn-north-4]\nendpoint = \"http://127.0.0.1:1\"\n[credentials.iam]\nkind = \"iam_password\"\ndomain = \"d\"\nuser = \"u\"\npassword_env = \"BACKUPGW_TEST_CONFIG_TOKEN\"\ndiscover = true\n";
        let s = parse(text).unwrap();
        assert!(s.targets.is_empty());
        assert_eq!(s.discoveries.len(), 1);
        assert_eq!(
            s.discoveries[0].regions,
            ["cn-north-4"],
            "configured regions by default"
        );
        assert!(!format!("{s:?}").contains("t0k3n"));
    }

    #[test]
    fn region_limits_default_and_override() {
        unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
        let text = format!(
            "[limits]\nregion_requests_per_second = 20.0\nregion_max_concurrent_requests = 8\n[regions.cn-north-4]\nrequests_per_second = 5.0\nburst = 2\n{}",
            with_project("")
        );
        let s = parse(&text).unwrap();
        assert_eq!(
            s.limits.region,
            RegionLimits {
                max_concurrent_requests: Some(8),
                requests_per_second: Some(20.0),
                burst: 10
            }
        );
        assert_eq!(
            s.limits.regions["cn-north-4"],
            RegionLimits {
                max_concurrent_requests: Some(8),
                requests_per_second: Some(5.0),
                burst: 2
            }
        );
        let bad = format!(
            "[regions.cn-north-4]\nrequests_per_second = -1.0\n{}",
            with_project("")
        );
        assert_eq!(
            parse(&bad).unwrap_err().key,
            "regions.cn-north-4.requests_per_second"
        );
    }

    #[test]
    fn endpoints_can_be_overridden() {
        unsafe { std::env::set_var("BACKUPGW_TEST_CONFIG_TOKEN", "t0k3n") };
        let text = format!(
            "[regions.cn-north-4]\nendpoint = \"http://127.0.0.1:8080/\"\n{}",
            with_project("")
        );
        assert_eq!(
            &*parse(&text).unwrap().targets[0].endpoint,
            "http://127.0.0.1:8080"
        );
    }
}
