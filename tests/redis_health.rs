//! A Redis link that goes silent without closing (black-holed by a TCP
//! proxy, or a `redis-server` frozen with SIGSTOP) is noticed within about
//! twice `redis.health_check_secs`, replaced and resubscribed; meanwhile
//! `/readyz` is 503, subscribes answer `unavailable` and `POST /publish`
//! answers 503 (docs/RELIABILITY.md). The same for each master of a
//! Redis Cluster.

use std::net::SocketAddr;
use std::time::Duration;

use topicgate_test_support as common;

use common::cluster::RedisCluster;
use common::*;
use serde_json::json;

const KEY: &str = "health-api-key";
/// `redis.health_check_secs` of these tests.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

fn extra() -> String {
    format!(
        "[redis]\nhealth_check_secs = {}\nreconnect_max_secs = 1\n[api]\nkey = \"{KEY}\"\n",
        HEALTH_CHECK.as_secs()
    )
}

/// Polls `/readyz` until it answers `status`; panics after `within`.
async fn readyz_turns(addr: SocketAddr, status: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if http_get(addr, "/readyz").await.0 == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz did not turn {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long detection may take: two health-check periods, and a second of
/// slack for a loaded machine.
fn detection() -> Duration {
    HEALTH_CHECK * 2 + Duration::from_secs(1)
}

fn message(topic: &str, snapshot: serde_json::Value) -> serde_json::Value {
    json!({"action":"message","topic":topic,"snapshot":snapshot})
}

/// While the link is dead: a held topic and a new one are `unavailable`,
/// and `POST /publish` is 503.
async fn assert_unavailable(addr: SocketAddr) {
    let mut other = Client::connect(addr).await;
    other.login("bob").await;
    for topic in ["t-live", "t-new"] {
        let reply = other.subscribe(topic).await;
        assert_eq!(reply["error"], "unavailable", "{topic}: {reply}");
    }
    let body = json!({"topic": "t-live", "data": "lost"}).to_string();
    let (status, text) = post_publish(addr, Some(KEY), &body).await;
    assert_eq!(status, 503, "{text}");
}

/// Once the link is back: the held topic was resubscribed (once), and a
/// new subscribe and `POST /publish` work again.
async fn assert_recovered(
    addr: SocketAddr,
    redis: &RedisServer,
    held: &mut Client,
    readyz_within: Duration,
) {
    readyz_turns(addr, 200, readyz_within).await;
    let mut conn = redis.connection().await;
    eventually("one Redis subscription of t-live", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, "t-live").await == 1 }
    })
    .await;
    assert_eq!(redis_publish(&mut conn, "t-live", r#""back""#).await, 1);
    assert_eq!(held.recv().await, message("t-live", json!("back")));

    let mut late = Client::connect(addr).await;
    late.login("carol").await;
    late.subscribed("t-new").await;
    let body = json!({"topic": "t-new", "data": "via http"}).to_string();
    let (status, text) = post_publish(addr, Some(KEY), &body).await;
    // Recorded: history is on by default.
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        unpositioned(late.recv().await),
        message("t-new", json!("via http"))
    );
}

#[tokio::test]
async fn a_black_holed_redis_link_is_noticed_replaced_and_resubscribed() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port))).await;
    let gateway = start_gateway(redis_url_config(&proxy.redis_url(), &extra())).await;
    let mut held = Client::connect(gateway.addr).await;
    held.login("alice").await;
    held.subscribed("t-live").await;

    proxy.black_hole();
    readyz_turns(gateway.addr, 503, detection()).await;
    assert_unavailable(gateway.addr).await;

    proxy.resume();
    assert_recovered(gateway.addr, &redis, &mut held, EVENT_TIMEOUT).await;
    let (_, metrics) = http_get(gateway.addr, "/metrics").await;
    assert!(
        metrics.contains("topicgate_redis_reconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_frozen_redis_is_noticed_and_its_topics_resubscribed_when_it_resumes() {
    let redis = RedisServer::start();
    let gateway = start_gateway(redis_url_config(&redis.url(), &extra())).await;
    let mut held = Client::connect(gateway.addr).await;
    held.login("alice").await;
    held.subscribed("t-live").await;

    redis.signal("STOP");
    readyz_turns(gateway.addr, 503, detection()).await;
    assert_unavailable(gateway.addr).await;

    redis.signal("CONT");
    assert_recovered(gateway.addr, &redis, &mut held, EVENT_TIMEOUT).await;
}

#[tokio::test]
async fn a_frozen_cluster_master_is_noticed_and_its_topics_resubscribed_when_it_resumes() {
    let cluster = RedisCluster::start(3).await;
    let config = cluster.gateway_config(&extra());
    let gateway = start_gateway(config).await;
    let topics = cluster.topic_per_shard("t-freeze");
    // A topic nobody holds yet, on the master about to freeze.
    let ranges = cluster.slot_ranges();
    let fresh = RedisCluster::topic_where("t-fresh", "", |slot| {
        ranges
            .iter()
            .any(|&(first, last, node)| node == 2 && (first..=last).contains(&slot))
    });
    let mut held = Client::connect(gateway.addr).await;
    held.login("alice").await;
    for topic in &topics {
        held.subscribed(topic).await;
    }

    // Frozen, the master keeps its sockets open and answers nothing.
    cluster.nodes[2].signal("STOP");
    readyz_turns(gateway.addr, 503, detection()).await;
    let mut late = Client::connect(gateway.addr).await;
    late.login("bob").await;
    // Topics on the other masters stay live; the frozen one's are not.
    late.subscribed(&topics[0]).await;
    let reply = late.subscribe(&topics[2]).await;
    assert_eq!(reply["error"], "unavailable", "{reply}");
    let reply = late.subscribe(&fresh).await;
    assert_eq!(reply["error"], "unavailable", "{reply}");
    let body = json!({"topic": &topics[2], "data": "lost"}).to_string();
    let (status, text) = post_publish(gateway.addr, Some(KEY), &body).await;
    assert_eq!(status, 503, "{text}");

    cluster.nodes[2].signal("CONT");
    cluster.wait_until_ok().await;
    readyz_turns(gateway.addr, 200, EVENT_TIMEOUT).await;
    eventually("one SSUBSCRIBE of the frozen shard's topic", || async {
        cluster.shard_numsub(2, &topics[2]) == 1
    })
    .await;
    assert_eq!(cluster.spublish(0, &topics[2], r#""back""#), 1);
    assert_eq!(held.recv().await, message(&topics[2], json!("back")));
    late.subscribed(&fresh).await;
    let body = json!({"topic": &fresh, "data": "fresh"}).to_string();
    let (status, text) = post_publish(gateway.addr, Some(KEY), &body).await;
    // Recorded: history is on by default.
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        unpositioned(late.recv().await),
        message(&fresh, json!("fresh"))
    );
}
