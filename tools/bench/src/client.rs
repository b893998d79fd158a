//! One benchmark connection: TCP connect (optionally from a chosen
//! 127.0.0.x), WebSocket handshake, the greeting (docs/PROTOCOL.md), authorization and
//! subscribe, then a read loop that only scans delivery frames.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::stats::{Stats, scan_string};

pub type Ws = WebSocketStream<TcpStream>;

/// Per-connection read buffer: deliveries are small, and at 19k
/// connections tungstenite's 128 KiB default would cost the client 2.4 GB.
const READ_BUFFER: usize = 4096;
/// How long a connection waits for its close handshake at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how every connection connects.
pub struct Target {
    pub addr: SocketAddr,
    /// `ws://host:port/path` for the handshake request.
    pub url: String,
    pub connect_timeout: Duration,
}

/// Why a connection's setup failed, as a short label for the JSON result.
#[derive(Debug)]
pub struct SetupError(pub String);

impl SetupError {
    pub fn new(step: &str, detail: impl std::fmt::Display) -> Self {
        Self(format!("{step}: {detail}"))
    }
}

/// Connects, authorizes with `token` and subscribes to `topics`.
pub async fn establish(
    target: &Target,
    source: Option<IpAddr>,
    token: &str,
    topics: &[String],
) -> Result<Ws, SetupError> {
    let (mut ws, session) = open(target, source).await?;
    request(&mut ws, "authorization", &session, token, "session").await?;
    for topic in topics {
        request(&mut ws, "subscribe", &session, topic, "subscribe").await?;
    }
    Ok(ws)
}

/// Connects and reads the greeting: the socket and its session id.
pub async fn open(target: &Target, source: Option<IpAddr>) -> Result<(Ws, String), SetupError> {
    let stream = connect_tcp(target, source).await?;
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config))
            .await
            .map_err(|e| SetupError::new("handshake", e))?;
    let session = loop {
        let frame = next_text(&mut ws).await?;
        if let Some(id) = scan_string(&frame, "session") {
            break id.to_string();
        }
    };
    Ok((ws, session))
}

async fn connect_tcp(target: &Target, source: Option<IpAddr>) -> Result<TcpStream, SetupError> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| SetupError::new("socket", e))?;
    if let Some(ip) = source {
        crate::sys::bind_address_no_port(&socket)
            .map_err(|e| SetupError::new("ip_bind_address_no_port", e))?;
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| SetupError::new("bind", e))?;
    }
    socket
        .set_nodelay(true)
        .map_err(|e| SetupError::new("nodelay", e))?;
    match timeout(target.connect_timeout, socket.connect(target.addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(SetupError::new("connect", e.kind())),
        Err(_) => Err(SetupError::new("connect", "timed out")),
    }
}

/// Sends one request and waits for the reply with `reply_action`.
pub async fn request(
    ws: &mut Ws,
    action: &str,
    session: &str,
    context: &str,
    reply_action: &str,
) -> Result<(), SetupError> {
    // Topics and tokens the bench makes need no JSON escaping.
    let text = format!(r#"{{"action":"{action}","session":"{session}","context":"{context}"}}"#);
    ws.send(Message::text(text))
        .await
        .map_err(|e| SetupError::new(action, e))?;
    let expected = format!(r#"{{"action":"{reply_action}""#);
    loop {
        let frame = next_text(ws).await?;
        if let Some(code) = scan_string(&frame, "error") {
            return Err(SetupError::new(action, code));
        }
        if frame.starts_with(&expected) {
            return Ok(());
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> Result<String, SetupError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code)).unwrap_or(0);
                return Err(SetupError::new("closed", code));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SetupError::new("read", e)),
            None => return Err(SetupError::new("read", "eof")),
        }
    }
}

/// Reads until `stop` flips, recording deliveries; then closes politely
/// (bounded by [`CLOSE_TIMEOUT`]). A connection the server ends is counted
/// under its reason (`disconnect: slow_consumer`, `close: 1013`, ...).
pub async fn read_until_stopped(
    mut ws: Ws,
    stats: Arc<Stats>,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
) {
    if *stop.borrow_and_update() {
        close(ws).await;
        return;
    }
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if text.starts_with(r#"{"action":"message""#) {
                        let now = epoch.elapsed().as_nanos() as u64;
                        stats.delivery(text, now);
                    } else if let Some(code) = scan_string(text, "error") {
                        stats.error(format!("server error frame: {code}"));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(0);
                    stats.error(format!("closed by server: {code}"));
                    return;
                }
                // tungstenite answers pings itself on the next read.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    stats.error(format!("read error: {e}"));
                    return;
                }
                None => {
                    stats.error("closed by server: eof");
                    return;
                }
            },
            _ = stop.changed() => break,
        }
    }
    close(ws).await;
}

pub async fn close(mut ws: Ws) {
    let polite = async {
        ws.close(None).await?;
        // Drain to the server's close frame so neither side sees a reset.
        while let Some(message) = ws.next().await {
            message?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let _ = timeout(CLOSE_TIMEOUT, polite).await;
}
