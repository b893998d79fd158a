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
//! that missed them holds; and on a Redis Cluster, a replica frozen while
//! its master records, then promoted with `CLUSTER FAILOVER TAKEOVER`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use topicgate_test_support as common;

use common::cluster::RedisCluster;
use common::redis_cli_at as cli;
use common::*;

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

#[tokio::test]
async fn a_cluster_failover_to_a_replica_that_missed_the_last_records_starts_a_new_epoch() {
    let mut cluster = RedisCluster::start(3).await;
    let replica = cluster.join_replica(0).await;
    let config = cluster.gateway_config("[redis]\nhealth_check_secs = 1\n");
    let gateway = start_gateway(config).await;
    let topic = cluster.topic_per_shard("t-takeover")[0].clone();
    let mut c = client(gateway.addr).await;
    c.subscribed(&topic).await;
    let publish = |n: u64| {
        let payload = n.to_string();
        let args = ["-c", "FCALL", "topicgate_publish", "1", &topic, &payload];
        assert_eq!(cluster.cli(1, &args).trim(), payload);
    };
    for n in 1..=4 {
        publish(n);
        let (offset, _, _) = next_delivery(&mut c, &topic).await;
        assert_eq!(offset, n);
    }
    // The replica holds 1..4, and nothing after them.
    assert_eq!(cluster.cli(0, &["WAIT", "1", "5000"]).trim(), "1");
    // Frozen, and cut off: what its master records next never reaches it
    // (bytes already in its socket would be read on SIGCONT).
    cluster.nodes[replica].signal("STOP");
    assert_eq!(
        cluster
            .cli(0, &["CLIENT", "KILL", "TYPE", "replica"])
            .trim(),
        "1"
    );
    let mut old = String::new();
    for n in 5..=7 {
        publish(n);
        let (offset, epoch, _) = next_delivery(&mut c, &topic).await;
        assert_eq!(offset, n);
        old = epoch;
    }

    // The master dies before replicating 5..7; its replica takes over.
    // (A master frozen rather than dead also stops the gateway's cluster
    // connection for commands from mapping the slots afresh.)
    let mut ready = gateway.broker_ready();
    cluster.nodes[0].kill();
    cluster.nodes[replica].signal("CONT");
    assert_eq!(
        cluster
            .cli(replica, &["CLUSTER", "FAILOVER", "TAKEOVER"])
            .trim(),
        "OK"
    );
    ready.wait_for(|up| !*up).await.expect("broker alive");
    // Slot-map checks and health checks take a few seconds to follow it.
    tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|up| *up))
        .await
        .expect("the gateway follows the takeover")
        .expect("broker alive");
    // Whether or not the gateway has read the new master yet, the next
    // record there shows the reuse at the latest: offset 5 of the old
    // epoch (dropped with it), or 1 of the new one.
    let args = ["-c", "FCALL", "topicgate_publish", "1", &topic, "\"probe\""];
    let probe: u64 = cluster.cli(1, &args).trim().parse().expect("an offset");
    let new = expect_new_epoch_gap(&mut c, &topic, &old).await;
    let args = ["-c", "FCALL", "topicgate_publish", "1", &topic, "\"after\""];
    let after: u64 = cluster.cli(1, &args).trim().parse().expect("an offset");
    let mut frame = next_delivery(&mut c, &topic).await;
    if probe == 1 {
        assert_eq!(frame, (1, new.clone(), json!("probe")));
        frame = next_delivery(&mut c, &topic).await;
    } else {
        assert_eq!(probe, 5, "the old epoch went on from the replica's 4");
    }
    assert_eq!(frame, (after, new, json!("after")));
    let reply = subscribe_since(gateway.addr, &topic, json!({"epoch": old, "offset": 7})).await;
    assert_eq!(reply["recovered"], false, "{reply}");
}
