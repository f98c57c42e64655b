//! The inventory's outcomes as the contract's messages.

use crate::inventory::{DiscoveryState, Summary, TargetError, TargetResult};
use crate::pb;

impl From<TargetResult> for pb::TargetResult {
    fn from(r: TargetResult) -> Self {
        pb::TargetResult {
            project_id: r.project_id,
            project_name: r.project_name,
            region: r.region,
            ok: r.ok,
            backups: r.backups,
            upstream_total: r.upstream_total,
            pages: r.pages,
            error: r.error.map(Into::into),
            skipped_items: r.skipped_items,
            warnings: r.warnings,
            account_id: r.account_id,
            account_name: r.account_name,
        }
    }
}

impl From<TargetError> for pb::TargetError {
    fn from(e: TargetError) -> Self {
        pb::TargetError {
            kind: e.kind,
            error_code: e.error_code,
            message: e.message,
            http_status: e.http_status,
            request_id: e.request_id,
            retryable: e.retryable,
        }
    }
}

impl From<Summary> for pb::Summary {
    fn from(s: Summary) -> Self {
        pb::Summary {
            targets_ok: s.targets_ok,
            targets_failed: s.targets_failed,
            backups: s.backups,
            upstream_requests: s.upstream_requests,
            cache_hits: s.cache_hits,
            elapsed: prost_types::Duration::try_from(s.elapsed).ok(),
        }
    }
}

impl From<DiscoveryState> for pb::DiscoveryState {
    fn from(d: DiscoveryState) -> Self {
        pb::DiscoveryState {
            credential: d.credential,
            last_success: d.last_success.map(Into::into),
            targets: d.targets,
            last_error_at: d.last_error_at.map(Into::into),
            last_error: d.last_error,
            source: d.source,
            accounts: d.accounts,
        }
    }
}
