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
    subscription: watch::Sender<Subscription>,
    listener: OnceLock<AbortHandle>,
}

/// Whether the news reach this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    Subscribed,
    /// Not yet, or Redis is away: tried again after `retry_after`.
    Away,
    /// Redis refuses the channel (an ACL without it); tried again after `retry_after`.
    Refused,
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
            subscription: watch::Sender::new(Subscription::Away),
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
    pub(super) fn subscription(&self) -> watch::Receiver<Subscription> {
        self.subscription.subscribe()
    }

    pub(super) fn is_subscribed(&self) -> bool {
        *self.subscription.borrow() == Subscription::Subscribed
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
        let state = match subscribed {
            Ok(Ok(pubsub)) => {
                said = false;
                if !set(&news, Subscription::Subscribed) {
                    return;
                }
                // Ends when the connection does (Redis went away).
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Some(news) = news.upgrade() else { return };
                    if let Ok(key) = message.get_payload::<String>() {
                        news.tell(&key);
                    }
                }
                Subscription::Away
            }
            Ok(Err(e)) if !is_unreachable(&e) => {
                if !said {
                    said = true;
                    tracing::warn!(
                        error = e.code().unwrap_or(e.category()),
                        channel = channel.name,
                        "Redis refuses this replica the news of other replicas' fetches (its ACL?); waiting for another's fetch, it looks for it every few milliseconds instead"
                    );
                }
                Subscription::Refused
            }
            // Redis away: logged by the operations that meet it.
            Ok(Err(_)) | Err(_) => Subscription::Away,
        };
        if !set(&news, state) {
            return;
        }
        tokio::time::sleep(channel.retry_after.max(RESUBSCRIBE_AFTER_AT_LEAST)).await;
    }
}

/// Records the subscription's state; false once the news are gone.
fn set(news: &Weak<News>, state: Subscription) -> bool {
    match news.upgrade() {
        Some(news) => {
            news.subscription.send_replace(state);
            true
        }
        None => false,
    }
}

/// Redis away (logged by the operations that meet it), not Redis refusing.
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped()
}
