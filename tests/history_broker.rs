//! The Redis brokers' history (`docs/PROTOCOL.md`, history and recovery):
//! the `topicgate` function library on a real `redis-server` and a real
//! 3-master cluster, called by the real `redis-cli` and by the broker.

use topicgate_test_support as common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::RedisCluster;
use common::redis_cli_at as cli;
use common::*;
use tokio::sync::mpsc;
use topicgate::Metrics;
use topicgate::broker_seam::{
    self as broker, Broker, Deliver, Delivery, HistorySettings, HistoryStatus, Position, Range,
};

/// One delivery as the broker handed it over.
#[derive(Debug, PartialEq)]
struct Seen {
    topic: String,
    payload: Vec<u8>,
    position: Option<Position>,
}

/// Forwards every delivery to the test.
struct Forward(mpsc::UnboundedSender<Seen>);

impl Deliver for Forward {
    fn deliver(&self, delivery: Delivery<'_>) {
        let _ = self.0.send(Seen {
            topic: delivery.topic.to_string(),
            payload: delivery.payload.to_vec(),
            position: delivery.position.cloned(),
        });
    }
}

struct Harness {
    broker: Arc<dyn Broker>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Harness {
    /// A broker for `config`, once ready.
    async fn start(config: &topicgate::Config, history: HistorySettings) -> Self {
        let (tx, seen) = mpsc::unbounded_channel();
        let broker = broker::start(
            config,
            Arc::new(Forward(tx)),
            Arc::new(Metrics::new()),
            history,
        );
        let mut ready = broker.ready();
        tokio::time::timeout(EVENT_TIMEOUT, ready.wait_for(|ready| *ready))
            .await
            .expect("the broker gets ready")
            .expect("the broker runs");
        Self { broker, seen }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(EVENT_TIMEOUT, self.seen.recv())
            .await
            .expect("a delivery")
            .expect("the broker runs")
    }

    async fn publish(&self, topic: &str, payload: &str) -> Option<Position> {
        self.broker
            .publish(topic, Bytes::from(payload.to_string()))
            .await
            .expect("publish")
    }

    async fn recorded(&self, topic: &str, payload: &str) -> Position {
        self.publish(topic, payload).await.expect("recorded")
    }
}

fn history(size: usize, ttl_secs: u64) -> HistorySettings {
    HistorySettings {
        size,
        ttl: Duration::from_secs(ttl_secs),
    }
}

fn fcall(port: u16, channel: &str, payload: &str) -> String {
    cli(port, &["FCALL", "topicgate_publish", "1", channel, payload])
}

fn delivered(topic: &str, payload: &str, position: Option<Position>) -> Seen {
    Seen {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        position,
    }
}

#[tokio::test]
async fn redis_cli_fcall_gives_consecutive_offsets_and_the_subscriber_sees_them() {
    let redis = RedisServer::start();
    let mut h = Harness::start(&base_config(Some(&redis), ""), history(10, 60)).await;
    assert_eq!(h.broker.history_status(), HistoryStatus::Available);
    h.broker.subscribe("chat-room").await.expect("subscribed");

    let offsets: Vec<String> = (1..=3)
        .map(|n| fcall(redis.port, "chat-room", &format!("{{\"n\":{n}}}")))
        .collect();
    assert_eq!(offsets, ["1", "2", "3"]);
    let first = h.next().await;
    let epoch = first.position.clone().expect("recorded").epoch;
    assert!(!epoch.is_empty() && epoch.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        first,
        delivered(
            "chat-room",
            "{\"n\":1}",
            Some(Position::new(1, epoch.clone()))
        )
    );
    for n in 2..=3 {
        let payload = format!("{{\"n\":{n}}}");
        let position = Some(Position::new(n, epoch.clone()));
        assert_eq!(h.next().await, delivered("chat-room", &payload, position));
    }

    // A plain PUBLISH stays unpositioned and untouched, even one that
    // starts like the framing of a recorded message.
    assert_eq!(cli(redis.port, &["PUBLISH", "chat-room", "plain"]), "1");
    assert_eq!(h.next().await, delivered("chat-room", "plain", None));
    let lookalike = "\0tg1:e:x\0{}";
    let mut conn = redis.connection().await;
    assert_eq!(redis_publish(&mut conn, "chat-room", lookalike).await, 1);
    assert_eq!(h.next().await, delivered("chat-room", lookalike, None));

    // The gateway's own publishes take the next offset.
    let fourth = h.recorded("chat-room", "four").await;
    assert_eq!(fourth, Position::new(4, epoch.clone()));
    assert_eq!(h.next().await, delivered("chat-room", "four", Some(fourth)));
}

#[tokio::test]
async fn history_after_since_returns_exactly_the_missed_messages() {
    let redis = RedisServer::start();
    let h = Harness::start(&base_config(Some(&redis), ""), history(10, 60)).await;
    assert_eq!(h.broker.history("t", None).await, Ok(Range::none()));
    let mut positions = Vec::new();
    for n in 1..=5 {
        positions.push(h.recorded("t", &format!("m{n}")).await);
    }
    let last = positions[4].clone();
    let since = positions[1].clone();

    let range = h
        .broker
        .history("t", Some(since.clone()))
        .await
        .expect("read");
    assert_eq!(range.last, Some(last.clone()));
    let missed: Vec<(u64, &[u8])> = range
        .messages
        .iter()
        .map(|m| (m.offset, m.payload.as_ref()))
        .collect();
    assert_eq!(missed, [(3, &b"m3"[..]), (4, b"m4"), (5, b"m5")]);
    assert!(range.recovers(&since));

    // Without since: the position only; up to date: nothing missed.
    let range = h.broker.history("t", None).await.expect("read");
    assert_eq!((range.last, range.messages.len()), (Some(last.clone()), 0));
    let range = h
        .broker
        .history("t", Some(last.clone()))
        .await
        .expect("read");
    assert!(range.messages.is_empty() && range.recovers(&last));

    // Another epoch, or a since ahead of the history, does not recover.
    let stranger = Position::new(2, "other");
    let range = h
        .broker
        .history("t", Some(stranger.clone()))
        .await
        .expect("read");
    assert!(range.messages.is_empty() && !range.recovers(&stranger));
    let ahead = Position::new(9, last.epoch.clone());
    let range = h
        .broker
        .history("t", Some(ahead.clone()))
        .await
        .expect("read");
    assert!(!range.recovers(&ahead));
}

#[tokio::test]
async fn messages_trimmed_beyond_size_are_not_recoverable() {
    let redis = RedisServer::start();
    let h = Harness::start(&base_config(Some(&redis), ""), history(3, 60)).await;
    let mut positions = Vec::new();
    for n in 1..=6 {
        positions.push(h.recorded("t", &n.to_string()).await);
    }
    let kept = h.broker.history("t", Some(positions[0].clone())).await;
    let offsets: Vec<u64> = kept
        .expect("read")
        .messages
        .iter()
        .map(|m| m.offset)
        .collect();
    assert_eq!(offsets, [4, 5, 6]);
    for (since, recovers) in [(0, false), (1, false), (2, true), (5, true)] {
        let range = h.broker.history("t", Some(positions[since].clone())).await;
        assert_eq!(
            range.expect("read").recovers(&positions[since]),
            recovers,
            "since {since}"
        );
    }
}

#[tokio::test]
async fn the_epoch_survives_a_lost_stream_and_a_lost_meta_key_starts_a_new_one() {
    let redis = RedisServer::start();
    let h = Harness::start(&base_config(Some(&redis), ""), history(10, 60)).await;
    let first = h.recorded("t-x", "1").await;
    let second = h.recorded("t-x", "2").await;

    // Both keys expire; the epoch and offset outlive the messages.
    let stream_ttl: i64 = cli(redis.port, &["TTL", "topicgate:hist:{t-x}"])
        .parse()
        .expect("ttl");
    let meta_ttl: i64 = cli(redis.port, &["TTL", "topicgate:meta:{t-x}"])
        .parse()
        .expect("ttl");
    assert!((1..=60).contains(&stream_ttl), "{stream_ttl}");
    assert!(meta_ttl > 60, "{meta_ttl}");

    // The stream is gone (expired, evicted): offsets go on, never reused,
    // and what was lost is not recoverable.
    assert_eq!(cli(redis.port, &["DEL", "topicgate:hist:{t-x}"]), "1");
    let third = h.recorded("t-x", "3").await;
    assert_eq!(third, Position::new(3, first.epoch.clone()));
    let range = h
        .broker
        .history("t-x", Some(first.clone()))
        .await
        .expect("read");
    assert!(!range.recovers(&first));
    assert!(
        h.broker
            .history("t-x", Some(second))
            .await
            .expect("read")
            .recovers(&Position::new(2, first.epoch.clone()))
    );

    // The meta key is gone too (FLUSHALL): a new epoch from offset 1.
    assert_eq!(cli(redis.port, &["FLUSHALL"]), "OK");
    assert_eq!(h.broker.history("t-x", None).await, Ok(Range::none()));
    let fresh = h.recorded("t-x", "4").await;
    assert_eq!(fresh.offset, 1);
    assert_ne!(fresh.epoch, first.epoch);
    let range = h
        .broker
        .history("t-x", Some(third.clone()))
        .await
        .expect("read");
    assert!(range.messages.is_empty() && !range.recovers(&third));

    // Only the meta key is lost (evicted): a new epoch, and the old
    // stream's messages are not passed off as the new epoch's.
    assert_eq!(cli(redis.port, &["DEL", "topicgate:meta:{t-x}"]), "1");
    let renewed = h.recorded("t-x", "5").await;
    assert_eq!(renewed.offset, 1);
    assert_ne!(renewed.epoch, fresh.epoch);
    let since = Position::new(0, renewed.epoch.clone());
    let range = h.broker.history("t-x", Some(since)).await.expect("read");
    let payloads: Vec<&[u8]> = range.messages.iter().map(|m| m.payload.as_ref()).collect();
    assert_eq!(payloads, [&b"5"[..]]);

    // A meta key behind its stream (restored apart from it): its offsets
    // cannot go on, so a new epoch starts rather than reuse one.
    assert_eq!(h.recorded("t-x", "6").await.offset, 2);
    assert_eq!(
        cli(redis.port, &["HSET", "topicgate:meta:{t-x}", "offset", "1"]),
        "0"
    );
    let restarted = h.recorded("t-x", "7").await;
    assert_eq!(restarted.offset, 1);
    assert_ne!(restarted.epoch, renewed.epoch);
    let since = Position::new(0, restarted.epoch.clone());
    let range = h
        .broker
        .history("t-x", Some(since.clone()))
        .await
        .expect("read");
    assert!(range.recovers(&since));
    assert_eq!(range.messages.len(), 1);
}

#[tokio::test]
async fn a_reset_starts_one_new_epoch_only_while_the_old_one_is_current() {
    let redis = RedisServer::start();
    let h = Harness::start(&base_config(Some(&redis), ""), history(10, 60)).await;
    let old = h.recorded("t-r", "1").await;
    h.recorded("t-r", "2").await;

    h.broker
        .reset("t-r", old.epoch.clone())
        .await
        .expect("reset");
    let range = h.broker.history("t-r", None).await.expect("read");
    let new = range.last.expect("a history");
    assert_ne!(new.epoch, old.epoch);
    assert_eq!(new.offset, 0, "offsets restart, the old messages are gone");
    assert_eq!(cli(redis.port, &["EXISTS", "topicgate:hist:{t-r}"]), "0");

    // A second replica asking for the same epoch changes nothing.
    h.broker
        .reset("t-r", old.epoch.clone())
        .await
        .expect("reset");
    assert_eq!(
        h.recorded("t-r", "3").await,
        Position::new(1, new.epoch.clone())
    );
    let since = Position::new(0, new.epoch.clone());
    let range = h
        .broker
        .history("t-r", Some(since.clone()))
        .await
        .expect("read");
    assert!(range.recovers(&since));
    assert_eq!(range.messages.len(), 1);

    // From redis-cli: the current position comes back, nil without history.
    let answer = cli(
        redis.port,
        &["FCALL", "topicgate_reset", "1", "t-r", &old.epoch],
    );
    assert_eq!(answer, format!("1\n{}", new.epoch));
    assert_eq!(
        cli(
            redis.port,
            &["FCALL", "topicgate_reset", "1", "t-none", "e"]
        ),
        ""
    );
    assert!(cli(redis.port, &["FCALL", "topicgate_reset", "1", "t-r"]).contains("usage"));

    // The memory broker keeps the same contract.
    let memory = Harness::start(&base_config(None, ""), history(10, 60)).await;
    let old = memory.recorded("t-r", "1").await;
    memory
        .broker
        .reset("t-r", "other".into())
        .await
        .expect("reset");
    assert_eq!(
        memory.recorded("t-r", "2").await,
        Position::new(2, old.epoch.clone())
    );
    memory
        .broker
        .reset("t-r", old.epoch.clone())
        .await
        .expect("reset");
    let fresh = memory.recorded("t-r", "3").await;
    assert_eq!(fresh.offset, 1);
    assert_ne!(fresh.epoch, old.epoch);
}

#[tokio::test]
async fn the_library_is_loaded_again_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let mut h = Harness::start(&base_config(Some(&redis), ""), history(10, 60)).await;
    h.broker.subscribe("t-restart").await.expect("subscribed");
    assert_eq!(fcall(redis.port, "t-restart", "before"), "1");
    let before = h.next().await.position.expect("recorded");

