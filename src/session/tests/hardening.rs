//! What an attacker or a bug gets from a session: saturating durations,
//! cleanup on panic, bounded requests, ids, queues and authorization
//! attempts.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::harness::{Harness, PANIC, config, config_in, signed};

const SECRET: &str = "session-test-secret";

#[tokio::test(start_paused = true)]
async fn a_token_expiring_centuries_away_authorizes_and_never_expires() {
    for exp in [
        json!(u64::MAX),
        json!(i64::MAX),
        json!(1u64 << 63),
        json!(1e300),
    ] {
        let h = Harness::new(config(""));
        let mut c = h.connect().await;
        let token = signed(&json!({"sub": "alice", "exp": exp}), SECRET);
        c.send("authorization", &token).await;
        assert_eq!(
            c.recv().await["message"],
            "session authenticated",
            "exp {exp}"
        );
        c.subscribed("user.alice.inbox").await;
        h.publish("user.alice.inbox", "\"hi\"").await;
        assert_eq!(c.recv().await["snapshot"], "hi");
        assert!(c.quiet_for(Duration::from_secs(3000)).await);
        assert_eq!(h.metrics.sessions_authenticated.get(), 1);
        assert!(!c.task.is_finished());
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_session_frees_its_slot_topics_and_gauges_and_closes() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    c.login("alice", 3600).await;
    c.subscribed("public-news").await;
    c.subscribed("user.alice.inbox").await;
    assert_eq!(h.connections.count(), 1);

    c.send_message(Message::text(PANIC)).await;
    let outcome = (&mut c.task).await;
    assert!(outcome.is_err_and(|err| err.is_panic()));
    assert_eq!(h.connections.count(), 0);
    assert_eq!(h.metrics.connections.get(), 0);
    assert_eq!(h.hub.registry().topic_count(), 0);
    assert_eq!(h.metrics.subscriptions.get(), 0);
    assert_eq!(h.metrics.sessions_authenticated.get(), 0);
    // The writer ends too: the client is told (1011) and the socket closes.
    match c.frame().await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(1011)),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(c.from_server.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn binary_frames_count_against_the_request_rate_limit() {
    let h = Harness::new(config(
        "[limits]\nrequests_per_sec = 1\nrequest_burst = 5\n",
    ));
    let mut c = h.connect().await;
    for _ in 0..40 {
        c.send_message(Message::binary(vec![0u8; 8])).await;
    }
    let mut codes = Vec::new();
    for _ in 0..40 {
        let frame = c.recv().await;
        codes.push(frame["error"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        codes[..5].iter().all(|code| code == "bad_request"),
        "{codes:?}"
    );
    assert!(
        codes[5..].iter().all(|code| code == "limit_exceeded"),
        "{codes:?}"
    );
    // A text request is refused the same way until tokens come back.
    c.send("subscribe", "public-news").await;
    assert_eq!(c.recv().await["error"], "limit_exceeded");
}

#[tokio::test(start_paused = true)]
async fn a_long_id_is_refused_and_not_echoed() {
    let h = Harness::new(config_in("bypass", ""));
    let mut c = h.connect().await;
    let long = "x".repeat(64 * 1024);
    let request = json!({"action":"subscribe","session":c.session,"context":"public-a","id":long});
    c.send_message(Message::text(request.to_string())).await;
    let reply = c.recv().await;
    assert_eq!(reply["error"], "bad_request");
    assert_eq!(reply["detail"], "id is longer than 128 bytes");
    assert!(reply.get("id").is_none(), "{reply}");
    assert_eq!(h.hub.registry().topic_count(), 0);

    let fits = "y".repeat(128);
    let request = json!({"action":"subscribe","session":c.session,"context":"public-a","id":fits});
    c.send_message(Message::text(request.to_string())).await;
    assert_eq!(c.recv().await["id"], fits.as_str());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_cut_at_the_byte_bound() {
    // The frame bound (1024) is far away; 2 KiB of queued frames is not.
    let h = Harness::new(config_in(
        "bypass",
        "[limits]\nsend_queue = 1024\nsend_queue_bytes = 2048\n",
    ));
    let mut c = h.connect_with_window(1).await;
    c.subscribed("public-flood").await;
    const PAYLOAD: &str = concat!(
        "\"",
        "0123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789",
        "\""
    );
    for _ in 0..40 {
        h.publish("public-flood", PAYLOAD).await;
    }
    c.closed_with("slow_consumer", 1013).await;
    assert_eq!(h.hub.registry().topic_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sixth_refused_authorization_closes_the_connection() {
    let h = Harness::new(config(""));
    let mut c = h.connect().await;
    let forged = signed(&json!({"sub": "alice"}), "not-the-secret");
    for _ in 0..5 {
        c.send("authorization", &forged).await;
        assert_eq!(c.recv().await["error"], "invalid_token");
    }
    c.send("authorization", &forged).await;
    c.closed_with("invalid_token", 1008).await;
    let (_, slot) = c.task.await.expect("session task").expect("socket back");
    drop(slot);
    assert_eq!(h.connections.count(), 0);
}
