//! Reconciling with the cluster: health of the links, the slot map, a link
//! to every master, and every held topic on its slot's owner.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use super::{Actor, Event, Link, Node, SubscribeError, ssubscribe, topic_of};
use crate::broker::Delivery;
use crate::broker::cluster::slots::{SlotMap, key_slot};
use crate::broker::engine::{BrokerError, IO_TIMEOUT, addr_of, from_redis, until_silent, within};
use crate::broker::history::{self, LoadError};

/// SSUBSCRIBEs in flight at once while resubscribing many topics.
const RESUBSCRIBE_CONCURRENCY: usize = 64;

impl Actor {
    /// Brings the links and subscriptions in line with the cluster: pings
    /// every link, re-reads the slot map, connects to every master, drops
    /// links to nodes that are no longer masters, and subscribes every
    /// topic not yet on its slot's owner. `Ok` when all of that holds.
    pub(super) async fn reconcile(&mut self) -> Result<(), String> {
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
                Err(err) => problems.push(err.to_string()),
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
                Err(SubscribeError::Unavailable(err)) => problems.push(err.to_string()),
                Err(SubscribeError::LinkFailed(_, err)) => {
                    problems.push(err.to_string());
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
            match cluster_slots(link.connection.clone(), host, node).await {
                Ok(slots) => return Ok(slots),
                Err(err) => last_error = format!("{node}: {err}"),
            }
        }
        for seed in &self.target.seeds.infos {
            let host = match seed.addr() {
                ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
                _ => String::new(),
            };
            let addr = addr_of(seed);
            let connect = async {
                let client = redis::Client::open(seed.clone())?;
                client.get_multiplexed_async_connection().await
            };
            let connection = match within(connect, &addr, "the connection attempt").await {
                Ok(connection) => connection,
                Err(err) => {
                    last_error = err.to_string();
                    continue;
                }
            };
            match cluster_slots(connection, &host, &addr).await {
                Ok(slots) => return Ok(slots),
                Err(err) => last_error = format!("seed {addr}: {err}"),
            }
        }
        Err(last_error)
    }

    /// Opens the subscribing connection to a master. Its push handler hands
    /// messages to the hub and reports drops and unsubscribes to the actor.
    async fn connect(&mut self, node: &Node, host: &str, port: u16) -> Result<Link, BrokerError> {
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
                            let (position, payload) = history::decode(payload);
                            deliver.deliver(Delivery {
                                topic,
                                payload,
                                position: position.as_ref(),
                            });
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
        let client = redis::Client::open(info)
            .map_err(|err| from_redis(&err, node, "the connection attempt"))?;
        let connection = within(
            client.get_multiplexed_async_connection_with_config(&config),
            node,
            "the connection attempt",
        )
        .await?;
        let library = match self.library.load(&mut connection.clone(), node).await {
            Ok(()) => Some(true),
            Err(LoadError::Refused(err)) => {
                tracing::warn!(node = %node, error = %err, "history unavailable: the topicgate function library cannot be loaded");
                Some(false)
            }
            Err(LoadError::Unreachable(err)) => {
                tracing::warn!(node = %node, error = %err, "the topicgate function library was not loaded");
                None
            }
        };
        let health = tokio::spawn(probe(
            connection.clone(),
            self.health_check.subscribe(),
            self.events_tx.clone(),
            node.clone(),
            generation,
        ));
        Ok(Link {
            connection,
            generation,
            library,
            health,
        })
    }
}

/// The health check of `node`'s link (see `until_silent`): reports it lost
/// once it stops answering, so that the actor replaces it.
async fn probe(
    connection: MultiplexedConnection,
    every: watch::Receiver<Duration>,
    events: mpsc::UnboundedSender<Event>,
    node: Node,
    generation: u64,
) {
    let ping = || {
        let mut connection = connection.clone();
        async move { redis::cmd("PING").exec_async(&mut connection).await }
    };
    let why = until_silent(ping, every, &node).await;
    tracing::warn!(node = %node, error = %why, "redis cluster link failed its health check");
    let _ = events.send(Event::Lost(node, generation));
}

async fn cluster_slots(
    mut connection: MultiplexedConnection,
    host: &str,
    addr: &str,
) -> Result<SlotMap, String> {
    let mut query = redis::cmd("CLUSTER");
    query.arg("SLOTS");
    let reply = within(
        query.query_async::<Value>(&mut connection),
        addr,
        "CLUSTER SLOTS",
    )
    .await
    .map_err(|err| err.to_string())?;
    SlotMap::parse(&reply, host)
}