    let mut ready = h.broker.ready();
    redis.restart();
    // The restarted Redis kept nothing, functions included, until the
    // broker reconnects and loads the library again.
    tokio::time::timeout(EVENT_TIMEOUT, ready.wait_for(|ready| !*ready))
        .await
        .expect("the loss is noticed")
        .expect("the broker runs");
    tokio::time::timeout(EVENT_TIMEOUT, ready.wait_for(|ready| *ready))
        .await
        .expect("the broker reconnects")
        .expect("the broker runs");
    assert_eq!(fcall(redis.port, "t-restart", "after"), "1");
    let after = h.next().await;
    assert_eq!(after.payload, b"after");
    let after = after.position.expect("recorded");
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(h.broker.history_status(), HistoryStatus::Available);

    // Functions removed behind the broker's back: its next publish loads
    // the library again and records.
    assert_eq!(cli(redis.port, &["FUNCTION", "FLUSH"]), "OK");
    assert_eq!(h.recorded("t-restart", "reloaded").await.offset, 2);
    assert!(cli(redis.port, &["FUNCTION", "LIST"]).contains("topicgate"));
}

#[tokio::test]
async fn a_redis_that_forbids_functions_leaves_history_unavailable_and_publishes_plainly() {
    let acl = [
        "--user",
        "default",
        "on",
        "nopass",
        "~*",
        "&*",
        "+@all",
        "-@scripting",
    ];
    // As a Redis older than 7 answers: the commands do not exist.
    let old = [
        "--rename-command",
        "FUNCTION",
        "",
        "--rename-command",
        "FCALL",
        "",
    ];
    for (args, answer) in [(&acl[..], "NOPERM"), (&old[..], "unknown command")] {
        let redis = RedisServer::start_with(args);
        assert!(cli(redis.port, &["FUNCTION", "LIST"]).contains(answer));
        let mut h = Harness::start(&base_config(Some(&redis), ""), history(10, 60)).await;
        assert_eq!(h.broker.history_status(), HistoryStatus::Unavailable);
        h.broker.subscribe("t").await.expect("subscribed");
        assert_eq!(h.publish("t", "plain").await, None);
        assert_eq!(h.next().await, delivered("t", "plain", None));
        assert_eq!(h.broker.history("t", None).await, Ok(Range::none()));
    }
}

