//! What a query says of each target and of the whole, in the domain's terms; the api turns them
//! into the contract's `TargetResult`, `TargetError` and `Summary` (field for field).

use std::time::{Duration, SystemTime};

use super::Target;

/// One target's part of an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetResult {
    pub project_id: String,
    pub project_name: String,
    pub region: String,
    pub ok: bool,
    /// Backups this target contributed to the answer.
    pub backups: u64,
    /// The upstream's `total` (before the gateway's own filters).
    pub upstream_total: u64,
    /// Pages read, from the upstream or the cache.
    pub pages: u32,
    /// Set when `ok` is false.
    pub error: Option<TargetError>,
    /// Upstream items that could not be read (see `warnings`).
    pub skipped_items: u32,
    pub warnings: Vec<String>,
    pub account_id: String,
    pub account_name: String,
}

impl TargetResult {
    /// A result for `target`, failed with `error` if there is one, with nothing read yet.
    pub fn of(target: &Target, error: Option<TargetError>) -> Self {
        let (account_id, account_name) = target.account_id_and_name();
        TargetResult {
            account_id: account_id.to_owned(),
            account_name: account_name.to_owned(),
            project_id: target.project_id.to_string(),
            project_name: target.project_name.clone(),
            region: target.region.to_string(),
            ok: error.is_none(),
            error,
            ..Default::default()
        }
    }
}

/// Why a target failed (built from a `DdmError` by `read::target_error`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetError {
    /// `upstream`, `auth`, `throttled`, `transport`, `decode`, `deadline_exceeded`, `internal`.
    pub kind: String,
    /// The upstream's error code, or the HTTP status.
    pub error_code: String,
    pub message: String,
    /// 0 when there was no HTTP answer.
    pub http_status: u32,
    /// The upstream's `X-Request-Id`.
    pub request_id: String,
    /// Whether asking again later may succeed.
    pub retryable: bool,
}

/// The whole answer's tally.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub targets_ok: u32,
    pub targets_failed: u32,
    pub backups: u64,
    pub upstream_requests: u64,
    pub cache_hits: u64,
    pub elapsed: Duration,
}

/// What a discovery (a credential's projects, an account source) last did, for `ListTargets`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryState {
    /// The credential's name in the configuration.
    pub credential: String,
    /// `iam_projects`, `accounts` or `organization`.
    pub source: String,
    pub last_success: Option<SystemTime>,
    /// Projects found then.
    pub targets: u32,
    /// Accounts found then (account sources only).
    pub accounts: u32,
    pub last_error_at: Option<SystemTime>,
    /// Empty after a success.
    pub last_error: String,
}
