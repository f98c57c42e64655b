//! A token bucket: `rate` requests a second on average, bursts of up to `burst`. The gateway
//! uses it to pace each region; the simulator uses it to decide when to answer 429.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens available now; negative when callers have reserved future tokens.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// `rate` tokens per second (must be > 0), at most `burst` (at least 1) stored.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new(State {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    fn refill(&self, state: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate).min(self.burst);
        state.at = now;
    }

    /// Takes a token if one is there now.
    pub fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.refill(&mut state, Instant::now());
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Reserves the next token and waits until it is due. Waiters are served in the order
    /// they reserved. A waiter that is cancelled gives its token back.
    pub async fn take(&self) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            self.refill(&mut state, Instant::now());
            state.tokens -= 1.0;
            if state.tokens >= 0.0 {
                Duration::ZERO
            } else {
                // A wait too long to represent is a wait for ever, not a panic.
                Duration::try_from_secs_f64(-state.tokens / self.rate).unwrap_or(Duration::MAX)
            }
        };
        if !wait.is_zero() {
            let mut reserved = Reserved {
                bucket: self,
                waiting: true,
            };
            tokio::time::sleep(wait).await;
            reserved.waiting = false;
        }
    }
}

/// A token reserved ahead; returned if its waiter goes away before it is due.
struct Reserved<'a> {
    bucket: &'a TokenBucket,
    waiting: bool,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.waiting {
            let mut state = self.bucket.state.lock().unwrap_or_else(|e| e.into_inner());
            state.tokens = (state.tokens + 1.0).min(self.bucket.burst);
        }
    }
}

/// What paces a region's requests: this replica's token bucket, or the rate every replica
/// shares (in Redis, with the local bucket while Redis does not answer).
pub enum Pace {
    Local(TokenBucket),
    Shared(crate::shared::SharedPace),
}

impl Pace {
    /// Waits until the next request is due.
    pub async fn take(&self) {
        match self {
            Pace::Local(bucket) => bucket.take().await,
            // Boxed: a Redis round trip's future is large, and every request waiting for a
            // slot holds this one (thousands in a storm of cancelled inventories).
            Pace::Shared(shared) => Box::pin(shared.take()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_after_the_burst() {
        let bucket = TokenBucket::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            bucket.take().await;
        }
        // 10 more at 10/s: one second of paused (virtual) time.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((0.99..=1.01).contains(&elapsed), "{elapsed}");
        assert!(!bucket.try_take());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_gives_its_token_back() {
        use futures_util::FutureExt as _;
        let bucket = TokenBucket::new(1.0, 1);
        bucket.take().await;
        for _ in 0..5 {
            // Each of these reserves the next token, then goes away before it is due.
            assert!(bucket.take().now_or_never().is_none());
        }
        let start = Instant::now();
        bucket.take().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1), "not 6 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_too_long_to_represent_is_a_wait_for_ever() {
        use futures_util::FutureExt as _;
        let bucket = TokenBucket::new(f64::MIN_POSITIVE, 1);
        bucket.take().await;
        assert!(bucket.take().now_or_never().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn try_take_refills_over_time() {
        let bucket = TokenBucket::new(2.0, 1);
        assert!(bucket.try_take());
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.try_take());
    }
}
