//! The closing conditions of docs/PROTOCOL.md and `[limits]` under hostile
//! or broken clients: heartbeats, slow consumers, connection and request
//! limits, origins, and SIGTERM on the real binary.

use topicgate_test_support as common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn silent_peer_is_dropped_after_the_idle_timeout_and_its_topics_released() {
    let gateway = start_gateway(base_config(
        None,
        "[server]\nidle_timeout_secs = 1\n[auth]\nmode = \"bypass\"\n",
    ))
    .await;
    // A raw TCP peer never answers the server's pings.
    let (status, mut silent) = raw_upgrade(gateway.addr, "").await;
    assert_eq!(status, 101);
    // A WebSocket client that keeps reading answers them and stays.
    let mut alive = Client::connect(gateway.addr).await;
    alive.subscribed("test-alive").await;
    let reader = tokio::spawn(async move { alive.recv().await });

    read_until_eof(&mut silent).await;
    gateway.connections_at_most(1).await;
    // The silent one is gone while the live one still gets messages.
    gateway
        .publisher()
        .publish("test-alive", "\"still here\"".into())
        .await
        .unwrap();
    assert_eq!(reader.await.unwrap()["snapshot"], "still here");
    assert_eq!(gateway.topic_count(), 1);
}

#[tokio::test]
async fn requests_beyond_the_rate_limit_are_limit_exceeded() {
    let gateway = start_gateway(base_config(
        None,
        "[limits]\nrequests_per_sec = 1\nrequest_burst = 3\n",
    ))
    .await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-1").await;
    c.subscribed("test-2").await;
    let reply = c.subscribe("test-3").await;
    assert_eq!(reply["action"], "subscribe");
    assert_eq!(reply["error"], "limit_exceeded");
    assert_eq!(reply["context"], "test-3");
}

