//! The HTTP edge under hostile or broken clients (docs/RELIABILITY.md,
//! "The HTTP edge"): `POST /publish` judged from its head, bounded bodies,
//! the header and keep-alive timeouts, the cap on connections not yet
//! upgraded, and a `/readyz` that reveals nothing derived from secrets.
//! Raw TCP sockets, so the bytes on the wire are the test's.

use topicgate_test_support as common;

use std::net::SocketAddr;

use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const KEY: &str = "edge-test-key";

/// A gateway on the memory broker with `extra` TOML and the test API key.
async fn gateway(extra: &str) -> topicgate::Gateway {
    start_gateway(base_config(
        None,
        &format!("{extra}\n[api]\nkey = \"{KEY}\"\n"),
    ))
    .await
}

/// Sends a `POST /publish` head (and nothing after it) with `headers`.
async fn publish_head(addr: SocketAddr, headers: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let head = format!("POST /publish HTTP/1.1\r\nHost: test\r\n{headers}\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write head");
    tcp
}

/// 15 MB announced, not one byte of it sent.
const HUGE: &str = "Content-Length: 15000000\r\n";

#[tokio::test]
async fn a_publish_with_a_wrong_key_is_401_before_its_body_is_sent() {
    let gateway = gateway("").await;
    for auth in ["Authorization: Bearer wrong\r\n", ""] {
        let mut tcp = publish_head(gateway.addr, &format!("{auth}{HUGE}")).await;
        // The answer comes while the client has sent the head only.
        assert_eq!(read_status(&mut tcp).await, 401, "{auth:?}");
    }
}

#[tokio::test]
async fn a_publish_to_a_gateway_without_a_key_is_404_before_its_body_is_sent() {
    let gateway = start_gateway(base_config(None, "")).await;
    let mut tcp = publish_head(gateway.addr, &format!("Authorization: Bearer x\r\n{HUGE}")).await;
    assert_eq!(read_status(&mut tcp).await, 404);
}

#[tokio::test]
async fn a_publish_announcing_more_than_max_message_bytes_is_413_unread() {
    let gateway = gateway("").await;
    let headers = format!("Authorization: Bearer {KEY}\r\n{HUGE}");
    let mut tcp = publish_head(gateway.addr, &headers).await;
    assert_eq!(read_status(&mut tcp).await, 413);
}

#[tokio::test]
async fn a_chunked_publish_body_is_cut_at_max_message_bytes() {
    let gateway = gateway("[limits]\nmax_message_bytes = 1024\n").await;
    let headers = format!("Authorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n");
    let mut tcp = publish_head(gateway.addr, &headers).await;
    // One chunk a byte over the limit, and the body never ends: the answer
    // comes from the limit, not from the end of the body.
    let chunk = format!("{:x}\r\n{}", 1025, "x".repeat(1025));
    tcp.write_all(chunk.as_bytes()).await.expect("write chunk");
    assert_eq!(read_status(&mut tcp).await, 413);
}

#[tokio::test]
async fn a_publish_body_that_stalls_is_dropped_after_the_body_timeout() {
    let gateway = gateway("").await;
    let headers = format!("Authorization: Bearer {KEY}\r\nContent-Length: 100\r\n");
    let mut tcp = publish_head(gateway.addr, &headers).await;
    tcp.write_all(b"{\"topic\":").await.expect("write a part");
    // Within the test's event timeout: the body timeout is a few seconds.
    assert_eq!(read_status(&mut tcp).await, 408);
}

#[tokio::test]
async fn a_bounded_chunked_publish_is_delivered() {
    let gateway = gateway("").await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-chunked").await;
    let headers = format!("Authorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n");
    let mut tcp = publish_head(gateway.addr, &headers).await;
    let body = r#"{"topic":"test-chunked","data":"in chunks"}"#;
    let (a, b) = body.split_at(10);
    let chunked = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
    tcp.write_all(chunked.as_bytes()).await.expect("write body");
    // 200: the memory broker records it (history is on by default).
    assert_eq!(read_status(&mut tcp).await, 200);
    assert_eq!(c.recv().await["snapshot"], "in chunks");
}

/// The start of a request head that never completes.
const SLOW_HEAD: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow:";

