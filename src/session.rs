//! One WebSocket connection: the SPEC §1 state machine.
//!
//! Two tasks per connection. The reader (this module's `run`) owns the
//! session state and handles requests one at a time, in order; it also
//! watches token expiry, the auth deadline, the heartbeat, config changes,
//! shutdown and close requests from the hub. The writer drains the bounded
//! send queue into the socket, several frames per flush, and sends the
//! pings the reader asks for. Both are generic over the socket's
//! `Stream`/`Sink`, so the logic runs over any transport.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use uuid::Uuid;

use crate::acl::{Decision, Policy};
use crate::auth::{self, Identity, Mode};
use crate::config::Config;
use crate::hub::{ClientHandle, SendQueue};
use crate::metrics::Metrics;
use crate::protocol::{self, Action, Disconnect, ErrorCode, Request};
use crate::server::Shared;

/// How long the final frame and close frame may take before the TCP
/// connection is simply dropped (SPEC §1, slow consumers).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most frames written per flush.
const WRITE_BATCH: usize = 64;

/// Where the session stands with authorization.
enum Auth {
    /// No successful authorization yet (or the token expired).
    None,
    /// A verified identity with its ACL bound once.
    Authenticated {
        /// The token's claims as compact JSON, to rebind the ACL when the
        /// config changes. Text rather than the parsed map: a `BTreeMap`
        /// keeps a 632-byte node even for three claims, on every
        /// connection, and rebinding is rare.
        claims: Box<str>,
        policy: Policy,
        /// When the token stops being valid (includes leeway).
        expires: Option<Instant>,
    },
}

