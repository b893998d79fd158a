//! History and recovery end to end (docs/PROTOCOL.md, "Positions and
//! recovery"): recorded publishes through the Redis Function library reach
//! WebSocket clients with their positions, a client that comes back with
//! `since` gets exactly what it missed, and a replica that loses its Redis
//! link catches up or says `gap`. Real `redis-server`s, real WebSockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};
use topicgate_test_support as common;

use common::cluster::RedisCluster;
use common::redis_cli_at as cli;
use common::*;

/// `FCALL topicgate_publish 1 topic payload` on `conn`: the offset.
async fn fcall(conn: &mut redis::aio::MultiplexedConnection, topic: &str, payload: &str) -> u64 {
    redis::cmd("FCALL")
        .arg("topicgate_publish")
        .arg(1)
        .arg(topic)
        .arg(payload)
        .query_async(conn)
        .await
        .expect("FCALL topicgate_publish")
}

/// A logged-in client.
async fn client(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).await;
    c.login("alice").await;
    c
}

/// Sends a subscribe with `since` (any JSON, or none) and returns the reply.
async fn subscribe_since(c: &mut Client, topic: &str, since: Option<Value>) -> Value {
    let mut request = json!({"action":"subscribe","session":c.session,"context":topic});
    if let Some(since) = since {
        request["since"] = since;
    }
    c.send_json(&request).await;
    c.recv().await
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

/// Reads deliveries of `topic` until offset `until`; asserts they are
/// exactly `from..=until`, one each, in order, in one epoch.
async fn expect_run(c: &mut Client, topic: &str, from: u64, until: u64) -> String {
    let mut epoch = None;
    for expected in from..=until {
        let (offset, seen, snapshot) = next_delivery(c, topic).await;
        assert_eq!(offset, expected, "offsets arrive contiguous, once each");
        assert_eq!(snapshot, json!(offset), "the payload of offset {offset}");
        let epoch = epoch.get_or_insert_with(|| seen.clone());
        assert_eq!(*epoch, seen);
    }
    epoch.unwrap_or_default()
}

fn history_config(redis: &RedisServer, extra: &str) -> topicgate::Config {
    base_config(
        Some(redis),
        &format!("[redis]\nreconnect_max_secs = 1\n{extra}"),
    )
}

#[tokio::test]
async fn redis_cli_fcall_offsets_arrive_with_offset_and_epoch() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut c = client(gateway.addr).await;
    // No history yet: the plain reply.
    c.subscribed("t-fcall").await;
    for n in 1..=3 {
        let payload = format!("{{\"n\":{n}}}");
        let answer = cli(
            redis.port,
            &["FCALL", "topicgate_publish", "1", "t-fcall", &payload],
        );
        assert_eq!(answer, n.to_string());
        let (offset, epoch, snapshot) = next_delivery(&mut c, "t-fcall").await;
        assert_eq!((offset, snapshot), (n, json!({"n": n})));
        assert!(!epoch.is_empty());
    }
    // A plain PUBLISH keeps the three fields.
    cli(redis.port, &["PUBLISH", "t-fcall", "plain"]);
    assert_eq!(
        c.recv().await,
        json!({"action":"message","topic":"t-fcall","snapshot":"plain"})
    );
    // A later subscriber's reply carries the position.
    let mut late = client(gateway.addr).await;
    let reply = late.subscribe("t-fcall").await;
    assert_eq!(reply["offset"], 3, "{reply}");
    assert!(reply["epoch"].is_string(), "{reply}");
    assert!(reply.get("recovered").is_none(), "{reply}");
}

