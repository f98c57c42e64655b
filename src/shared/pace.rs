//! A region's request rate for all replicas together: GCRA in one Lua script, on Redis' clock
//! (replicas' clocks may differ). Each request reserves the next slot in turn, as the local
//! token bucket does; while Redis does not answer, the local bucket paces this replica alone.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::rate::TokenBucket;

/// Reserves the next request slot of a region: the wait in microseconds before it is due.
/// KEYS[1]: the region's theoretical arrival time (µs); ARGV: interval (µs), burst.
/// `replicate_commands` first: Redis before 5 (managed ones still offer 4.0) refuses a write
/// after `TIME` without it; from 5 on it is what Redis does anyway.
const GCRA: &str = r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - burst * interval - now
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return wait
";

pub struct SharedPace {
    shared: Arc<Shared>,
    key: String,
    interval_us: u64,
    burst: u32,
    script: redis::Script,
    local: TokenBucket,
}

impl SharedPace {
    pub fn new(shared: Arc<Shared>, region: &str, rate: f64, burst: u32) -> Self {
        let rate = rate.max(f64::MIN_POSITIVE);
        SharedPace {
            key: shared.pace_key(region),
            shared,
            interval_us: (1e6 / rate).round().max(1.0) as u64,
            burst: burst.max(1),
            script: redis::Script::new(GCRA),
            local: TokenBucket::new(rate, burst),
        }
    }

    /// Waits until this request is due, by the rate every replica shares.
    pub async fn take(&self) {
        let wait: Option<u64> = self
            .shared
            .run(|mut c| {
                let mut invocation = self.script.key(&self.key);
                invocation.arg(self.interval_us).arg(self.burst);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await;
        match wait {
            Some(0) => {}
            Some(us) => tokio::time::sleep(Duration::from_micros(us)).await,
            None => self.local.take().await,
        }
    }
}
