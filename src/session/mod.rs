//! One WebSocket connection: the state machine of `docs/PROTOCOL.md`.
//!
//! One task per connection ([`run`]). It owns the session state and
//! handles requests one at a time, in order; between them it drains the
//! bounded send queue into the socket ([`writer`]) and watches token
//! expiry, the auth deadline, the heartbeat, config changes, shutdown and
//! close requests from the hub. It is generic over the socket's
//! `Stream`/`Sink`, so the logic runs over any transport (the unit tests
//! use a channel pair).
//!
//! One file per concern: [`authorize`] (tokens and the bound policy),
//! [`subscribe`] (subscribe and unsubscribe), [`revoke`] (expiry and config
//! changes), [`rate_limit`] (the request token bucket), [`writer`].

mod authorize;
mod rate_limit;
mod revoke;
mod serve;
mod subscribe;
mod topics;
mod writer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Sink, Stream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use crate::acl::Policy;
use crate::auth::Mode;
use crate::config::Config;
use crate::hub::{ClientHandle, Hub};
use crate::metrics::Metrics;
use crate::protocol::{self, Action, Disconnect, ErrorCode, Request};
use crate::state::ConnectionSlot;
use authorize::Auth;
use rate_limit::TokenBucket;
use topics::TopicSet;
pub use writer::Writer;

/// What a session needs from its gateway, and nothing more.
pub(crate) struct Handles {
    /// Subscribe and unsubscribe, one broker subscription per topic.
    pub hub: Arc<Hub>,
    /// The live config: on change the session rebinds its policy and
    /// revokes what the new one no longer allows.
    pub config: watch::Receiver<Arc<Config>>,
    /// Flips to `true` once: the session closes with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// Woken when `config` or `shutdown` changes.
    pub notices: Arc<Notify>,
    /// Subscriptions, authenticated sessions, auth failures, deliveries.
    pub metrics: Arc<Metrics>,
    /// This connection's place under `limits.max_connections`, and its
    /// client id.
    pub slot: ConnectionSlot,
}

struct Session {
    /// The uuid clients must echo in every request, in its hyphenated
    /// lowercase form. Kept as a `Uuid` (16 bytes inline) rather than its
    /// 36-character text on the heap.
    id: Uuid,
    /// This connection's send queue, as the hub sees it.
    client: ClientHandle,
    /// Where subscriptions go.
    hub: Arc<Hub>,
    /// Config changes; `config` below is the last one seen.
    updates: watch::Receiver<Arc<Config>>,
    /// The gateway's shutdown signal.
    shutdown: watch::Receiver<bool>,
    /// Woken when `updates` or `shutdown` changes.
    notices: Arc<Notify>,
    /// This gateway's Prometheus series.
    metrics: Arc<Metrics>,
    /// Held for the connection's life, then handed back with the socket;
    /// `None` once handed back. Dropped with the session otherwise, so a
    /// panicking session still frees its place.
    slot: Option<ConnectionSlot>,
    /// The config this session's policy was bound against.
    config: Arc<Config>,
    /// Authorized or not, and until when.
    auth: Auth,
    /// ACL for requests without authorization in bypass mode. Boxed: only
    /// bypass mode (development) uses it, and every session carries the
    /// field.
    anonymous: Option<Box<Policy>>,
    /// Topics this session holds at the hub.
    topics: TopicSet,
    /// `limits.requests_per_sec` / `request_burst` for this connection,
    /// and its refused authorizations.
    requests: TokenBucket,
}

/// The longest wait a timer is set for. Anything later (a token whose `exp`
/// is centuries away) counts as never: `Instant` arithmetic near its limits
/// overflows.
const HORIZON: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `at + wait`, or `None` when that is beyond [`HORIZON`] (never).
pub(super) fn deadline_after(at: Instant, wait: Duration) -> Option<Instant> {
    if wait > HORIZON {
        return None;
    }
    at.checked_add(wait)
}

/// `at + wait`, saturating at [`HORIZON`] for timers that must fire some time.
fn later(at: Instant, wait: Duration) -> Instant {
    deadline_after(at, wait.min(HORIZON)).unwrap_or(at)
}

