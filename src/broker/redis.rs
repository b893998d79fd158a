//! Redis Pub/Sub broker: one actor owns this replica's subscribing connection.
//!
//! Commands reach the actor over one ordered channel, so an UNSUBSCRIBE and a
//! later SUBSCRIBE of the same topic reach Redis in that order. The actor
//! remembers every channel it holds; when the connection drops it reconnects
//! with capped, jittered exponential backoff and resubscribes all of them
//! before it reports ready again. PUBLISH goes through a deadpool pool, since
//! a subscribed connection cannot publish.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::PubSubSink;
use redis::{ConnectionInfo, IntoConnectionInfo};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::{Broker, BrokerError, Deliver};
use crate::config::{Config, Redis};
use crate::metrics::Metrics;

/// Longest wait for Redis to accept a connection or confirm a command.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay; doubles up to `redis.reconnect_max_secs`.
pub(super) const BACKOFF_START: Duration = Duration::from_millis(100);

enum Command {
    Subscribe(String, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(String),
    /// Move to new `[redis]` settings without losing a subscription.
    Reconfigure(Redis),
}

pub struct RedisBroker {
    /// Ordered requests to the actor; unbounded so `unsubscribe` never waits
    /// (the hub calls it under its lock). Its length is bounded by the hub,
    /// which sends one command per topic transition.
    commands: mpsc::UnboundedSender<Command>,
    ready: watch::Receiver<bool>,
    /// Where PUBLISH goes; replaced whole when `[redis]` changes. A std
    /// mutex: held only to clone the `Arc`, never across an await.
    publisher: Mutex<Arc<Publisher>>,
    /// The settings in force, to tell whether a new config changes them.
    settings: Mutex<Redis>,
}

/// A PUBLISH path: pooled connections and the channel prefix.
struct Publisher {
    /// `Err` holds why the pool could not be built.
    pool: Result<deadpool_redis::Pool, String>,
    /// Topic T is Redis channel `prefix + T`.
    prefix: Arc<str>,
}

impl Publisher {
    fn new(settings: &Redis) -> Self {
        let pool = connection_info(settings).and_then(|info| {
            let manager = deadpool_redis::Manager::new(info).map_err(|e| e.to_string())?;
            deadpool_redis::Pool::builder(manager)
                .max_size(settings.pool_size)
                .wait_timeout(Some(IO_TIMEOUT))
                .create_timeout(Some(IO_TIMEOUT))
                .runtime(deadpool_redis::Runtime::Tokio1)
                .build()
                .map_err(|e| e.to_string())
        });
        Self {
            pool,
            prefix: settings.channel_prefix.as_str().into(),
        }
    }
}

/// Where the subscribing connection goes.
struct Target {
    client: redis::Client,
    /// URL and password as configured: equal means the same connection.
    server: (String, Option<String>),
    prefix: Arc<str>,
    reconnect_max: Duration,
}

impl Target {
    fn new(settings: &Redis) -> Result<Self, String> {
        let info = connection_info(settings)?;
        Ok(Self {
            client: redis::Client::open(info).map_err(|e| e.to_string())?,
            server: (settings.url.clone(), settings.password.clone()),
            prefix: settings.channel_prefix.as_str().into(),
            reconnect_max: settings.reconnect_max,
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

impl RedisBroker {
    /// Spawns the actor; it connects at once and keeps retrying while Redis is away.
    pub fn start(settings: Redis, deliver: Arc<dyn Deliver>, metrics: Arc<Metrics>) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        match Target::new(&settings) {
            Ok(target) => {
                let (lost_tx, lost_rx) = mpsc::unbounded_channel();
                let actor = Actor {
                    target,
                    next: None,
                    deliver,
                    topics: HashSet::new(),
                    link: None,
                    ready: ready_tx,
                    generation: 0,
                    lost_tx,
                    lost_rx,
                    metrics,
                };
                tokio::spawn(actor.run(inbox));
            }
            Err(err) => {
                tracing::error!(error = %err, "redis broker cannot start");
                drop(ready_tx);
            }
        }
        Self {
            commands,
            ready,
            publisher: Mutex::new(Arc::new(Publisher::new(&settings))),
            settings: Mutex::new(settings),
        }
    }
}

fn connection_info(settings: &Redis) -> Result<ConnectionInfo, String> {
    url_info(&settings.url, settings.password.as_deref())
}

/// `url` as connection settings, with `password` (when set) in place of
/// the URL's own.
pub(super) fn url_info(url: &str, password: Option<&str>) -> Result<ConnectionInfo, String> {
    let info = url.into_connection_info().map_err(|e| e.to_string())?;
    Ok(match password {
        Some(password) => {
            let redis = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(redis)
        }
        None => info,
    })
}

/// Asks a broker actor to subscribe (`command` wraps the reply channel) and
/// waits for its answer; `stopped` is the error when the actor is gone.
pub(super) fn ask_actor<C>(
    commands: &mpsc::UnboundedSender<C>,
    command: impl FnOnce(oneshot::Sender<Result<(), BrokerError>>) -> C,
    stopped: &'static str,
) -> BoxFuture<'static, Result<(), BrokerError>> {
    let (tx, rx) = oneshot::channel();
    let sent = commands.send(command(tx)).is_ok();
    async move {
        if !sent {
            return Err(unavailable(stopped));
        }
        rx.await.unwrap_or_else(|_| Err(unavailable(stopped)))
    }
    .boxed()
}

/// Runs a publish `query` within [`IO_TIMEOUT`]; `late` is the error when
/// Redis does not answer in time.
pub(super) async fn publish_within<F>(query: F, late: &'static str) -> Result<(), BrokerError>
where
    F: std::future::Future<Output = redis::RedisResult<i64>>,
{
    match timeout(IO_TIMEOUT, query).await {
        Ok(Ok(_receivers)) => Ok(()),
        Ok(Err(err)) => Err(unavailable(describe(err))),
        Err(_) => Err(unavailable(late)),
    }
}

/// Takes `config`'s `[redis]` into `settings` when it differs; the new
/// settings, for the broker to pass on to its publisher and actor.
pub(super) fn changed_settings(settings: &Mutex<Redis>, config: &Config) -> Option<Redis> {
    let mut settings = lock(settings);
    (*settings != config.redis).then(|| {
        *settings = config.redis.clone();
        settings.clone()
    })
}

pub(super) fn unavailable(reason: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(reason.to_string())
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Broker for RedisBroker {
    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let topic = topic.to_string();
        ask_actor(
            &self.commands,
            |reply| Command::Subscribe(topic, reply),
            "redis broker stopped",
        )
    }

    fn unsubscribe(&self, topic: &str) {
        let _ = self.commands.send(Command::Unsubscribe(topic.to_string()));
    }

    fn publish(&self, topic: &str, payload: Bytes) -> BoxFuture<'static, Result<(), BrokerError>> {
        let publisher = lock(&self.publisher).clone();
        let channel = format!("{}{topic}", publisher.prefix);
        async move {
            let pool = publisher.pool.as_ref().map_err(unavailable)?;
            let mut conn = pool.get().await.map_err(unavailable)?;
            let mut command = redis::cmd("PUBLISH");
            command.arg(channel).arg(payload.as_ref());
            publish_within(
                command.query_async(&mut conn),
                "redis did not answer PUBLISH in time",
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

    fn kind(&self) -> &'static str {
        "redis"
    }
}

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
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = BACKOFF_START;
        let mut next_attempt = Instant::now();
        let mut was_connected = false;
        loop {
            let wants_link = self.link.is_none() || self.next.is_some();
            if wants_link && Instant::now() >= next_attempt {
                let moving = self.next.is_some();
                match self.establish().await {
                    Ok(()) => {
                        // Ready before the log line, which tests and
                        // operators take as the sign of a usable broker.
                        self.ready.send_replace(true);
                        if moving {
                            tracing::info!(
                                topics = self.topics.len(),
                                "moved to the new redis and resubscribed"
                            );
                        } else if was_connected {
                            self.metrics.redis_reconnects.inc();
                            tracing::info!(
                                topics = self.topics.len(),
                                "redis reconnected and resubscribed"
                            );
                        } else {
                            tracing::info!("redis connected");
                        }
                        was_connected = true;
                        backoff = BACKOFF_START;
                    }
                    Err(err) => {
                        let delay = jitter(backoff);
                        let target = self.next.as_ref().unwrap_or(&self.target);
                        let max = target.reconnect_max;
                        // host:port only: the URL may carry a password.
                        let addr = target.client.get_connection_info().addr();
                        tracing::warn!(%addr, error = %err, retry_in_ms = delay.as_millis() as u64, "redis unavailable");
                        next_attempt = Instant::now() + delay;
                        backoff = (backoff * 2).min(max);
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
                            tracing::info!("redis settings changed; connecting to the new redis");
                            self.next = Some(target);
                            backoff = BACKOFF_START;
                            next_attempt = Instant::now();
                        }
                        Err(err) => tracing::error!(error = %err, "new redis settings unusable; keeping the current connection"),
                    },
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                Some(generation) = self.lost_rx.recv() => {
                    if self.link.as_ref().is_some_and(|l| l.generation == generation) {
                        tracing::warn!("redis connection lost; reconnecting");
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
    async fn establish(&mut self) -> Result<(), String> {
        let target = self.next.as_ref().unwrap_or(&self.target);
        let pubsub = timeout(IO_TIMEOUT, target.client.get_async_pubsub())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(describe)?;
        let (mut sink, mut stream) = pubsub.split();
        if !self.topics.is_empty() {
            let channels: Vec<String> = self.topics.iter().map(|t| target.channel(t)).collect();
            timeout(IO_TIMEOUT, sink.subscribe(channels))
                .await
                .map_err(|_| "resubscribe timed out".to_string())?
                .map_err(describe)?;
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
                    deliver.deliver(topic, msg.get_payload_bytes());
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

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Subscribe(topic, reply) => {
                let channel = self.target.channel(&topic);
                let result = match self.link.as_mut() {
                    None => Err(unavailable("redis is not connected")),
                    Some(link) => match timeout(IO_TIMEOUT, link.sink.subscribe(&channel)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(err)) => Err(unavailable(describe(err))),
                        Err(_) => Err(unavailable("redis did not confirm SUBSCRIBE in time")),
                    },
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
                    let _ = timeout(IO_TIMEOUT, link.sink.unsubscribe(&channel)).await;
                }
            }
            Command::Reconfigure(_) => {}
        }
    }
}

/// A log-friendly reason, with a hint for the errors operators hit most.
pub(super) fn describe(err: redis::RedisError) -> String {
    let text = err.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("wrongpass") || lower.contains("noauth") || lower.contains("auth") {
        format!("redis refused authentication (check redis.password / the URL's password): {text}")
    } else {
        text
    }
}

/// Between half and all of `delay`, so replicas do not reconnect in lockstep.
pub(super) fn jitter(delay: Duration) -> Duration {
    use rand::Rng;
    delay.mul_f64(rand::rng().random_range(0.5..=1.0))
}
