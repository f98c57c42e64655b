//! The second-level cache: a page (or a project's instance list) one replica fetched is stored
//! in Redis, a page encoded as the wire wants it, with its fetch time (wall clock, so that
//! `max_age` holds across replicas) and the cache's TTL; another replica serves it without asking
//! the upstream. While one replica fetches it, the others asking for it wait for it (a lease,
//! `SET NX PX`), at most as long as the lease lasts: a waiter whose holder died fetches itself.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands as _;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::Shared;
use crate::cache::{InstancesKey, Origin, PageKey};
use crate::ddm::{DdmError, InstanceList};
use crate::wire::EncodedPage;

/// What the shared cache keeps: a value that writes itself as bytes and reads itself back.
pub trait Stored: Sized {
    /// Its kind, in the names of its keys in Redis.
    const KIND: &'static str;
    fn to_stored(&self) -> Vec<u8>;
    fn from_stored(stored: &[u8]) -> Result<Self, String>;
}

impl Stored for EncodedPage {
    const KIND: &'static str = "page";
    fn to_stored(&self) -> Vec<u8> {
        EncodedPage::to_stored(self)
    }
    fn from_stored(stored: &[u8]) -> Result<Self, String> {
        EncodedPage::from_stored(stored)
    }
}

/// Instance lists are small and rare next to pages: JSON will do.
impl Stored for InstanceList {
    const KIND: &'static str = "instances";
    fn to_stored(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn from_stored(stored: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(stored).map_err(|e| e.to_string())
    }
}

/// A page's name in Redis: a digest of what identifies it upstream.
pub fn page_key(key: &PageKey) -> String {
    let mut at = key.offset.to_le_bytes().to_vec();
    at.extend_from_slice(&key.limit.to_le_bytes());
    let parts = [
        key.endpoint.as_bytes(),
        key.target.as_bytes(),
        key.pushdown.instance_id.as_bytes(),
        key.pushdown.instance_name.as_bytes(),
        key.pushdown.backup_name.as_bytes(),
    ];
    digest(&parts, &at)
}

/// A project's instance list's name in Redis.
pub fn instances_key(key: &InstancesKey) -> String {
    digest(&[key.endpoint.as_bytes(), key.target.as_bytes()], &[])
}

/// 128 bits of SHA-256 over the parts, each after its length (no two lists of parts collide by
/// where one ends and the next begins), then `fixed` (bytes of a fixed length).
fn digest(parts: &[&[u8]], fixed: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(fixed);
    hex::encode(&h.finalize()[..16])
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// KEYS: the value, its lease; ARGV: this replica, the lease's length (ms). The value if stored,
/// else 1 when this replica now holds the lease, 0 when another does. (Scripts are hashed once,
/// not at every page.)
static STORED_OR_LEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local page = redis.call('GET', KEYS[1])
if page then return page end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
",
    )
});

/// KEYS: the lease; ARGV: this replica, the news channel, the value's key. Deletes the lease if
/// this replica holds it, and tells the others that the fetch ended (a Redis whose ACL refuses
/// the channel still gets the lease back: the waiters then look by themselves).
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.pcall('PUBLISH', ARGV[2], ARGV[3])
return 0
",
    )
});

/// What `stored_or_lease` found.
enum Look {
    Stored(Vec<u8>),
    Leased,
    Held,
}

/// How often a waiter looks for the page another replica fetches while no news reach it: soon,
/// then less often.
const FIRST_LOOK: Duration = Duration::from_millis(5);
const LOOK_AT_MOST_EVERY: Duration = Duration::from_millis(50);

impl Shared {
    /// The page (or instance list) for `name`: stored by a replica within `max_age`, else
    /// fetched by this one (or waited for while another fetches it). Its age, and where it came
    /// from. `max_age` zero reads past the shared cache and takes no lease.
    pub async fn stored_or_fetch<T: Stored, F>(
        &self,
        name: &str,
        max_age: Duration,
        ttl: Duration,
        fetch: impl FnOnce() -> F,
    ) -> Result<(T, Duration, Origin), DdmError>
    where
        F: Future<Output = Result<T, DdmError>>,
    {
        self.listen();
        if !max_age.is_zero() {
            // Another replica may be fetching it: wait for that, a few leases at most.
            for _ in 0..3 {
                // A plain GET first: a stored page is the common case, and a script would copy
                // it once more inside Redis.
                if let Some((page, age)) = self.stored::<T>(name, max_age).await {
                    return Ok((page, age, Origin::Cache));
                }
                let leased = match self.stored_or_lease::<T>(name).await {
                    Some(Look::Stored(stored)) => match self.read_stored(stored, max_age) {
                        Some((page, age)) => return Ok((page, age, Origin::Cache)),
                        // Older than this caller may take: fetch it again, as the lease says.
                        None => match self.lease::<T>(name).await {
                            Some(leased) => leased,
                            None => break,
                        },
                    },
                    Some(Look::Leased) => true,
                    Some(Look::Held) => false,
                    None => break,
                };
                if leased {
                    let fetched = fetch().await;
                    if let Ok(page) = &fetched {
                        self.store(name, page, ttl).await;
                    }
                    self.release::<T>(name).await;
                    return fetched.map(|p| (p, Duration::ZERO, Origin::Upstream));
                }
                if let Some((page, age)) = self.wait_for::<T>(name, max_age).await {
                    return Ok((page, age, Origin::Cache));
                }
            }
        }
        let page = fetch().await?;
        self.store(name, &page, ttl).await;
        Ok((page, Duration::ZERO, Origin::Upstream))
    }

