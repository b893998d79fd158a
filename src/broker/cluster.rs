//! Redis Cluster broker: sharded Pub/Sub (Redis ≥ 7 `SSUBSCRIBE`/`SPUBLISH`).
//!
//! A sharded channel lives on the master that owns its hash slot, so this
//! replica keeps one subscribing connection per master and SSUBSCRIBEs each
//! topic, one channel per call, on its slot's owner. One actor owns the slot
//! map, those connections and where each live topic is subscribed. It
//! reconciles them with the cluster when a connection drops, when a node
//! pushes a SUNSUBSCRIBE nobody asked for (the slot moved away), when a
//! SSUBSCRIBE is answered MOVED, and every [`TOPOLOGY_CHECK`] in case a
//! failover went unnoticed. Messages go from each connection's push handler
//! straight to the hub, not through the actor. SPUBLISH goes through the
//! redis crate's cluster connection, which follows MOVED on its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, join_all};
use futures_util::stream::{self, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushInfo, PushKind,
    Value,
};
use tokio::sync::{OnceCell, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};

use super::redis::{BACKOFF_START, IO_TIMEOUT, describe, jitter, lock, unavailable, url_info};
use super::{Broker, BrokerError, Deliver};
use crate::config::{Config, Redis};
use crate::metrics::Metrics;

/// How often a healthy replica re-reads the slot map and pings each master.
const TOPOLOGY_CHECK: Duration = Duration::from_secs(5);
/// SSUBSCRIBEs in flight at once while resubscribing many topics.
const RESUBSCRIBE_CONCURRENCY: usize = 64;
/// Hash slots in a Redis Cluster.
const SLOT_COUNT: u16 = 16384;

/// A cluster node, named `host:port` as the cluster announces it.
type Node = Arc<str>;

enum Command {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String),
    Reconfigure(Redis),
}

pub struct ClusterBroker {
    /// Ordered requests to the actor; unbounded for the reason given on
    /// the single-Redis broker (the hub sends at most one per transition).
    commands: mpsc::UnboundedSender<Command>,
    ready: watch::Receiver<bool>,
    /// Where SPUBLISH goes; replaced whole when `[redis]` changes.
    publisher: Mutex<Arc<Publisher>>,
    settings: Mutex<Redis>,
    /// Held topics not subscribed on their slot's owner right now.
    waiting: Arc<Mutex<HashSet<String>>>,
}

/// The SPUBLISH path: a cluster connection, made on first use.
struct Publisher {
    /// `Err` holds why the client could not be built.
    client: Result<ClusterClient, String>,
    connection: OnceCell<ClusterConnection>,
    prefix: Arc<str>,
}

impl Publisher {
    fn new(settings: &Redis) -> Self {
        let client = Seeds::new(settings).and_then(|seeds| {
            ClusterClient::builder(seeds.infos)
                .connection_timeout(IO_TIMEOUT)
                .response_timeout(IO_TIMEOUT)
                .build()
                .map_err(describe)
        });
        Self {
            client,
            connection: OnceCell::new(),
            prefix: settings.channel_prefix.as_str().into(),
        }
    }

    async fn connection(&self) -> Result<ClusterConnection, BrokerError> {
        let client = self.client.as_ref().map_err(unavailable)?;
        let connection = self
            .connection
            .get_or_try_init(|| async {
                match timeout(IO_TIMEOUT, client.get_async_connection()).await {
                    Ok(Ok(connection)) => Ok(connection),
                    Ok(Err(err)) => Err(unavailable(describe(err))),
                    Err(_) => Err(unavailable("redis cluster did not answer in time")),
                }
            })
            .await?;
        Ok(connection.clone())
    }
}

/// `redis.nodes` with `redis.password` applied.
struct Seeds {
    infos: Vec<ConnectionInfo>,
}

