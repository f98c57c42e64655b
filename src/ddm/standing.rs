//! A credential's standing with the upstream. Credentials that the upstream locks after
//! repeated failures (an access key after five failed signatures, an IAM user after failed
//! logins) are protected twice: until one request has proved the credential good, its requests
//! go one at a time (a bad key fails once, not once per page in flight); and after a failure it
//! is not used again for a cool-down, across calls, its targets answered at once with that
//! failure. A configuration reload builds new credentials, which lifts it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::MutexGuard;

use super::error::DdmError;

/// The cool-down after an authentication failure, unless configured otherwise.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

pub struct Standing {
    /// Whether this credential is protected at all (static tokens are not locked upstream).
    guarded: bool,
    cooldown: Duration,
    state: Mutex<State>,
    /// Held by the one request that may try an unproven credential.
    probe: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    proven: bool,
    failing: Option<(SystemTime, DdmError)>,
}

/// What `admit` lets through: a proven credential, or the one probe of an unproven one.
pub struct Admission<'a> {
    _probe: Option<MutexGuard<'a, ()>>,
}

impl Standing {
    pub fn new(guarded: bool) -> Self {
        Standing {
            guarded,
            cooldown: DEFAULT_COOLDOWN,
            state: Mutex::default(),
            probe: tokio::sync::Mutex::new(()),
        }
    }

    pub fn set_cooldown(&mut self, cooldown: Duration) {
        self.cooldown = cooldown;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The failure being waited out, and until when.
    pub fn failing(&self) -> Option<(SystemTime, DdmError)> {
        let mut state = self.state();
        match &state.failing {
            Some((until, _)) if *until <= SystemTime::now() => {
                state.failing = None;
                None
            }
            other => other.clone(),
        }
    }

    /// Waits for the right to use the credential; `Err` with the failure while cooling down.
    pub async fn admit(&self) -> Result<Admission<'_>, (SystemTime, DdmError)> {
        if let Some(failing) = self.failing() {
            return Err(failing);
        }
        if !self.guarded || self.state().proven {
            return Ok(Admission { _probe: None });
        }
        let probe = self.probe.lock().await;
        // What the previous probe found.
        if let Some(failing) = self.failing() {
            return Err(failing);
        }
        if self.state().proven {
            return Ok(Admission { _probe: None });
        }
        Ok(Admission {
            _probe: Some(probe),
        })
    }

    pub fn accepted(&self) {
        self.state().proven = true;
    }

    /// The upstream rejected the credential: cool down (guarded credentials only).
    pub fn rejected(&self, error: &DdmError) {
        if self.guarded {
            let mut state = self.state();
            state.proven = false;
            state.failing = Some((SystemTime::now() + self.cooldown, error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    fn rejection() -> DdmError {
        DdmError::Transport("x".into())
    }

    #[tokio::test]
    async fn an_unproven_credential_is_tried_once_at_a_time() {
        let standing = Standing::new(true);
        let first = standing.admit().await.unwrap();
        // A second request waits for the first one's verdict…
        assert!(standing.admit().now_or_never().is_none());
        standing.rejected(&rejection());
        drop(first);
        // …which was a failure: it is answered at once, without asking.
        assert!(standing.admit().await.is_err());
    }

    #[tokio::test]
    async fn a_proven_credential_is_not_serialised_and_cools_down_after_a_rejection() {
        let mut standing = Standing::new(true);
        standing.set_cooldown(Duration::ZERO);
        let probe = standing.admit().await.unwrap();
        standing.accepted();
        drop(probe);
        let a = standing.admit().await.unwrap();
        let b = standing
            .admit()
            .now_or_never()
            .expect("not serialised")
            .unwrap();
        drop((a, b));
        standing.rejected(&rejection());
        // A zero cool-down has ended already.
        assert!(standing.admit().await.is_ok());
    }

    #[tokio::test]
    async fn static_tokens_are_not_guarded() {
        let standing = Standing::new(false);
        standing.rejected(&rejection());
        let _a = standing.admit().await.unwrap();
        assert!(standing.admit().now_or_never().is_some());
    }
}
