//! The WebSocket upgrade on `/` and `/ws`, taken by hand rather than with
//! `warp::ws()`, whose tungstenite defaults cost about 133 KB per idle
//! connection: here the read and write buffers are ours to size (a few KB
//! per connection).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Filter;
use warp::hyper::body::Bytes;

use super::serve::Accepted;
use super::{Body, plain, with_state};
use crate::session::{self, Handles};
use crate::state::{ConnectionSlot, Shared};

/// Bytes read from the socket per read call, and the read buffer's
/// first size; larger messages still work. tungstenite keeps the buffer
/// for the connection's life at the largest frame it had to hold (the
/// authorization, usually), so a small start is what an idle connection
/// keeps: 1 KiB here cost 1 KiB on every connection.
const READ_BUFFER: usize = 128;
/// Frames are coalesced up to this size before a write to the socket.
const WRITE_BUFFER: usize = 4096;
/// Longest wait for the peer to close after we did.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn route(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Body,), Error = warp::Rejection> + Clone {
    let path = warp::path::end().or(warp::path!("ws")).unify();
    path.and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<Accepted>())
        .and(with_state(shared))
        .map(
            |headers: HeaderMap, on_upgrade: Option<OnUpgrade>, accepted, shared| {
                accept(&headers, on_upgrade, accepted, shared)
            },
        )
}

/// Closes our side, then reads and discards until the peer closes too (or
/// [`LINGER`] passes). Closing with unread input would send a TCP reset,
/// which can destroy the close frame before the peer reads it.
async fn linger(mut io: TcpStream) {
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
    accepted: Option<Accepted>,
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
    // The connection leaves the HTTP budget for the WebSocket one before
    // the 101 goes out, so a client that reconnects at once finds it free.
    let peer = accepted.map(|accepted| {
        accepted.slot.release();
        accepted.peer
    });
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
            // The accept loop serves `TokioIo<TcpStream>`: taken back out of
            // hyper's box, the socket costs no box and no indirection per
            // read and write.
            let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
                tracing::error!("upgraded connection is not a TCP stream");
                return;
            };
            let tcp = parts.io.into_inner();
            let socket = if parts.read_buf.is_empty() {
                WebSocketStream::from_raw_socket(tcp, Role::Server, Some(ws_config)).await
            } else {
                // Frames the client sent right behind its upgrade request.
                let early = parts.read_buf.to_vec();
                WebSocketStream::from_partially_read(tcp, early, Role::Server, Some(ws_config))
                    .await
            };
            // The session takes what it needs; the gateway state goes.
            let handles = Handles {
                hub: shared.hub.clone(),
                config: shared.config.clone(),
                shutdown: shared.shutdown.clone(),
                notices: shared.notices.clone(),
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

    /// The connection's one task holds the session's future; tokio rounds
    /// a task up to a multiple of 128 bytes (1,408 for this one, measured
    /// with massif). Debug and release builds agree.
    #[test]
    fn the_connection_task_keeps_its_size() {
        let size = future_size(connection);
        assert!(size <= 1248, "connection task future: {size} bytes");
    }
}