impl Seeds {
    fn new(settings: &Redis) -> Result<Self, String> {
        let infos = settings
            .nodes
            .iter()
            .map(|url| url_info(url, settings.password.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        if infos.is_empty() {
            return Err("redis.nodes names no seed node".into());
        }
        Ok(Self { infos })
    }

    /// How to reach a node the cluster announced: the first seed's
    /// credentials and TLS, at the node's address, speaking RESP3 so that
    /// messages arrive as pushes on a connection that also takes commands.
    fn node_info(&self, host: &str, port: u16) -> ConnectionInfo {
        let seed = &self.infos[0];
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        let redis = seed
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        seed.clone().set_addr(addr).set_redis_settings(redis)
    }
}

/// What the subscribing side needs from `[redis]`.
struct Target {
    seeds: Seeds,
    prefix: Arc<str>,
    reconnect_max: Duration,
    /// Seed URLs and password as configured: equal means the same links.
    server: (Vec<String>, Option<String>),
}

impl Target {
    fn new(settings: &Redis) -> Result<Self, String> {
        Ok(Self {
            seeds: Seeds::new(settings)?,
            prefix: settings.channel_prefix.as_str().into(),
            reconnect_max: settings.reconnect_max,
            server: (settings.nodes.clone(), settings.password.clone()),
        })
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }
}

impl ClusterBroker {
    /// Spawns the actor; it connects at once and keeps retrying while the
    /// cluster is away.
    pub fn start(settings: Redis, deliver: Arc<dyn Deliver>, metrics: Arc<Metrics>) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let waiting = Arc::new(Mutex::new(HashSet::new()));
        match Target::new(&settings) {
            Ok(target) => {
                let (events_tx, events) = mpsc::unbounded_channel();
                let actor = Actor {
                    target,
                    deliver,
                    topics: Topics {
                        placed: HashMap::new(),
                        waiting: waiting.clone(),
                    },
                    slots: None,
                    links: HashMap::new(),
                    leaving: HashMap::new(),
                    ready: ready_tx,
                    generation: 0,
                    events_tx,
                    metrics,
                };
                tokio::spawn(actor.run(inbox, events));
            }
            Err(err) => {
                tracing::error!(error = %err, "redis cluster broker cannot start");
                drop(ready_tx);
            }
        }
        Self {
            commands,
            ready,
            publisher: Mutex::new(Arc::new(Publisher::new(&settings))),
            settings: Mutex::new(settings),
            waiting,
        }
    }
}

impl Broker for ClusterBroker {
    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .commands
            .send(Command::Subscribe(topic.to_string(), tx));
        async move {
            sent.map_err(|_| unavailable("redis cluster broker stopped"))?;
            rx.await
                .unwrap_or_else(|_| Err(unavailable("redis cluster broker stopped")))
        }
        .boxed()
    }

    fn unsubscribe(&self, topic: &str) {
        let _ = self.commands.send(Command::Unsubscribe(topic.to_string()));
    }

    fn publish(&self, topic: &str, payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>> {
        let publisher = lock(&self.publisher).clone();
        let channel = format!("{}{topic}", publisher.prefix);
        async move {
            let mut connection = publisher.connection().await?;
            let mut command = redis::cmd("SPUBLISH");
            command.arg(channel).arg(payload.as_ref());
            match timeout(IO_TIMEOUT, command.query_async::<i64>(&mut connection)).await {
                Ok(Ok(_receivers)) => Ok(()),
                Ok(Err(err)) => Err(unavailable(describe(err))),
                Err(_) => Err(unavailable("redis cluster did not answer SPUBLISH in time")),
            }
        }
        .boxed()
    }

    fn reconfigure(&self, config: &Config) {
        let mut settings = lock(&self.settings);
        if *settings == config.redis {
            return;
        }
        *settings = config.redis.clone();
        *lock(&self.publisher) = Arc::new(Publisher::new(&settings));
        let _ = self.commands.send(Command::Reconfigure(settings.clone()));
    }

    fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Per topic: while one shard is away, topics on the others stay live.
    fn is_live(&self, topic: &str) -> bool {
        *self.ready.borrow() || !lock(&self.waiting).contains(topic)
    }

    fn kind(&self) -> &'static str {
        "redis-cluster"
    }
}