#[tokio::test]
async fn reconnecting_with_since_replays_exactly_the_missed_messages() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut conn = redis.connection().await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-back").await;
    for n in 1..=3 {
        fcall(&mut conn, "t-back", &n.to_string()).await;
    }
    let epoch = expect_run(&mut c, "t-back", 1, 3).await;
    c.close().await;

    for n in 4..=6 {
        fcall(&mut conn, "t-back", &n.to_string()).await;
    }
    let mut c = client(gateway.addr).await;
    let reply = subscribe_since(&mut c, "t-back", Some(json!({"epoch": epoch, "offset": 3}))).await;
    assert_eq!(
        reply,
        json!({"action":"subscribe","message":"context subscribed","context":"t-back",
               "epoch": epoch, "offset": 6, "recovered": true})
    );
    expect_run(&mut c, "t-back", 4, 6).await;
    fcall(&mut conn, "t-back", "7").await;
    expect_run(&mut c, "t-back", 7, 7).await;

    let metrics = gateway.metrics().render();
    assert!(
        metrics.contains("topicgate_recoveries_total{result=\"recovered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("topicgate_recovered_messages_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn trimmed_wrong_epoch_and_ahead_histories_are_not_recovered() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "[history]\nsize = 3\n")).await;
    let mut conn = redis.connection().await;
    for n in 1..=10 {
        fcall(&mut conn, "t-trim", &n.to_string()).await;
    }
    let mut c = client(gateway.addr).await;
    let reply = c.subscribe("t-trim").await;
    let epoch = reply["epoch"].as_str().expect("epoch").to_string();

    let cases = [
        (
            json!({"epoch": epoch, "offset": 2}),
            "no longer all in the history",
        ),
        (
            json!({"epoch": "other", "offset": 9}),
            "not the topic's current epoch",
        ),
        (
            json!({"epoch": epoch, "offset": 99}),
            "ahead of the topic's last offset",
        ),
    ];
    let mut last = 10;
    for (since, why) in cases {
        let mut c = client(gateway.addr).await;
        let reply = subscribe_since(&mut c, "t-trim", Some(since.clone())).await;
        assert_eq!(reply["recovered"], false, "{since}: {reply}");
        assert_eq!(reply["offset"], last, "{reply}");
        assert_eq!(reply["epoch"], json!(epoch), "{reply}");
        let detail = reply["detail"].as_str().expect("a detail");
        assert!(detail.contains(why), "{detail}");
        // Nothing is replayed: the next frame is live.
        fcall(&mut conn, "t-trim", "live").await;
        last += 1;
        let (offset, _, snapshot) = next_delivery(&mut c, "t-trim").await;
        assert_eq!((offset, snapshot), (last, json!("live")));
    }
    // Within the last three: recovered.
    let mut c = client(gateway.addr).await;
    let last = fcall(&mut conn, "t-trim", "x").await;
    let reply = subscribe_since(
        &mut c,
        "t-trim",
        Some(json!({"epoch": epoch, "offset": last - 2})),
    )
    .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let metrics = gateway.metrics().render();
    assert!(
        metrics.contains("topicgate_recoveries_total{result=\"not_recovered\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_flushed_history_is_not_recovered_and_names_the_new_epoch() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut conn = redis.connection().await;
    fcall(&mut conn, "t-flush", "1").await;
    let mut c = client(gateway.addr).await;
    let old = c.subscribe("t-flush").await["epoch"].clone();
    c.close().await;

    cli(redis.port, &["FLUSHALL"]);
    assert_eq!(fcall(&mut conn, "t-flush", "again").await, 1);
    let mut c = client(gateway.addr).await;
    let reply = subscribe_since(&mut c, "t-flush", Some(json!({"epoch": old, "offset": 1}))).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["offset"], 1, "{reply}");
    assert_ne!(reply["epoch"], old, "{reply}");
}

#[tokio::test]
async fn a_since_of_bad_shape_is_a_bad_request() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut c = client(gateway.addr).await;
    for since in [
        json!("k3x9:4"),
        json!({"epoch": "k3x9"}),
        json!({"epoch": "k3x9", "offset": -1}),
        json!({"epoch": 1, "offset": 1}),
    ] {
        let reply = subscribe_since(&mut c, "t-shape", Some(since.clone())).await;
        assert_eq!(reply["action"], "error", "{since}: {reply}");
        assert_eq!(reply["error"], "bad_request", "{since}: {reply}");
    }
    // The connection is still usable.
    c.subscribed("t-shape").await;
}

