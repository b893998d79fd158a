//! The broker handle both Redis engines hand out: it forwards subscribes
//! and unsubscribes to the engine's actor over one ordered channel,
//! publishes through the engine's publishing path, and swaps both when the
//! `[redis]` settings change.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::{BrokerError, Command};
use crate::broker::history::Library;
use crate::broker::{Broker, Deliver, HistorySettings, HistoryStatus, Position, Range};
use crate::config::{Config, Redis};
use crate::metrics::Metrics;
use crate::sync::lock;

/// Held topics that are not subscribed on their shard right now, shared by
/// a sharded engine's actor (which edits it) and its handle (which reads
/// it), so one shard's outage leaves topics on the others live.
pub(crate) type Waiting = Arc<Mutex<HashSet<String>>>;

/// An engine's publishing path for one set of `[redis]` settings; replaced
/// whole when they change.
pub(crate) trait Publish: Send + Sync + Sized + 'static {
    /// A publishing path recording through `library` while it is usable.
    fn new(settings: &Redis, library: Arc<Library>) -> Self;
    /// Where it publishes, as errors name it (no credentials).
    fn addr(&self) -> &str;
    /// Publishes `payload` to `topic`'s channel, recorded when history is
    /// available.
    fn publish(
        self: Arc<Self>,
        topic: String,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Option<Position>, BrokerError>>;
    /// Reads `topic`'s recorded range (see [`Broker::history`]).
    fn history(
        self: Arc<Self>,
        topic: String,
        since: Option<Position>,
    ) -> BoxFuture<'static, Result<Range, BrokerError>>;
    /// Starts a new epoch of `topic`'s history (see [`Broker::reset`]).
    fn reset(
        self: Arc<Self>,
        topic: String,
        epoch: Arc<str>,
    ) -> BoxFuture<'static, Result<(), BrokerError>>;
}

/// What an engine's actor starts with.
pub(crate) struct Spawn {
    pub settings: Redis,
    pub deliver: Arc<dyn Deliver>,
    pub metrics: Arc<Metrics>,
    /// `true` while every held topic is subscribed.
    pub ready: watch::Sender<bool>,
    pub inbox: mpsc::UnboundedReceiver<Command>,
    /// Present for sharded engines (see [`Waiting`]).
    pub waiting: Option<Waiting>,
    /// The history library, loaded by the actor on each new connection.
    pub library: Arc<Library>,
}

/// A Redis engine as the hub sees it.
pub(crate) struct Handle<P> {
    /// `broker.kind`, for `/readyz` and logs.
    kind: &'static str,
    /// Ordered requests to the actor; unbounded so `unsubscribe` never waits
    /// (the hub calls it under its lock). Its length is bounded by the hub,
    /// which sends one command per topic transition.
    commands: mpsc::UnboundedSender<Command>,
    ready: watch::Receiver<bool>,
    /// Where PUBLISH goes; replaced whole when `[redis]` changes. Held only
    /// to clone the `Arc`, never across an await.
    publisher: Mutex<Arc<P>>,
    /// The settings in force, to tell whether a new config changes them.
    settings: Mutex<Redis>,
    /// `None` when one connection carries every topic.
    waiting: Option<Waiting>,
    /// Shared with the actor and every publisher: whether recording works.
    library: Arc<Library>,
}

impl<P: Publish> Handle<P> {
    /// Spawns the engine's actor with `spawn`; it connects at once and
    /// keeps retrying while Redis is away. With `sharded`, topics are live
    /// or not one by one, and recorded messages go out with `SPUBLISH`.
    pub(crate) fn start(
        kind: &'static str,
        settings: Redis,
        deliver: Arc<dyn Deliver>,
        metrics: Arc<Metrics>,
        sharded: bool,
        history: HistorySettings,
        spawn: impl FnOnce(Spawn) -> Result<(), BrokerError>,
    ) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let waiting = sharded.then(Waiting::default);
        let library = Arc::new(Library::new(history, sharded));
        let started = spawn(Spawn {
            settings: settings.clone(),
            deliver,
            metrics,
            ready: ready_tx,
            inbox,
            waiting: waiting.clone(),
            library: library.clone(),
        });
        if let Err(err) = started {
            // The actor is gone: subscribes answer `Stopped`, readiness
            // stays false.
            tracing::error!(error = %err, kind, "broker cannot start");
        }
        Self {
            kind,
            commands,
            ready,
            publisher: Mutex::new(Arc::new(P::new(&settings, library.clone()))),
            settings: Mutex::new(settings),
            waiting,
            library,
        }
    }
}

impl<P: Publish> Broker for Handle<P> {
    fn subscribe(&self, topic: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .commands
            .send(Command::Subscribe(topic.to_string(), reply))
            .is_ok();
        async move {
            if !sent {
                return Err(BrokerError::Stopped);
            }
            answer.await.unwrap_or(Err(BrokerError::Stopped))
        }
        .boxed()
    }

    fn unsubscribe(&self, topic: &str) {
        let _ = self.commands.send(Command::Unsubscribe(topic.to_string()));
    }

    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Option<Position>, BrokerError>> {
        lock(&self.publisher)
            .clone()
            .publish(topic.to_string(), payload)
    }

    fn history(
        &self,
        topic: &str,
        since: Option<Position>,
    ) -> BoxFuture<'static, Result<Range, BrokerError>> {
        lock(&self.publisher)
            .clone()
            .history(topic.to_string(), since)
    }

    fn reset(&self, topic: &str, epoch: Arc<str>) -> BoxFuture<'static, Result<(), BrokerError>> {
        lock(&self.publisher)
            .clone()
            .reset(topic.to_string(), epoch)
    }

    fn reconfigure(&self, config: &Config) {
        if self.library.update(&(&config.history).into()) {
            tracing::info!(size = config.history.size, "history settings applied");
        }
        let settings = {
            let mut settings = lock(&self.settings);
            if *settings == config.redis {
                return;
            }
            *settings = config.redis.clone();
            settings.clone()
        };
        *lock(&self.publisher) = Arc::new(P::new(&settings, self.library.clone()));
        let _ = self.commands.send(Command::Reconfigure(settings));
    }

    fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    fn live(&self, topic: &str) -> Result<(), BrokerError> {
        let live = *self.ready.borrow()
            || self
                .waiting
                .as_ref()
                .is_some_and(|waiting| !lock(waiting).contains(topic));
        if live {
            Ok(())
        } else {
            Err(BrokerError::not_connected(lock(&self.publisher).addr()))
        }
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn history_status(&self) -> HistoryStatus {
        self.library.status()
    }
}
