//! The page cache: one upstream page per entry, bounded in bytes, with a TTL and caller-chosen
//! freshness. Concurrent misses for the same page share one fetch (moka's `try_get_with`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tokio::time::Instant;

use crate::ddm::{DdmError, DecodedPage, Pushdown};

/// What identifies a page upstream. Credentials are not part of it: a project has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub endpoint: Arc<str>,
    pub project_id: Arc<str>,
    pub pushdown: Arc<Pushdown>,
    pub offset: u64,
    pub limit: u32,
}

pub struct CachedPage {
    pub page: DecodedPage,
    pub fetched_at: Instant,
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
                u32::try_from(weight(key, &page.page)).unwrap_or(u32::MAX)
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
                Ok(Arc::new(CachedPage {
                    page,
                    fetched_at: Instant::now(),
                }))
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
fn weight(key: &PageKey, page: &DecodedPage) -> usize {
    let strings: usize = page
        .backups
        .iter()
        .map(|b| {
            b.id.len()
                + b.name.len()
                + b.description.len()
                + b.status.len()
                + b.instance_id.len()
                + b.instance_name.len()
                + b.instance_status.len()
                + b.project_id.len()
                + b.region.len()
                + b.backup_type_name.len()
        })
        .sum();
    let skipped: usize = page.skipped.iter().map(String::len).sum();
    std::mem::size_of::<CachedPage>()
        + key.endpoint.len()
        + key.project_id.len()
        + page.backups.len() * std::mem::size_of::<crate::pb::Backup>()
        + strings
        + skipped
}
