//! Redis Cluster broker: sharded Pub/Sub (Redis ≥ 7 `SSUBSCRIBE`/`SPUBLISH`).
//!
//! A sharded channel lives on the master that owns its hash slot, so this
//! replica keeps one subscribing connection per master and SSUBSCRIBEs each
//! topic, one channel per call, on its slot's owner. One actor
//! (`actor`) owns the slot map (`slots`), those connections and where
//! each live topic is subscribed. It reconciles them with the cluster when a
//! connection drops, when a node pushes a SUNSUBSCRIBE nobody asked for (the
//! slot moved away), when a SSUBSCRIBE is answered MOVED, and every 5 s in
//! case a failover went unnoticed. Messages go from each connection's push
//! handler straight to the hub, not through the actor. SPUBLISH goes
//! through the redis crate's cluster connection, which follows MOVED on its
//! own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion};
use tokio::sync::{OnceCell, mpsc, oneshot, watch};
use tokio::time::timeout;

use super::redis::{
    IO_TIMEOUT, ask_actor, changed_settings, describe, lock, publish_within, unavailable, url_info,
};
use super::{Broker, BrokerError, Deliver};
use crate::config::{Config, Redis};
use crate::metrics::Metrics;

mod actor;
mod slots;

pub use slots::key_slot;

/// A cluster node, named `host:port` as the cluster announces it.
type Node = Arc<str>;

/// What the broker handle asks of the actor, in order.
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
                actor::spawn(target, deliver, waiting.clone(), ready_tx, metrics, inbox);
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
        let topic = topic.to_string();
        ask_actor(
            &self.commands,
            |reply| Command::Subscribe(topic, reply),
            "redis cluster broker stopped",
        )
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
            publish_within(
                command.query_async(&mut connection),
                "redis cluster did not answer SPUBLISH in time",
            )
            .await
        }
        .boxed()
    }

    fn reconfigure(&self, config: &Config) {
        if let Some(settings) = changed_settings(&self.settings, config) {
            *lock(&self.publisher) = Arc::new(Publisher::new(&settings));
            let _ = self.commands.send(Command::Reconfigure(settings));
        }
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

#[cfg(test)]
mod tests;
