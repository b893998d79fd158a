//! Plain HTTP/1.1 requests over TCP, and WebSocket upgrades made by hand:
//! the bytes on the wire are the test's, not a client library's.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::EVENT_TIMEOUT;

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// `POST /publish` with `body` and, when given, the bearer `key`.
pub async fn post_publish(addr: SocketAddr, key: Option<&str>, body: &str) -> (u16, String) {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    http_request(
        addr,
        &format!(
            "POST /publish HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

pub async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends a WebSocket upgrade request by hand with `extra` header lines and
/// returns the status code with the still-open TCP stream. No WebSocket
/// library sits on top, so nothing answers the server's pings.
pub async fn raw_upgrade(addr: SocketAddr, extra: &str) -> (u16, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    let status = read_status(&mut tcp).await;
    (status, tcp)
}

/// Reads a response head byte by byte, so nothing after it is consumed,
/// and returns its status code (0 when the connection closed first).
pub async fn read_status(tcp: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(EVENT_TIMEOUT, tcp.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read response");
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Reads and discards until the peer closes the TCP connection; returns
/// the number of bytes read.
pub async fn read_until_eof(tcp: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, tcp.read(&mut buf))
            .await
            .expect("connection closed in time")
        {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}