struct Session {
    /// The uuid clients must echo in every request, in its hyphenated
    /// lowercase form. Kept as a `Uuid` (16 bytes inline) rather than its
    /// 36-character text on the heap.
    id: Uuid,
    client: ClientHandle,
    shared: Arc<Shared>,
    /// The config this session's policy was bound against.
    config: Arc<Config>,
    auth: Auth,
    /// ACL for requests without authorization in bypass mode.
    anonymous: Option<Policy>,
    /// Topics this session holds at the hub.
    topics: HashSet<String>,
    /// jwt mode: the connection closes unless authorized by then.
    auth_deadline: Option<Instant>,
    /// `limits.requests_per_sec` / `request_burst` for this connection.
    requests: TokenBucket,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(limits: &crate::config::Limits, now: Instant) -> Self {
        let burst = f64::from(limits.request_burst);
        Self {
            rate: f64::from(limits.requests_per_sec),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// New limits apply from now on; saved tokens are kept up to the new burst.
    fn reconfigure(&mut self, limits: &crate::config::Limits) {
        self.rate = f64::from(limits.requests_per_sec);
        self.burst = f64::from(limits.request_burst);
        self.tokens = self.tokens.min(self.burst);
    }

    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves one upgraded connection until it closes. Returns the socket, so
/// the caller can linger on it: a peer that still has unread bytes in flight
/// would otherwise get a reset and may lose the close frame.
///
/// Not an `async fn`: its arguments would stay in the future for the whole
/// connection, the unsplit socket included. The setup runs here and the
/// future keeps only what the read loop needs.
pub fn run<S>(
    socket: S,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
) -> impl Future<Output = Option<S>> + Send
where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static,
{
    let config = shared.config.borrow().clone();
    let client = ClientHandle::new(shared.next_client_id(), config.limits.send_queue);
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(
        sink,
        client.queue().clone(),
        shared.metrics.clone(),
    ));

    let id = Uuid::new_v4();
    tracing::info!(session = %id, peer = peer.map(tracing::field::display), "connection opened");
    for frame in protocol::greeting(id.hyphenated().encode_lower(&mut Uuid::encode_buffer())) {
        client.push(frame);
    }
    let auth_deadline =
        (config.auth.mode == Mode::Jwt).then(|| Instant::now() + config.auth.timeout);
    let mut session = Session {
        requests: TokenBucket::new(&config.limits, Instant::now()),
        id,
        client,
        shared,
        config,
        auth: Auth::None,
        anonymous: None,
        topics: HashSet::new(),
        auth_deadline,
    };
    async move {
        let reason = session.read_loop(&mut stream).await;
        session.client.close(reason);
        session.release_all();
        tracing::info!(session = %session.id, peer = peer.map(tracing::field::display), reason = reason.code().unwrap_or("peer_closed"), "connection closed");
        drop(session);
        let sink = writer.await.ok()?;
        stream.reunite(sink).ok()
    }
}

impl Session {
    async fn read_loop<R>(&mut self, stream: &mut R) -> Disconnect
    where
        R: Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let mut config_rx = self.shared.config.clone();
        let idle_timeout = self.config.server.idle_timeout;
        let mut last_seen = Instant::now();
        // SPEC §1 heartbeat: a ping every third of the idle timeout, queued
        // for the writer; any frame, pongs included, proves the peer alive.
        let mut ping_at = last_seen + idle_timeout / 3;
        let mut shutdown = self.shared.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return Disconnect::Shutdown;
        }
        loop {
            // One timer for the heartbeat and all three deadlines keeps a
            // single `Sleep` per connection. The auth deadline is set only
            // before authorization and the token's expiry only after, so at
            // most one of them is pending.
            let idle_at = last_seen + idle_timeout;
            let timer = self
                .auth_deadline
                .or(self.expires())
                .map_or(idle_at, |at| at.min(idle_at))
                .min(ping_at);
            tokio::select! {
                message = stream.next() => {
                    last_seen = Instant::now();
                    match message {
                    None | Some(Ok(Message::Close(_))) => return Disconnect::Gone,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        return Disconnect::TooLarge;
                    }
                    Some(Err(_)) => return Disconnect::Gone,
                    // Boxed: requests are rare, and their future would
                    // otherwise enlarge every idle connection's task.
                    Some(Ok(Message::Text(text))) => Box::pin(self.handle_text(&text)).await,
                    Some(Ok(Message::Binary(_))) => {
                        self.client.push(protocol::decode_failure(&protocol::DecodeError {
                            code: ErrorCode::BadRequest,
                            detail: "binary frames are not accepted; send JSON text".into(),
                            id: None,
                        }));
                    }
                    Some(Ok(_)) => {}
                    }
                }
                _ = sleep_until(timer) => {
                    let now = Instant::now();
                    if now >= ping_at {
                        self.client.queue().ping();
                        ping_at = now + idle_timeout / 3;
                    }
                    if self.auth_deadline.is_some_and(|at| now >= at) {
                        self.shared.metrics.auth_failure("auth_timeout");
                        return Disconnect::AuthTimeout;
                    }
                    if self.expires().is_some_and(|at| now >= at) {
                        self.expire();
                    } else if now >= last_seen + idle_timeout {
                        return Disconnect::Idle;
                    }
                }
                reason = self.client.queue().closed() => return reason,
                _ = shutdown.changed() => return Disconnect::Shutdown,
                changed = config_rx.changed() => {
                    if changed.is_ok() {
                        let config = config_rx.borrow_and_update().clone();
                        self.apply_config(config);
                    }
                }
            }
        }
    }

    /// When the token stops being valid, once authorized.
    fn expires(&self) -> Option<Instant> {
        match &self.auth {
            Auth::Authenticated { expires, .. } => *expires,
            Auth::None => None,
        }
    }

    /// Whether `session` is this connection's id as the greeting sent it.
    fn is_own(&self, session: &str) -> bool {
        session
            == self
                .id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
    }

    async fn handle_text(&mut self, text: &str) {
        let decoded = protocol::decode(text);
        let allowed = self.requests.take(Instant::now());
        let request = match decoded {
            Ok(request) => request,
            Err(err) => {
                self.client.push(protocol::decode_failure(&err));
                return;
            }
        };
        if !allowed {
            let limits = &self.config.limits;
            let detail = format!(
                "more than {} requests a second (burst {})",
                limits.requests_per_sec, limits.request_burst
            );
            self.fail(&request, ErrorCode::LimitExceeded, &detail);
            return;
        }
        if !self.is_own(&request.session) {
            self.fail(
                &request,
                ErrorCode::InvalidSession,
                "session does not match this connection",
            );
            return;
        }
        match request.action {
            Action::Authorization => self.authorize(&request),
            Action::Subscribe => self.subscribe(&request).await,
            Action::Unsubscribe => self.unsubscribe(&request),
        }
    }

    fn fail(&self, request: &Request, code: ErrorCode, detail: &str) {
        self.client.push(protocol::failure(
            request.action,
            code,
            detail,
            &request.context,
            request.id.as_ref(),
        ));
    }

    fn succeed(&self, request: &Request) {
        self.client.push(protocol::success(
            request.action,
            &request.context,
            request.id.as_ref(),
        ));
    }

    fn authorize(&mut self, request: &Request) {
        let identity = match self.config.auth.authorize(&request.context, auth::now()) {
            Ok(identity) => identity,
            Err(err) => {
                tracing::info!(session = %self.id, reason = %err, "authorization refused");
                self.shared.metrics.auth_failure("invalid_token");
                self.fail(request, ErrorCode::InvalidToken, &err.to_string());
                return;
            }
        };
        let policy = self.config.acl.bind(&identity);
        let expires = identity.expires_at.map(|exp| {
            let left = exp.saturating_sub(auth::now());
            Instant::now() + Duration::from_secs(left)
        });
        tracing::info!(session = %self.id, sub = identity.subject().unwrap_or("-"), "session authenticated");
        if matches!(self.auth, Auth::None) {
            self.shared.metrics.sessions_authenticated.inc();
        }
        self.auth = Auth::Authenticated {
            claims: serde_json::to_string(&identity.claims)
                .unwrap_or_default()
                .into(),
            policy,
            expires,
        };
        self.auth_deadline = None;
        // A refresh keeps what the new token allows and revokes the rest.
        self.revoke_disallowed("no longer allowed by the new token");
        self.succeed(request);
    }

    /// The ACL that applies now, or `None` when the request must be refused
    /// as unauthenticated.
    fn policy(&mut self) -> Option<&Policy> {
        match &self.auth {
            Auth::Authenticated { policy, .. } => Some(policy),
            Auth::None if self.config.auth.mode == Mode::Bypass => {
                let acl = &self.config.acl;
                Some(
                    self.anonymous
                        .get_or_insert_with(|| acl.bind(&Identity::anonymous())),
                )
            }
            Auth::None => None,
        }
    }

    /// Checks the topic and authorization shared by subscribe and unsubscribe.
    fn admit(&mut self, request: &Request) -> Option<Decision> {
        if let Err(detail) = protocol::validate_topic(&request.context) {
            self.fail(request, ErrorCode::BadRequest, &detail);
            return None;
        }
        match self.policy() {
            Some(policy) => Some(policy.check(&request.context)),
            None => {
                self.shared.metrics.auth_failure("unauthenticated");
                self.fail(
                    request,
                    ErrorCode::Unauthenticated,
                    "send a successful authorization first",
                );
                None
            }
        }
    }

    async fn subscribe(&mut self, request: &Request) {
        let Some(decision) = self.admit(request) else {
            return;
        };
        let topic = &request.context;
        if !decision.allowed() {
            let detail = match decision {
                Decision::Deny(Some(rule)) => format!("acl rule {rule} denies topic {topic}"),
                _ => format!("no rule allows topic {topic}"),
            };
            self.fail(request, ErrorCode::Forbidden, &detail);
            return;
        }
        if self.topics.contains(topic) {
            self.succeed(request);
            return;
        }
        let max = self.config.limits.max_subscriptions;
        if self.topics.len() >= max {
            let detail = format!("at most {max} subscriptions per session");
            self.fail(request, ErrorCode::LimitExceeded, &detail);
            return;
        }
        let ack = protocol::success(request.action, topic, request.id.as_ref());
        match self.shared.hub.subscribe(topic, &self.client, ack).await {
            Ok(()) => {
                self.topics.insert(topic.clone());
                self.shared.metrics.subscriptions.inc();
            }
            Err(err) => {
                tracing::warn!(session = %self.id, error = %err, "subscribe unavailable");
                self.fail(request, ErrorCode::Unavailable, &err.to_string());
            }
        }
    }

    fn unsubscribe(&mut self, request: &Request) {
        if self.admit(request).is_none() {
            return;
        }
        if self.topics.remove(&request.context) {
            self.shared.metrics.subscriptions.dec();
            self.shared
                .hub
                .unsubscribe(&request.context, self.client.id);
        }
        self.succeed(request);
    }

    /// The token's `exp` passed: drop every subscription (SPEC §1).
    fn expire(&mut self) {
        tracing::info!(session = %self.id, "token expired");
        self.auth = Auth::None;
        self.shared.metrics.sessions_authenticated.dec();
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        for topic in topics {
            self.revoke(&topic, "token expired");
        }
        self.client.push(protocol::expired());
        if self.config.auth.mode == Mode::Jwt {
            self.auth_deadline = Some(Instant::now() + self.config.auth.timeout);
        }
    }

    /// A new config: rebind the ACL and revoke what it no longer allows.
    fn apply_config(&mut self, config: Arc<Config>) {
        if Arc::ptr_eq(&config, &self.config) {
            return;
        }
        self.config = config;
        self.anonymous = None;
        self.requests.reconfigure(&self.config.limits);
        if let Auth::Authenticated { claims, policy, .. } = &mut self.auth {
            // The text was written by `serde_json` from a map; should it not
            // read back, no claim is left to allow anything by.
            let identity = Identity {
                claims: serde_json::from_str(claims).unwrap_or_default(),
                expires_at: None,
            };
            *policy = self.config.acl.bind(&identity);
        }
        self.revoke_disallowed("no longer allowed by the acl");
    }

    fn revoke_disallowed(&mut self, detail: &str) {
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        let Some(policy) = self.policy() else {
            return;
        };
        let denied: Vec<String> = topics
            .into_iter()
            .filter(|t| !policy.check(t).allowed())
            .collect();
        for topic in denied {
            self.revoke(&topic, detail);
        }
    }

    fn revoke(&mut self, topic: &str, detail: &str) {
        if self.topics.remove(topic) {
            self.shared.metrics.subscriptions.dec();
            tracing::info!(session = %self.id, topic, reason = detail, "subscription revoked");
            self.shared.hub.unsubscribe(topic, self.client.id);
            self.client.push(protocol::revoked(topic, detail));
        }
    }

    /// The connection is over: let go of every topic and of the gauges.
    fn release_all(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.subscriptions.sub(self.topics.len() as i64);
        for topic in self.topics.drain() {
            self.shared.hub.unsubscribe(&topic, self.client.id);
        }
        if matches!(self.auth, Auth::Authenticated { .. }) {
            metrics.sessions_authenticated.dec();
            self.auth = Auth::None;
        }
    }
}

