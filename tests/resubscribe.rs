//! A reconnect with many live topics: every topic is resubscribed, and a
//! subscribe racing the resubscription is confirmed only once Redis holds
//! its topic, so a PUBLISH sent right after the confirmation arrives
//! (docs/PROTOCOL.md, docs/RELIABILITY.md).

use std::net::SocketAddr;
use std::time::Duration;

use topicgate_test_support as common;

use common::*;
use serde_json::{Value, json};

/// Live topics on the gateway when Redis restarts.
const TOPICS: usize = 10_000;
/// Subscribes sent before their replies are read.
const WINDOW: usize = 500;

fn held(n: usize) -> String {
    format!("t-held-{n}")
}

fn message(topic: &str, snapshot: Value) -> Value {
    json!({"action":"message","topic":topic,"snapshot":snapshot})
}

/// Subscribes `topics` on `client`, `WINDOW` requests at a time.
async fn subscribe_all(client: &mut Client, topics: impl Iterator<Item = String>) {
    let topics: Vec<String> = topics.collect();
    for window in topics.chunks(WINDOW) {
        for topic in window {
            let session = client.session.clone();
            client
                .send_json(&json!({"action":"subscribe","session":session,"context":topic}))
                .await;
        }
        for _ in window {
            let reply = client.recv().await;
            assert_eq!(reply["message"], "context subscribed", "{reply}");
        }
    }
}

/// Subscribes `topic` until confirmed (each refusal must be `unavailable`:
/// Redis is still coming back), then PUBLISHes at once: the message must
/// arrive. Returns how many subscribes were refused first.
async fn confirm_then_publish(
    client: &mut Client,
    topic: &str,
    redis: &mut redis::aio::MultiplexedConnection,
) -> usize {
    let mut refused = 0;
    loop {
        let reply = client.subscribe(topic).await;
        if reply["message"] == "context subscribed" {
            break;
        }
        assert_eq!(reply["error"], "unavailable", "{reply}");
        refused += 1;
        // Retry pacing only, to spare a shared machine; the outcome does
        // not depend on it.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let payload = format!(r#""right after {topic}""#);
    let receivers = redis_publish(redis, topic, &payload).await;
    assert!(receivers >= 1, "{topic} confirmed before Redis held it");
    assert_eq!(
        client.recv().await,
        message(topic, json!(format!("right after {topic}")))
    );
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_racing_the_resubscription_of_ten_thousand_topics_is_confirmed_only_once_held()
{
    let mut redis = RedisServer::start();
    let extra = format!(
        "[limits]\nmax_subscriptions = {}\nsend_queue = {}\n\
         requests_per_sec = 1000000\nrequest_burst = 1000000\n\
         [redis]\nreconnect_max_secs = 1\n",
        TOPICS + 10,
        TOPICS + 10,
    );
    // The gateway reaches Redis over a link that the test slows down for
    // the reconnect; the test's own PUBLISHes go to Redis directly. A
    // confirmation sent before Redis holds the topic lets a PUBLISH
    // overtake the SUBSCRIBE still on its way.
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port))).await;
    let gateway = start_gateway(redis_url_config(&proxy.redis_url(), &extra)).await;
    let mut holder = Client::connect(gateway.addr).await;
    holder.login("alice").await;
    subscribe_all(&mut holder, (0..TOPICS).map(held)).await;
    let mut racer_held = Client::connect(gateway.addr).await;
    racer_held.login("bob").await;
    let mut racer_new = Client::connect(gateway.addr).await;
    racer_new.login("carol").await;

    proxy.set_delay(Duration::from_millis(20));
    redis.restart();
    // The racers start as soon as Redis is back, while the gateway
    // reconnects and resubscribes; the held topic is one of the last.
    let mut for_held = redis.connection().await;
    let mut for_new = redis.connection().await;
    let last = held(TOPICS - 1);
    let (refused_held, refused_new) = tokio::join!(
        confirm_then_publish(&mut racer_held, &last, &mut for_held),
        confirm_then_publish(&mut racer_new, "t-brand-new", &mut for_new),
    );
    eprintln!("refused before confirmation: held {refused_held}, new {refused_new}");

    // Every topic came back, each once, and the holder receives again.
    let mut conn = redis.connection().await;
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut conn)
        .await
        .expect("PUBSUB CHANNELS");
    assert_eq!(channels.len(), TOPICS + 1);
    assert_eq!(numsub(&mut conn, &held(0)).await, 1);
    assert_eq!(redis_publish(&mut conn, &held(0), r#""first""#).await, 1);
    // The holder also got the racer's publish on the last topic.
    let mut frames = vec![holder.recv().await, holder.recv().await];
    frames.sort_by_key(|frame| frame["topic"].as_str().map(str::to_string));
    assert_eq!(
        frames,
        [
            message(&held(0), json!("first")),
            message(&last, json!(format!("right after {last}"))),
        ]
    );
}
