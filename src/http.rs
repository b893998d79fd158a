//! warp routes: the WebSocket upgrade on `/` and `/ws`, `/healthz`,
//! `/readyz`, `/metrics` and `POST /publish`.
//!
//! The upgrade is taken by hand rather than with `warp::ws()`, whose
//! tungstenite defaults cost about 133 KB per idle connection: here the read
//! and write buffers are ours to size (a few KB per connection).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Filter;
use warp::hyper::body::Bytes;

use crate::session::{self, Handles};
use crate::state::{ConnectionSlot, Shared};

type Body = warp::reply::Response;

/// Bytes read from the socket per read call; larger messages still work.
const READ_BUFFER: usize = 1024;
/// Frames are coalesced up to this size before a write to the socket.
const WRITE_BUFFER: usize = 4096;
/// Longest wait for the peer to close after we did.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Body,), Error = std::convert::Infallible> + Clone {
    healthz()
        .or(readyz(shared.clone()))
        .unify()
        .or(metrics(shared.clone()))
        .unify()
        .or(publish(shared.clone()))
        .unify()
        .or(crate::console::route(shared.clone()))
        .unify()
        .or(upgrade(shared))
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            Ok::<_, std::convert::Infallible>(rejected(&rejection))
        })
        .unify()
}

/// The one place rejections become responses.
fn rejected(rejection: &warp::Rejection) -> Body {
    use warp::reject::{LengthRequired, MethodNotAllowed, PayloadTooLarge};
    if rejection.find::<PayloadTooLarge>().is_some() {
        plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")
    } else if rejection.find::<LengthRequired>().is_some() {
        plain(StatusCode::LENGTH_REQUIRED, "content-length required\n")
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
    } else {
        plain(StatusCode::NOT_FOUND, "not found\n")
    }
}

fn with_state(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Arc<Shared>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || shared.clone())
}

fn plain(status: StatusCode, text: &'static str) -> Body {
    let mut response = Response::new(text.into());
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Body {
    let mut response = Response::new(value.to_string().into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn healthz() -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::get())
        .map(|| plain(StatusCode::OK, "ok\n"))
}

fn readyz(shared: Arc<Shared>) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("readyz")
        .and(warp::get())
        .and(with_state(shared))
        .map(|shared: Arc<Shared>| {
            let broker = shared.hub.broker();
            let ready = *broker.ready().borrow();
            let config = shared.config.borrow().clone();
            let redis = match (broker.kind(), ready) {
                ("memory", _) => "unused",
                (_, true) => "up",
                (_, false) => "down",
            };
            let body = serde_json::json!({
                "redis": redis,
                "broker": broker.kind(),
                "bypass": config.auth.mode == crate::auth::Mode::Bypass,
                "history": broker.history_status().as_str(),
                "connections": shared.connections.count(),
                "config": {"hash": config.hash, "loaded_at": config.loaded_at},
            });
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &body)
        })
}

fn metrics(shared: Arc<Shared>) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(shared))
        .map(|shared: Arc<Shared>| {
            let mut response = Response::new(shared.metrics.render().into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        })
}

/// Largest `POST /publish` body accepted before reading it.
const PUBLISH_BODY_LIMIT: u64 = 16 * 1024 * 1024;

#[derive(serde::Deserialize)]
struct PublishBody {
    topic: String,
    data: serde_json::Value,
}

/// `POST /publish` (README, HTTP): publishes through the broker, so through
/// Redis on the redis broker, and every replica's subscribers receive it.
fn publish(shared: Arc<Shared>) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    warp::path!("publish")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::content_length_limit(PUBLISH_BODY_LIMIT))
        .and(warp::body::bytes())
        .and(with_state(shared))
        .and_then(
            |authorization: Option<String>, body: Bytes, shared: Arc<Shared>| async move {
                Ok::<_, warp::Rejection>(publish_reply(authorization, &body, &shared).await)
            },
        )
}

fn error_json(status: StatusCode, error: &str, detail: &str) -> Body {
    json(
        status,
        &serde_json::json!({"error": error, "detail": detail}),
    )
}

