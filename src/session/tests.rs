//! Sessions in process: a channel pair as the socket, the memory broker and
//! paused time. No TCP, no Redis; timers fire when the test is idle, so
//! expiry and deadlines take no wall-clock time.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{Handles, run};
use crate::broker::memory::MemoryBroker;
use crate::config::{Config, RawConfig};
use crate::hub::{Hub, Registry};
use crate::metrics::Metrics;
use crate::state::{ConnectionSlot, Connections};

const SECRET: &str = "session-test-secret";

/// jwt mode without leeway, the memory broker, `public-*` and the token
/// subject's own `user.<sub>.*` allowed, long idle timeout; `extra` TOML
/// is appended (tables not named here only).
fn config(extra: &str) -> Config {
    config_in("jwt", extra)
}

/// [`config`] in `auth.mode = mode`.
fn config_in(mode: &str, extra: &str) -> Config {
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
    raw.compile(Path::new("."))
        .unwrap_or_else(|err| panic!("compiles: {err}"))
}

/// An HS256 token for `sub` that expires `ttl` seconds from now.
fn token(sub: &str, ttl: u64) -> String {
    let claims = json!({"sub": sub, "exp": crate::auth::now() + ttl});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
}

/// The server's end of the channel pair.
struct Socket {
    incoming: mpsc::Receiver<Result<Message, WsError>>,
    outgoing: Pin<Box<dyn Sink<Message, Error = WsError> + Send>>,
}

impl Stream for Socket {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for Socket {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.outgoing.as_mut().poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.outgoing.as_mut().start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.outgoing.as_mut().poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.outgoing.as_mut().poll_close(cx)
    }
}

