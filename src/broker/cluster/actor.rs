//! The actor behind [`ClusterBroker`](super::ClusterBroker): it owns the
//! slot map, one subscribing connection per master and where each held
//! topic is subscribed, and reconciles them with the cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::slots::{SlotMap, key_slot};
use super::{Node, Target};
use crate::broker::Deliver;
use crate::broker::engine::{Backoff, BrokerError, Command, IO_TIMEOUT, Spawn, from_redis, within};
use crate::broker::history::Library;
use crate::config::Redis;
use crate::metrics::Metrics;

mod reconcile;
mod topics;

use topics::Topics;

/// How often a healthy replica re-reads the slot map. Each master's link is
/// also pinged every `redis.health_check_secs` on its own (`Link::health`).
const TOPOLOGY_CHECK: Duration = Duration::from_secs(5);

/// Starts the actor on `target`; it connects at once and keeps retrying.
pub(super) fn spawn(target: Target, spawn: Spawn) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let target_health = target.health_check;
    let actor = Actor {
        target,
        deliver: spawn.deliver,
        topics: Topics {
            placed: HashMap::new(),
            waiting: spawn.waiting.unwrap_or_default(),
        },
        slots: None,
        links: HashMap::new(),
        leaving: HashMap::new(),
        ready: spawn.ready,
        generation: 0,
        events_tx,
        metrics: spawn.metrics,
        library: spawn.library,
        health_check: watch::Sender::new(target_health),
    };
    tokio::spawn(actor.run(spawn.inbox, events));
}

/// A subscribing connection to one master.
struct Link {
    connection: MultiplexedConnection,
    /// Tells a stale report about an earlier connection from this one's.
    generation: u64,
    /// Whether the history library was loaded on this master: `None` when
    /// the load went unanswered.
    library: Option<bool>,
    /// Pings the master (`until_silent`) and reports the link lost when it
    /// stops answering; aborted with the link.
    health: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.health.abort();
    }
}

/// What a link's push handler reports to the actor.
enum Event {
    /// The connection to this node ended, or stopped answering.
    Lost(Node, u64),
    /// The node says a channel is no longer subscribed: our own
    /// SUNSUBSCRIBE, or the slot moved away.
    Dropped(Node, u64, String),
}

struct Actor {
    target: Target,
    deliver: Arc<dyn Deliver>,
    topics: Topics,
    slots: Option<SlotMap>,
    links: HashMap<Node, Link>,
    /// SUNSUBSCRIBE confirmations still to come, by node and topic: those
    /// are ours, not a slot moving away.
    leaving: HashMap<(Node, String), u32>,
    ready: watch::Sender<bool>,
    generation: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    /// Counts recoveries (`topicgate_redis_reconnects_total`).
    metrics: Arc<Metrics>,
    /// Loaded on each new master link (a new master after a failover or a
    /// slot move may lack it); available while every master has it.
    library: Arc<Library>,
    /// `redis.health_check_secs`, read by every link's health check at each
    /// ping so that a reload applies at once.
    health_check: watch::Sender<Duration>,
}

