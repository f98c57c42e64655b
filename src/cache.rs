//! The page cache: one upstream page per entry, bounded in bytes, with a TTL and caller-chosen
//! freshness. Concurrent misses for the same page share one fetch (moka's `try_get_with`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use prost_types::Timestamp;
use tokio::time::Instant;

use crate::ddm::{DdmError, DecodedPage, Pushdown};
use crate::wire::encode_backups;

/// What identifies a page upstream. Credentials are not part of it: a project has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub endpoint: Arc<str>,
    pub project_id: Arc<str>,
    pub pushdown: Arc<Pushdown>,
    pub offset: u64,
    pub limit: u32,
}

/// A page as the cache keeps it: its backups encoded for the wire, and what filters and
/// de-duplication need of each.
pub struct CachedPage {
    pub metas: Vec<BackupMeta>,
    /// The backups as `ListBackupsResponse` field 1 entries; backup i ends at `ends[i]`.
    pub encoded: Bytes,
    pub ends: Vec<u32>,
    pub total: u64,
    /// Items the upstream sent, readable or not (tells a short page).
    pub items: usize,
    /// Why unreadable items were skipped.
    pub skipped: Vec<String>,
    pub fetched_at: Instant,
}

/// What the gateway itself looks at in a backup.
pub struct BackupMeta {
    pub id: Box<str>,
    pub backup_type_name: Box<str>,
    pub status: Box<str>,
    pub created: Option<Timestamp>,
}

impl CachedPage {
    pub fn new(page: DecodedPage) -> Self {
        let (encoded, ends) = encode_backups(&page.backups);
        let metas = page
            .backups
            .into_iter()
            .map(|b| BackupMeta {
                id: b.id.into(),
                backup_type_name: b.backup_type_name.into(),
                status: b.status.into(),
                created: b.created,
            })
            .collect();
        CachedPage {
            metas,
            encoded,
            ends,
            total: page.total,
            items: page.items,
            skipped: page.skipped,
            fetched_at: Instant::now(),
        }
    }

    /// Backup `i`, encoded.
    pub fn encoded_at(&self, i: usize) -> Bytes {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.encoded.slice(start..self.ends[i] as usize)
    }
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
        PageCache { pages }
    }

    /// The page for `key`, from the cache when it is younger than `max_age`, else from `fetch`.
    pub async fn get_or_fetch<F>(
        &self,
        key: PageKey,
        max_age: Option<Duration>,
        fetch: F,
    ) -> Result<(Arc<CachedPage>, Origin), Arc<DdmError>>
    where
        F: Future<Output = Result<DecodedPage, DdmError>>,
    {
        if let Some(max_age) = max_age
            && let Some(cached) = self.pages.get(&key).await
            && cached.fetched_at.elapsed() > max_age
        {
            self.pages.invalidate(&key).await;
        }
        // Only the caller whose loader runs sees `fetched` set; waiters on a shared miss do not.
        let mut fetched = false;
        let page = self
            .pages
            .try_get_with(key, async {
                fetched = true;
                let page = fetch.await?;
                Ok(Arc::new(CachedPage::new(page)))
            })
            .await?;
        let origin = if fetched {
            Origin::Upstream
        } else {
            Origin::Cache
        };
        Ok((page, origin))
    }

    /// Entries and bytes held now (pending maintenance may lag a little).
    pub async fn usage(&self) -> (u64, u64) {
        self.pages.run_pending_tasks().await;
        (self.pages.entry_count(), self.pages.weighted_size())
    }
}

/// Approximate heap bytes of a cached page.
fn weight(key: &PageKey, page: &CachedPage) -> usize {
    let metas: usize = page
        .metas
        .iter()
        .map(|m| {
            std::mem::size_of::<BackupMeta>()
                + m.id.len()
                + m.backup_type_name.len()
                + m.status.len()
        })
        .sum();
    let skipped: usize = page.skipped.iter().map(String::len).sum();
    std::mem::size_of::<CachedPage>()
        + std::mem::size_of::<PageKey>()
        + key.endpoint.len()
        + key.project_id.len()
        + page.encoded.len()
        + page.ends.len() * 4
        + metas
        + skipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn page(n: usize) -> DecodedPage {
        let backups = (0..n)
            .map(|i| pb::Backup {
                id: format!("{i:032x}br09"),
                name: "x".repeat(40),
                ..Default::default()
            })
            .collect();
        DecodedPage {
            backups,
            total: n as u64,
            items: n,
            skipped: Vec::new(),
        }
    }

    fn key(offset: u64) -> PageKey {
        PageKey {
            endpoint: "http://e".into(),
            project_id: "p".into(),
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
                .get_or_fetch(key(i * 128), None, async { Ok(page(128)) })
                .await
                .unwrap();
            assert_eq!(origin, Origin::Upstream);
        }
        let (entries, bytes) = cache.usage().await;
        assert!(bytes <= 256 << 10, "{bytes} bytes in {entries} entries");
        assert!(entries > 0 && entries < 200);
    }

    #[tokio::test]
    async fn pages_are_served_until_too_old_for_the_caller() {
        let cache = PageCache::new(Duration::from_secs(60), 1 << 20);
        cache
            .get_or_fetch(key(0), None, async { Ok(page(1)) })
            .await
            .unwrap();
        let (p, origin) = cache
            .get_or_fetch(key(0), None, async { Ok(page(2)) })
            .await
            .unwrap();
        assert_eq!((origin, p.metas.len()), (Origin::Cache, 1));
        let (p, origin) = cache
            .get_or_fetch(key(0), Some(Duration::ZERO), async { Ok(page(2)) })
            .await
            .unwrap();
        assert_eq!((origin, p.metas.len()), (Origin::Upstream, 2));
        let (p, _) = cache
            .get_or_fetch(key(0), None, async { Ok(page(1)) })
            .await
            .unwrap();
        assert_eq!(p.encoded_at(1).len(), p.encoded.len() - p.ends[0] as usize);
    }
}
