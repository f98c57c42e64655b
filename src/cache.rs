//! The page cache: one upstream page per entry, bounded in bytes, with a TTL and caller-chosen
//! freshness. Concurrent misses for the same page share one fetch (moka's `try_get_with`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tokio::time::Instant;

use crate::ddm::{DdmError, InstanceList, Pushdown};
use crate::metrics::Metrics;
use crate::shared::{Shared, Stored, instances_key, page_key};
use crate::wire::EncodedPage;

/// What identifies a page upstream. Credentials are not part of it: a project has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub endpoint: Arc<str>,
    /// The target's key (`Target::key`: its project id).
    pub target: Arc<str>,
    pub pushdown: Arc<Pushdown>,
    pub offset: u64,
    pub limit: u32,
}

/// Something the cache keeps, and when it was fetched (what freshness is measured by).
pub struct Fresh<V> {
    pub value: V,
    pub fetched_at: Instant,
}

impl<V> std::ops::Deref for Fresh<V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.value
    }
}

/// A page as the cache keeps it: encoded for the wire (see `wire::EncodedPage`).
pub type CachedPage = Fresh<EncodedPage>;

/// What identifies a project's instance list upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstancesKey {
    pub endpoint: Arc<str>,
    /// The target's key (`Target::key`: its project id).
    pub target: Arc<str>,
}

/// Where a page came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Upstream,
    Cache,
}

#[derive(Clone)]
pub struct PageCache {
    pages: Cache<PageKey, Arc<CachedPage>>,
    /// Instance lists, whole: a few hundred bytes an instance, an eighth of the byte bound.
    instances: Cache<InstancesKey, Arc<Fresh<InstanceList>>>,
    metrics: Option<Metrics>,
    /// The second level, in Redis, shared with the other replicas (`[shared]`).
    shared: Option<Arc<Shared>>,
    ttl: Duration,
}

impl PageCache {
    pub fn new(ttl: Duration, max_bytes: u64) -> Self {
        let pages = Cache::builder()
            .time_to_live(ttl)
            .max_capacity(max_bytes)
            .weigher(|key: &PageKey, page: &Arc<CachedPage>| {
                u32::try_from(weight(key, page)).unwrap_or(u32::MAX)
            })
            .build();
        let instances = Cache::builder()
            .time_to_live(ttl)
            .max_capacity((max_bytes / 8).max(1))
            .weigher(|key: &InstancesKey, list: &Arc<Fresh<InstanceList>>| {
                let held: usize = list
                    .instances
                    .iter()
                    .map(|i| 72 + i.id.len() + i.name.len() + i.status.len())
                    .sum();
                u32::try_from(128 + key.endpoint.len() + key.target.len() + held)
                    .unwrap_or(u32::MAX)
            })
            .build();
        PageCache {
            pages,
            instances,
            metrics: None,
            shared: None,
            ttl,
        }
    }

    /// The state shared with the other replicas, if any.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Pages are looked for in `shared` (Redis) after this replica's own cache, and stored
    /// there when fetched.
    pub fn with_shared(mut self, shared: Arc<Shared>) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The page for `key`, from the cache when it is younger than `max_age`, else from a
    /// future that `fetch` makes.
    pub async fn get_or_fetch<F>(
        &self,
        key: PageKey,
        max_age: Option<Duration>,
        fetch: impl FnMut() -> F,
    ) -> Result<(Arc<CachedPage>, Origin), Arc<DdmError>>
    where
        F: Future<Output = Result<EncodedPage, DdmError>>,
    {
        let shared = self.shared.as_deref();
        let got = levels(&self.pages, shared, page_key, key, max_age, self.ttl, fetch).await;
        self.count(&got);
        got
    }

    /// A project's instance list, as `get_or_fetch` does for pages.
    pub async fn instances_or_fetch<F>(
        &self,
        key: InstancesKey,
        max_age: Option<Duration>,
        fetch: impl FnMut() -> F,
    ) -> Result<(Arc<Fresh<InstanceList>>, Origin), Arc<DdmError>>
    where
        F: Future<Output = Result<InstanceList, DdmError>>,
    {
        let shared = self.shared.as_deref();
        let got = levels(
            &self.instances,
            shared,
            instances_key,
            key,
            max_age,
            self.ttl,
            fetch,
        )
        .await;
        self.count(&got);
        got
    }

    fn count<V>(&self, got: &Result<(V, Origin), Arc<DdmError>>) {
        if let (Some(metrics), Ok((_, origin))) = (&self.metrics, got) {
            match origin {
                Origin::Upstream => metrics.cache_miss(),
                Origin::Cache => metrics.cache_hit(),
            }
        }
    }