/// Which master owns each hash slot, as one node told us.
#[derive(Debug, Clone, PartialEq)]
struct SlotMap {
    /// Sorted, non-overlapping `(first, last, owner)` ranges.
    ranges: Vec<(u16, u16, Node)>,
    /// Every master with at least one slot, and where to reach it.
    masters: HashMap<Node, (String, u16)>,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply. A master announced with an empty host
    /// is the node that answered (`asked_host`).
    fn parse(reply: &Value, asked_host: &str) -> Result<Self, String> {
        let Value::Array(entries) = reply else {
            return Err("CLUSTER SLOTS: not an array".into());
        };
        let mut ranges = Vec::with_capacity(entries.len());
        let mut masters = HashMap::new();
        for entry in entries {
            let Value::Array(fields) = entry else {
                return Err("CLUSTER SLOTS: an entry is not an array".into());
            };
            let (Some(first), Some(last), Some(Value::Array(master))) = (
                slot_of(fields.first()),
                slot_of(fields.get(1)),
                fields.get(2),
            ) else {
                return Err("CLUSTER SLOTS: an entry lacks its slot range or master".into());
            };
            let host = match master.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                Some(Value::SimpleString(text)) => text.clone(),
                _ => return Err("CLUSTER SLOTS: a master lacks its host".into()),
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_string()
            } else {
                host
            };
            let port = match master.get(1) {
                Some(Value::Int(port)) => u16::try_from(*port).ok(),
                _ => None,
            }
            .ok_or("CLUSTER SLOTS: a master lacks its port")?;
            if first > last {
                return Err(format!("CLUSTER SLOTS: range {first}-{last} is reversed"));
            }
            let node: Node = format!("{host}:{port}").into();
            masters.insert(node.clone(), (host, port));
            ranges.push((first, last, node));
        }
        ranges.sort_by_key(|range| range.0);
        if ranges.windows(2).any(|pair| pair[0].1 >= pair[1].0) {
            return Err("CLUSTER SLOTS: slot ranges overlap".into());
        }
        Ok(Self { ranges, masters })
    }

    fn owner(&self, slot: u16) -> Option<&Node> {
        let index = self.ranges.partition_point(|range| range.1 < slot);
        self.ranges
            .get(index)
            .filter(|range| range.0 <= slot)
            .map(|range| &range.2)
    }
}

fn slot_of(value: Option<&Value>) -> Option<u16> {
    match value {
        Some(Value::Int(n)) => u16::try_from(*n).ok().filter(|slot| *slot < SLOT_COUNT),
        _ => None,
    }
}

