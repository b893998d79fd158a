//! The broker seam: how replicas share messages.
//!
//! The hub calls [`Broker::subscribe`] for a topic's first local subscriber
//! and [`Broker::unsubscribe`] for its last; the broker hands every message
//! it receives to a [`Deliver`] target (the hub's topic registry) as a
//! [`Delivery`], which carries the message's [`Position`] when it was
//! recorded in the topic's history. [`Broker::history`] reads a topic's
//! recorded range, for recovery on subscribe.
//!
//! Engines: [`redis`] (one Pub/Sub connection per replica), [`cluster`]
//! (sharded Pub/Sub on a Redis Cluster, one connection per master) and
//! [`memory`] (one process, no Redis). The two Redis engines share their
//! handle, command type, errors and connection helpers (`engine`) and
//! differ only in their topology. A new engine is one module implementing
//! the trait. The Redis engines record through the Redis Function library
//! `topicgate` (`history`), which every replica loads and any publisher,
//! `redis-cli` included, may call.

pub mod cluster;
mod engine;
mod history;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use engine::BrokerError;
pub use history::{HistorySettings, HistoryStatus, Position, Range, Recorded};

use crate::config::{BrokerKind, Config};
use crate::metrics::Metrics;

/// One message as a broker hands it to the hub.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub topic: &'a str,
    /// The payload exactly as published.
    pub payload: &'a [u8],
    /// Where the message sits in the topic's history; `None` for a message
    /// that was not recorded (plain `PUBLISH`).
    pub position: Option<&'a Position>,
}

impl<'a> Delivery<'a> {
    /// A message that was not recorded.
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Self {
            topic,
            payload,
            position: None,
        }
    }
}

/// Where a broker hands incoming messages. Must not block: it runs on the
/// broker's receive path, so one slow call would delay every topic.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, delivery: Delivery<'_>);
}

pub trait Broker: Send + Sync + 'static {
    /// Resolves once messages published to `topic` from now on will arrive.
    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Stops receiving `topic`. Ordered after every earlier call.
    fn unsubscribe(&self, topic: &str);
    /// Publishes `payload` to every replica's subscribers of `topic`; the
    /// message's position when the broker recorded it.
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Option<Position>, BrokerError>>;
    /// `topic`'s recorded range: its last position and, when `since` is in
    /// the current epoch, every message still recorded after it.
    fn history(
        &self,
        topic: &str,
        since: Option<Position>,
    ) -> BoxFuture<'static, Result<Range, BrokerError>>;
    /// Starts a new life of `topic`'s history, offsets from 1 again, if
    /// `epoch` is still its current epoch: this replica delivered messages
    /// of that epoch which the history no longer holds (a failover to a
    /// Redis replica that missed them), and their offsets must not be
    /// handed out again under it. Several replicas may ask; one resets.
    fn reset(&self, topic: &str, epoch: Arc<str>) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Applies a new config's broker settings, if they changed. Live
    /// subscriptions must survive: connect anew, resubscribe, then let go.
    fn reconfigure(&self, _config: &Config) {}
    /// `true` while the broker can subscribe and publish (`/readyz`).
    fn ready(&self) -> watch::Receiver<bool>;
    /// `Ok` when `topic`, which the hub holds, is subscribed right now, so
    /// that a new local subscriber can be confirmed at once; else why not.
    fn live(&self, topic: &str) -> Result<(), BrokerError>;
    /// `broker.kind` as configured, for `/readyz` and logs.
    fn kind(&self) -> &'static str;
    /// Whether publishes through this broker are recorded (`/readyz`).
    fn history_status(&self) -> HistoryStatus;
}

/// Starts the broker `config.broker` names, delivering into `target` and
/// recording as `history` says.
pub fn start(
    config: &Config,
    target: Arc<dyn Deliver>,
    metrics: Arc<Metrics>,
    history: HistorySettings,
) -> Arc<dyn Broker> {
    match config.broker {
        BrokerKind::Memory => Arc::new(memory::MemoryBroker::with_history(
            target,
            history.size,
            history.ttl,
        )),
        BrokerKind::Redis => Arc::new(redis::start(config.redis.clone(), target, metrics, history)),
        BrokerKind::RedisCluster => Arc::new(cluster::start(
            config.redis.clone(),
            target,
            metrics,
            history,
        )),
    }
}