/// Drains the queue into the socket until the session closes, then sends the
/// final frame and close frame when the reason calls for them. Heartbeat
/// pings come through the queue too: the reader owns the timers.
///
/// Holds no buffer or timer of its own while idle: each wake takes up to
/// [`WRITE_BATCH`] frames from the queue, feeding each straight into the
/// sink, so an idle connection pays only for this future. `arrivals` grows
/// on the first delivery, never before.
///
/// Not an `async fn`, which keeps its arguments twice in the future (80
/// bytes more here, measured); tokio rounds each task up to a multiple of
/// 128 bytes, and this one is spawned per connection.
#[expect(
    clippy::manual_async_fn,
    reason = "the async block holds the arguments once"
)]
fn write_loop<W>(
    mut sink: W,
    queue: Arc<SendQueue>,
    metrics: Arc<Metrics>,
) -> impl Future<Output = W> + Send
where
    W: Sink<Message, Error = WsError> + Unpin + Send,
{
    async move {
        // Broker arrival times of the deliveries written since the last flush.
        let mut arrivals: Vec<Instant> = Vec::new();
        loop {
            if !queue.ready().await {
                break;
            }
            let write = async {
                if queue.take_ping() {
                    sink.feed(Message::Ping(Default::default())).await?;
                }
                let mut fed = 0;
                while fed < WRITE_BATCH {
                    let Some(outbound) = queue.pop() else { break };
                    arrivals.extend(outbound.arrived());
                    sink.feed(Message::Text(outbound.frame)).await?;
                    fed += 1;
                }
                sink.flush().await
            };
            let written = tokio::select! {
                _ = queue.closing_requested() => break,
                written = write => written,
            };
            if written.is_err() {
                // The socket is gone: refuse further frames rather than hold
                // them until the session notices.
                queue.shut();
                return sink;
            }
            let now = Instant::now();
            metrics.frames_delivered.inc_by(arrivals.len() as u64);
            for arrived in arrivals.drain(..) {
                let latency = now.saturating_duration_since(arrived);
                metrics.delivery_latency.observe(latency.as_secs_f64());
            }
        }
        // A slow consumer's queue is discarded unsent, as is anything left.
        let (reason, left) = queue.shut();
        if left > 0 {
            let why = match reason {
                Some(Disconnect::SlowConsumer) => "slow_consumer",
                _ => "closed",
            };
            metrics.dropped(why, left);
        }
        drop(queue);
        let Some(reason) = reason else { return sink };
        if reason == Disconnect::Gone {
            // The peer's close frame was read and tungstenite queued the reply;
            // send it, so a clean close ends as 1000 rather than 1006.
            let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
            return sink;
        }
        let (Some(frame), Some(code)) = (reason.final_frame(), reason.close_code()) else {
            return sink;
        };
        let farewell = async {
            sink.send(Message::Text(frame)).await?;
            sink.send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            })))
            .await
        };
        let _ = timeout(CLOSE_TIMEOUT, farewell).await;
        sink
    }
}