impl Actor {
    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut backoff = Backoff::new();
        let mut next_check = Instant::now();
        let mut was_connected = false;
        // Set when something broke, so the recovery is logged and counted.
        let mut disturbed = false;
        loop {
            if Instant::now() >= next_check {
                let reconciled = self.reconcile().await;
                self.note_library();
                match reconciled {
                    Ok(()) => {
                        let was_ready = self.ready.send_replace(true);
                        if !was_connected {
                            tracing::info!(masters = self.links.len(), "redis cluster connected");
                        } else if disturbed || !was_ready {
                            self.metrics.redis_reconnects.inc();
                            tracing::info!(
                                masters = self.links.len(),
                                topics = self.topics.len(),
                                "redis cluster topology followed and topics resubscribed"
                            );
                        }
                        was_connected = true;
                        disturbed = false;
                        backoff.reset();
                        next_check = Instant::now() + TOPOLOGY_CHECK;
                    }
                    Err(err) => {
                        self.ready.send_replace(false);
                        disturbed = true;
                        let delay = backoff.delay(self.target.reconnect_max);
                        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "redis cluster unavailable");
                        next_check = Instant::now() + delay;
                    }
                }
                continue;
            }
            let stale = tokio::select! {
                command = inbox.recv() => match command {
                    Some(Command::Reconfigure(settings)) => self.reconfigure(&settings),
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                Some(event) = events.recv() => self.on_event(event),
                _ = tokio::time::sleep_until(next_check) => false,
            };
            if stale {
                self.ready.send_replace(false);
                disturbed = true;
                backoff.reset();
                next_check = Instant::now();
            }
        }
    }

    /// Applies new `[redis]` settings; `true` when the links must be made anew.
    fn reconfigure(&mut self, settings: &Redis) -> bool {
        match Target::new(settings) {
            Ok(target)
                if target.server == self.target.server && target.prefix == self.target.prefix =>
            {
                self.target.reconnect_max = target.reconnect_max;
                self.target.health_check = target.health_check;
                self.health_check.send_replace(target.health_check);
                false
            }
            Ok(target) => {
                tracing::info!("redis cluster settings changed; reconnecting and resubscribing");
                self.health_check.send_replace(target.health_check);
                self.target = target;
                self.links.clear();
                self.leaving.clear();
                self.slots = None;
                self.topics.unplace_all();
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "new redis cluster settings unusable; keeping the current ones");
                false
            }
        }
    }

    /// Handles a link's report; `true` when the topology must be reconciled.
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Lost(node, generation) => {
                if !self.is_current(&node, generation) {
                    return false;
                }
                tracing::warn!(node = %node, "redis cluster node connection lost");
                self.drop_link(&node);
                true
            }
            Event::Dropped(node, generation, topic) => {
                if !self.is_current(&node, generation) {
                    return false;
                }
                let key = (node, topic);
                if let Some(count) = self.leaving.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.leaving.remove(&key);
                    }
                    return false;
                }
                let (node, topic) = key;
                if self.topics.get(&topic) == Some(&Some(node.clone())) {
                    tracing::info!(node = %node, topic, "redis cluster moved a topic's slot; resubscribing");
                    self.topics.unplace(&topic);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// History is unavailable while a master refused the library, and
    /// available once every master has it.
    fn note_library(&self) {
        let links = || self.links.values().map(|link| link.library);
        if links().any(|loaded| loaded == Some(false)) {
            self.library.set_loaded(false);
        } else if !self.links.is_empty() && links().all(|loaded| loaded == Some(true)) {
            self.library.set_loaded(true);
        }
    }

    fn is_current(&self, node: &Node, generation: u64) -> bool {
        self.links
            .get(node)
            .is_some_and(|link| link.generation == generation)
    }

    /// Forgets the link to `node`; its topics wait for the next reconcile.
    fn drop_link(&mut self, node: &Node) {
        self.links.remove(node);
        self.leaving.retain(|(on, _), _| on != node);
        self.topics.unplace_on(node);
    }

    /// `true` when the topology must be reconciled.
    async fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Subscribe(topic, reply) => {
                let (result, stale) = self.subscribe(&topic).await;
                let _ = reply.send(result);
                stale
            }
            Command::Unsubscribe(topic) => {
                if let Some(Some(node)) = self.topics.remove(&topic) {
                    self.leave(&node, &topic).await;
                }
                false
            }
            Command::Reconfigure(_) => false,
        }
    }

    /// SSUBSCRIBEs `topic` on its slot's owner; on MOVED, re-reads the slot
    /// map and tries once more. Also says whether the topology is suspect.
    async fn subscribe(&mut self, topic: &str) -> (Result<(), BrokerError>, bool) {
        match self.topics.get(topic) {
            Some(Some(_)) => return (Ok(()), false),
            // Held, and waiting for the reconcile to subscribe it again.
            Some(None) => return (Err(self.not_connected(topic)), false),
            None => {}
        }
        let mut result = self.subscribe_on_owner(topic).await;
        if let Err(SubscribeError::Moved) = result {
            if let Err(err) = self.reconcile().await {
                tracing::warn!(error = %err, "redis cluster slot moved; reconcile failed");
                return (Err(BrokerError::SlotMoving), true);
            }
            result = self.subscribe_on_owner(topic).await;
        }
        match result {
            Ok(node) => {
                self.topics.place(topic, node);
                (Ok(()), false)
            }
            Err(SubscribeError::Moved) => (Err(BrokerError::SlotMoving), true),
            Err(SubscribeError::Unavailable(err)) => (Err(err), false),
            Err(SubscribeError::LinkFailed(node, err)) => {
                tracing::warn!(node = %node, error = %err, "subscribe failed; reconnecting to that node");
                self.drop_link(&node);
                (Err(err), true)
            }
        }
    }

    /// Why a held topic that waits for its shard cannot be confirmed: its
    /// slot owner, where known, is not connected.
    fn not_connected(&self, topic: &str) -> BrokerError {
        let channel = self.target.channel(topic);
        let owner = self
            .slots
            .as_ref()
            .and_then(|slots| slots.owner(key_slot(channel.as_bytes())));
        match owner {
            Some(node) => BrokerError::not_connected(node.as_ref()),
            None => BrokerError::not_connected(self.target.seeds.addr()),
        }
    }

    async fn subscribe_on_owner(&self, topic: &str) -> Result<Node, SubscribeError> {
        let channel = self.target.channel(topic);
        let slots = self.slots.as_ref().ok_or_else(|| {
            SubscribeError::Unavailable(BrokerError::not_connected(self.target.seeds.addr()))
        })?;
        let node = slots
            .owner(key_slot(channel.as_bytes()))
            .ok_or(SubscribeError::Unavailable(BrokerError::NoSlotOwner))?;
        let link = self.links.get(node).ok_or_else(|| {
            SubscribeError::Unavailable(BrokerError::not_connected(node.as_ref()))
        })?;
        ssubscribe(link.connection.clone(), channel, node.clone())
            .await
            .map(|()| node.clone())
    }

    /// SUNSUBSCRIBEs `topic` on `node`, noting the confirmation to come.
    async fn leave(&mut self, node: &Node, topic: &str) {
        let channel = self.target.channel(topic);
        let Some(link) = self.links.get(node) else {
            return;
        };
        let mut connection = link.connection.clone();
        *self
            .leaving
            .entry((node.clone(), topic.to_string()))
            .or_default() += 1;
        let mut command = redis::cmd("SUNSUBSCRIBE");
        command.arg(channel);
        // A failure means the link is dying; its push handler reports it.
        let _ = within(command.exec_async(&mut connection), node, "SUNSUBSCRIBE").await;
    }
}

