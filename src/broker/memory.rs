//! In-process broker: the full protocol for one process, without Redis.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::watch;

use super::{Broker, BrokerError, Deliver};

pub struct MemoryBroker {
    /// The hub registry; publishing calls it directly, in publish order.
    target: Arc<dyn Deliver>,
    /// Always `true`: there is nothing to lose a connection to.
    ready: watch::Sender<bool>,
}

impl MemoryBroker {
    pub fn new(target: Arc<dyn Deliver>) -> Self {
        Self {
            target,
            ready: watch::Sender::new(true),
        }
    }
}

impl Broker for MemoryBroker {
    fn subscribe(&self, _topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        // The registry already knows the topic; nothing to wait for.
        futures_util::future::ready(Ok(())).boxed()
    }

    fn unsubscribe(&self, _topic: &str) {}

    fn publish(&self, topic: &str, payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.target.deliver(topic, &payload);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
