//! News of fetches that ended, so that a replica waiting for another's fetch is woken at once
//! instead of looking in Redis again and again. The replica that held a lease publishes the
//! value's key on one channel (`{key_prefix}fetched`) as it gives the lease up, whether the
//! value was stored or the fetch failed; every replica listens on that channel and wakes the
//! waiters of that key. Pub/sub keeps nothing for a replica that is not subscribed at the time,
//! so a waiter still looks by itself now and then, and as often as before while this replica
//! is not subscribed (Redis away, or not yet connected).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

/// Waiters by the key they wait for, and whether this replica is subscribed.
pub(super) struct News {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    subscribed: watch::Sender<bool>,
    listener: OnceLock<AbortHandle>,
}

/// How to listen: the connection's settings and the channel.
pub(super) struct Channel {
    pub client: redis::Client,
    pub name: String,
    /// Connecting and subscribing, at most.
    pub timeout: Duration,
    /// How long to wait before subscribing again after the subscription broke.
    pub retry_after: Duration,
}

/// Listening again at once after a failure would spin while Redis is away.
const RESUBSCRIBE_AFTER_AT_LEAST: Duration = Duration::from_millis(100);

impl News {
    pub(super) fn new() -> Self {
        News {
            waiters: Mutex::default(),
            subscribed: watch::Sender::new(false),
            listener: OnceLock::new(),
        }
    }

    /// Starts listening on `channel`, once (it needs a runtime, which `Shared::new` may not
    /// have); stops when the news are dropped.
    pub(super) fn listen(self: &Arc<Self>, channel: impl FnOnce() -> Channel) {
        self.listener
            .get_or_init(|| tokio::spawn(listen(channel(), Arc::downgrade(self))).abort_handle());
    }

    /// Whether news reach this replica now; watch it change.
    pub(super) fn subscribed(&self) -> watch::Receiver<bool> {
        self.subscribed.subscribe()
    }

    pub(super) fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    /// Interest in `key`, until the watch is dropped.
    pub(super) fn watch(self: &Arc<Self>, key: &str) -> Watch {
        let notify = Arc::clone(
            self.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.to_owned())
                .or_default(),
        );
        Watch {
            news: Arc::clone(self),
            key: key.to_owned(),
            notify,
        }
    }

    fn tell(&self, key: &str) {
        if let Some(notify) = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            notify.notify_waiters();
        }
    }
}

impl Drop for News {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

/// A waiter's interest in one key.
pub(super) struct Watch {
    news: Arc<News>,
    key: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// Woken by news of the key (`notified()`, enabled before looking, misses none).
    pub(super) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiters = self.news.waiters.lock().unwrap_or_else(|e| e.into_inner());
        // The map's and this one: no other waiter of the key is left.
        if Arc::strong_count(&self.notify) == 2 {
            waiters.remove(&self.key);
        }
    }
}

async fn listen(channel: Channel, news: Weak<News>) {
    // Whether a refusal was logged since the last subscription.
    let mut said = false;
    loop {
        let subscribed = tokio::time::timeout(channel.timeout, async {
            let mut pubsub = channel.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel.name).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Err(e)) = &subscribed
            && !said
            && !is_unreachable(e)
        {
            said = true;
            tracing::warn!(
                error = e.category(),
                channel = channel.name,
                "Redis refuses this replica the news of other replicas' fetches (its ACL?); waiting for another's fetch, it looks for it every few milliseconds instead"
            );
        }
        if let Ok(Ok(pubsub)) = subscribed {
            said = false;
            let mut messages = pubsub.into_on_message();
            match news.upgrade() {
                Some(news) => news.subscribed.send_replace(true),
                None => return,
            };
            // Ends when the connection does (Redis went away).
            while let Some(message) = messages.next().await {
                let Some(news) = news.upgrade() else { return };
                if let Ok(key) = message.get_payload::<String>() {
                    news.tell(&key);
                }
            }
            match news.upgrade() {
                Some(news) => news.subscribed.send_replace(false),
                None => return,
            };
        }
        // Redis' own troubles are logged by the operations that meet them.
        tokio::time::sleep(channel.retry_after.max(RESUBSCRIBE_AFTER_AT_LEAST)).await;
    }
}

/// Redis away (logged by the operations that meet it), not Redis refusing.
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped()
}
