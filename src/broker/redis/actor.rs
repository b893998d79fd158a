//! The actor behind the single-Redis broker: it owns the subscribing
//! connection and every topic this replica holds.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Target;
use crate::broker::engine::{Backoff, BrokerError, Command, Spawn, within};
use crate::broker::history::{self, Library, LoadError};
use crate::broker::{Deliver, Delivery};
use crate::metrics::Metrics;

/// The live subscribing connection.
struct Link {
    sink: PubSubSink,
    /// Tells a stale "connection lost" report from the current one.
    generation: u64,
    /// Reads the message stream; aborted when the link is dropped.
    reader: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Actor {
    /// Where the current link goes (or the next reconnect).
    target: Target,
    /// New settings still to connect to; the current link serves meanwhile.
    next: Option<Target>,
    deliver: Arc<dyn Deliver>,
    /// Every topic this replica must hold, resubscribed on each reconnect.
    topics: HashSet<String>,
    link: Option<Link>,
    ready: watch::Sender<bool>,
    generation: u64,
    /// Readers report the generation whose stream ended.
    lost_tx: mpsc::UnboundedSender<u64>,
    lost_rx: mpsc::UnboundedReceiver<u64>,
    /// Counts reconnects (`topicgate_redis_reconnects_total`).
    metrics: Arc<Metrics>,
    /// Loaded on every new link: a restarted Redis may have lost it.
    library: Arc<Library>,
}

/// Runs the actor on `target` until the broker handle is dropped.
pub(super) async fn run(target: Target, spawn: Spawn) {
    let (lost_tx, lost_rx) = mpsc::unbounded_channel();
    let actor = Actor {
        target,
        next: None,
        deliver: spawn.deliver,
        topics: HashSet::new(),
        link: None,
        ready: spawn.ready,
        generation: 0,
        lost_tx,
        lost_rx,
        metrics: spawn.metrics,
        library: spawn.library,
    };
    actor.run(spawn.inbox).await;
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = Backoff::new();
        let mut next_attempt = Instant::now();
        let mut was_connected = false;
        loop {
            let wants_link = self.link.is_none() || self.next.is_some();
            if wants_link && Instant::now() >= next_attempt {
                let moving = self.next.is_some();
                match self.establish().await {
                    Ok(()) => {
                        // The library before readiness: a ready broker
                        // records. Ready before the log line, which tests
                        // and operators take as the sign of a usable broker.
                        self.load_library().await;
                        self.ready.send_replace(true);
                        let (topics, addr) = (self.topics.len(), self.target.addr.as_str());
                        if moving {
                            tracing::info!(topics, addr = %addr, "moved to the new redis and resubscribed");
                        } else if was_connected {
                            self.metrics.redis_reconnects.inc();
                            tracing::info!(topics, addr = %addr, "redis reconnected and resubscribed");
                        } else {
                            tracing::info!(addr = %addr, "redis connected");
                        }
                        was_connected = true;
                        backoff.reset();
                    }
                    Err(err) => {
                        let target = self.next.as_ref().unwrap_or(&self.target);
                        let delay = backoff.delay(target.reconnect_max);
                        tracing::warn!(
                            addr = %target.addr,
                            error = %err,
                            hint = err.hint(),
                            retry_in_ms = delay.as_millis() as u64,
                            "redis unavailable"
                        );
                        next_attempt = Instant::now() + delay;
                    }
                }
                continue;
            }
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(Command::Reconfigure(settings)) => match Target::new(&settings) {
                        // Same server, same channels: a second connection
                        // would only deliver what arrives meanwhile twice.
                        Ok(target) if self.target.same_link(&target) => {
                            self.target.reconnect_max = target.reconnect_max;
                        }
                        Ok(target) => {
                            tracing::info!(addr = target.addr, "redis settings changed; connecting to the new redis");
                            self.next = Some(target);
                            backoff.reset();
                            next_attempt = Instant::now();
                        }
                        Err(err) => tracing::error!(error = %err, "new redis settings unusable; keeping the current connection"),
                    },
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                Some(generation) = self.lost_rx.recv() => {
                    if self.link.as_ref().is_some_and(|l| l.generation == generation) {
                        tracing::warn!(addr = self.target.addr, "redis connection lost; reconnecting");
                        self.drop_link();
                        next_attempt = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(next_attempt), if wants_link => {}
            }
        }
    }

    fn drop_link(&mut self) {
        self.link = None;
        self.ready.send_replace(false);
    }

    /// Connects to the pending target (or the current one), subscribes every
    /// live topic there, and only then replaces the old link.
    async fn establish(&mut self) -> Result<(), BrokerError> {
        let target = self.next.as_ref().unwrap_or(&self.target);
        let addr = target.addr.as_str();
        let pubsub = within(
            target.client.get_async_pubsub(),
            addr,
            "the connection attempt",
        )
        .await?;
        let (mut sink, mut stream) = pubsub.split();
        if !self.topics.is_empty() {
            let channels: Vec<String> = self.topics.iter().map(|t| target.channel(t)).collect();
            within(sink.subscribe(channels), addr, "SUBSCRIBE").await?;
        }
        if let Some(next) = self.next.take() {
            self.target = next;
        }
        // The old link goes before the new reader starts: messages that
        // arrive meanwhile wait in the new stream, and none is delivered twice.
        self.link = None;
        self.generation += 1;
        let generation = self.generation;
        let (prefix, deliver, lost) = (
            self.target.prefix.clone(),
            self.deliver.clone(),
            self.lost_tx.clone(),
        );
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                if let Some(topic) = msg.get_channel_name().strip_prefix(&*prefix) {
                    let (position, payload) = history::decode(msg.get_payload_bytes());
                    deliver.deliver(Delivery {
                        topic,
                        payload,
                        position: position.as_ref(),
                    });
                }
            }
            let _ = lost.send(generation);
        });
        self.link = Some(Link {
            sink,
            generation,
            reader,
        });
        Ok(())
    }

    /// `FUNCTION LOAD REPLACE` on the Redis just connected to. A refusal
    /// (Redis older than 7, an ACL) is logged once per link and leaves
    /// history unavailable; an unanswered load leaves it to the publisher,
    /// which loads the library where a call finds it missing.
    async fn load_library(&self) {
        let addr = self.target.addr.as_str();
        let loaded = match within(
            self.target.client.get_multiplexed_async_connection(),
            addr,
            "the connection attempt",
        )
        .await
        {
            Ok(mut connection) => self.library.load(&mut connection, addr).await,
            Err(err) => Err(LoadError::Unreachable(err)),
        };
        match loaded {
            Ok(()) => self.library.set_loaded(true),
            Err(LoadError::Refused(err)) => {
                self.library.set_loaded(false);
                tracing::warn!(error = %err, addr = %addr, "history unavailable: the topicgate function library cannot be loaded");
            }
            Err(LoadError::Unreachable(err)) => {
                tracing::warn!(error = %err, addr = %addr, "the topicgate function library was not loaded");
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe(topic, reply) => {
                let channel = self.target.channel(&topic);
                let addr = self.target.addr.as_str();
                let result = match self.link.as_mut() {
                    None => Err(BrokerError::not_connected(addr)),
                    Some(link) => within(link.sink.subscribe(&channel), addr, "SUBSCRIBE").await,
                };
                match &result {
                    Ok(()) => {
                        self.topics.insert(topic);
                    }
                    Err(err) if self.link.is_some() => {
                        tracing::warn!(error = %err, "subscribe failed; reconnecting");
                        self.drop_link();
                    }
                    Err(_) => {}
                }
                let _ = reply.send(result);
            }
            Command::Unsubscribe(topic) => {
                self.topics.remove(&topic);
                let channel = self.target.channel(&topic);
                if let Some(link) = self.link.as_mut() {
                    // A failure here means the link is dying; the reader reports it.
                    let _ = within(
                        link.sink.unsubscribe(&channel),
                        &self.target.addr,
                        "UNSUBSCRIBE",
                    )
                    .await;
                }
            }
            Command::Reconfigure(_) => {}
        }
    }
}