/// The hash slot of a key or sharded channel: CRC16 of its hash tag (the
/// part between the first `{` and the next `}`, when not empty) or of the
/// whole name, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|b| *b == b'}')
            .filter(|close| *close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOT_COUNT
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

    /// Brings the links and subscriptions in line with the cluster: pings
    /// every link, re-reads the slot map, connects to every master, drops
    /// links to nodes that are no longer masters, and subscribes every
    /// topic not yet on its slot's owner. `Ok` when all of that holds.
    async fn reconcile(&mut self) -> Result<(), String> {
        let pings = self.links.iter().map(|(node, link)| {
            let (node, mut connection) = (node.clone(), link.connection.clone());
            async move {
                let ping = redis::cmd("PING");
                let answered = timeout(IO_TIMEOUT, ping.exec_async(&mut connection)).await;
                (node, matches!(answered, Ok(Ok(()))))
            }
        });
        for (node, alive) in join_all(pings).await {
            if !alive {
                tracing::warn!(node = %node, "redis cluster node does not answer");
                self.drop_link(&node);
            }
        }

        let slots = self.fetch_slots().await?;
        let gone: Vec<Node> = self
            .links
            .keys()
            .filter(|node| !slots.masters.contains_key(*node))
            .cloned()
            .collect();
        for node in gone {
            // A demoted master still receives its shard's messages as a
            // replica: let go of it before subscribing on the new master.
            tracing::info!(node = %node, "redis cluster node is no longer a master");
            self.drop_link(&node);
        }
        let mut problems = Vec::new();
        for (node, (host, port)) in &slots.masters {
            if self.links.contains_key(node) {
                continue;
            }
            match self.connect(node, host, *port).await {
                Ok(link) => {
                    self.links.insert(node.clone(), link);
                }
                Err(err) => problems.push(format!("{node}: {err}")),
            }
        }
        self.slots = Some(slots);
        self.place_topics(&mut problems).await;
        if problems.is_empty() {
            Ok(())
        } else {
            let more = problems.len() - 1;
            let mut summary = problems.swap_remove(0);
            if more > 0 {
                summary.push_str(&format!(" (and {more} more)"));
            }
            Err(summary)
        }
    }

    /// Subscribes every topic that is not on its slot's owner, many at once;
    /// a topic that moved is then unsubscribed where it was.
    async fn place_topics(&mut self, problems: &mut Vec<String>) {
        let Some(slots) = &self.slots else {
            return;
        };
        let mut moves = Vec::new();
        for (topic, placed) in &self.topics.placed {
            let channel = self.target.channel(topic);
            let Some(owner) = slots.owner(key_slot(channel.as_bytes())) else {
                problems.push(format!("no master serves the slot of {topic:?}"));
                continue;
            };
            if placed.as_ref() == Some(owner) {
                continue;
            }
            let Some(link) = self.links.get(owner) else {
                continue; // its master is unreachable: already a problem
            };
            moves.push((
                topic.clone(),
                placed.clone(),
                owner.clone(),
                link.connection.clone(),
                channel,
            ));
        }
        let results: Vec<_> = stream::iter(moves)
            .map(|(topic, from, to, connection, channel)| async move {
                let result = ssubscribe(connection, channel, to.clone()).await;
                (topic, from, to, result)
            })
            .buffer_unordered(RESUBSCRIBE_CONCURRENCY)
            .collect()
            .await;
        let mut failed_links = Vec::new();
        for (topic, from, to, result) in results {
            match result {
                Ok(()) => {
                    if self.topics.get(&topic).is_some() {
                        self.topics.place(&topic, to);
                    }
                    if let Some(from) = from {
                        self.leave(&from, &topic).await;
                    }
                }
                Err(SubscribeError::Moved) => {
                    problems.push(format!("{topic:?} moved while resubscribing"));
                }
                Err(SubscribeError::Unavailable(reason)) => problems.push(reason),
                Err(SubscribeError::LinkFailed(_, reason)) => {
                    problems.push(format!("{to}: {reason}"));
                    failed_links.push(to);
                }
            }
        }
        for node in failed_links {
            self.drop_link(&node);
        }
    }

    /// Reads the slot map from a connected master, else from each seed.
    async fn fetch_slots(&self) -> Result<SlotMap, String> {
        let mut last_error = String::from("no node to ask");
        for (node, link) in &self.links {
            let host = node.rsplit_once(':').map_or("", |(host, _)| host);
            match cluster_slots(link.connection.clone(), host).await {
                Ok(slots) => return Ok(slots),
                Err(err) => last_error = format!("{node}: {err}"),
            }
        }
        for seed in &self.target.seeds.infos {
            let host = match seed.addr() {
                ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
                _ => String::new(),
            };
            let connect = async {
                let client = redis::Client::open(seed.clone())?;
                client.get_multiplexed_async_connection().await
            };
            let connection = match timeout(IO_TIMEOUT, connect).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(err)) => {
                    last_error = format!("seed {}: {}", seed.addr(), describe(err));
                    continue;
                }
                Err(_) => {
                    last_error = format!("seed {}: connect timed out", seed.addr());
                    continue;
                }
            };
            match cluster_slots(connection, &host).await {
                Ok(slots) => return Ok(slots),
                Err(err) => last_error = format!("seed {}: {err}", seed.addr()),
            }
        }
        Err(last_error)
    }

    /// Opens the subscribing connection to a master. Its push handler hands
    /// messages to the hub and reports drops and unsubscribes to the actor.
    async fn connect(&mut self, node: &Node, host: &str, port: u16) -> Result<Link, String> {
        self.generation += 1;
        let generation = self.generation;
        let (deliver, prefix, events, name) = (
            self.deliver.clone(),
            self.target.prefix.clone(),
            self.events_tx.clone(),
            node.clone(),
        );
        let on_push = move |push: PushInfo| -> Result<(), ()> {
            match push.kind {
                PushKind::SMessage => {
                    if let [Value::BulkString(channel), Value::BulkString(payload), ..] =
                        push.data.as_slice()
                    {
                        if let Some(topic) = topic_of(channel, &prefix) {
                            deliver.deliver(topic, payload);
                        }
                    }
                }
                PushKind::SUnsubscribe => {
                    if let Some(Value::BulkString(channel)) = push.data.first() {
                        if let Some(topic) = topic_of(channel, &prefix) {
                            let _ = events.send(Event::Dropped(
                                name.clone(),
                                generation,
                                topic.to_string(),
                            ));
                        }
                    }
                }
                PushKind::Disconnection => {
                    let _ = events.send(Event::Lost(name.clone(), generation));
                }
                _ => {}
            }
            Ok(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_push_sender(on_push);
        let info = self.target.seeds.node_info(host, port);
        let client = redis::Client::open(info).map_err(describe)?;
        let connection = timeout(
            IO_TIMEOUT,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(describe)?;
        Ok(Link {
            connection,
            generation,
        })
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
fn topic_of<'a>(channel: &'a [u8], prefix: &str) -> Option<&'a str> {
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

async fn cluster_slots(
    mut connection: MultiplexedConnection,
    host: &str,
) -> Result<SlotMap, String> {
    let mut query = redis::cmd("CLUSTER");
    query.arg("SLOTS");
    let reply = timeout(IO_TIMEOUT, query.query_async::<Value>(&mut connection))
        .await
        .map_err(|_| "CLUSTER SLOTS timed out".to_string())?
        .map_err(describe)?;
    SlotMap::parse(&reply, host)
}

#[cfg(test)]
mod tests;
