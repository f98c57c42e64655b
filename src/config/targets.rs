//! The limits, the regions and the projects of a configuration, and the tables nothing uses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::raw::RawConfig;
use super::{ConfigError, MAX_AT_ONCE, Problems, default_endpoint, is_project_id, out_of_count};
use crate::callers::Patterns;
use crate::ddm::{ClientOptions, Credential, RetryPolicy};
use crate::discovery::Discovery;
use crate::inventory::{Limits, RegionLimits, Target, TargetSource};

/// The slowest pace a region may be given: slower is no pace at all (a wait of 10^300 seconds
/// cannot be slept).
const MIN_REQUESTS_PER_SECOND: f64 = 0.001;

pub(super) fn limits(raw: &RawConfig, p: &mut Problems) -> (Limits, ClientOptions) {
    let l = &raw.limits;
    let any = u64::MAX;
    for (key, value, most) in [
        (
            "limits.max_concurrent_requests",
            l.max_concurrent_requests as u64,
            MAX_AT_ONCE,
        ),
        (
            "limits.max_concurrent_targets",
            l.max_concurrent_targets as u64,
            MAX_AT_ONCE,
        ),
        (
            "limits.max_pages_per_target",
            l.max_pages_per_target as u64,
            MAX_AT_ONCE,
        ),
        ("limits.max_attempts", u64::from(l.max_attempts), any),
        ("limits.request_timeout_ms", l.request_timeout_ms, any),
        ("limits.max_body_bytes", l.max_body_bytes as u64, any),
    ] {
        p.count(key, value, most);
    }
    let region_default = p
        .keep(region_limits(
            "limits.region_",
            l.region_max_concurrent_requests,
            l.region_requests_per_second,
            Some(l.region_burst),
            &RegionLimits::default(),
        ))
        .unwrap_or_default();
    let limits = Limits {
        max_concurrent_requests: l.max_concurrent_requests,
        max_concurrent_targets: l.max_concurrent_targets,
        max_pages_per_target: l.max_pages_per_target,
        region: region_default,
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
    (limits, client)
}

pub(super) fn projects(
    raw: &RawConfig,
    endpoints: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, Arc<Credential>>,
    p: &mut Problems,
) -> Vec<Target> {
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    // One region name and one endpoint per region, however many projects it has.
    let mut interned: HashMap<&str, (Arc<str>, Arc<str>)> = HashMap::new();
    for (i, project) in raw.projects.iter().enumerate() {
        let key = format!("projects[{i}]");
        if !is_project_id(&project.id) {
            p.push(
                format!("{key}.id"),
                format!(
                    "{:?} is not a project id (32 lowercase hex characters)",
                    project.id
                ),
            );
        } else if !seen.insert(project.id.clone()) {
            p.push(
                format!("{key}.id"),
                format!("project {} is listed twice", project.id),
            );
        }
        let endpoint = match endpoints.get(&project.region) {
            Some(e) => Some(e.clone()),
            None => p.take(
                default_endpoint(&project.region).ok_or_else(|| {
                    format!(
                        "{:?} is not a known DDM region: add [regions.{}] with its endpoint",
                        project.region, project.region
                    )
                }),
                format!("{key}.region"),
            ),
        };
        let credential = match credentials.get(&project.credential) {
            Some(c) => Some(c),
            // A credential that is defined but broken was reported already.
            None if raw.credentials.contains_key(&project.credential) => None,
            None => {
                p.push(
                    format!("{key}.credential"),
                    format!("no [credentials.{}] is defined", project.credential),
                );
                None
            }
        };
        if let (Some(endpoint), Some(credential)) = (endpoint, credential) {
            let (region, endpoint) = interned
                .entry(&project.region)
                .or_insert_with(|| (project.region.as_str().into(), endpoint.into()))
                .clone();
            targets.push(Target {
                project_id: project.id.as_str().into(),
                project_name: project.name.clone().unwrap_or_default(),
                region,
                endpoint,
                credential: Arc::clone(credential),
                source: TargetSource::Config,
                account: None,
            });
        }
    }
    targets
}

/// Tables that nothing uses are most often a typo of something that should have been used.
pub(super) fn unused(raw: &RawConfig, discovery_regions: Option<&Patterns>, p: &mut Problems) {
    let discovers = raw.credentials.values().any(|c| c.discover);
    for region in raw.regions.keys() {
        let used = raw.projects.iter().any(|pr| &pr.region == region)
            || (discovers && discovery_regions.is_some_and(|d| d.matches(region)))
            || !raw.accounts.is_empty()
            || raw.organization.is_some();
        if !used && default_endpoint(region).is_none() {
            p.push(
                format!("regions.{region}"),
                "matches no known DDM region and no project or discovery uses it (a typo?)",
            );
        }
    }
    for (name, c) in &raw.credentials {
        let central = raw.accounts.iter().any(|a| &a.credential == name)
            || raw
                .organization
                .as_ref()
                .is_some_and(|o| &o.credential == name);
        if !c.discover && !central && !raw.projects.iter().any(|pr| &pr.credential == name) {
            p.push(
                format!("credentials.{name}"),
                "no project, account or organization uses this credential and it does not discover any (a typo?)",
            );
        }
    }
}

/// A region's limits: its own values where given, else the defaults.
pub(super) fn region_limits(
    prefix: &str,
    max_concurrent_requests: Option<usize>,
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    defaults: &RegionLimits,
) -> Result<RegionLimits, ConfigError> {
    if let Some(problem) = max_concurrent_requests.and_then(|n| out_of_count(n as u64, MAX_AT_ONCE))
    {
        return Err(ConfigError::new(
            format!("{prefix}max_concurrent_requests"),
            problem,
        ));
    }
    // Not `rps < MIN`: NaN compares false.
    if let Some(rps) = requests_per_second
        && !(rps.is_finite() && rps >= MIN_REQUESTS_PER_SECOND)
    {
        return Err(ConfigError::new(
            format!("{prefix}requests_per_second"),
            format!("must be at least {MIN_REQUESTS_PER_SECOND} (a request every 1,000 seconds)"),
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

/// The credentials that discover their projects, and the regions discovery keeps (`None` when
/// `[discovery] regions` is wrong: reported).
pub(super) fn discoveries(
    raw: &RawConfig,
    endpoints: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, Arc<Credential>>,
    p: &mut Problems,
) -> (Vec<Discovery>, Option<Patterns>) {
    let regions = match &raw.discovery.regions {
        Some(patterns) => p.take(Patterns::new(patterns), "discovery.regions"),
        None if !endpoints.is_empty() => {
            Patterns::new(&endpoints.keys().cloned().collect::<Vec<_>>()).ok()
        }
        None => Some(Patterns::any()),
    };
    if raw.discovery.interval_seconds == 0 {
        p.push("discovery.interval_seconds", "must be at least 1");
    }
    let discoveries = match &regions {
        Some(regions) => raw
            .credentials
            .iter()
            .filter(|(_, c)| c.discover)
            .filter_map(|(name, _)| credentials.get(name))
            .map(|credential| Discovery {
                credential: Arc::clone(credential),
                regions: regions.clone(),
                endpoints: endpoints.clone(),
            })
            .collect(),
        None => Vec::new(),
    };
    (discoveries, regions)
}