/// The topic a Redis channel carries, if it has our prefix and is UTF-8.
pub(super) fn topic_of<'a>(channel: &'a [u8], prefix: &str) -> Option<&'a str> {
    channel
        .strip_prefix(prefix.as_bytes())
        .and_then(|topic| std::str::from_utf8(topic).ok())
}

enum SubscribeError {
    /// The node does not own the slot (any more).
    Moved,
    /// Nothing to try this on now.
    Unavailable(BrokerError),
    /// The node did not answer: the connection is suspect.
    LinkFailed(Node, BrokerError),
}

/// SSUBSCRIBEs one channel on `node`'s connection.
async fn ssubscribe(
    mut connection: MultiplexedConnection,
    channel: String,
    node: Node,
) -> Result<(), SubscribeError> {
    let mut command = redis::cmd("SSUBSCRIBE");
    command.arg(channel);
    match timeout(IO_TIMEOUT, command.exec_async(&mut connection)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) if err.redirect_node().is_some() => Err(SubscribeError::Moved),
        Ok(Err(err)) => Err(SubscribeError::LinkFailed(
            node.clone(),
            from_redis(&err, &node, "SSUBSCRIBE"),
        )),
        Err(_) => Err(SubscribeError::LinkFailed(
            node.clone(),
            BrokerError::Timeout {
                addr: node.to_string(),
                what: "SSUBSCRIBE",
            },
        )),
    }
}