#[tokio::test]
async fn publish_returns_the_offset_and_readyz_reports_history() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "[api]\nkey = \"k\"\n")).await;
    let (status, body) = http_get(gateway.addr, "/readyz").await;
    assert_eq!(status, 200);
    let readyz: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(readyz["history"], "available");

    let body = r#"{"topic":"t-api","data":{"n":1}}"#;
    let (status, text) = post_publish(gateway.addr, Some("k"), body).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["offset"], 1, "{answer}");
    assert!(answer["epoch"].is_string(), "{answer}");
    assert_eq!(answer.as_object().map(|o| o.len()), Some(2), "{answer}");
    let (status, text) = post_publish(gateway.addr, Some("k"), body).await;
    assert_eq!(
        (status, text.contains(r#""offset":2"#)),
        (200, true),
        "{text}"
    );

    // History off: 204, unrecorded.
    let off = start_gateway(history_config(
        &redis,
        "[api]\nkey = \"k\"\n[history]\nsize = 0\n",
    ))
    .await;
    let (_, body) = http_get(off.addr, "/readyz").await;
    assert!(body.contains(r#""history":"off""#), "{body}");
    let body = r#"{"topic":"t-off","data":"x"}"#;
    let (status, text) = post_publish(off.addr, Some("k"), body).await;
    assert_eq!(status, 204, "{text}");
}

#[tokio::test]
async fn a_reload_applies_history_settings() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "[api]\nkey = \"k\"\n")).await;
    let body = r#"{"topic":"t-reload","data":1}"#;
    assert_eq!(post_publish(gateway.addr, Some("k"), body).await.0, 200);
    gateway.replace_config(history_config(
        &redis,
        "[api]\nkey = \"k\"\n[history]\nsize = 0\n",
    ));
    eventually("history off after the reload", || async {
        http_get(gateway.addr, "/readyz")
            .await
            .1
            .contains(r#""history":"off""#)
    })
    .await;
    assert_eq!(post_publish(gateway.addr, Some("k"), body).await.0, 204);
    gateway.replace_config(history_config(
        &redis,
        "[api]\nkey = \"k\"\n[history]\nsize = 2\n",
    ));
    eventually("history on after the reload", || async {
        http_get(gateway.addr, "/readyz")
            .await
            .1
            .contains(r#""history":"available""#)
    })
    .await;
    for _ in 0..3 {
        assert_eq!(post_publish(gateway.addr, Some("k"), body).await.0, 200);
    }
    // The reloaded size (2) is what Redis now keeps.
    assert_eq!(cli(redis.port, &["XLEN", "topicgate:hist:{t-reload}"]), "2");
}

/// Publishes `0, 1, 2, …` (as payloads) to `topic` until `stop`, counting.
fn publish_continuously(
    redis: &RedisServer,
    topic: &'static str,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let url = redis.url();
    tokio::spawn(async move {
        let mut conn = connect_redis(&url).await;
        while !stop.load(Ordering::Relaxed) {
            let next = published.load(Ordering::Relaxed) + 1;
            let offset = fcall(&mut conn, topic, &next.to_string()).await;
            assert_eq!(offset, next);
            published.store(offset, Ordering::Relaxed);
        }
    })
}

#[tokio::test]
async fn thirty_clients_recovering_while_a_publisher_never_pauses_see_one_contiguous_run() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "[history]\nsize = 100000\n")).await;
    let mut conn = redis.connection().await;
    assert_eq!(fcall(&mut conn, "t-storm", "1").await, 1);
    let mut c = client(gateway.addr).await;
    let epoch = c.subscribe("t-storm").await["epoch"].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(1));
    let publisher = publish_continuously(&redis, "t-storm", stop.clone(), published.clone());
    let mut clients = Vec::new();
    for n in 0..30u64 {
        let addr = gateway.addr;
        let epoch = epoch.clone();
        let published = published.clone();
        clients.push(tokio::spawn(async move {
            let mut c = client(addr).await;
            // Each starts from a different point already behind.
            let since = (n % 2).min(published.load(Ordering::Relaxed));
            let reply = subscribe_since(
                &mut c,
                "t-storm",
                Some(json!({"epoch": epoch, "offset": since})),
            )
            .await;
            assert_eq!(reply["recovered"], true, "{reply}");
            let position = reply["offset"].as_u64().expect("offset");
            // Replay up to the reply's offset, then live, without a seam:
            // read well past it.
            expect_run(&mut c, "t-storm", since + 1, position + 50).await;
        }));
    }
    for task in clients {
        task.await.expect("a client saw one contiguous run");
    }
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
}

