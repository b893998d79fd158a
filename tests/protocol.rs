//! The protocol of docs/PROTOCOL.md over a real WebSocket, run once per
//! broker: every test below is instantiated for the memory broker and for a
//! real `redis-server`.

use topicgate_test_support as common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use topicgate::Gateway;

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Redis,
}

/// A gateway on either broker, and a way to publish as a backend would.
struct Harness {
    gateway: Gateway,
    /// Kept alive for the test's duration; `None` on the memory broker.
    redis: Option<RedisServer>,
    publisher: Option<redis::aio::MultiplexedConnection>,
}

impl Harness {
    async fn new(kind: Kind, extra: &str) -> Self {
        let redis = matches!(kind, Kind::Redis).then(RedisServer::start);
        // The memory broker records every publish unless history is off;
        // these tests compare unrecorded deliveries (tests/history.rs has
        // the recorded ones), as PUBLISH gives on Redis.
        let extra = match kind {
            Kind::Memory => format!("{extra}\n[history]\nsize = 0\n"),
            Kind::Redis => extra.to_string(),
        };
        let gateway = start_gateway(base_config(redis.as_ref(), &extra)).await;
        let publisher = match &redis {
            Some(redis) => Some(redis.connection().await),
            None => None,
        };
        Self {
            gateway,
            redis,
            publisher,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.gateway.addr
    }

    async fn client(&self) -> Client {
        Client::connect(self.addr()).await
    }

    /// A client that authorized as `sub`.
    async fn user(&self, sub: &str) -> Client {
        let mut client = self.client().await;
        client.login(sub).await;
        client
    }

    /// `PUBLISH topic payload` with a plain Redis client, or through the
    /// memory broker.
    async fn publish(&self, topic: &str, payload: &str) {
        match &self.publisher {
            Some(conn) => {
                redis_publish(&mut conn.clone(), topic, payload).await;
            }
            None => self
                .gateway
                .publisher()
                .publish(topic, payload.as_bytes().to_vec().into())
                .await
                .expect("memory publish"),
        }
    }
}

async fn connect_sends_connection_and_session_frames(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let a = h.client().await;
    let b = Client::connect_path(h.addr(), "/ws").await;
    for session in [&a.session, &b.session] {
        let parsed = uuid::Uuid::parse_str(session).expect("session is a uuid");
        assert_eq!(parsed.get_version_num(), 4);
    }
    assert_ne!(a.session, b.session, "each connection gets its own session");
}

async fn json_and_text_payloads_round_trip(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    c.subscribed("test-channel").await;
    h.publish("test-channel", r#"{"info":"Hello from Redis"}"#)
        .await;
    assert_eq!(
        c.recv().await,
        json!({"action":"message","topic":"test-channel","snapshot":{"info":"Hello from Redis"}})
    );
    h.publish("test-channel", "plain text, not JSON").await;
    assert_eq!(
        c.recv().await,
        json!({"action":"message","topic":"test-channel","snapshot":"plain text, not JSON"})
    );
    h.publish("test-channel", "42").await;
    assert_eq!(c.recv().await["snapshot"], json!(42));
}

async fn request_id_is_echoed(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    let session = c.session.clone();
    c.send_json(&json!({"action":"subscribe","session":session,"context":"chat-1","id":"req-7"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"action":"subscribe","message":"context subscribed","context":"chat-1","id":"req-7"})
    );
    c.send_json(&json!({"action":"unsubscribe","session":session,"context":"chat-1","id":8}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"action":"unsubscribe","message":"context unsubscribed","context":"chat-1","id":8})
    );
    c.send_json(&json!({"action":"subscribe","session":session,"context":"admin","id":9}))
        .await;
    let reply = c.recv().await;
    assert_eq!(reply["error"], "forbidden");
    assert_eq!(reply["id"], 9);
}

async fn malformed_requests_are_bad_request_and_keep_the_connection(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    let session = c.session.clone();
    let long_topic = "t".repeat(257);
    let cases: Vec<String> = vec![
        "not json".into(),
        "[1,2]".into(),
        "\"a string\"".into(),
        json!({"session": session, "context": "test-x"}).to_string(),
        json!({"action": "subscribe", "context": "test-x"}).to_string(),
        json!({"action": "subscribe", "session": session}).to_string(),
        json!({"action": "subscribe", "session": session, "context": ""}).to_string(),
        json!({"action": "subscribe", "session": 5, "context": "test-x"}).to_string(),
        json!({"action": "subscribe", "session": session, "context": long_topic}).to_string(),
        json!({"action": "subscribe", "session": session, "context": "test-\nx"}).to_string(),
    ];
    for case in &cases {
        c.send_text(case).await;
        let reply = c.recv().await;
        assert_eq!(reply["error"], "bad_request", "{case} -> {reply}");
        assert_eq!(reply["action"], "error", "{case} -> {reply}");
        assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    c.send_message(Message::binary(vec![1u8, 2, 3])).await;
    let reply = c.recv().await;
    assert_eq!(reply["error"], "bad_request");
    // Still usable afterwards.
    c.subscribed("test-after").await;
}

async fn unknown_action_is_refused(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.client().await;
    let reply = c.request("publish", "test-channel").await;
    assert_eq!(reply["action"], "error");
    assert_eq!(reply["error"], "unknown_action");
    assert_eq!(
        reply.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["action", "detail", "error", "message"]
    );
}

async fn foreign_session_is_invalid_and_changes_nothing(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    let other = uuid::Uuid::new_v4().to_string();
    for (action, context) in [
        ("subscribe", "test-channel"),
        ("authorization", "x"),
        ("unsubscribe", "test-channel"),
    ] {
        c.send_json(&json!({"action": action, "session": other, "context": context}))
            .await;
        let reply = c.recv().await;
        assert_eq!(reply["error"], "invalid_session", "{action}");
        assert_eq!(reply["action"], action);
    }
    // The foreign subscribe did not subscribe: the next frame is the reply
    // to a later request, not a delivery.
    h.publish("test-channel", "\"nobody\"").await;
    c.subscribed("test-other").await;
    // The foreign authorization did not log the session out.
    c.subscribed("test-channel").await;
}

async fn bad_token_is_invalid_token(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.client().await;
    let forged = {
        let key = jsonwebtoken::EncodingKey::from_secret(b"not-the-secret").unwrap();
        jsonwebtoken::encode(&Default::default(), &json!({"sub":"mallory"}), &key).unwrap()
    };
    for token in [forged.as_str(), "not.a.token", "garbage"] {
        let reply = c.authorize(token).await;
        assert_eq!(reply["action"], "session");
        assert_eq!(reply["message"], "session unauthorized");
        assert_eq!(reply["error"], "invalid_token");
        let detail = reply["detail"].as_str().unwrap();
        assert!(!detail.contains(token), "detail must not echo the token");
    }
    let reply = c.subscribe("test-channel").await;
    assert_eq!(reply["error"], "unauthenticated");
}

async fn subscribe_before_authorization_is_unauthenticated(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.client().await;
    for action in ["subscribe", "unsubscribe"] {
        let reply = c.request(action, "test-channel").await;
        assert_eq!(reply["action"], action);
        assert_eq!(reply["error"], "unauthenticated");
        assert_eq!(reply["context"], "test-channel");
    }
}

async fn topic_without_rule_is_forbidden(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    assert_eq!(
        c.subscribe("admin-room").await,
        json!({"action":"subscribe","message":"context forbidden","error":"forbidden",
               "detail":"no rule allows topic admin-room","context":"admin-room"})
    );
}

async fn subscriptions_are_limited_per_session(kind: Kind) {
    let h = Harness::new(kind, "[limits]\nmax_subscriptions = 2\n").await;
    let mut c = h.user("alice").await;
    c.subscribed("test-1").await;
    c.subscribed("test-2").await;
    let reply = c.subscribe("test-3").await;
    assert_eq!(reply["action"], "subscribe");
    assert_eq!(reply["error"], "limit_exceeded");
    // Re-subscribing a held topic at the limit is the same success.
    c.subscribed("test-2").await;
    // Unsubscribing frees a slot; unsubscribing twice is fine.
    for _ in 0..2 {
        assert_eq!(
            c.unsubscribe("test-1").await,
            json!({"action":"unsubscribe","message":"context unsubscribed","context":"test-1"})
        );
    }
    c.subscribed("test-3").await;
}

async fn unsubscribed_topic_is_no_longer_delivered(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    c.subscribed("test-a").await;
    c.subscribed("test-b").await;
    c.unsubscribe("test-a").await;
    h.publish("test-a", "\"gone\"").await;
    h.publish("test-b", "\"kept\"").await;
    assert_eq!(c.recv().await["snapshot"], "kept");
}

async fn thousand_messages_arrive_complete_and_in_order(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    c.subscribed("test-seq").await;
    for i in 0..1000 {
        h.publish("test-seq", &json!({"seq": i}).to_string()).await;
    }
    for i in 0..1000 {
        let frame = c.recv().await;
        assert_eq!(
            frame["snapshot"]["seq"], i,
            "message {i} out of order or lost"
        );
    }
}

async fn publish_right_after_subscribe_reply_is_delivered(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    for i in 0..50 {
        let topic = format!("test-race-{i}");
        c.subscribed(&topic).await;
        h.publish(&topic, &i.to_string()).await;
        assert_eq!(
            c.recv().await,
            json!({"action":"message","topic":topic,"snapshot":i})
        );
    }
}

async fn every_subscriber_of_a_topic_receives(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut c = h.user(&format!("user-{i}")).await;
        c.subscribed("chat-room").await;
        clients.push(c);
    }
    h.publish("chat-room", r#"{"n":1}"#).await;
    for c in &mut clients {
        assert_eq!(c.recv().await["snapshot"], json!({"n":1}));
    }
}

async fn oversized_frame_closes_with_1009(kind: Kind) {
    let h = Harness::new(kind, "[limits]\nmax_message_bytes = 1024\n").await;
    let mut c = h.user("alice").await;
    c.send_text(&"x".repeat(2048)).await;
    let (frames, close) = c.recv_until_close().await;
    assert_eq!(
        frames,
        vec![json!({"action":"connect","message":"client disconnect","error":"too_large"})]
    );
    assert_eq!(u16::from(close.expect("close frame").code), 1009);
}

async fn no_authorization_in_time_closes_with_1008(kind: Kind) {
    let h = Harness::new(kind, "[auth]\ntimeout_secs = 1\n").await;
    let mut c = h.client().await;
    let (frames, close) = c.recv_until_close().await;
    assert_eq!(
        frames,
        vec![json!({"action":"connect","message":"client disconnect","error":"auth_timeout"})]
    );
    assert_eq!(u16::from(close.expect("close frame").code), 1008);
}

async fn bypass_mode_allows_subscribe_without_authorization_but_keeps_acl(kind: Kind) {
    let h = Harness::new(kind, "[auth]\nmode = \"bypass\"\n").await;
    let mut c = h.client().await;
    c.subscribed("test-open").await;
    assert_eq!(c.subscribe("admin-room").await["error"], "forbidden");
    assert_eq!(
        c.authorize("anything at all").await,
        json!({"action":"session","message":"session authenticated"})
    );
    h.publish("test-open", "1").await;
    assert_eq!(c.recv().await["snapshot"], 1);
}

async fn shutdown_closes_clients_with_1001(kind: Kind) {
    let h = Harness::new(kind, "").await;
    let mut c = h.user("alice").await;
    c.subscribed("test-x").await;
    let Harness { gateway, redis, .. } = h;
    let closing = tokio::spawn(gateway.shutdown());
    let (frames, close) = c.recv_until_close().await;
    assert_eq!(
        frames,
        vec![json!({"action":"connect","message":"client disconnect","error":"shutdown"})]
    );
    assert_eq!(u16::from(close.expect("close frame").code), 1001);
    assert_eq!(closing.await.unwrap(), 0, "every connection drained");
    drop(redis);
}

macro_rules! for_each_broker {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Memory).await;
                }
            )*
        }
        mod redis_broker {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Kind::Redis).await;
                }
            )*
        }
    };
}