async fn publish_reply(authorization: Option<String>, body: &[u8], shared: &Shared) -> Body {
    use subtle::ConstantTimeEq;
    let config = shared.config.borrow().clone();
    let Some(key) = &config.api_key else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let presented = authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time, so the key cannot be guessed byte by byte from timings.
    if !bool::from(presented.as_bytes().ct_eq(key.as_bytes())) {
        return error_json(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <api.key>",
        );
    }
    let request: PublishBody = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => {
            let detail = format!("expected {{\"topic\": ..., \"data\": ...}}: {err}");
            return error_json(StatusCode::BAD_REQUEST, "bad_request", &detail);
        }
    };
    if let Err(detail) = crate::protocol::validate_topic(&request.topic) {
        return error_json(StatusCode::BAD_REQUEST, "bad_request", &detail);
    }
    // A JSON string travels as its raw text, like `redis-cli PUBLISH t text`.
    let payload = match request.data {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    match shared
        .hub
        .broker()
        .publish(&request.topic, payload.into())
        .await
    {
        Ok(Some(position)) => {
            // By hand, for the documented field order (serde_json sorts keys).
            let (offset, epoch) = (position.offset, serde_json::Value::from(&*position.epoch));
            let mut response = json(StatusCode::OK, &serde_json::Value::Null);
            *response.body_mut() = format!(r#"{{"offset":{offset},"epoch":{epoch}}}"#).into();
            response
        }
        Ok(None) => plain(StatusCode::NO_CONTENT, ""),
        Err(err) => {
            // The broker's errors name the Redis by address, never with
            // the URL's password, and not in a client library's words.
            tracing::warn!(error = %err, topic = %request.topic, "publish failed");
            error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &err.to_string(),
            )
        }
    }
}

fn upgrade(shared: Arc<Shared>) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    let path = warp::path::end().or(warp::path!("ws")).unify();
    path.and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::addr::remote())
        .and(with_state(shared))
        .map(
            |headers: HeaderMap, on_upgrade: Option<OnUpgrade>, peer, shared| {
                accept(&headers, on_upgrade, peer, shared)
            },
        )
}

/// Closes our side, then reads and discards until the peer closes too (or
/// [`LINGER`] passes). Closing with unread input would send a TCP reset,
/// which can destroy the close frame before the peer reads it.
async fn linger(mut io: TokioIo<hyper::upgrade::Upgraded>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = io.shutdown().await;
    let mut scratch = [0u8; 512];
    let drain = async {
        while let Ok(n) = io.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Checks the handshake headers, answers 101 and hands the upgraded
/// connection to a session task.
fn accept(
    headers: &HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
) -> Body {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "expected a WebSocket upgrade\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = plain(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version\n",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let Some(on_upgrade) = on_upgrade else {
        return plain(StatusCode::BAD_REQUEST, "connection cannot be upgraded\n");
    };
    let config = shared.config.borrow().clone();
    let origins = &config.server.allowed_origins;
    if !origins.is_empty() {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if !origin.is_some_and(|o| origins.iter().any(|allowed| allowed == o)) {
            return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let Some(slot) = shared.connections.open(config.limits.max_connections) else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    let accept_key = derive_accept_key(key.as_bytes());
    tokio::spawn(connection(on_upgrade, slot, shared, peer));
    let mut response = Response::new(Bytes::new().into());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// One upgraded connection's task: the end of the handshake, the session,
/// then the linger.
///
/// It lives as long as the connection, so its future's size is paid per
/// connection (pinned by a test below): values it moves on are scoped to
/// end before the next await, and the WebSocket config, message limit
/// included, is built inside rather than captured, since captured values
/// stay for the task's life. Not an `async fn`, which would keep its
/// arguments twice.
#[expect(
    clippy::manual_async_fn,
    reason = "the async block holds the arguments once"
)]
fn connection(
    on_upgrade: OnUpgrade,
    slot: ConnectionSlot,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
) -> impl Future<Output = ()> + Send {
    async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let session = {
            let limit = shared.config.borrow().limits.max_message_bytes;
            let ws_config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(WRITE_BUFFER)
                .max_message_size(Some(limit))
                .max_frame_size(Some(limit));
            let io = TokioIo::new(upgraded);
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
            // The session takes what it needs; the gateway state goes.
            let handles = Handles {
                hub: shared.hub.clone(),
                config: shared.config.clone(),
                shutdown: shared.shutdown.clone(),
                metrics: shared.metrics.clone(),
                slot,
            };
            drop(shared);
            session::run(socket, handles, peer)
        };
        let Some((socket, _slot)) = session.await else {
            return;
        };
        linger(socket.into_inner()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The connection task holds the session's reader future; tokio rounds
    /// a task up to a multiple of 128 bytes, and there is one per
    /// connection. Debug and release builds agree.
    #[test]
    fn the_connection_task_keeps_its_size() {
        let size = future_size(connection);
        assert!(size <= 1024, "connection task future: {size} bytes");
    }
}
