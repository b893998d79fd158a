//! The broker seam (SPEC §3): how replicas share messages.
//!
//! The hub calls [`Broker::subscribe`] for a topic's first local subscriber
//! and [`Broker::unsubscribe`] for its last; the broker hands every message
//! it receives to a [`Deliver`] target (the hub's topic registry). Engines:
//! [`redis`] (one Pub/Sub connection per replica), [`cluster`] (sharded
//! Pub/Sub on a Redis Cluster, one connection per master) and [`memory`]
//! (one process, no Redis). A new engine is one module implementing the trait.

pub mod cluster;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::config::{BrokerKind, Config};
use crate::metrics::Metrics;

/// Where a broker hands incoming messages. Must not block: it runs on the
/// broker's receive path, so one slow call would delay every topic.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, topic: &str, payload: &[u8]);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot do this now; the client may retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

pub trait Broker: Send + Sync + 'static {
    /// Resolves once messages published to `topic` from now on will arrive.
    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Stops receiving `topic`. Ordered after every earlier call.
    fn unsubscribe(&self, topic: &str);
    /// Publishes `payload` to every replica's subscribers of `topic`.
    fn publish(&self, topic: &str, payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Applies a new config's broker settings, if they changed. Live
    /// subscriptions must survive: connect anew, resubscribe, then let go.
    fn reconfigure(&self, _config: &Config) {}
    /// `true` while the broker can subscribe and publish (`/readyz`).
    fn ready(&self) -> watch::Receiver<bool>;
    /// Whether `topic`, which the hub holds, is subscribed right now, so
    /// that a new local subscriber can be confirmed at once. By default the
    /// broker's readiness: one connection carries every topic.
    fn is_live(&self, _topic: &str) -> bool {
        *self.ready().borrow()
    }
    /// `broker.kind` as configured, for `/readyz` and logs.
    fn kind(&self) -> &'static str;
}

/// Starts the broker `config.broker` names, delivering into `target`.
pub fn start(config: &Config, target: Arc<dyn Deliver>, metrics: Arc<Metrics>) -> Arc<dyn Broker> {
    match config.broker {
        BrokerKind::Memory => Arc::new(memory::MemoryBroker::new(target)),
        BrokerKind::Redis => Arc::new(redis::RedisBroker::start(
            config.redis.clone(),
            target,
            metrics,
        )),
        BrokerKind::RedisCluster => Arc::new(cluster::ClusterBroker::start(
            config.redis.clone(),
            target,
            metrics,
        )),
    }
}
