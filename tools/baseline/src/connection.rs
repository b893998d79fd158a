//! One WebSocket connection: the handshake, a writer task draining the
//! connection's queue, and the reader loop, which answers requests one at
//! a time (docs/PROTOCOL.md, "Requests").

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::auth::Auth;
use crate::frame::{self, Failure};
use crate::hub::Hub;

/// Frames a connection may have queued; a delivery beyond is dropped.
const QUEUE: usize = 1024;
/// Largest message a client may send, as the gateway's default.
const MAX_MESSAGE: usize = 64 * 1024;
/// Longest string `id` echoed (docs/PROTOCOL.md, "Requests").
const MAX_ID: usize = 128;

/// Small buffers: tungstenite's default read buffer, 128 KiB allocated at
/// accept, would cost every idle connection about 130 KB.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(4096)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

struct Connection {
    /// Names this connection's entries in the hub.
    conn: u64,
    /// The id every request must carry (docs/PROTOCOL.md, "Connect").
    session: String,
    /// To the writer: replies and deliveries share it, so they keep their order.
    queue: mpsc::Sender<Message>,
    hub: Arc<Hub>,
    auth: Arc<Auth>,
    authorized: bool,
    /// Topics held, to answer a repeated subscribe and to leave at the end.
    topics: HashSet<String>,
}

/// Serves one accepted socket until either side closes it.
pub async fn serve(stream: TcpStream, conn: u64, hub: Arc<Hub>, auth: Arc<Auth>) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config())).await else {
        return;
    };
    let (sink, mut incoming) = ws.split();
    let (queue, outgoing) = mpsc::channel(QUEUE);
    tokio::spawn(write(sink, outgoing));
    let session = uuid::Uuid::new_v4().to_string();
    for frame in frame::greeting(&session) {
        let _ = queue.send(Message::Text(frame)).await;
    }
    let mut connection = Connection {
        conn,
        session,
        queue,
        hub,
        auth,
        authorized: false,
        topics: HashSet::new(),
    };
    // A read error (reset, over-long message, bad framing) ends the
    // connection like a close does.
    while let Some(Ok(message)) = incoming.next().await {
        let reply = match message {
            Message::Text(text) => connection.request(&text).await,
            Message::Binary(_) => Some(bad_request(None, "binary frames are not requests")),
            // tungstenite answers pings and close frames itself.
            _ => None,
        };
        if let Some(reply) = reply
            && connection.queue.send(Message::Text(reply)).await.is_err()
        {
            break;
        }
    }
    for topic in &connection.topics {
        connection.hub.leave(topic, conn);
    }
}

/// Writes queued frames, flushing once whenever the queue has nothing
/// more ready. Ends when the socket fails or every sender is gone.
async fn write(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut queue: mpsc::Receiver<Message>,
) {
    while let Some(message) = queue.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(message) = queue.try_recv() {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

impl Connection {
    /// Handles one text frame; `None` when the reply is already queued.
    async fn request(&mut self, text: &str) -> Option<Utf8Bytes> {
        let Ok(Value::Object(request)) = serde_json::from_str::<Value>(text) else {
            return Some(bad_request(None, "a request is a JSON object"));
        };
        let id = match request.get("id") {
            None => None,
            Some(Value::String(id)) if id.len() > MAX_ID => {
                return Some(bad_request(None, "id longer than 128 bytes"));
            }
            Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
            Some(_) => return Some(bad_request(None, "id must be a string or a number")),
        };
        let field = |name: &str| {
            request
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let (Some(action), Some(session), Some(context)) =
            (field("action"), field("session"), field("context"))
        else {
            return Some(bad_request(
                id,
                "action, session and context must be non-empty strings",
            ));
        };
        let topic = (action != "authorization").then_some(context);
        match self.handle(action, session, context, id).await {
            Ok(true) => Some(frame::success(action, context, id)),
            // The hub queued the subscribe reply.
            Ok(false) => None,
            Err((failure, detail)) => Some(frame::failure(failure, action, topic, &detail, id)),
        }
    }

    /// Carries out a request: `Ok(true)` when its success reply is still to
    /// be sent.
    async fn handle(
        &mut self,
        action: &str,
        session: &str,
        context: &str,
        id: Option<&Value>,
    ) -> Result<bool, (Failure, String)> {
        let fail = |failure, detail: &str| Err((failure, detail.to_owned()));
        if !matches!(action, "authorization" | "subscribe" | "unsubscribe") {
            return fail(
                Failure::UnknownAction,
                "action must be authorization, subscribe or unsubscribe",
            );
        }
        if action != "authorization"
            && (context.len() > 256 || context.chars().any(char::is_control))
        {
            return fail(
                Failure::BadRequest,
                "a topic is 1 to 256 bytes without control characters",
            );
        }
        if session != self.session {
            return fail(Failure::InvalidSession, "not this connection's session");
        }
        if action == "authorization" {
            self.auth
                .verify(context)
                .map_err(|e| (Failure::InvalidToken, e.to_string()))?;
            self.authorized = true;
            return Ok(true);
        }
        if !self.authorized {
            return fail(Failure::Unauthenticated, "authorize first");
        }
        if action == "unsubscribe" {
            if self.topics.remove(context) {
                self.hub.leave(context, self.conn);
            }
            return Ok(true);
        }
        if self.topics.contains(context) {
            return Ok(true);
        }
        // Confirmed once Redis holds the topic; the hub then queues the
        // reply and makes this connection live on the topic in one step.
        let confirmed = self.hub.join(context, self.conn, self.queue.clone());
        if !confirmed.await.unwrap_or(false) {
            self.hub.leave(context, self.conn);
            return fail(
                Failure::Unavailable,
                "redis did not confirm the subscription",
            );
        }
        self.hub
            .activate(context, self.conn, frame::success(action, context, id));
        self.topics.insert(context.to_owned());
        Ok(false)
    }
}

fn bad_request(id: Option<&Value>, detail: &str) -> Utf8Bytes {
    frame::failure(Failure::BadRequest, "error", None, detail, id)
}
