//! Redis Pub/Sub broker: one actor owns this replica's subscribing
//! connection (`actor`); PUBLISH goes through a deadpool pool, since a
//! subscribed connection cannot publish.
//!
//! The actor remembers every channel it holds; when the connection drops,
//! or stops answering its health check (`redis.health_check_secs`), it
//! reconnects with capped, jittered exponential backoff and resubscribes
//! all of them before it reports ready again. A pooled publishing
//! connection that times out or breaks leaves the pool.

mod actor;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};

use super::engine::{
    BrokerError, Handle, IO_TIMEOUT, Publish, Spawn, addr_of, from_pool, url_info, within,
};
use super::history::{Call, Library};
use super::{Deliver, HistorySettings, Position, Range};
use crate::config::Redis;
use crate::metrics::Metrics;

/// The single-Redis broker: the shared handle over this engine's actor.
pub(crate) type RedisBroker = Handle<Publisher>;

/// Starts the broker; its actor connects at once and keeps retrying while
/// Redis is away.
pub(crate) fn start(
    settings: Redis,
    deliver: Arc<dyn Deliver>,
    metrics: Arc<Metrics>,
    history: HistorySettings,
) -> RedisBroker {
    Handle::start(
        "redis",
        settings,
        deliver,
        metrics,
        false,
        history,
        |spawn: Spawn| {
            let target = Target::new(&spawn.settings)?;
            tokio::spawn(actor::run(target, spawn));
            Ok(())
        },
    )
}

/// A publishing path: pooled connections, the channel prefix and the
/// history library.
pub(crate) struct Publisher {
    /// `Err` holds why the pool could not be built.
    pool: Result<deadpool_redis::Pool, BrokerError>,
    /// Topic T is Redis channel `prefix + T`.
    prefix: Arc<str>,
    /// `host:port`, for errors.
    addr: String,
    /// Records publishes (FCALL) while usable; else plain PUBLISH.
    library: Arc<Library>,
}

impl Publish for Publisher {
    fn new(settings: &Redis, library: Arc<Library>) -> Self {
        let info = url_info(&settings.url, settings.password.as_deref());
        let addr = info
            .as_ref()
            .map_or_else(|_| "an unusable redis.url".to_string(), addr_of);
        let pool = info.and_then(|info| {
            let manager = deadpool_redis::Manager::new(info)
                .map_err(|err| BrokerError::Settings(err.to_string()))?;
            deadpool_redis::Pool::builder(manager)
                .max_size(settings.pool_size)
                .wait_timeout(Some(IO_TIMEOUT))
                .create_timeout(Some(IO_TIMEOUT))
                // A pooled connection is pinged before reuse; one that does
                // not answer in time is replaced, not handed out.
                .recycle_timeout(Some(IO_TIMEOUT))
                .runtime(deadpool_redis::Runtime::Tokio1)
                .build()
                .map_err(|err| BrokerError::Settings(err.to_string()))
        });
        Self {
            pool,
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
            let mut conn = self.pooled().await?;
            let channel = format!("{}{topic}", self.prefix);
            let published = self.publish_on(&mut conn, &channel, &payload).await;
            discard_if_broken(conn, &published);
            published
        }
        .boxed()
    }

    fn history(
        self: Arc<Self>,
        topic: String,
        since: Option<Position>,
    ) -> BoxFuture<'static, Result<Range, BrokerError>> {
        async move {
            let mut conn = self.pooled().await?;
            let channel = format!("{}{topic}", self.prefix);
            let range = self
                .library
                .read(&mut conn, &channel, since.as_ref(), &self.addr)
                .await;
            discard_if_broken(conn, &range);
            range
        }
        .boxed()
    }

    fn reset(
        self: Arc<Self>,
        topic: String,
        epoch: Arc<str>,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        async move {
            let pool = self.pool.as_ref().map_err(Clone::clone)?;
            let mut conn = pool
                .get()
                .await
                .map_err(|err| from_pool(&err, &self.addr))?;
            let channel = format!("{}{topic}", self.prefix);
            let reset = self
                .library
                .reset(&mut conn, &channel, &epoch, &self.addr)
                .await;
            discard_if_broken(conn, &reset);
            reset
        }
        .boxed()
    }
}

impl Publisher {
    /// A connection from the pool, or why none can be had.
    async fn pooled(&self) -> Result<deadpool_redis::Connection, BrokerError> {
        let pool = self.pool.as_ref().map_err(Clone::clone)?;
        pool.get().await.map_err(|err| from_pool(&err, &self.addr))
    }

    /// Records (FCALL) or publishes `payload` to `channel` on `conn`.
    async fn publish_on(
        &self,
        conn: &mut deadpool_redis::Connection,
        channel: &str,
        payload: &[u8],
    ) -> Result<Option<Position>, BrokerError> {
        let recorded = self.library.record(conn, channel, payload, &self.addr);
        if let Call::Done(position) = recorded.await? {
            return Ok(position);
        }
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload);
        let _receivers: i64 = within(command.query_async(conn), &self.addr, "PUBLISH").await?;
        Ok(None)
    }
}

/// Takes `conn` out of the pool when `result` says it did not answer or
/// broke: a silent connection must not serve the next publish (the pool
/// opens a fresh one instead).
fn discard_if_broken<T>(conn: deadpool_redis::Connection, result: &Result<T, BrokerError>) {
    if result.as_ref().is_err_and(BrokerError::breaks_link) {
        drop(deadpool_redis::Connection::take(conn));
    }
}

/// Where the subscribing connection goes.
struct Target {
    client: redis::Client,
    /// URL and password as configured: equal means the same connection.
    server: (String, Option<String>),
    prefix: Arc<str>,
    reconnect_max: std::time::Duration,
    /// Ping period of the subscribing link, and how long a ping may take.
    health_check: std::time::Duration,
    /// `host:port`, for errors and logs.
    addr: String,
}

impl Target {
    fn new(settings: &Redis) -> Result<Self, BrokerError> {
        let info = url_info(&settings.url, settings.password.as_deref())?;
        let addr = addr_of(&info);
        Ok(Self {
            client: redis::Client::open(info)
                .map_err(|err| BrokerError::Settings(err.to_string()))?,
            server: (settings.url.clone(), settings.password.clone()),
            prefix: settings.channel_prefix.as_str().into(),
            reconnect_max: settings.reconnect_max,
            health_check: settings.health_check,
            addr,
        })
    }

    /// Whether `other` would subscribe the same channels on the same server
    /// with the same credentials.
    fn same_link(&self, other: &Target) -> bool {
        self.prefix == other.prefix && self.server == other.server
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }
}

#[cfg(test)]
mod tests;
