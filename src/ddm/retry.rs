//! When to ask the upstream again, and how long to wait first.

use std::time::Duration;

use super::error::DdmError;

/// Exponential backoff with full jitter, bounded by attempts and by the caller's deadline.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per page, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The least wait after a 429 without `Retry-After` (the docs advise 2–5 s).
    pub throttle_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            throttle_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1` after `error`.
    pub(super) fn delay(&self, attempt: u32, error: &DdmError) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jitter = ceiling.mul_f64(fastrand::f64());
        match error {
            DdmError::Upstream {
                status: 429,
                retry_after,
                ..
            } => (retry_after.unwrap_or(self.throttle_delay) + jitter).min(self.max_delay),
            _ => error
                .retry_after()
                .unwrap_or_default()
                .max(jitter)
                .min(self.max_delay),
        }
    }
}

pub(super) fn throttled(error: DdmError, advised: Duration, limit: String) -> DdmError {
    DdmError::Throttled {
        retry_after: advised,
        limit,
        upstream: Box::new(error),
    }
}

/// The `reason` label of a retry.
pub(super) fn retry_reason(error: &DdmError) -> &'static str {
    match error {
        DdmError::Upstream { status: 429, .. } => "throttled",
        DdmError::Upstream { status: 400, .. } => "busy",
        DdmError::Upstream { .. } => "server_error",
        DdmError::Timeout(_) => "timeout",
        DdmError::Transport(_) => "transport",
        DdmError::Decode { .. } => "bad_answer",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        let busy = DdmError::Upstream {
            status: 503,
            code: "APIGW.0613".into(),
            message: String::new(),
            request_id: None,
            retry_after: None,
        };
        for attempt in 1..20 {
            assert!(policy.delay(attempt, &busy) <= policy.max_delay);
        }
        let throttled = DdmError::Upstream {
            status: 429,
            code: "APIGW.0308".into(),
            message: String::new(),
            request_id: None,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(policy.delay(1, &throttled) >= Duration::from_secs(3));
        assert!(policy.delay(1, &throttled) <= policy.max_delay);
    }
}
