//! The accept loop: each TCP connection is served by hyper's HTTP/1.1
//! connection with the routes as its service, under the limits an
//! attacker's or a broken client's connection meets (docs/RELIABILITY.md):
//!
//! - a request head must arrive within `server.header_timeout_secs`, and a
//!   keep-alive connection idle for as long between requests is closed
//!   (hyper's header timer runs from the moment it waits for a head, so
//!   one timer covers both);
//! - a connection not yet upgraded holds an [`HttpSlot`]: at most
//!   `limits.max_connections` of them, a budget of their own beside the
//!   WebSocket sessions' (so a refused upgrade still gets its 503); beyond
//!   it a new connection is closed at once, before a byte is read.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::{HttpSlot, Shared};

/// What the accept loop knows of a connection, handed to its requests as
/// an extension: the peer for the session's logs, and the slot an upgrade
/// gives back.
#[derive(Clone)]
pub(super) struct Accepted {
    /// The client's address, as the session logs it.
    pub peer: SocketAddr,
    /// Shared with the connection task, which drops it when the
    /// connection ends; an upgrade releases it earlier.
    pub slot: Arc<HttpSlot>,
}

/// Serves `listener` until `shutdown` turns `true` (or its sender goes);
/// then stops accepting, and each open HTTP connection finishes its
/// request in flight and closes. Upgraded connections are sessions: they
/// watch the same signal.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let routes = super::routes(shared.clone());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        let config = shared.config.borrow().clone();
        let Some(slot) = shared.connections.accept(config.limits.max_connections) else {
            tracing::debug!(%peer, "too many HTTP connections: closed at accept");
            continue;
        };
        // The session's writer already batches frames per write; Nagle's
        // algorithm would only hold a small reply or replay back behind the
        // peer's delayed ACK (tens of milliseconds).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let accepted = Accepted {
            peer,
            slot: Arc::new(slot),
        };
        let routes = TowerToHyperService::new(warp::service(routes.clone()));
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(accepted.clone());
            hyper::service::Service::call(&routes, request)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.server.header_timeout);
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let mut stop = shutdown.clone();
        // On shutdown the request in flight finishes, then the connection closes.
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // A header timeout, a reset, a malformed request: the client's doing.
            if let Err(err) = ended {
                tracing::debug!(error = %err, "HTTP connection ended");
            }
        });
    }
}

/// Resolves once `shutdown` is `true` or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = shutdown.wait_for(|stop| *stop).await.map(drop);
}

/// A failed accept is usually the descriptor table being full: logged,
/// and the loop pauses a moment so it does not spin while nothing frees.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}