/// One gateway's worth of what sessions use, with the senders that drive it.
struct Harness {
    config: watch::Sender<Arc<Config>>,
    shutdown: watch::Sender<bool>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    connections: Arc<Connections>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(metrics.clone()));
        let broker = Arc::new(MemoryBroker::new(registry.clone()));
        Self {
            config: watch::Sender::new(Arc::new(config)),
            shutdown: watch::Sender::new(false),
            hub: Arc::new(Hub::new(registry, broker)),
            connections: Arc::new(Connections::new(metrics.connections.clone())),
            metrics,
        }
    }

    /// A session over a socket whose client side holds at most `window`
    /// unread frames; reads the greeting.
    async fn connect_with_window(&self, window: usize) -> Client {
        let (to_server, incoming) = mpsc::channel(16);
        let (outgoing, from_server) = mpsc::channel(window);
        let outgoing = futures_util::sink::unfold(outgoing, |tx, message: Message| async move {
            tx.send(message)
                .await
                .map_err(|_| WsError::ConnectionClosed)?;
            Ok::<_, WsError>(tx)
        });
        let socket = Socket {
            incoming,
            outgoing: Box::pin(outgoing),
        };
        let handles = Handles {
            hub: self.hub.clone(),
            config: self.config.subscribe(),
            shutdown: self.shutdown.subscribe(),
            metrics: self.metrics.clone(),
            slot: self.connections.open(usize::MAX).expect("a slot"),
        };
        let mut client = Client {
            to_server,
            from_server,
            session: String::new(),
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

    async fn connect(&self) -> Client {
        self.connect_with_window(64).await
    }

    fn reload(&self, config: Config) {
        self.config.send_replace(Arc::new(config));
    }

    async fn publish(&self, topic: &str, payload: &'static str) {
        let published = self.hub.broker().publish(topic, payload.into()).await;
        published.expect("the memory broker publishes");
    }
}

/// The client's end: requests in, frames out.
struct Client {
    to_server: mpsc::Sender<Result<Message, WsError>>,
    from_server: mpsc::Receiver<Message>,
    session: String,
    task: JoinHandle<Option<(Socket, ConnectionSlot)>>,
}

impl Client {
    async fn send(&self, action: &str, context: &str) {
        let request = json!({"action": action, "session": self.session, "context": context});
        let message = Message::text(request.to_string());
        self.to_server
            .send(Ok(message))
            .await
            .expect("session open");
    }

    /// The next frame that is not a heartbeat ping.
    async fn frame(&mut self) -> Message {
        loop {
            match self.from_server.recv().await.expect("a frame") {
                Message::Ping(_) => continue,
                message => return message,
            }
        }
    }

    async fn recv(&mut self) -> Value {
        match self.frame().await {
            Message::Text(text) => serde_json::from_str(&text).expect("JSON frame"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Whether a frame arrives within `wait` of (paused) time.
    async fn quiet_for(&mut self, wait: Duration) -> bool {
        timeout(wait, self.frame()).await.is_err()
    }

    async fn login(&mut self, sub: &str, ttl: u64) {
        self.send("authorization", &token(sub, ttl)).await;
        assert_eq!(self.recv().await["message"], "session authenticated");
    }

    async fn subscribed(&mut self, topic: &str) {
        self.send("subscribe", topic).await;
        assert_eq!(
            self.recv().await,
            json!({"action":"subscribe","message":"context subscribed","context":topic})
        );
    }

    /// The final frame with `error`, then a close frame with `code`.
    async fn closed_with(&mut self, error: &str, code: u16) {
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

fn revoked(topic: &str, detail: &str) -> Value {
    json!({"action":"unsubscribe","message":"context revoked","context":topic,
           "error":"forbidden","detail":detail})
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_revokes_every_subscription_then_says_so() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 10).await;
    c.subscribed("public-news").await;
    c.subscribed("user.alice.inbox").await;
    assert!(c.quiet_for(Duration::from_secs(8)).await);

    let mut revocations = vec![c.recv().await, c.recv().await];
    revocations.sort_by_key(|frame| frame["context"].to_string());
    assert_eq!(
        revocations,
        [
            revoked("public-news", "token expired"),
            revoked("user.alice.inbox", "token expired"),
        ]
    );
    assert_eq!(
        c.recv().await,
        json!({"action":"session","message":"session expired","error":"token_expired"})
    );
    assert_eq!(h.hub.registry().topic_count(), 0);
    assert_eq!(h.metrics.subscriptions.get(), 0);
    assert_eq!(h.metrics.sessions_authenticated.get(), 0);

    c.send("subscribe", "public-news").await;
    assert_eq!(c.recv().await["error"], "unauthenticated");
}

#[tokio::test(start_paused = true)]
async fn after_expiry_the_session_must_reauthorize_within_the_auth_timeout() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 10).await;
    assert!(c.quiet_for(Duration::from_secs(8)).await);
    assert_eq!(c.recv().await["message"], "session expired");

    // auth.timeout_secs = 30 from the expiry: silent until then, then cut.
    assert!(c.quiet_for(Duration::from_secs(29)).await);
    c.closed_with("auth_timeout", 1008).await;
    let (_, slot) = c.task.await.expect("session task").expect("socket back");
    drop(slot);
    assert_eq!(h.connections.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_new_token_after_expiry_lifts_the_auth_deadline() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 10).await;
    assert_eq!(c.recv().await["message"], "session expired");
    c.login("alice", 3600).await;
    assert!(c.quiet_for(Duration::from_secs(120)).await);
    c.subscribed("public-news").await;
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_the_burst_are_limit_exceeded_until_tokens_return() {
    let h = Harness::new(config(
        "[limits]\nrequests_per_sec = 1\nrequest_burst = 2\n",
    ));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-a").await;
    c.send("subscribe", "public-b").await;
    assert_eq!(
        c.recv().await,
        json!({"action":"subscribe","message":"limit exceeded","context":"public-b",
               "error":"limit_exceeded","detail":"more than 1 requests a second (burst 2)"})
    );
    assert_eq!(h.hub.registry().topic_count(), 1);

    tokio::time::advance(Duration::from_secs(1)).await;
    c.subscribed("public-b").await;
}

#[tokio::test(start_paused = true)]
async fn an_acl_change_on_reload_revokes_what_it_no_longer_allows() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;
    c.subscribed("user.alice.inbox").await;

    h.reload(config(
        "[[acl.rules]]\ntopics = [\"user.${sub}.*\"]\neffect = \"allow\"\n",
    ));
    assert_eq!(
        c.recv().await,
        revoked("public-news", "no longer allowed by the acl")
    );
    h.publish("public-news", "\"gone\"").await;
    h.publish("user.alice.inbox", "\"kept\"").await;
    assert_eq!(
        c.recv().await,
        json!({"action":"message","topic":"user.alice.inbox","snapshot":"kept"})
    );
    assert_eq!(h.hub.registry().topic_count(), 1);
    c.send("subscribe", "public-news").await;
    assert_eq!(c.recv().await["error"], "forbidden");
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_gets_its_final_frame_and_1013_and_nothing_queued() {
    let h = Harness::new(config_in("bypass", "[limits]\nsend_queue = 4\n"));
    let mut c = h.connect_with_window(1).await;
    c.subscribed("public-flood").await;

    // The client reads nothing while twenty messages arrive at once: the
    // fifth overflows the queue of four.
    for _ in 0..20 {
        h.publish("public-flood", "\"x\"").await;
    }
    c.closed_with("slow_consumer", 1013).await;
    assert!(c.task.await.expect("session task").is_some());
    assert_eq!(h.hub.registry().topic_count(), 0);
    assert_eq!(
        h.metrics
            .frames_dropped
            .with_label_values(&["slow_consumer"])
            .get(),
        20
    );
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_never_drains_is_let_go_after_the_close_timeout() {
    let h = Harness::new(config_in("bypass", "[limits]\nsend_queue = 4\n"));
    let mut c = h.connect_with_window(1).await;
    c.subscribed("public-flood").await;
    for _ in 0..20 {
        h.publish("public-flood", "\"x\"").await;
    }
    // From here the client reads nothing: the final frame fills its window
    // and the close frame never fits. The session still ends, and its slot
    // is released.
    let (socket, slot) = (&mut c.task)
        .await
        .expect("session task")
        .expect("socket back");
    drop((socket, slot));
    assert_eq!(h.connections.count(), 0);
    assert_eq!(c.recv().await["error"], "slow_consumer");
    assert_eq!(c.from_server.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_with_1001() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    h.shutdown.send_replace(true);
    c.closed_with("shutdown", 1001).await;
}

/// The size of the future a function returns, without calling it.
fn future_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// Both tasks are spawned per connection, so their futures' sizes are paid
/// per connection (tokio rounds a task up to a multiple of 128 bytes).
/// Measured as `cargo test` builds them, with the socket the gateway uses.
#[test]
fn the_per_connection_futures_keep_their_size() {
    use futures_util::stream::SplitSink;
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::WebSocketStream;
    type Upgraded = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

    let reader = future_size(run::<Upgraded>);
    let writer = future_size(super::writer::write_loop::<SplitSink<Upgraded, Message>>);
    assert!(reader <= 952, "session reader future: {reader} bytes");
    assert!(writer <= 368, "session writer future: {writer} bytes");
}