    /// The cache's bound, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.pages.policy().max_capacity().unwrap_or(u64::MAX)
    }

    /// Bytes held, as moka last counted them (for the metrics, at each scrape).
    pub fn weighted_size(&self) -> u64 {
        self.pages.weighted_size()
    }

    /// Entries and bytes held now (pending maintenance may lag a little).
    pub async fn usage(&self) -> (u64, u64) {
        self.pages.run_pending_tasks().await;
        (self.pages.entry_count(), self.pages.weighted_size())
    }
}

/// A value fetched now, from the upstream.
///
/// The peak memory of many targets depends on these futures' sizes through glibc's heap
/// (measured while page reads were inline in target reads, 100,000 targets: 196 MiB as it is;
/// 340–450 MiB with this wrapper made a combinator or left out, whose futures are 40 % smaller).
/// Page reads are boxed where awaited now (`inventory/read.rs`); change it only with the
/// benchmark at hand.
async fn fetched_now<V>(
    fetch: impl Future<Output = Result<V, DdmError>>,
) -> Result<(Fresh<V>, Origin), DdmError> {
    let value = fetch.await?;
    Ok((
        Fresh {
            value,
            fetched_at: Instant::now(),
        },
        Origin::Upstream,
    ))
}

/// From this replica's cache; else, with `[shared]`, from Redis (`name` of the key there): what
/// another replica fetched, within the same freshness (at most the TTL), is taken as fetched
/// then; else fetched.
async fn levels<K, V, F>(
    cache: &Cache<K, Arc<Fresh<V>>>,
    shared: Option<&Shared>,
    name: fn(&K) -> String,
    key: K,
    max_age: Option<Duration>,
    ttl: Duration,
    mut fetch: impl FnMut() -> F,
) -> Result<(Arc<Fresh<V>>, Origin), Arc<DdmError>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Stored + Send + Sync + 'static,
    F: Future<Output = Result<V, DdmError>>,
{
    let Some(shared) = shared else {
        return fresh_or_fetch(cache, key, max_age, || fetched_now(fetch())).await;
    };
    let name = name(&key);
    let max_age = max_age.unwrap_or(ttl).min(ttl);
    let second_level = || {
        let (name, fetch) = (&name, fetch());
        async move {
            let (value, age, origin) = shared.stored_or_fetch(name, max_age, ttl, || fetch).await?;
            let fetched_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            Ok((Fresh { value, fetched_at }, origin))
        }
    };
    // Boxed: the Redis round trips' futures would double the size of every read, with Redis
    // or without.
    Box::pin(fresh_or_fetch(cache, key, Some(max_age), second_level)).await
}