#[tokio::test]
async fn killing_the_pubsub_link_three_times_loses_nothing() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-kill").await;
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = publish_continuously(&redis, "t-kill", stop.clone(), published.clone());
    let mut seen = 0;
    let mut ready = gateway.broker_ready();
    for _ in 0..3 {
        expect_run(&mut c, "t-kill", seen + 1, seen + 30).await;
        seen += 30;
        assert_ne!(cli(redis.port, &["CLIENT", "KILL", "TYPE", "pubsub"]), "0");
        ready.wait_for(|up| !*up).await.expect("broker alive");
        ready.wait_for(|up| *up).await.expect("broker alive");
    }
    expect_run(&mut c, "t-kill", seen + 1, seen + 30).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.expect("publisher");
}

/// Makes Redis cut this replica's subscribing connection at every message
/// of [`padded`] size it would receive, as a flapping network would, until
/// [`mend_link`]. (Redis counts only what exceeds a client's 16 KiB static
/// buffer against the limit.)
fn break_link(redis: &RedisServer) {
    let limit = "pubsub 1 1 0";
    cli(
        redis.port,
        &["CONFIG", "SET", "client-output-buffer-limit", limit],
    );
}

/// `n` as JSON, padded with whitespace past the static output buffer.
fn padded(n: u64) -> String {
    format!("{n}{}", " ".repeat(20_000))
}

fn mend_link(redis: &RedisServer) {
    let limit = "pubsub 33554432 8388608 60";
    cli(
        redis.port,
        &["CONFIG", "SET", "client-output-buffer-limit", limit],
    );
}

/// Reads frames of `topic` after offset `after` until offset `until`:
/// recorded messages arrive once each in increasing order, and every
/// hole is announced by a `gap` frame naming where delivery goes on.
/// Returns how many gaps were announced.
async fn expect_no_silent_loss(c: &mut Client, topic: &str, after: u64, until: u64) -> usize {
    let (mut at, mut gaps) = (after, 0);
    while at < until {
        let frame = c.recv().await;
        match frame["action"].as_str() {
            Some("gap") => {
                assert_eq!(frame["context"], topic, "{frame}");
                let offset = frame["offset"].as_u64().expect("gap offset");
                assert!(offset >= at, "a gap never goes back: {frame} after {at}");
                at = offset;
                gaps += 1;
            }
            Some("message") => {
                let offset = frame["offset"].as_u64().expect("recorded");
                assert_eq!(
                    offset,
                    at + 1,
                    "no hole without a gap, no duplicate: {frame}"
                );
                assert_eq!(frame["snapshot"], json!(offset), "{frame}");
                at = offset;
            }
            _ => panic!("unexpected frame {frame}"),
        }
    }
    gaps
}

#[tokio::test]
async fn a_range_lost_while_the_link_is_down_gives_a_gap_frame() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "[history]\nsize = 3\n")).await;
    let mut conn = redis.connection().await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-gap").await;
    fcall(&mut conn, "t-gap", "1").await;
    expect_run(&mut c, "t-gap", 1, 1).await;

    // More than `size` messages recorded while the replica cannot receive.
    break_link(&redis);
    for n in 2..=10 {
        fcall(&mut conn, "t-gap", &padded(n)).await;
    }
    mend_link(&redis);
    fcall(&mut conn, "t-gap", "11").await;
    let gaps = expect_no_silent_loss(&mut c, "t-gap", 1, 11).await;
    assert!(gaps >= 1, "the lost range is announced");
    let metrics = gateway.metrics().render();
    assert!(
        !metrics.contains("topicgate_history_gaps_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_quiet_topic_catches_up_what_was_recorded_while_the_link_was_down() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut conn = redis.connection().await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-quiet").await;
    fcall(&mut conn, "t-quiet", "1").await;
    expect_run(&mut c, "t-quiet", 1, 1).await;

    break_link(&redis);
    for n in 2..=4 {
        fcall(&mut conn, "t-quiet", &padded(n)).await;
    }
    mend_link(&redis);
    // Nothing is published after the link is back: catch-up alone brings
    // 2..4, with no gap since the history has them all.
    assert_eq!(expect_no_silent_loss(&mut c, "t-quiet", 1, 4).await, 0);
    let metrics = gateway.metrics().render();
    assert!(
        !metrics.contains("topicgate_redis_reconnects_total 0"),
        "the link was cut: {metrics}"
    );
}