#[tokio::test]
async fn upgrades_beyond_max_connections_get_503() {
    let gateway = start_gateway(base_config(None, "[limits]\nmax_connections = 2\n")).await;
    let first = Client::connect(gateway.addr).await;
    let _second = Client::connect(gateway.addr).await;
    let (status, _) = raw_upgrade(gateway.addr, "").await;
    assert_eq!(status, 503);
    // A slot frees when a connection closes.
    first.close().await;
    gateway.connections_at_most(1).await;
    let (status, _) = raw_upgrade(gateway.addr, "").await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn origins_outside_allowed_origins_get_403() {
    let gateway = start_gateway(base_config(
        None,
        "[server]\nallowed_origins = [\"https://app.example.com\"]\n",
    ))
    .await;
    let (status, _) = raw_upgrade(gateway.addr, "Origin: https://evil.example.com\r\n").await;
    assert_eq!(status, 403);
    let (status, _) = raw_upgrade(gateway.addr, "").await;
    assert_eq!(
        status, 403,
        "no Origin header is refused when origins are listed"
    );
    let (status, _) = raw_upgrade(gateway.addr, "Origin: https://app.example.com\r\n").await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn slow_consumer_is_cut_and_others_on_the_topic_get_everything_in_order() {
    let gateway = start_gateway(base_config(
        None,
        "[limits]\nsend_queue = 64\n[auth]\nmode = \"bypass\"\n",
    ))
    .await;
    let mut normal = Client::connect(gateway.addr).await;
    normal.subscribed("test-flood").await;

    // The slow client subscribes, then never reads again.
    let (status, mut slow) = raw_upgrade(gateway.addr, "").await;
    assert_eq!(status, 101);
    let mut slow_ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        &mut slow,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    use futures_util::{SinkExt, StreamExt};
    let mut session = String::new();
    while session.is_empty() {
        let frame = slow_ws.next().await.unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if let Some(id) = value["session"].as_str() {
            session = id.to_string();
        }
    }
    let request = json!({"action":"subscribe","session":session,"context":"test-flood"});
    slow_ws.send(request.to_string().into()).await.unwrap();
    let reply = slow_ws.next().await.unwrap().unwrap();
    assert!(reply.to_text().unwrap().contains("context subscribed"));
    drop(slow_ws);

    let broker = gateway.publisher();
    let padding = "x".repeat(1000);
    let publisher = tokio::spawn(async move {
        for seq in 0..10_000 {
            let payload = json!({"seq": seq, "pad": padding}).to_string();
            broker.publish("test-flood", payload.into()).await.unwrap();
            if seq % 64 == 0 {
                // Let the writers run, as a real broker's input would.
                tokio::task::yield_now().await;
            }
        }
    });
    for seq in 0..10_000 {
        let frame = normal.recv().await;
        assert_eq!(
            frame["snapshot"]["seq"], seq,
            "normal client lost or reordered a message"
        );
    }
    publisher.await.unwrap();
    // The slow client was cut: its connection ends and its slot is freed.
    read_until_eof(&mut slow).await;
    gateway.connections_at_most(1).await;
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let port = free_port();
    let tmp = temp_dir("sigterm");
    let dir = tmp.path();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!("[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\nmode = \"bypass\"\n[broker]\nkind = \"memory\"\n[acl]\ndefault = \"allow\"\n"),
    )
    .unwrap();
    // The "listening" log line is the event that the port is bound.
    let mut gateway = GatewayProcess::spawn(&path, &[]);
    gateway.wait_for_line("topicgate listening").await;
    gateway.drain_log();

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr).await;
    c.subscribed("anything").await;
    gateway.signal("TERM");
    let (frames, close) = c.recv_until_close().await;
    assert_eq!(
        frames,
        vec![json!({"action":"connect","message":"client disconnect","error":"shutdown"})]
    );
    assert_eq!(u16::from(close.expect("close frame").code), 1001);
    let status = tokio::time::timeout(EVENT_TIMEOUT, gateway.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn client_close_is_answered_with_a_close_frame() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let gateway = start_gateway(base_config(None, "")).await;
    let mut ws = Client::raw(gateway.addr, "/ws").await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    loop {
        let message = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("close reply in time")
            .expect("stream open until the close reply")
            .expect("no reset: the server answers the close");
        if let Message::Close(frame) = message {
            assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
            break;
        }
    }
    gateway.connections_at_most(0).await;
}

#[tokio::test]
async fn json_logs_carry_one_line_per_connection_without_tokens() {
    let port = free_port();
    let tmp = temp_dir("jsonlog");
    let dir = tmp.path();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\nlog_format = \"json\"\n\
             [auth.jwt]\nsecret = \"{SECRET}\"\n[broker]\nkind = \"memory\"\n"
        ),
    )
    .unwrap();
    let mut gateway = GatewayProcess::spawn(&path, &[]);
    let line = gateway.wait_for_line("topicgate listening").await;
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(parsed["level"], "INFO");

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = Client::connect(addr).await;
    let bad = token(json!({"sub": "alice", "exp": 1}));
    assert_eq!(c.authorize(&bad).await["error"], "invalid_token");
    let opened = gateway.wait_for_line("connection opened").await;
    let opened: serde_json::Value = serde_json::from_str(&opened).unwrap();
    assert_eq!(opened["fields"]["session"], c.session.as_str());
    assert!(opened["fields"]["peer"].is_string());
    let refused = gateway.wait_for_line("authorization refused").await;
    assert!(!refused.contains(&bad), "a token reached the log");
    assert!(!refused.contains(SECRET), "the secret reached the log");
    let session = c.session.clone();
    c.close().await;
    let closed = gateway.wait_for_line("connection closed").await;
    let closed: serde_json::Value = serde_json::from_str(&closed).unwrap();
    assert_eq!(closed["fields"]["session"], session.as_str());
    assert_eq!(closed["fields"]["reason"], "peer_closed");
}