for_each_broker!(
    connect_sends_connection_and_session_frames,
    json_and_text_payloads_round_trip,
    request_id_is_echoed,
    malformed_requests_are_bad_request_and_keep_the_connection,
    unknown_action_is_refused,
    foreign_session_is_invalid_and_changes_nothing,
    bad_token_is_invalid_token,
    subscribe_before_authorization_is_unauthenticated,
    topic_without_rule_is_forbidden,
    subscriptions_are_limited_per_session,
    unsubscribed_topic_is_no_longer_delivered,
    thousand_messages_arrive_complete_and_in_order,
    publish_right_after_subscribe_reply_is_delivered,
    every_subscriber_of_a_topic_receives,
    oversized_frame_closes_with_1009,
    no_authorization_in_time_closes_with_1008,
    bypass_mode_allows_subscribe_without_authorization_but_keeps_acl,
    shutdown_closes_clients_with_1001,
);

/// Replies come in request order even when the subscribe confirmation is
/// produced on another thread than the next request's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    for redis in [None, Some(RedisServer::start())] {
        let gateway = start_gateway(base_config(
            redis.as_ref(),
            "[limits]\nrequests_per_sec = 100000\nrequest_burst = 100000\n",
        ))
        .await;
        let mut c = Client::connect(gateway.addr).await;
        c.login("alice").await;
        let session = c.session.clone();
        for i in 0..300 {
            for action in ["subscribe", "unsubscribe"] {
                let request = json!({"action": action, "session": session, "context": format!("t-{i}"), "id": i});
                c.send_json(&request).await;
            }
        }
        for i in 0..300 {
            for action in ["subscribe", "unsubscribe"] {
                let reply = c.recv().await;
                assert_eq!(
                    (reply["action"].as_str(), &reply["id"]),
                    (Some(action), &json!(i)),
                    "{reply}"
                );
            }
        }
    }
}
