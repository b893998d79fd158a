//! In-process broker: the full protocol for one process, without Redis.
//!
//! Every publish is recorded in its topic's capped history (the newest
//! [`DEFAULT_HISTORY_SIZE`] messages, kept [`DEFAULT_HISTORY_TTL`] after
//! the topic's last publish) and delivered with its position, so the
//! recovery rules of `docs/PROTOCOL.md` hold without Redis too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, ready};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Broker, BrokerError, Deliver, Delivery, HistoryStatus, Position, Range, Recorded};
use crate::sync::lock;

/// Messages kept per topic unless told otherwise (`history.size`).
pub const DEFAULT_HISTORY_SIZE: usize = 100;
/// How long a topic's history outlives its last publish (`history.ttl_secs`).
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);

pub struct MemoryBroker {
    /// The hub registry; publishing calls it directly, in offset order.
    target: Arc<dyn Deliver>,
    /// Always `true`: there is nothing to lose a connection to.
    ready: watch::Sender<bool>,
    /// Every topic's recorded messages. Held while a publish delivers, so
    /// that deliveries reach the registry in offset order; never held
    /// across an await.
    histories: Mutex<Histories>,
}

impl MemoryBroker {
    /// A broker keeping the default history.
    pub fn new(target: Arc<dyn Deliver>) -> Self {
        Self::with_history(target, DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL)
    }

    /// A broker keeping the newest `size` messages per topic (0: none),
    /// each topic's for `ttl` after its last publish.
    pub fn with_history(target: Arc<dyn Deliver>, size: usize, ttl: Duration) -> Self {
        Self {
            target,
            ready: watch::Sender::new(true),
            histories: Mutex::new(Histories {
                topics: HashMap::new(),
                size,
                ttl,
                next_sweep: Instant::now() + ttl,
            }),
        }
    }
}

/// The recorded messages of every topic published lately.
struct Histories {
    topics: HashMap<String, Log>,
    /// Messages kept per topic; 0 records nothing.
    size: usize,
    /// How long a topic's log outlives its last publish.
    ttl: Duration,
    /// When expired logs are next dropped, so topics published once do not
    /// accumulate.
    next_sweep: Instant,
}

/// One life of one topic's history.
struct Log {
    epoch: Arc<str>,
    /// Offset of the newest message; offsets start at 1.
    last: u64,
    /// The newest messages, oldest first.
    messages: VecDeque<Recorded>,
    /// When this life ends unless the topic is published again.
    expires: Instant,
}

impl Log {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            last: 0,
            messages: VecDeque::new(),
            expires: Instant::now(),
        }
    }

    fn position(&self) -> Position {
        Position {
            offset: self.last,
            epoch: self.epoch.clone(),
        }
    }
}

impl Histories {
    /// Records `payload` as `topic`'s next message; its position.
    fn record(&mut self, topic: &str, payload: Bytes, now: Instant) -> Position {
        if now >= self.next_sweep {
            self.topics.retain(|_, log| log.expires > now);
            self.next_sweep = now + self.ttl;
        }
        let log = match self.topics.get_mut(topic) {
            Some(log) if log.expires > now => log,
            _ => self
                .topics
                .entry(topic.to_string())
                .insert_entry(Log::new())
                .into_mut(),
        };
        log.last += 1;
        log.messages.push_back(Recorded {
            offset: log.last,
            payload,
        });
        while log.messages.len() > self.size {
            log.messages.pop_front();
        }
        log.expires = now + self.ttl;
        log.position()
    }

    fn range(&self, topic: &str, since: Option<&Position>, now: Instant) -> Range {
        let Some(log) = self.topics.get(topic).filter(|log| log.expires > now) else {
            return Range::none();
        };
        let messages = match since {
            Some(since) if since.epoch == log.epoch => log
                .messages
                .iter()
                .filter(|message| message.offset > since.offset)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        Range {
            last: Some(log.position()),
            messages,
        }
    }
}

/// A short random name for a new history life.
fn new_epoch() -> Arc<str> {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let epoch: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(char::from)
        .collect();
    epoch.into()
}

impl Broker for MemoryBroker {
    fn subscribe(&self, _topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        // The registry already knows the topic; nothing to wait for.
        ready(Ok(())).boxed()
    }

    fn unsubscribe(&self, _topic: &str) {}

    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Option<Position>, BrokerError>> {
        let mut histories = lock(&self.histories);
        if histories.size == 0 {
            drop(histories);
            self.target.deliver(Delivery::new(topic, &payload));
            return ready(Ok(None)).boxed();
        }
        let position = histories.record(topic, payload.clone(), Instant::now());
        self.target.deliver(Delivery {
            topic,
            payload: &payload,
            position: Some(&position),
        });
        ready(Ok(Some(position))).boxed()
    }

    fn history(
        &self,
        topic: &str,
        since: Option<Position>,
    ) -> BoxFuture<'static, Result<Range, BrokerError>> {
        let range = lock(&self.histories).range(topic, since.as_ref(), Instant::now());
        ready(Ok(range)).boxed()
    }

    fn reset(&self, topic: &str, epoch: Arc<str>) -> BoxFuture<'static, Result<(), BrokerError>> {
        // This history never loses what it delivered, so the hub has no
        // cause to ask; the contract holds all the same.
        if let Some(log) = lock(&self.histories).topics.get_mut(topic)
            && log.epoch == epoch
        {
            *log = Log {
                expires: log.expires,
                ..Log::new()
            };
        }
        ready(Ok(())).boxed()
    }

    fn reconfigure(&self, config: &crate::config::Config) {
        let mut histories = lock(&self.histories);
        histories.size = config.history.size;
        histories.ttl = config.history.ttl;
    }

    fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    fn live(&self, _topic: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn history_status(&self) -> HistoryStatus {
        if lock(&self.histories).size == 0 {
            HistoryStatus::Off
        } else {
            HistoryStatus::Available
        }
    }
}

#[cfg(test)]
mod tests;