#[tokio::test]
async fn a_restarted_redis_gives_a_gap_frame_and_delivery_goes_on_in_the_new_epoch() {
    let mut redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-reset").await;
    let mut conn = redis.connection().await;
    fcall(&mut conn, "t-reset", "1").await;
    let old = expect_run(&mut c, "t-reset", 1, 1).await;

    let mut ready = gateway.broker_ready();
    redis.restart();
    ready.wait_for(|up| !*up).await.expect("broker alive");
    ready.wait_for(|up| *up).await.expect("broker alive");
    let mut conn = redis.connection().await;
    fcall(&mut conn, "t-reset", "1").await;
    let gap = c.recv().await;
    assert_eq!(gap["action"], "gap", "{gap}");
    assert_eq!(gap["offset"], 0, "{gap}");
    assert_ne!(gap["epoch"], json!(old), "{gap}");
    let new = expect_run(&mut c, "t-reset", 1, 1).await;
    assert_eq!(gap["epoch"], json!(new));
}

#[tokio::test]
async fn recovery_works_through_a_second_gateway_after_the_first_is_gone() {
    let redis = RedisServer::start();
    let first = start_gateway(history_config(&redis, "")).await;
    let second = start_gateway(history_config(&redis, "")).await;
    let mut conn = redis.connection().await;
    let mut c = client(first.addr).await;
    c.subscribed("t-move").await;
    for n in 1..=2 {
        fcall(&mut conn, "t-move", &n.to_string()).await;
    }
    let epoch = expect_run(&mut c, "t-move", 1, 2).await;
    first.shutdown().await;
    for n in 3..=5 {
        fcall(&mut conn, "t-move", &n.to_string()).await;
    }
    let mut c = client(second.addr).await;
    let reply = subscribe_since(&mut c, "t-move", Some(json!({"epoch": epoch, "offset": 2}))).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    expect_run(&mut c, "t-move", 3, 5).await;
}

#[tokio::test]
async fn recovery_on_a_cluster_with_topics_with_braces() {
    let cluster = RedisCluster::start(3).await;
    let gateway = start_gateway(cluster.gateway_config("")).await;
    for topic in ["t{a}b", "t{}x", "t}y{", "t-plain"] {
        let mut c = client(gateway.addr).await;
        c.subscribed(topic).await;
        for n in 1..=2 {
            let answer = cluster.cli(
                0,
                &[
                    "-c",
                    "FCALL",
                    "topicgate_publish",
                    "1",
                    topic,
                    &n.to_string(),
                ],
            );
            assert_eq!(answer.trim(), n.to_string(), "{topic}");
        }
        let epoch = expect_run(&mut c, topic, 1, 2).await;
        c.close().await;
        cluster.cli(1, &["-c", "FCALL", "topicgate_publish", "1", topic, "3"]);
        let mut c = client(gateway.addr).await;
        let reply =
            subscribe_since(&mut c, topic, Some(json!({"epoch": epoch, "offset": 1}))).await;
        assert_eq!(reply["recovered"], true, "{topic}: {reply}");
        assert_eq!(reply["offset"], 3, "{topic}: {reply}");
        expect_run(&mut c, topic, 2, 3).await;
    }
}