    /// A stored page younger than `max_age`, and its age.
    async fn stored<T: Stored>(&self, name: &str, max_age: Duration) -> Option<(T, Duration)> {
        let key = self.key(T::KIND, name);
        let stored: Option<Vec<u8>> = self
            .run(|mut c| {
                let key = key.clone();
                async move { c.get(key).await }
            })
            .await?;
        self.read_stored(stored?, max_age)
    }

    /// In one round trip: the stored page (stored since the caller looked), or else the lease on fetching it (`Leased`) or the
    /// news that another replica holds it (`Held`). `None`: Redis is not answering.
    async fn stored_or_lease<T: Stored>(&self, name: &str) -> Option<Look> {
        let (page, lease) = (self.key(T::KIND, name), self.lease_key::<T>(name));
        let holder = self.replica.clone();
        let lease_ms = self.options.lease.as_millis().max(1) as u64;
        let answer: redis::Value = self
            .run(|mut c| {
                let mut invocation = STORED_OR_LEASE.key(&page);
                invocation.key(&lease).arg(&holder).arg(lease_ms);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        match answer {
            redis::Value::BulkString(stored) => Some(Look::Stored(stored)),
            redis::Value::Int(1) => Some(Look::Leased),
            _ => Some(Look::Held),
        }
    }

    fn read_stored<T: Stored>(&self, stored: Vec<u8>, max_age: Duration) -> Option<(T, Duration)> {
        let (at, page) = stored.split_at_checked(8)?;
        let fetched_at = u64::from_le_bytes(at.try_into().ok()?);
        let age = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(fetched_at));
        if age >= max_age {
            return None;
        }
        match T::from_stored(page) {
            Ok(page) => {
                if let Some(m) = &self.metrics {
                    m.shared_hit();
                }
                Some((page, age))
            }
            Err(e) => {
                // Said once a while: in a rolling upgrade that changed how pages are stored,
                // every page the other version stored is unreadable here.
                let kind = T::KIND;
                if self.to_say(&format!("unreadable {kind}")) {
                    tracing::warn!(error = %e, kind, "a value in the shared cache is unreadable; fetching it (said once in ten minutes)");
                }
                None
            }
        }
    }

    async fn store<T: Stored>(&self, name: &str, page: &T, ttl: Duration) {
        let key = self.key(T::KIND, name);
        let mut value = unix_ms(SystemTime::now()).to_le_bytes().to_vec();
        value.extend_from_slice(&page.to_stored());
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let _: Option<()> = self
            .run(|mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.pset_ex(key, value, ttl_ms).await }
            })
            .await;
    }

    /// The lease on fetching `name`: `page-lease:`, `instances-lease:`.
    fn lease_key<T: Stored>(&self, name: &str) -> String {
        self.key(&format!("{}-lease", T::KIND), name)
    }

    /// Whether this replica now holds the lease on fetching `name` (`None`: Redis is not
    /// answering).
    async fn lease<T: Stored>(&self, name: &str) -> Option<bool> {
        let key = self.lease_key::<T>(name);
        let holder = self.replica.clone();
        let lease_ms = self.options.lease.as_millis().max(1) as u64;
        self.run(|mut c| {
            let (key, holder) = (key.clone(), holder.clone());
            async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms)
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            }
        })
        .await
    }

    /// Gives the lease up, if this replica still holds it, and tells the replicas waiting for
    /// `name` that its fetch ended (`news.rs`).
    async fn release<T: Stored>(&self, name: &str) {
        let key = self.lease_key::<T>(name);
        let told = self.key(T::KIND, name);
        let holder = self.replica.clone();
        let _: Option<i64> = self
            .run(|mut c| {
                let mut invocation = RELEASE.key(&key);
                invocation.arg(&holder).arg(self.news_channel()).arg(&told);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await;
    }

    /// The page another replica is fetching, once it is stored; `None` when its lease ended
    /// without one (failed, or its holder died) or Redis stopped answering. Woken by the news
    /// of the fetch's end; looks by itself too, often while no news reach this replica.
    async fn wait_for<T: Stored>(&self, name: &str, max_age: Duration) -> Option<(T, Duration)> {
        let (page_key, lease_key) = (self.key(T::KIND, name), self.lease_key::<T>(name));
        let watch = self.news.watch(&page_key);
        let until = Instant::now() + self.options.lease;
        let mut look = FIRST_LOOK;
        while Instant::now() < until {
            // Enabled before looking: news that come meanwhile are not missed.
            let told = watch.notify().notified();
            tokio::pin!(told);
            told.as_mut().enable();
            let (p, l) = (page_key.clone(), lease_key.clone());
            let (stored, leased): (Option<Vec<u8>>, bool) = self
                .run(|mut c| {
                    let mut pipe = redis::pipe();
                    pipe.get(&p).exists(&l);
                    async move { pipe.query_async(&mut c).await }
                })
                .await?;
            if let Some(stored) = stored {
                return self.read_stored(stored, max_age);
            }
            if !leased {
                return None;
            }
            let next = if self.news.is_subscribed() {
                self.options.look_while_told
            } else {
                let now = look;
                look = (look * 2).min(LOOK_AT_MOST_EVERY);
                now
            };
            tokio::select! {
                () = &mut told => {}
                () = tokio::time::sleep_until(until.min(Instant::now() + next)) => {}
            }
        }
        None
    }
}