/// Serves one upgraded connection until it closes. Returns the socket with
/// the connection's slot, so the caller can linger on it while it still
/// counts: a peer that still has unread bytes in flight would otherwise get
/// a reset and may lose the close frame.
///
/// Not an `async fn`: its arguments would stay in the future for the whole
/// connection. The setup runs here and the future keeps only what the
/// connection needs.
pub(crate) fn run<S>(
    mut socket: S,
    handles: Handles,
    peer: Option<SocketAddr>,
) -> impl Future<Output = Option<(S, ConnectionSlot)>> + Send
where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static,
{
    let Handles {
        hub,
        config: updates,
        shutdown,
        notices,
        metrics,
        slot,
    } = handles;
    let config = updates.borrow().clone();
    let client = ClientHandle::with_byte_limit(
        slot.id(),
        config.limits.send_queue,
        config.limits.send_queue_bytes,
    );

    let id = Uuid::new_v4();
    tracing::info!(session = %id, peer = peer.map(tracing::field::display), "connection opened");
    for frame in protocol::greeting(id.hyphenated().encode_lower(&mut Uuid::encode_buffer())) {
        client.push(frame);
    }
    let deadline = (config.auth.mode == Mode::Jwt)
        .then(|| deadline_after(Instant::now(), config.auth.timeout))
        .flatten();
    let mut session = Session {
        requests: TokenBucket::new(config.limits.request_burst, Instant::now()),
        id,
        client,
        hub,
        updates,
        shutdown,
        notices,
        metrics,
        slot: Some(slot),
        config,
        auth: Auth::None { deadline },
        anonymous: None,
        topics: TopicSet::default(),
    };
    async move {
        let mut writer = Writer::default();
        // A panic in the session still closes the connection the way a
        // failure should (1011), then goes on as a panic.
        let served = AssertUnwindSafe(session.serve(&mut socket, &mut writer))
            .catch_unwind()
            .await;
        let (reason, panic) = match served {
            Ok(reason) => (reason, None),
            Err(panic) => {
                tracing::error!(session = %session.id, "session failed; closing its connection");
                (Disconnect::Internal, Some(panic))
            }
        };
        session.client.close(reason);
        session.release_all();
        tracing::info!(session = %session.id, peer = peer.map(tracing::field::display), reason = reason.code().unwrap_or("peer_closed"), "connection closed");
        let slot = session.slot.take();
        let (queue, metrics) = (session.client.queue().clone(), session.metrics.clone());
        drop(session);
        writer.farewell(&mut socket, &queue, &metrics).await;
        if let Some(panic) = panic {
            std::panic::resume_unwind(panic);
        }
        Some((socket, slot?))
    }
}

impl Session {
    /// Whether `session` is this connection's id as the greeting sent it.
    fn is_own(&self, session: &str) -> bool {
        session
            == self
                .id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
    }

    /// Takes one token from the request bucket; `Err` holds the detail of
    /// the `limit_exceeded` reply when none is left.
    fn take_request(&mut self) -> Result<(), String> {
        let limits = &self.config.limits;
        if self.requests.take(
            limits.requests_per_sec,
            limits.request_burst,
            Instant::now(),
        ) {
            return Ok(());
        }
        Err(format!(
            "more than {} requests a second (burst {})",
            limits.requests_per_sec, limits.request_burst
        ))
    }

    /// A binary frame is a request like any other for the rate limit, and
    /// always refused.
    fn refuse_binary(&mut self) {
        let (code, detail) = match self.take_request() {
            Ok(()) => (
                ErrorCode::BadRequest,
                "binary frames are not accepted; send JSON text".to_string(),
            ),
            Err(detail) => (ErrorCode::LimitExceeded, detail),
        };
        self.client
            .push(protocol::decode_failure(&protocol::DecodeError {
                code,
                detail,
                id: None,
            }));
    }

    async fn handle_text(&mut self, text: &str) {
        let decoded = protocol::decode(text);
        let allowed = self.take_request();
        let request = match decoded {
            Ok(request) => request,
            Err(mut err) => {
                if let Err(detail) = allowed {
                    (err.code, err.detail) = (ErrorCode::LimitExceeded, detail);
                }
                self.client.push(protocol::decode_failure(&err));
                return;
            }
        };
        if let Err(detail) = allowed {
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

    /// The connection is over: let go of every topic and of the gauges.
    /// Idempotent: it runs again when the session is dropped.
    fn release_all(&mut self) {
        self.metrics.subscriptions.sub(self.topics.len() as i64);
        for topic in self.topics.take() {
            self.hub.unsubscribe(&topic, self.client.id);
        }
        if matches!(self.auth, Auth::Authenticated { .. }) {
            self.metrics.sessions_authenticated.dec();
            self.auth = Auth::None { deadline: None };
        }
    }
}

/// Cleanup that does not depend on the loop returning: a session whose task
/// is dropped still closes its queue, lets go of its topics and gauges, and
/// frees its slot (the field drops after this). A panic in the loop is
/// caught by [`run`], which closes the connection with 1011 first.
impl Drop for Session {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(session = %self.id, "session failed; closing its connection");
        }
        self.client.close(Disconnect::Internal);
        self.release_all();
    }
}
