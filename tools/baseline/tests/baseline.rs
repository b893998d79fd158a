//! The built `topicgate-baseline` binary against a `redis-server` of its
//! own: the frames the load tool relies on, byte for byte as the gateway
//! sends them.

use std::net::SocketAddr;
use std::process::Stdio;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use topicgate::hot_paths::encode_delivery;
use topicgate_test_support::{
    Client, EVENT_TIMEOUT, RedisServer, SECRET, eventually, numsub, redis_publish, token,
};

type Ws = WebSocketStream<TcpStream>;

/// Starts the binary on port 0 and reads its address from its stdout.
async fn start_baseline(redis: &RedisServer) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_topicgate-baseline"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--redis",
            &redis.url(),
            "--secret",
            SECRET,
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start topicgate-baseline");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = timeout(EVENT_TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .expect("listening line in time")
        .expect("stdout readable")
        .expect("a line before exit");
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (child, addr)
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let message = timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("frame readable");
        match message {
            Message::Text(text) => return text.as_str().to_owned(),
            Message::Close(frame) => panic!("unexpected close: {frame:?}"),
            _ => {}
        }
    }
}

/// Connects, checks the greeting and returns the socket and session id.
async fn connect(addr: SocketAddr) -> (Ws, String) {
    let mut ws = Client::raw(addr, "/ws").await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"action":"connect","message":"connection established"}"#
    );
    let greeting = next_text(&mut ws).await;
    let session: Value = serde_json::from_str(&greeting).expect("JSON");
    let session = session["session"].as_str().expect("session id").to_owned();
    let parsed = uuid::Uuid::parse_str(&session).expect("a uuid");
    assert_eq!(parsed.get_version_num(), 4);
    assert_eq!(
        session,
        parsed.hyphenated().to_string(),
        "lowercase, hyphenated"
    );
    assert_eq!(
        greeting,
        format!(
            r#"{{"action":"session","message":"waiting for create session","session":"{session}"}}"#
        )
    );
    (ws, session)
}

async fn request(ws: &mut Ws, request: Value) -> String {
    ws.send(Message::text(request.to_string()))
        .await
        .expect("send");
    next_text(ws).await
}

#[tokio::test]
async fn subscribers_get_the_gateways_delivery_frames_byte_for_byte() {
    let redis = RedisServer::start();
    let (_baseline, addr) = start_baseline(&redis).await;
    let mut conn = redis.connection().await;
    let topic = "chat-room";

    let (mut ws, session) = connect(addr).await;
    let authorization = json!({"action":"authorization","session":session,"context":token(json!({"sub":"alice"})),"id":"a1"});
    assert_eq!(
        request(&mut ws, authorization).await,
        r#"{"action":"session","message":"session authenticated","id":"a1"}"#
    );
    let subscribe = json!({"action":"subscribe","session":session,"context":topic,"id":7});
    assert_eq!(
        request(&mut ws, subscribe).await,
        r#"{"action":"subscribe","message":"context subscribed","context":"chat-room","id":7}"#
    );
    // Confirmed means held at Redis: a PUBLISH now reaches the client.
    assert_eq!(numsub(&mut conn, topic).await, 1);

    // A second subscriber shares the one Redis subscription.
    let (mut other, other_session) = connect(addr).await;
    let authorization = json!({"action":"authorization","session":other_session,"context":token(json!({"sub":"bob"}))});
    request(&mut other, authorization).await;
    let subscribe = json!({"action":"subscribe","session":other_session,"context":topic});
    assert_eq!(
        request(&mut other, subscribe).await,
        r#"{"action":"subscribe","message":"context subscribed","context":"chat-room"}"#
    );
    assert_eq!(numsub(&mut conn, topic).await, 1);

    let payloads = [
        r#"{"info":"Hello from Redis"}"#,
        " [1, 2.50, \"x\"]\n",
        "plain \"text\", not JSON",
        "{\"unfinished\":",
        "",
    ];
    for payload in payloads {
        assert_eq!(redis_publish(&mut conn, topic, payload).await, 1);
        let expected = encode_delivery(topic, payload.as_bytes(), None);
        assert_eq!(
            next_text(&mut ws).await,
            expected.as_str(),
            "payload {payload:?}"
        );
        assert_eq!(
            next_text(&mut other).await,
            expected.as_str(),
            "payload {payload:?}"
        );
    }
    assert_eq!(
        encode_delivery(topic, payloads[0].as_bytes(), None).as_str(),
        r#"{"action":"message","topic":"chat-room","snapshot":{"info":"Hello from Redis"}}"#
    );

    // The last local subscriber out unsubscribes Redis.
    let unsubscribe = json!({"action":"unsubscribe","session":session,"context":topic});
    assert_eq!(
        request(&mut ws, unsubscribe).await,
        r#"{"action":"unsubscribe","message":"context unsubscribed","context":"chat-room"}"#
    );
    assert_eq!(numsub(&mut conn, topic).await, 1);
    drop(other);
    eventually("redis to drop the topic", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, topic).await == 0 }
    })
    .await;
}

#[tokio::test]
async fn a_bad_token_is_refused_and_the_session_stays_unauthenticated() {
    let redis = RedisServer::start();
    let (_baseline, addr) = start_baseline(&redis).await;
    let (mut ws, session) = connect(addr).await;

    let expired = token(json!({"sub":"alice","exp":1}));
    let valid = token(json!({"sub":"alice"}));
    let other = token(json!({"sub":"mallory"}));
    let forged = format!(
        "{}.{}",
        valid.rsplit_once('.').expect("a JWT").0,
        other.rsplit_once('.').expect("a JWT").1
    );
    for bad in [expired, forged, "not a token".to_owned()] {
        let reply = request(
            &mut ws,
            json!({"action":"authorization","session":session,"context":bad}),
        )
        .await;
        let reply: Value = serde_json::from_str(&reply).expect("JSON");
        assert_eq!(reply["action"], "session", "{reply}");
        assert_eq!(reply["error"], "invalid_token", "{reply}");
    }
    let reply = request(
        &mut ws,
        json!({"action":"subscribe","session":session,"context":"chat-room"}),
    )
    .await;
    let reply: Value = serde_json::from_str(&reply).expect("JSON");
    assert_eq!(reply["error"], "unauthenticated", "{reply}");
    let reply = request(
        &mut ws,
        json!({"action":"subscribe","session":"someone-else","context":"chat-room"}),
    )
    .await;
    assert_eq!(
        reply,
        r#"{"action":"subscribe","message":"invalid session","context":"chat-room","error":"invalid_session","detail":"not this connection's session"}"#
    );
    // Garbage is answered, not fatal.
    let reply = request(&mut ws, json!(["not", "an", "object"])).await;
    assert!(
        reply.starts_with(r#"{"action":"error","message":"bad request","error":"bad_request""#),
        "{reply}"
    );
}