/// The value for `key`, from `cache` when it is younger than `max_age`, else from a future
/// that `fetch` makes (with where the value came from); concurrent misses share one fetch. A
/// `max_age` of zero neither looks nor shares: its fetch replaces the cached value when done.
///
/// A caller that waited on another caller's fetch (a shared miss) and got that caller's
/// `DeadlineExceeded` fetches for itself: that deadline was not its own.
async fn fresh_or_fetch<K, V, F>(
    cache: &Cache<K, Arc<Fresh<V>>>,
    key: K,
    max_age: Option<Duration>,
    mut fetch: impl FnMut() -> F,
) -> Result<(Arc<Fresh<V>>, Origin), Arc<DdmError>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    F: Future<Output = Result<(Fresh<V>, Origin), DdmError>>,
{
    if max_age == Some(Duration::ZERO) {
        // Past the cache (no lookup, no shared miss to wait on): fetched for this caller, then
        // kept for the others.
        let (value, origin) = fetch().await.map_err(Arc::new)?;
        let value = Arc::new(value);
        cache.insert(key, Arc::clone(&value)).await;
        return Ok((value, origin));
    }
    if let Some(max_age) = max_age
        && let Some(cached) = cache.get(&key).await
        && cached.fetched_at.elapsed() > max_age
    {
        cache.invalidate(&key).await;
    }
    loop {
        // Only the caller whose fetch runs sees `fetched` set; waiters on a shared miss do not.
        let mut fetched = None;
        let loaded = cache
            .try_get_with(key.clone(), async {
                let (value, origin) = fetch()
                    .await
                    .inspect_err(|_| fetched = Some(Origin::Upstream))?;
                fetched = Some(origin);
                Ok(Arc::new(value))
            })
            .await;
        let origin = fetched.unwrap_or(Origin::Cache);
        match loaded {
            Ok(value) => return Ok((value, origin)),
            Err(e) if fetched.is_none() && matches!(*e, DdmError::DeadlineExceeded) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Approximate heap bytes of a cached page, its key and the cache's bookkeeping.
fn weight(key: &PageKey, page: &CachedPage) -> usize {
    std::mem::size_of::<CachedPage>()
        + std::mem::size_of::<PageKey>()
        + 64 // moka's entry
        + key.endpoint.len()
        + key.target.len()
        + page.heap_size()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddm::model::BackupInfo;
    use crate::wire::PageBuilder;

    fn page(n: usize) -> EncodedPage {
        let mut builder = PageBuilder::new(
            crate::wire::Owner {
                project_id: "p",
                project_name: "",
                region: "r",
                account_id: "",
                account_name: "",
            },
            n,
        );
        for i in 0..n {
            let info = BackupInfo {
                id: Some(format!("{i:032x}br09").into()),
                name: Some("x".repeat(40).into()),
                ..Default::default()
            };
            builder.push(&info).unwrap();
        }
        builder.finish(n as u64, n)
    }

    fn key(offset: u64) -> PageKey {
        PageKey {
            endpoint: "http://e".into(),
            target: "p".into(),
            pushdown: Arc::default(),
            offset,
            limit: 128,
        }
    }

    #[tokio::test]
    async fn the_byte_bound_is_honoured() {
        let cache = PageCache::new(Duration::from_secs(60), 256 << 10);
        for i in 0..200 {
            let (_, origin) = cache
                .get_or_fetch(key(i * 128), None, || async { Ok(page(128)) })
                .await
                .unwrap();
            assert_eq!(origin, Origin::Upstream);
        }
        let (entries, bytes) = cache.usage().await;
        assert!(bytes <= 256 << 10, "{bytes} bytes in {entries} entries");
        assert!(entries > 0 && entries < 200);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_is_not_failed_by_another_callers_deadline() {
        use futures_util::FutureExt as _;
        let cache = PageCache::new(Duration::from_secs(60), 1 << 20);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut started_tx = Some(started_tx);
        let mut released = Some(released);
        // The first caller's fetch runs until its caller's deadline.
        let first = cache.get_or_fetch(key(0), None, || {
            let (started_tx, released) = (started_tx.take(), released.take());
            async move {
                let _ = started_tx.unwrap().send(());
                let _ = released.unwrap().await;
                Err(DdmError::DeadlineExceeded)
            }
        });
        let second = async {
            started.await.unwrap();
            let second = cache.get_or_fetch(key(0), None, || async { Ok(page(3)) });
            tokio::pin!(second);
            // It waits on the first caller's fetch…
            assert!((&mut second).now_or_never().is_none());
            // …which then runs out of its caller's time.
            release.send(()).unwrap();
            second.await
        };
        let (first, second) = tokio::join!(first, second);
        assert!(matches!(*first.err().unwrap(), DdmError::DeadlineExceeded));
        let (page, origin) = second.expect("the second caller fetched the page itself");
        assert_eq!((origin, page.len()), (Origin::Upstream, 3));
    }

    /// The page at `key(0)`, as a caller asking with `max_age` is served it; fetched as a page of
    /// `len` backups on a miss.
    async fn read(
        cache: &PageCache,
        max_age: Option<Duration>,
        len: usize,
    ) -> (Arc<CachedPage>, Origin) {
        cache
            .get_or_fetch(key(0), max_age, || async move { Ok(page(len)) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn pages_are_served_until_too_old_for_the_caller() {
        let cache = PageCache::new(Duration::from_secs(60), 1 << 20);
        read(&cache, None, 1).await;
        let (p, origin) = read(&cache, None, 2).await;
        assert_eq!((origin, p.len()), (Origin::Cache, 1));
        let (p, origin) = read(&cache, Some(Duration::ZERO), 2).await;
        assert_eq!((origin, p.len()), (Origin::Upstream, 2));
        let (p, _) = read(&cache, None, 1).await;
        assert_eq!(p.encoded_at(1).len(), p.encoded.len() - p.ends[0] as usize);
    }

    #[tokio::test]
    async fn a_read_at_max_age_zero_leaves_the_cached_page_to_others_until_its_own_is_in() {
        let cache = PageCache::new(Duration::from_secs(60), 1 << 20);
        read(&cache, None, 1).await;
        let (started, fetching) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut once = Some((started, released));
        let fresh = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_fetch(key(0), Some(Duration::ZERO), move || {
                        let (started, released) = once.take().unwrap();
                        async move {
                            started.send(()).unwrap();
                            released.await.unwrap();
                            Ok(page(2))
                        }
                    })
                    .await
            }
        });
        fetching.await.unwrap();
        // A guard against a hang (waiting on the fresh read), not a timing assertion.
        let (p, origin) = tokio::time::timeout(Duration::from_secs(30), read(&cache, None, 3))
            .await
            .expect("a cached page is served while a fresh read runs");
        assert_eq!((origin, p.len()), (Origin::Cache, 1));
        release.send(()).unwrap();
        let (p, origin) = fresh.await.unwrap().unwrap();
        assert_eq!((origin, p.len()), (Origin::Upstream, 2));
        let (p, origin) = read(&cache, None, 3).await;
        assert_eq!((origin, p.len()), (Origin::Cache, 2));
    }
}
