//! Redis Cluster broker: sharded Pub/Sub (Redis ≥ 7 `SSUBSCRIBE`/`SPUBLISH`).
//!
//! A sharded channel lives on the master that owns its hash slot, so this
//! replica keeps one subscribing connection per master and SSUBSCRIBEs each
//! topic, one channel per call, on its slot's owner. One actor
//! (`actor`) owns the slot map (`slots`), those connections and where
//! each live topic is subscribed. It reconciles them with the cluster when a
//! connection drops or fails its health check (`redis.health_check_secs`,
//! as on the single-Redis link), when a node pushes a SUNSUBSCRIBE nobody asked for (the
//! slot moved away), when a SSUBSCRIBE is answered MOVED, and every 5 s in
//! case a failover went unnoticed. Messages go from each connection's push
//! handler straight to the hub, not through the actor. SPUBLISH goes
//! through the redis crate's cluster connection, which follows MOVED on its
//! own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion};
use tokio::sync::OnceCell;

use super::engine::{BrokerError, Handle, IO_TIMEOUT, Publish, Spawn, addr_of, url_info, within};
use super::history::{Call, Library};
use super::{Deliver, HistorySettings, Position, Range};
use crate::config::Redis;
use crate::metrics::Metrics;

mod actor;
mod slots;

pub use slots::key_slot;

/// A cluster node, named `host:port` as the cluster announces it.
type Node = Arc<str>;

/// The Redis Cluster broker: the shared handle over this engine's actor.
pub(crate) type ClusterBroker = Handle<Publisher>;

/// Starts the broker; its actor connects at once and keeps retrying while
/// the cluster is away.
pub(crate) fn start(
    settings: Redis,
    deliver: Arc<dyn Deliver>,
    metrics: Arc<Metrics>,
    history: HistorySettings,
) -> ClusterBroker {
    Handle::start(
        "redis-cluster",
        settings,
        deliver,
        metrics,
        true,
        history,
        |spawn: Spawn| {
            let target = Target::new(&spawn.settings)?;
            actor::spawn(target, spawn);
            Ok(())
        },
    )
}

/// The publishing path: a cluster connection, made on first use, which
/// routes each call to the master of its channel's slot.
pub(crate) struct Publisher {
    /// `Err` holds why the client could not be built.
    client: Result<ClusterClient, BrokerError>,
    connection: OnceCell<ClusterConnection>,
    prefix: Arc<str>,
    /// The seed nodes' `host:port`, for errors.
    addr: String,
    /// Records publishes (FCALL) while usable; else plain SPUBLISH.
    library: Arc<Library>,
}

impl Publish for Publisher {
    fn new(settings: &Redis, library: Arc<Library>) -> Self {
        let seeds = Seeds::new(settings);
        let addr = seeds
            .as_ref()
            .map_or_else(|_| "an unusable redis.nodes".to_string(), Seeds::addr);
        let client = seeds.and_then(|seeds| {
            ClusterClient::builder(seeds.infos)
                .connection_timeout(IO_TIMEOUT)
                .response_timeout(IO_TIMEOUT)
                .build()
                .map_err(|err| BrokerError::Settings(err.to_string()))
        });
        Self {
            client,
            connection: OnceCell::new(),
            prefix: settings.channel_prefix.as_str().into(),
            addr,
            library,
        }
    }

    fn addr(&self) -> &str {
        &self.addr
    }

    fn publish(
        self: Arc<Self>,
        topic: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Option<Position>, BrokerError>> {
        async move {
            let mut connection = self.connection().await?;
            let channel = format!("{}{topic}", self.prefix);
            // A missing library is loaded on every master at once: the
            // cluster connection sends FUNCTION LOAD to all of them.
            let recorded = self
                .library
                .record(&mut connection, &channel, &payload, &self.addr);
            if let Call::Done(position) = recorded.await? {
                return Ok(position);
            }
            let mut command = redis::cmd("SPUBLISH");
            command.arg(channel).arg(payload.as_ref());
            let _receivers: i64 =
                within(command.query_async(&mut connection), &self.addr, "SPUBLISH").await?;
            Ok(None)
        }
        .boxed()
    }

    fn history(
        self: Arc<Self>,
        topic: String,
        since: Option<Position>,
    ) -> BoxFuture<'static, Result<Range, BrokerError>> {
        async move {
            let mut connection = self.connection().await?;
            let channel = format!("{}{topic}", self.prefix);
            self.library
                .read(&mut connection, &channel, since.as_ref(), &self.addr)
                .await
        }
        .boxed()
    }

    fn reset(
        self: Arc<Self>,
        topic: String,
        epoch: Arc<str>,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        async move {
            let mut connection = self.connection().await?;
            let channel = format!("{}{topic}", self.prefix);
            self.library
                .reset(&mut connection, &channel, &epoch, &self.addr)
                .await
        }
        .boxed()
    }
}

impl Publisher {
    async fn connection(&self) -> Result<ClusterConnection, BrokerError> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let connection = self
            .connection
            .get_or_try_init(|| {
                within(
                    client.get_async_connection(),
                    &self.addr,
                    "the connection attempt",
                )
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
    fn new(settings: &Redis) -> Result<Self, BrokerError> {
        let infos = settings
            .nodes
            .iter()
            .map(|url| url_info(url, settings.password.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        if infos.is_empty() {
            return Err(BrokerError::Settings(
                "redis.nodes names no seed node".into(),
            ));
        }
        Ok(Self { infos })
    }

    /// The seeds' `host:port`, for errors: no credentials.
    fn addr(&self) -> String {
        let addrs: Vec<String> = self.infos.iter().map(addr_of).collect();
        addrs.join(", ")
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
    /// Ping period of each master's link, and how long a ping may take.
    health_check: Duration,
    /// Seed URLs and password as configured: equal means the same links.
    server: (Vec<String>, Option<String>),
}

impl Target {
    fn new(settings: &Redis) -> Result<Self, BrokerError> {
        Ok(Self {
            seeds: Seeds::new(settings)?,
            prefix: settings.channel_prefix.as_str().into(),
            reconnect_max: settings.reconnect_max,
            health_check: settings.health_check,
            server: (settings.nodes.clone(), settings.password.clone()),
        })
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }
}

#[cfg(test)]
mod tests;