#[tokio::test]
async fn the_memory_broker_recovers_through_the_same_path() {
    let gateway = start_gateway(base_config(None, "[api]\nkey = \"k\"\n")).await;
    let mut c = client(gateway.addr).await;
    c.subscribed("t-mem").await;
    for n in 1..=3 {
        let body = format!(r#"{{"topic":"t-mem","data":{n}}}"#);
        assert_eq!(post_publish(gateway.addr, Some("k"), &body).await.0, 200);
    }
    let epoch = expect_run(&mut c, "t-mem", 1, 3).await;
    c.close().await;
    let body = r#"{"topic":"t-mem","data":4}"#;
    assert_eq!(post_publish(gateway.addr, Some("k"), body).await.0, 200);
    let mut c = client(gateway.addr).await;
    let reply = subscribe_since(&mut c, "t-mem", Some(json!({"epoch": epoch, "offset": 2}))).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    expect_run(&mut c, "t-mem", 3, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_after_the_first_record_receives_live_on_a_threaded_runtime() {
    let redis = RedisServer::start();
    let gateway = start_gateway(history_config(&redis, "")).await;
    let mut conn = redis.connection().await;
    assert_eq!(fcall(&mut conn, "t-mt", "1").await, 1);
    let mut c = client(gateway.addr).await;
    let reply = c.subscribe("t-mt").await;
    assert_eq!(reply["offset"], 1, "{reply}");
    for n in 2..=20 {
        fcall(&mut conn, "t-mt", &n.to_string()).await;
    }
    expect_run(&mut c, "t-mt", 2, 20).await;
}

#[tokio::test]
async fn recovery_works_through_another_replica_after_one_is_sigkilled() {
    let redis = RedisServer::start();
    let dir = temp_dir("history-sigkill");
    let port = free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[redis]\nurl = \"{}\"\n\
             [auth]\nmode = \"bypass\"\n[acl]\ndefault = \"allow\"\n",
            redis.url()
        ),
    )
    .expect("write the config");
    let mut killed = GatewayProcess::spawn(&config, &[]);
    killed.wait_for_line("redis connected").await;
    killed.drain_log();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut c = Client::connect(addr).await;
    c.subscribed("t-killed").await;
    let mut conn = redis.connection().await;
    for n in 1..=2 {
        fcall(&mut conn, "t-killed", &n.to_string()).await;
    }
    let epoch = expect_run(&mut c, "t-killed", 1, 2).await;
    killed.signal("KILL");
    let _ = killed.child.wait().await;

    for n in 3..=5 {
        fcall(&mut conn, "t-killed", &n.to_string()).await;
    }
    let other = start_gateway(history_config(&redis, "")).await;
    let mut c = client(other.addr).await;
    let reply = subscribe_since(
        &mut c,
        "t-killed",
        Some(json!({"epoch": epoch, "offset": 2})),
    )
    .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], 5, "{reply}");
    expect_run(&mut c, "t-killed", 3, 5).await;
}

#[tokio::test]
async fn recovery_and_live_delivery_go_on_across_a_cluster_failover() {
    let mut cluster = RedisCluster::start(3).await;
    let replica = cluster.join_replica(0).await;
    let gateway = start_gateway(cluster.gateway_config("")).await;
    let topic = cluster.topic_per_shard("t-failover")[0].clone();
    let publish = |n: u64| {
        let answer = cluster.cli(
            1,
            &[
                "-c",
                "FCALL",
                "topicgate_publish",
                "1",
                &topic,
                &n.to_string(),
            ],
        );
        assert_eq!(answer.trim(), n.to_string(), "offsets go on in one epoch");
    };
    let mut c = client(gateway.addr).await;
    c.subscribed(&topic).await;
    publish(1);
    let epoch = expect_run(&mut c, &topic, 1, 1).await;
    c.close().await;
    publish(2);

    // A manual failover waits for the replica to catch up: nothing is lost.
    cluster.cli(replica, &["CLUSTER", "FAILOVER"]);
    eventually("the replica promoted", || async {
        cluster.cli(replica, &["ROLE"]).starts_with("master")
    })
    .await;
    publish(3);
    let mut c = client(gateway.addr).await;
    let since = json!({"epoch": epoch, "offset": 1});
    // Until the gateway has followed the slot to the promoted node, a
    // subscribe there answers `unavailable`: poll Redis's side of it.
    let mut attempts = 0;
    let reply = loop {
        let reply = subscribe_since(&mut c, &topic, Some(since.clone())).await;
        if reply["error"] != "unavailable" {
            break reply;
        }
        attempts += 1;
        assert!(attempts < 500, "still unavailable: {reply}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], 3, "{reply}");
    expect_run(&mut c, &topic, 2, 3).await;
    eventually("the topic SSUBSCRIBEd on the promoted node", || async {
        cluster.shard_numsub(replica, &topic) == 1
    })
    .await;
    publish(4);
    expect_run(&mut c, &topic, 4, 4).await;
}
