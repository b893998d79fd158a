//! A Redis failover that loses the tail of a topic's history
//! (docs/PROTOCOL.md, "Positions and recovery"; docs/RELIABILITY.md).
//!
//! Redis replicates asynchronously: a replica promoted before it received
//! the last recorded messages holds an older history, and the next
//! `topicgate_publish` would hand out the lost offsets again under the same
//! epoch. A gateway that delivered the lost messages notices on its
//! catch-up read, starts a new epoch (`topicgate_reset`) and sends `gap`.
//!
//! The lagging replica is real: a `redis-server` restarted on the same port
//! from a snapshot taken before the lost messages, which is what a replica
//! that missed them holds.

use std::net::SocketAddr;

use serde_json::{Value, json};
use topicgate_test_support as common;

use common::*;

/// `redis-cli -p port args…`, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("the tests need redis-cli on PATH");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `FCALL topicgate_publish 1 topic payload` on `redis`: the offset.
async fn fcall(redis: &RedisServer, topic: &str, payload: &str) -> u64 {
    let mut conn = redis.connection().await;
    redis::cmd("FCALL")
        .arg("topicgate_publish")
        .arg(1)
        .arg(topic)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .expect("FCALL topicgate_publish")
}

async fn client(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).await;
    c.login("alice").await;
    c
}

/// The next frame, asserted to be a delivery of `topic`: (offset, epoch, snapshot).
async fn next_delivery(c: &mut Client, topic: &str) -> (u64, String, Value) {
    let frame = c.recv().await;
    assert_eq!(frame["action"], "message", "{frame}");
    assert_eq!(frame["topic"], topic, "{frame}");
    let offset = frame["offset"].as_u64().expect("a recorded delivery");
    let epoch = frame["epoch"].as_str().expect("an epoch").to_string();
    (offset, epoch, frame["snapshot"].clone())
}

/// Publishes `from..=until` (each its own number as payload) and reads them
/// back in order on `c`; the epoch they came in.
async fn publish_run(
    redis: &RedisServer,
    c: &mut Client,
    topic: &str,
    from: u64,
    until: u64,
) -> String {
    let mut epoch = String::new();
    for n in from..=until {
        assert_eq!(fcall(redis, topic, &n.to_string()).await, n);
        let (offset, seen, snapshot) = next_delivery(c, topic).await;
        assert_eq!((offset, snapshot), (n, json!(n)));
        epoch = seen;
    }
    epoch
}

/// A `redis-server` that snapshots to its own file when told (`SAVE`) and
/// loads it when restarted: the test's lagging replica.
fn snapshotting_redis(dir: &tempfile::TempDir) -> RedisServer {
    let dir = dir.path().to_string_lossy().to_string();
    RedisServer::start_with(&["--dir", &dir, "--dbfilename", "lagging.rdb"])
}

/// Asserts the next frame on `c` is a `gap` of `topic` into a new epoch
/// (not `old`) at offset 0; that epoch.
async fn expect_new_epoch_gap(c: &mut Client, topic: &str, old: &str) -> String {
    let gap = c.recv().await;
    assert_eq!(gap["action"], "gap", "{gap}");
    assert_eq!(gap["context"], topic, "{gap}");
    assert_ne!(
        gap["epoch"],
        json!(old),
        "the lost offsets are not reused: {gap}"
    );
    assert_eq!(gap["offset"], 0, "{gap}");
    gap["epoch"].as_str().expect("an epoch").to_string()
}

/// Subscribes with `since` on a fresh client; the reply.
async fn subscribe_since(addr: SocketAddr, topic: &str, since: Value) -> Value {
    let mut c = client(addr).await;
    let request = json!({"action":"subscribe","session":c.session,"context":topic,"since":since});
    c.send_json(&request).await;
    c.recv().await
}

