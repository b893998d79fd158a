//! The in-process session harness: a channel pair as the socket, the memory
//! broker, and the senders that drive a session's config and shutdown.

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{Sink, Stream};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::broker::memory::MemoryBroker;
use crate::config::{Config, RawConfig};
use crate::hub::{Hub, Registry};
use crate::metrics::Metrics;
use crate::session::{Handles, run};
use crate::state::{ConnectionSlot, Connections};

const SECRET: &str = "session-test-secret";

/// jwt mode without leeway, the memory broker, `public-*` and the token
/// subject's own `user.<sub>.*` allowed, long idle timeout; `extra` TOML
/// is appended (tables not named here only).
pub(super) fn config(extra: &str) -> Config {
    config_in("jwt", extra)
}

/// [`config`] in `auth.mode = mode`.
pub(super) fn config_in(mode: &str, extra: &str) -> Config {
    compile(raw_config(mode, extra))
}

/// The raw form of [`config_in`], to edit before [`compile`].
pub(super) fn raw_config(mode: &str, extra: &str) -> RawConfig {
    let text = format!(
        "[server]\nidle_timeout_secs = 3600\n\
         [auth]\nmode = \"{mode}\"\ntimeout_secs = 30\n[auth.jwt]\nsecret = \"{SECRET}\"\nleeway_secs = 0\n\
         [broker]\nkind = \"memory\"\n{extra}\n"
    );
    let mut raw = RawConfig::from_toml(&text).unwrap_or_else(|err| panic!("parses: {err}"));
    if raw.acl.rules.is_empty() {
        let rules = "[[acl.rules]]\ntopics = [\"public-*\"]\neffect = \"allow\"\n\
                     [[acl.rules]]\ntopics = [\"user.${sub}.*\"]\neffect = \"allow\"\n";
        raw.acl = RawConfig::from_toml(rules).expect("acl parses").acl;
    }
    raw
}

pub(super) fn compile(raw: RawConfig) -> Config {
    raw.compile(Path::new("."))
        .unwrap_or_else(|err| panic!("compiles: {err}"))
}

/// An HS256 token for `sub` that expires `ttl` seconds from now.
pub(super) fn token(sub: &str, ttl: u64) -> String {
    signed(
        &json!({"sub": sub, "exp": crate::auth::now() + ttl}),
        SECRET,
    )
}

/// `claims` signed with HS256 and `secret`.
pub(super) fn signed(claims: &Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("sign")
}

/// A text frame the test socket fails on with a panic, as a bug anywhere in
/// the session's read path would.
pub(super) const PANIC: &str = "the transport panics on this frame";

/// The server's end of the channel pair.
pub(super) struct Socket {
    incoming: mpsc::Receiver<Result<Message, WsError>>,
    outgoing: Pin<Box<dyn Sink<Message, Error = WsError> + Send>>,
    /// Frames sent but not yet flushed, as in a WebSocket's write buffer:
    /// the client sees them on the next flush.
    unflushed: VecDeque<Message>,
    /// Flushes that completed: the writes a TCP socket would have made.
    flushes: Arc<AtomicUsize>,
}

/// Frames [`Socket`] buffers before a send waits for a flush.
const SOCKET_BUFFER: usize = 16;

impl Socket {
    /// Moves buffered frames to the client while it has room.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        while !self.unflushed.is_empty() {
            ready!(self.outgoing.as_mut().poll_ready(cx))?;
            if let Some(message) = self.unflushed.pop_front() {
                self.outgoing.as_mut().start_send(message)?;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Stream for Socket {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.incoming.poll_recv(cx);
        if let Poll::Ready(Some(Ok(Message::Text(text)))) = &next {
            assert_ne!(text.as_str(), PANIC, "the test socket panics as asked");
        }
        next
    }
}

impl Sink<Message> for Socket {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.unflushed.len() >= SOCKET_BUFFER {
            ready!(self.drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.unflushed.push_back(item);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        ready!(self.drain(cx))?;
        let flushed = self.outgoing.as_mut().poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        ready!(self.drain(cx))?;
        self.outgoing.as_mut().poll_close(cx)
    }
}

/// One gateway's worth of what sessions use, with the senders that drive it.
pub(super) struct Harness {
    pub config: watch::Sender<Arc<Config>>,
    pub shutdown: watch::Sender<bool>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<Connections>,
    /// What wakes the sessions on a reload or the shutdown.
    notices: Arc<Notify>,
}

impl Harness {
    pub(super) fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(metrics.clone()));
        let broker = Arc::new(MemoryBroker::new(registry.clone()));
        let config = watch::Sender::new(Arc::new(config));
        let shutdown = watch::Sender::new(false);
        Self {
            notices: crate::state::notices(config.subscribe(), shutdown.subscribe()),
            config,
            shutdown,
            hub: Arc::new(Hub::new(registry, broker)),
            connections: Arc::new(Connections::new(metrics.connections.clone())),
            metrics,
        }
    }

