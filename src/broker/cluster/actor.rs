//! The actor behind [`ClusterBroker`](super::ClusterBroker): it owns the
//! slot map, one subscribing connection per master and where each held
//! topic is subscribed, and reconciles them with the cluster.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};

use super::slots::{SlotMap, key_slot};
use super::{Command, Node, Target};
use crate::broker::redis::{BACKOFF_START, IO_TIMEOUT, describe, jitter, lock, unavailable};
use crate::broker::{BrokerError, Deliver};
use crate::config::Redis;
use crate::metrics::Metrics;

mod reconcile;

/// How often a healthy replica re-reads the slot map and pings each master.
const TOPOLOGY_CHECK: Duration = Duration::from_secs(5);

/// Starts the actor on `target`; it connects at once and keeps retrying.
pub(super) fn spawn(
    target: Target,
    deliver: Arc<dyn Deliver>,
    waiting: Arc<Mutex<HashSet<String>>>,
    ready: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    inbox: mpsc::UnboundedReceiver<Command>,
) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let actor = Actor {
        target,
        deliver,
        topics: Topics {
            placed: HashMap::new(),
            waiting,
        },
        slots: None,
        links: HashMap::new(),
        leaving: HashMap::new(),
        ready,
        generation: 0,
        events_tx,
        metrics,
    };
    tokio::spawn(actor.run(inbox, events));
}

/// A subscribing connection to one master.
struct Link {
    connection: MultiplexedConnection,
    /// Tells a stale report about an earlier connection from this one's.
    generation: u64,
}

/// What a link's push handler reports to the actor.
enum Event {
    /// The connection to this node ended.
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
}

impl Actor {
    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut backoff = BACKOFF_START;
        let mut next_check = Instant::now();
        let mut was_connected = false;
        // Set when something broke, so the recovery is logged and counted.
        let mut disturbed = false;
        loop {
            if Instant::now() >= next_check {
                match self.reconcile().await {
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
                        backoff = BACKOFF_START;
                        next_check = Instant::now() + TOPOLOGY_CHECK;
                    }
                    Err(err) => {
                        self.ready.send_replace(false);
                        disturbed = true;
                        let delay = jitter(backoff);
                        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "redis cluster unavailable");
                        next_check = Instant::now() + delay;
                        backoff = (backoff * 2).min(self.target.reconnect_max);
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
                backoff = BACKOFF_START;
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
                false
            }
            Ok(target) => {
                tracing::info!("redis cluster settings changed; reconnecting and resubscribing");
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
            Some(None) => return (Err(unavailable("redis cluster is resubscribing")), false),
            None => {}
        }
        let mut result = self.subscribe_on_owner(topic).await;
        if let Err(SubscribeError::Moved) = result {
            if let Err(err) = self.reconcile().await {
                return (Err(unavailable(err)), true);
            }
            result = self.subscribe_on_owner(topic).await;
        }
        match result {
            Ok(node) => {
                self.topics.place(topic, node);
                (Ok(()), false)
            }
            Err(SubscribeError::Moved) => (
                Err(unavailable("redis cluster slot is moving; try again")),
                true,
            ),
            Err(SubscribeError::Unavailable(reason)) => (Err(unavailable(reason)), false),
            Err(SubscribeError::LinkFailed(node, reason)) => {
                tracing::warn!(node = %node, error = %reason, "subscribe failed; reconnecting to that node");
                self.drop_link(&node);
                (Err(unavailable(reason)), true)
            }
        }
    }

    async fn subscribe_on_owner(&self, topic: &str) -> Result<Node, SubscribeError> {
        let channel = self.target.channel(topic);
        let slots = self
            .slots
            .as_ref()
            .ok_or_else(|| SubscribeError::Unavailable("redis cluster is not connected".into()))?;
        let node = slots.owner(key_slot(channel.as_bytes())).ok_or_else(|| {
            SubscribeError::Unavailable("no master serves this topic's slot".into())
        })?;
        let link = self.links.get(node).ok_or_else(|| {
            SubscribeError::Unavailable(format!("redis cluster node {node} is not connected"))
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
        let _ = timeout(IO_TIMEOUT, command.exec_async(&mut connection)).await;
    }
}

/// Every topic this replica holds and the node it is subscribed on
/// (`None` until it is subscribed on its slot's owner again). The `None`
/// ones are mirrored in `waiting`, shared with the broker handle, so the hub
/// can tell a held topic that is live from one that waits for its shard.
struct Topics {
    placed: HashMap<String, Option<Node>>,
    waiting: Arc<Mutex<HashSet<String>>>,
}

impl Topics {
    fn get(&self, topic: &str) -> Option<&Option<Node>> {
        self.placed.get(topic)
    }

    fn len(&self) -> usize {
        self.placed.len()
    }

    /// Holds `topic`, subscribed on `node`.
    fn place(&mut self, topic: &str, node: Node) {
        self.placed.insert(topic.to_string(), Some(node));
        lock(&self.waiting).remove(topic);
    }

    /// `topic`, if held, waits to be subscribed again.
    fn unplace(&mut self, topic: &str) {
        if let Some(placed) = self.placed.get_mut(topic) {
            *placed = None;
            lock(&self.waiting).insert(topic.to_string());
        }
    }

    /// Every topic subscribed on `node` waits to be subscribed again.
    fn unplace_on(&mut self, node: &Node) {
        let mut waiting = lock(&self.waiting);
        for (topic, placed) in &mut self.placed {
            if placed.as_ref() == Some(node) {
                *placed = None;
                waiting.insert(topic.clone());
            }
        }
    }

    fn unplace_all(&mut self) {
        let mut waiting = lock(&self.waiting);
        for (topic, placed) in &mut self.placed {
            *placed = None;
            waiting.insert(topic.clone());
        }
    }

    /// Lets go of `topic`; where it was subscribed, if anywhere.
    fn remove(&mut self, topic: &str) -> Option<Option<Node>> {
        lock(&self.waiting).remove(topic);
        self.placed.remove(topic)
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
    Unavailable(String),
    /// The node did not answer: the connection is suspect.
    LinkFailed(Node, String),
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
        Ok(Err(err)) => Err(SubscribeError::LinkFailed(node, describe(err))),
        Err(_) => Err(SubscribeError::LinkFailed(
            node,
            "redis cluster did not confirm SSUBSCRIBE in time".into(),
        )),
    }
}