#[tokio::test]
async fn a_failover_to_a_replica_behind_the_delivered_offset_starts_a_new_epoch() {
    let dir = temp_dir("history-failover");
    let mut redis = snapshotting_redis(&dir);
    let config = base_config(Some(&redis), "[redis]\nreconnect_max_secs = 1\n");
    let gateway = start_gateway(config).await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-lost").await;
    publish_run(&redis, &mut c, "t-lost", 1, 4).await;
    assert_eq!(cli(redis.port, &["SAVE"]), "OK");
    let old = publish_run(&redis, &mut c, "t-lost", 5, 7).await;

    // The master dies; what takes its place never received 5..7.
    let mut ready = gateway.broker_ready();
    redis.restart();
    ready.wait_for(|up| !*up).await.expect("broker alive");
    let new = expect_new_epoch_gap(&mut c, "t-lost", &old).await;

    // Delivery goes on in the new epoch, from 1.
    assert_eq!(fcall(&redis, "t-lost", "new").await, 1);
    let (offset, epoch, snapshot) = next_delivery(&mut c, "t-lost").await;
    assert_eq!((offset, epoch, snapshot), (1, new.clone(), json!("new")));

    // A client that saw 7 of the old epoch is told it cannot recover.
    let reply = subscribe_since(gateway.addr, "t-lost", json!({"epoch": old, "offset": 7})).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(
        (reply["epoch"].clone(), reply["offset"].clone()),
        (json!(new), json!(1))
    );
    let metrics = gateway.metrics().render();
    assert!(
        metrics.contains("topicgate_history_gaps_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failover_whose_new_master_reused_the_offsets_before_the_link_came_back_starts_a_new_epoch()
 {
    let dir = temp_dir("history-reused");
    let mut redis = snapshotting_redis(&dir);
    // The gateway reaches Redis through a proxy, so the test can record on
    // the new master before the gateway's link to it comes back.
    let proxy = TcpProxy::start(
        format!("127.0.0.1:{}", redis.port)
            .parse()
            .expect("address"),
    )
    .await;
    let config = redis_url_config(&proxy.redis_url(), "[redis]\nreconnect_max_secs = 1\n");
    let gateway = start_gateway(config).await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-reused").await;
    publish_run(&redis, &mut c, "t-reused", 1, 4).await;
    assert_eq!(cli(redis.port, &["SAVE"]), "OK");
    let old = publish_run(&redis, &mut c, "t-reused", 5, 7).await;

    let mut ready = gateway.broker_ready();
    proxy.black_hole();
    redis.restart();
    ready.wait_for(|up| !*up).await.expect("broker alive");
    // The new master hands out 5..8 again: the same offsets, other messages.
    for n in 5..=8 {
        assert_eq!(
            fcall(&redis, "t-reused", &format!("\"again {n}\"")).await,
            n
        );
    }
    proxy.resume();
    let new = expect_new_epoch_gap(&mut c, "t-reused", &old).await;
    assert_eq!(fcall(&redis, "t-reused", "next").await, 1);
    let (offset, epoch, snapshot) = next_delivery(&mut c, "t-reused").await;
    assert_eq!((offset, epoch, snapshot), (1, new, json!("next")));

    let reply = subscribe_since(gateway.addr, "t-reused", json!({"epoch": old, "offset": 7})).await;
    assert_eq!(reply["recovered"], false, "{reply}");
}

#[tokio::test]
async fn a_lossless_restart_keeps_the_epoch_and_catches_up() {
    let dir = temp_dir("history-lossless");
    let mut redis = snapshotting_redis(&dir);
    let proxy = TcpProxy::start(
        format!("127.0.0.1:{}", redis.port)
            .parse()
            .expect("address"),
    )
    .await;
    let config = redis_url_config(&proxy.redis_url(), "[redis]\nreconnect_max_secs = 1\n");
    let gateway = start_gateway(config).await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-kept").await;
    let old = publish_run(&redis, &mut c, "t-kept", 1, 4).await;
    assert_eq!(cli(redis.port, &["SAVE"]), "OK");

    // Nothing delivered was lost: the history goes on in its epoch, and
    // what was recorded while the link was down is caught up, not a gap.
    let mut ready = gateway.broker_ready();
    proxy.black_hole();
    redis.restart();
    ready.wait_for(|up| !*up).await.expect("broker alive");
    for n in 5..=6 {
        assert_eq!(fcall(&redis, "t-kept", &n.to_string()).await, n);
    }
    proxy.resume();
    for n in 5..=6 {
        let (offset, epoch, snapshot) = next_delivery(&mut c, "t-kept").await;
        assert_eq!((offset, epoch, snapshot), (n, old.clone(), json!(n)));
    }
}