    /// A session over a socket whose client side holds at most `window`
    /// unread frames; reads the greeting.
    pub(super) async fn connect_with_window(&self, window: usize) -> Client {
        let (to_server, incoming) = mpsc::channel(16);
        let (outgoing, from_server) = mpsc::channel(window);
        let outgoing = futures_util::sink::unfold(outgoing, |tx, message: Message| async move {
            tx.send(message)
                .await
                .map_err(|_| WsError::ConnectionClosed)?;
            Ok::<_, WsError>(tx)
        });
        let flushes = Arc::new(AtomicUsize::new(0));
        let socket = Socket {
            incoming,
            outgoing: Box::pin(outgoing),
            unflushed: VecDeque::new(),
            flushes: flushes.clone(),
        };
        let handles = Handles {
            hub: self.hub.clone(),
            config: self.config.subscribe(),
            shutdown: self.shutdown.subscribe(),
            notices: self.notices.clone(),
            metrics: self.metrics.clone(),
            slot: self.connections.open(usize::MAX).expect("a slot"),
        };
        let mut client = Client {
            to_server,
            from_server,
            session: String::new(),
            flushes,
            task: tokio::spawn(run(socket, handles, None)),
        };
        assert_eq!(
            client.recv().await,
            json!({"action":"connect","message":"connection established"})
        );
        let greeting = client.recv().await;
        client.session = greeting["session"].as_str().expect("session id").into();
        client
    }

    pub(super) async fn connect(&self) -> Client {
        self.connect_with_window(64).await
    }

    pub(super) fn reload(&self, config: Config) {
        self.config.send_replace(Arc::new(config));
    }

    pub(super) async fn publish(&self, topic: &str, payload: &'static str) {
        let published = self.hub.broker().publish(topic, payload.into()).await;
        published.expect("the memory broker publishes");
    }
}

/// The client's end: requests in, frames out.
pub(super) struct Client {
    pub to_server: mpsc::Sender<Result<Message, WsError>>,
    pub from_server: mpsc::Receiver<Message>,
    pub session: String,
    /// The socket's completed flushes ([`Socket`]).
    flushes: Arc<AtomicUsize>,
    pub task: JoinHandle<Option<(Socket, ConnectionSlot)>>,
}

impl Client {
    pub(super) async fn send(&self, action: &str, context: &str) {
        let request = json!({"action": action, "session": self.session, "context": context});
        self.send_message(Message::text(request.to_string())).await;
    }

    pub(super) async fn send_message(&self, message: Message) {
        self.to_server
            .send(Ok(message))
            .await
            .expect("session open");
    }

    /// The next frame that is not a heartbeat ping.
    pub(super) async fn frame(&mut self) -> Message {
        loop {
            match self.from_server.recv().await.expect("a frame") {
                Message::Ping(_) => continue,
                message => return message,
            }
        }
    }

    pub(super) async fn recv(&mut self) -> Value {
        match self.frame().await {
            Message::Text(text) => serde_json::from_str(&text).expect("JSON frame"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The socket's completed flushes so far.
    pub(super) fn flushes(&self) -> usize {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Whether a frame arrives within `wait` of (paused) time.
    pub(super) async fn quiet_for(&mut self, wait: Duration) -> bool {
        timeout(wait, self.frame()).await.is_err()
    }

    pub(super) async fn login(&mut self, sub: &str, ttl: u64) {
        self.send("authorization", &token(sub, ttl)).await;
        assert_eq!(self.recv().await["message"], "session authenticated");
    }

    pub(super) async fn subscribed(&mut self, topic: &str) {
        self.send("subscribe", topic).await;
        assert_eq!(
            self.recv().await,
            json!({"action":"subscribe","message":"context subscribed","context":topic})
        );
    }

    /// The final frame with `error`, then a close frame with `code`.
    pub(super) async fn closed_with(&mut self, error: &str, code: u16) {
        assert_eq!(
            self.recv().await,
            json!({"action":"connect","message":"client disconnect","error":error})
        );
        match self.frame().await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(code)),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub(super) fn revoked(topic: &str, detail: &str) -> Value {
    json!({"action":"unsubscribe","message":"context revoked","context":topic,
           "error":"forbidden","detail":detail})
}
