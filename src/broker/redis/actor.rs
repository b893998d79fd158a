//! The actor behind the single-Redis broker: it owns the subscribing
//! connection and every topic this replica holds.

use std::collections::HashSet;
use std::sync::Arc;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use redis::aio::PubSubSink;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::Target;
use crate::broker::engine::{
    Backoff, BrokerError, Command, IO_TIMEOUT, Spawn, from_redis, until_silent, within,
};
use crate::broker::history::{self, Library, LoadError};
use crate::broker::{Deliver, Delivery};
use crate::metrics::Metrics;

/// Channels per SUBSCRIBE burst when a new link resubscribes every held
/// topic: each burst is one write and is confirmed within the I/O timeout.
const RESUBSCRIBE_BATCH: usize = 1000;

/// The live subscribing connection.
struct Link {
    sink: PubSubSink,
    /// Tells a stale "connection lost" report from the current one.
    generation: u64,
    /// Reads the message stream; aborted when the link is dropped.
    reader: JoinHandle<()>,
    /// Pings the connection (`probe`); aborted when the link is dropped.
    health: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
        self.health.abort();
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
    /// Readers report the generation whose stream ended, and health
    /// checks the generation that stopped answering.
    lost_tx: mpsc::UnboundedSender<u64>,
    lost_rx: mpsc::UnboundedReceiver<u64>,
    /// Counts reconnects (`topicgate_redis_reconnects_total`).
    metrics: Arc<Metrics>,
    /// Loaded on every new link: a restarted Redis may have lost it.
    library: Arc<Library>,
    /// `redis.health_check_secs`, read by the live link's health check at
    /// each ping so that a reload applies at once.
    health_check: watch::Sender<Duration>,
}

/// Runs the actor on `target` until the broker handle is dropped.
pub(super) async fn run(target: Target, spawn: Spawn) {
    let (lost_tx, lost_rx) = mpsc::unbounded_channel();
    let health_check = watch::Sender::new(target.health_check);
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
        health_check,
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
                            self.target.health_check = target.health_check;
                            self.health_check.send_replace(target.health_check);
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
                        tracing::warn!(addr = self.target.addr, "redis connection lost or silent; reconnecting");
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
        let (sink, mut stream) = pubsub.split();
        let channels: Vec<String> = self.topics.iter().map(|t| target.channel(t)).collect();
        resubscribe(&sink, channels, addr).await?;
        // With no topic to resubscribe, nothing above has heard from Redis
        // yet: a link that connects but never answers is not up. Nor is one
        // that answers with an error: the pub/sub sink reports a refused
        // SUBSCRIBE (NOAUTH from a Redis that started requiring a password)
        // as done, so the PING's own reply is checked for one.
        let mut pinger = sink.clone();
        within(
            async {
                let reply = pinger.ping::<redis::Value>().await;
                reply.and_then(redis::Value::extract_error)
            },
            addr,
            "PING",
        )
        .await?;
        if let Some(next) = self.next.take() {
            self.target = next;
            self.health_check.send_replace(self.target.health_check);
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
        let health = tokio::spawn(probe(
            sink.clone(),
            self.health_check.subscribe(),
            self.lost_tx.clone(),
            generation,
            self.target.addr.clone(),
        ));
        self.link = Some(Link {
            sink,
            generation,
            reader,
            health,
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

/// Subscribes `channels` on a new link, in bursts of single-channel
/// SUBSCRIBEs, and returns once Redis confirmed every one.
///
/// One request per channel, not one multi-channel SUBSCRIBE: Redis answers
/// a SUBSCRIBE with one confirmation per channel, and the connection
/// matches each confirmation to the oldest request waiting for one. The
/// surplus confirmations of a multi-channel SUBSCRIBE would then answer
/// later requests (a client's subscribe, a health-check PING) before Redis
/// had seen them, and a subscribe could be confirmed while Redis did not
/// yet hold its topic (`docs/PROTOCOL.md`: a confirmed subscribe receives
/// every later publish).
async fn resubscribe(
    sink: &PubSubSink,
    channels: Vec<String>,
    addr: &str,
) -> Result<(), BrokerError> {
    for batch in channels.chunks(RESUBSCRIBE_BATCH) {
        // Each request is written when first polled, in order; all of a
        // burst go out before the first confirmation is awaited.
        let confirmations = batch.iter().map(|channel| {
            let mut sink = sink.clone();
            async move { sink.subscribe(channel).await }
        });
        let confirmed = timeout(IO_TIMEOUT, join_all(confirmations))
            .await
            .map_err(|_| BrokerError::Timeout {
                addr: addr.to_string(),
                what: "SUBSCRIBE",
            })?;
        for result in confirmed {
            result.map_err(|err| from_redis(&err, addr, "SUBSCRIBE"))?;
        }
    }
    Ok(())
}

/// The link's health check (see `until_silent`): reports `generation` as
/// lost once the link stops answering.
async fn probe(
    sink: PubSubSink,
    every: watch::Receiver<Duration>,
    lost: mpsc::UnboundedSender<u64>,
    generation: u64,
    addr: String,
) {
    let ping = || {
        let mut sink = sink.clone();
        async move { sink.ping::<redis::Value>().await.map(drop) }
    };
    let why = until_silent(ping, every, &addr).await;
    tracing::warn!(addr = %addr, error = %why, "redis subscriber link failed its health check");
    let _ = lost.send(generation);
}