async fn slow_loris(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(SLOW_HEAD)
        .await
        .expect("write a partial head");
    tcp
}

#[tokio::test]
async fn a_request_head_that_stalls_is_closed_after_the_header_timeout() {
    let gateway = gateway("[server]\nheader_timeout_secs = 1\n").await;
    let mut tcp = slow_loris(gateway.addr).await;
    // Closed by the server well within the test's event timeout.
    read_until_eof(&mut tcp).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let gateway = gateway("[server]\nheader_timeout_secs = 1\n").await;
    let mut tcp = TcpStream::connect(gateway.addr).await.expect("tcp connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write request");
    assert_eq!(read_status(&mut tcp).await, 200);
    // The body ("ok\n"), then the server closes the idle connection.
    assert_eq!(read_until_eof(&mut tcp).await, 3);
}

/// Whether a WebSocket handshake with the gateway completes.
async fn handshake_completes(addr: SocketAddr) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    tokio_tungstenite::client_async(format!("ws://{addr}/ws"), tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn half_open_requests_cannot_hold_the_connection_cap_past_the_header_timeout() {
    let gateway =
        gateway("[server]\nheader_timeout_secs = 1\n[limits]\nmax_connections = 2\n").await;
    let mut held = [
        slow_loris(gateway.addr).await,
        slow_loris(gateway.addr).await,
    ];
    // Both slots taken: the next connection is closed at once, unread.
    let mut refused = TcpStream::connect(gateway.addr).await.expect("tcp connect");
    assert_eq!(read_until_eof(&mut refused).await, 0);
    // The header timeout frees them, and a real client gets in.
    for tcp in &mut held {
        read_until_eof(tcp).await;
    }
    eventually("a WebSocket handshake completes", || {
        handshake_completes(gateway.addr)
    })
    .await;
}

#[tokio::test]
async fn header_timeout_secs_out_of_range_is_a_config_error_naming_the_key() {
    for value in [0, 3601] {
        let raw = topicgate::RawConfig::from_toml(&format!(
            "[server]\nheader_timeout_secs = {value}\n[auth.jwt]\nsecret = \"s\"\n"
        ))
        .expect("parses");
        let err = raw
            .compile(std::path::Path::new("."))
            .expect_err("out of range");
        let text = err.to_string();
        assert!(text.contains("server.header_timeout_secs"), "{text}");
        assert!(text.contains("1 to 3600"), "{text}");
    }
}

#[tokio::test]
async fn write_delay_ms_above_a_second_is_a_config_error_naming_the_key() {
    let raw = topicgate::RawConfig::from_toml(
        "[server]\nwrite_delay_ms = 1001\n[auth.jwt]\nsecret = \"s\"\n",
    )
    .expect("parses");
    let err = raw
        .compile(std::path::Path::new("."))
        .expect_err("out of range");
    let text = err.to_string();
    assert!(text.contains("server.write_delay_ms"), "{text}");
    assert!(text.contains("at most 1000 milliseconds"), "{text}");
}

async fn readyz_hash(extra: &str) -> String {
    let gateway = start_gateway(base_config(None, extra)).await;
    let (status, body) = http_get(gateway.addr, "/readyz").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("JSON");
    body["config"]["hash"]
        .as_str()
        .expect("a config hash")
        .to_string()
}

#[tokio::test]
async fn readyz_config_hash_does_not_depend_on_secrets() {
    let config = |secret: &str, key: &str, password: &str| {
        format!(
            "[auth.jwt]\nsecret = \"{secret}\"\n[api]\nkey = \"{key}\"\n\
             [redis]\npassword = \"{password}\"\nurl = \"redis://:{password}@127.0.0.1:1/0\"\n"
        )
    };
    let one = readyz_hash(&config("secret-one", "key-one", "pw-one")).await;
    let two = readyz_hash(&config("secret-two", "key-two", "pw-two")).await;
    assert_eq!(one, two);
    // It still tells configs apart.
    let other = readyz_hash(&format!(
        "{}[limits]\nmax_subscriptions = 7\n",
        config("secret-one", "key-one", "pw-one")
    ))
    .await;
    assert_ne!(one, other);
}