#[tokio::test]
async fn history_off_only_publishes_even_through_the_function() {
    let redis = RedisServer::start();
    let mut h = Harness::start(&base_config(Some(&redis), ""), history(0, 60)).await;
    assert_eq!(h.broker.history_status(), HistoryStatus::Off);
    h.broker.subscribe("t").await.expect("subscribed");
    assert_eq!(fcall(redis.port, "t", "via fcall"), "");
    assert_eq!(h.next().await, delivered("t", "via fcall", None));
    assert_eq!(h.publish("t", "direct").await, None);
    assert_eq!(h.next().await, delivered("t", "direct", None));
    assert_eq!(cli(redis.port, &["DBSIZE"]), "0");
}

#[tokio::test]
async fn topics_with_braces_are_recorded_and_read_in_their_slot_on_a_cluster() {
    let cluster = RedisCluster::start(3).await;
    let mut h = Harness::start(&cluster.gateway_config(""), history(10, 60)).await;
    assert_eq!(h.broker.history_status(), HistoryStatus::Available);
    let topics = ["a{b}c", "{x}", "a}b", "{}y", "chat"];
    for topic in topics {
        h.broker.subscribe(topic).await.expect("subscribed");
    }
    for (n, topic) in topics.iter().enumerate() {
        // Any node: redis-cli follows MOVED to the channel's master.
        let node = n % cluster.nodes.len();
        let answer = cluster.cli(
            node,
            &["-c", "FCALL", "topicgate_publish", "1", topic, "one"],
        );
        assert_eq!(answer.trim(), "1", "{topic}");
        let seen = h.next().await;
        let first = seen.position.clone().expect("recorded");
        assert_eq!(seen, delivered(topic, "one", Some(first.clone())));

        let second = h.recorded(topic, "two").await;
        assert_eq!(second, Position::new(2, first.epoch.clone()));
        assert_eq!(h.next().await, delivered(topic, "two", Some(second)));

        let range = h
            .broker
            .history(topic, Some(first.clone()))
            .await
            .expect("read");
        let payloads: Vec<&[u8]> = range.messages.iter().map(|m| m.payload.as_ref()).collect();
        assert_eq!(payloads, [&b"two"[..]], "{topic}");

        // Both keys live in the channel's slot, on its master.
        let slot = topicgate::key_slot(topic.as_bytes());
        let owner = cluster.owner_of_slot(slot).expect("an owner");
        let count = cluster.cli(owner, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
        assert_eq!(count.trim(), "2", "{topic} in slot {slot}");
    }

    // Functions removed from every master: the next publish loads the
    // library on all of them again.
    for node in 0..cluster.nodes.len() {
        assert_eq!(cluster.cli(node, &["FUNCTION", "FLUSH"]).trim(), "OK");
    }
    assert_eq!(h.recorded("chat", "three").await.offset, 3);
    for node in 0..cluster.nodes.len() {
        assert!(
            cluster
                .cli(node, &["FUNCTION", "LIST"])
                .contains("topicgate")
        );
    }
}

/// Adds an empty node to `cluster` with `redis-cli --cluster add-node`:
/// a master without slots, or a replica of node `replica_of`.

#[tokio::test]
async fn a_new_master_gets_the_library_and_the_history_moves_with_its_slot() {
    let mut cluster = RedisCluster::start(3).await;
    let fresh = cluster.join(None);
    cluster.wait_until_ok().await;
    let mut h = Harness::start(&cluster.gateway_config(""), history(10, 60)).await;
    // `reshard` moves a source's lowest slots first: 0..20 go to the new node.
    let topic = RedisCluster::topic_where("t-moving", "", |slot| slot < 20);
    h.broker.subscribe(&topic).await.expect("subscribed");
    let first = h.recorded(&topic, "1").await;
    assert_eq!(h.next().await, delivered(&topic, "1", Some(first.clone())));
    assert!(
        !cluster
            .cli(fresh, &["FUNCTION", "LIST"])
            .contains("topicgate")
    );

    cluster.reshard(0, fresh, 20);
    let slot = topicgate::key_slot(topic.as_bytes());
    assert_eq!(cluster.owner_of_slot(slot), Some(fresh), "the slot moved");
    eventually("the topic SSUBSCRIBEd on its new master", || async {
        cluster.shard_numsub(fresh, &topic) == 1
    })
    .await;
    assert!(
        cluster
            .cli(fresh, &["FUNCTION", "LIST"])
            .contains("topicgate")
    );
    let answer = cluster.cli(1, &["-c", "FCALL", "topicgate_publish", "1", &topic, "2"]);
    assert_eq!(answer.trim(), "2", "offsets go on in the same epoch");
    let second = Position::new(2, first.epoch.clone());
    assert_eq!(h.next().await, delivered(&topic, "2", Some(second)));
    let range = h.broker.history(&topic, Some(first.clone())).await;
    assert!(range.expect("read").recovers(&first));
}

#[tokio::test]
async fn a_failover_to_a_replica_with_the_history_keeps_it_recoverable() {
    let mut cluster = RedisCluster::start(3).await;
    let replica = cluster.join_replica(0).await;
    let mut h = Harness::start(&cluster.gateway_config(""), history(10, 60)).await;
    let topic = cluster.topic_per_shard("t-failover")[0].clone();
    h.broker.subscribe(&topic).await.expect("subscribed");
    let first = h.recorded(&topic, "1").await;
    assert_eq!(h.next().await, delivered(&topic, "1", Some(first.clone())));

    // A manual failover waits for the replica to catch up: nothing is lost.
    cluster.cli(replica, &["CLUSTER", "FAILOVER"]);
    eventually("the replica promoted", || async {
        cluster.cli(replica, &["ROLE"]).starts_with("master")
    })
    .await;
    eventually("the topic SSUBSCRIBEd on the promoted node", || async {
        cluster.shard_numsub(replica, &topic) == 1
    })
    .await;
    let answer = cluster.cli(1, &["-c", "FCALL", "topicgate_publish", "1", &topic, "2"]);
    assert_eq!(answer.trim(), "2");
    let second = Position::new(2, first.epoch.clone());
    assert_eq!(h.next().await, delivered(&topic, "2", Some(second)));
    let range = h.broker.history(&topic, Some(first.clone())).await;
    assert!(range.expect("read").recovers(&first));
}
