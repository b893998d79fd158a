//! `broker.kind = "redis-cluster"`: sharded Pub/Sub on a real 3-master Redis
//! Cluster started by the test (see `common::cluster`).

use topicgate_test_support as common;

use common::cluster::RedisCluster;
use common::*;
use serde_json::{Value, json};

const KEY: &str = "cluster-api-key";

fn message(topic: &str, snapshot: Value) -> Value {
    json!({"action":"message","topic":topic,"snapshot":snapshot})
}

async fn ready_status(gateway: &topicgate::Gateway) -> u16 {
    http_get(gateway.addr, "/readyz").await.0
}

#[tokio::test]
async fn topics_on_all_three_shards_make_the_round_trip() {
    let cluster = RedisCluster::start(3).await;
    let gateway = start_gateway(cluster.gateway_config(&format!("[api]\nkey = \"{KEY}\"\n"))).await;
    let topics = cluster.topic_per_shard("t-shard");
    assert_eq!(topics.len(), 3);
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    for topic in &topics {
        c.subscribed(topic).await;
    }
    let (_, readyz) = http_get(gateway.addr, "/readyz").await;
    assert!(readyz.contains("redis-cluster"), "{readyz}");

    for (shard, topic) in topics.iter().enumerate() {
        // One SSUBSCRIBE, on the shard that owns the topic's slot.
        assert_eq!(cluster.shard_numsub(shard, topic), 1, "{topic}");
        // `redis-cli -c` from the first node follows MOVED to the owner.
        let receivers = cluster.spublish(0, topic, &format!(r#"{{"shard":{shard}}}"#));
        assert_eq!(receivers, 1, "{topic}");
        assert_eq!(c.recv().await, message(topic, json!({"shard": shard})));
    }
    // POST /publish goes out as SPUBLISH too, to every shard.
    for topic in &topics {
        let body = json!({"topic": topic, "data": {"via": "http"}}).to_string();
        let (status, text) = post_publish(gateway.addr, Some(KEY), &body).await;
        assert_eq!(status, 200, "recorded: {text}");
        assert_eq!(
            unpositioned(c.recv().await),
            message(topic, json!({"via": "http"}))
        );
    }
    // The last local unsubscribe SUNSUBSCRIBEs on that shard.
    c.unsubscribe(&topics[1]).await;
    eventually("SUNSUBSCRIBE on the owner", || async {
        cluster.shard_numsub(1, &topics[1]) == 0
    })
    .await;
    assert_eq!(cluster.shard_numsub(2, &topics[2]), 1);
}

#[tokio::test]
async fn two_replicas_both_deliver_with_one_ssubscribe_each() {
    let cluster = RedisCluster::start(3).await;
    let a = start_gateway(cluster.gateway_config("")).await;
    let b = start_gateway(cluster.gateway_config("")).await;
    let topic = &cluster.topic_per_shard("chat-room")[2];
    let mut clients = Vec::new();
    for (i, gateway) in [&a, &a, &a, &b, &b].into_iter().enumerate() {
        let mut c = Client::connect(gateway.addr).await;
        c.login(&format!("user-{i}")).await;
        c.subscribed(topic).await;
        clients.push(c);
    }
    // Per replica one subscription, however many local subscribers.
    assert_eq!(cluster.shard_numsub(2, topic), 2);
    assert_eq!(cluster.spublish(0, topic, r#""to all""#), 2);
    for c in &mut clients {
        assert_eq!(c.recv().await, message(topic, json!("to all")));
    }
    // Replica b's clients leave: b SUNSUBSCRIBEs, a still holds it.
    for c in clients.drain(3..) {
        c.close().await;
    }
    eventually("replica b's SUNSUBSCRIBE", || async {
        cluster.shard_numsub(2, topic) == 1
    })
    .await;
    assert_eq!(cluster.spublish(1, topic, "2"), 1);
    for c in &mut clients {
        assert_eq!(c.recv().await, message(topic, json!(2)));
    }
}

#[tokio::test]
async fn a_killed_shard_node_resumes_its_topics_when_it_returns() {
    let mut cluster = RedisCluster::start(3).await;
    let gateway = start_gateway(cluster.gateway_config("")).await;
    let topics = cluster.topic_per_shard("t-kill");
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    for topic in &topics {
        c.subscribed(topic).await;
    }
    assert_eq!(ready_status(&gateway).await, 200);

    cluster.nodes[2].kill();
    eventually("/readyz 503 while a shard is away", || async {
        ready_status(&gateway).await == 503
    })
    .await;
    // The other shards keep delivering meanwhile, and the client stays.
    assert_eq!(cluster.spublish(0, &topics[0], r#""still here""#), 1);
    assert_eq!(c.recv().await, message(&topics[0], json!("still here")));
    // Another client joins the live topics, not the one whose shard is away.
    let mut late = Client::connect(gateway.addr).await;
    late.login("bob").await;
    late.subscribed(&topics[0]).await;
    late.subscribed(&topics[1]).await;
    assert_eq!(late.subscribe(&topics[2]).await["error"], "unavailable");

    cluster.nodes[2].restart();
    eventually("/readyz 200 once the shard is back", || async {
        ready_status(&gateway).await == 200
    })
    .await;
    // Resubscribed on the returned node without any client action.
    assert_eq!(cluster.shard_numsub(2, &topics[2]), 1);
    assert_eq!(cluster.spublish(0, &topics[2], r#""back""#), 1);
    assert_eq!(c.recv().await, message(&topics[2], json!("back")));
    let (_, metrics) = http_get(gateway.addr, "/metrics").await;
    assert!(
        metrics.contains("topicgate_redis_reconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_resharded_slot_takes_its_topics_to_the_new_owner() {
    let cluster = RedisCluster::start(3).await;
    let gateway = start_gateway(cluster.gateway_config("")).await;
    // `reshard` moves a source's lowest slots first: 0..20 go to node 1.
    let moving = RedisCluster::topic_where("t-moving", "", |slot| slot < 20);
    let staying = RedisCluster::topic_where("t-staying", "", |slot| (100..5000).contains(&slot));
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed(&moving).await;
    c.subscribed(&staying).await;
    assert_eq!(cluster.shard_numsub(0, &moving), 1);

    cluster.reshard(0, 1, 20);
    let slot = topicgate::key_slot(moving.as_bytes());
    assert_eq!(cluster.owner_of_slot(slot), Some(1), "the slot moved");

    eventually("the moved topic SSUBSCRIBEd on its new owner", || async {
        cluster.shard_numsub(1, &moving) == 1
    })
    .await;
    assert_eq!(cluster.shard_numsub(0, &moving), 0);
    assert_eq!(cluster.spublish(2, &moving, r#""moved""#), 1);
    assert_eq!(c.recv().await, message(&moving, json!("moved")));
    assert_eq!(cluster.spublish(2, &staying, r#""stayed""#), 1);
    assert_eq!(c.recv().await, message(&staying, json!("stayed")));
    assert_eq!(ready_status(&gateway).await, 200);
}

#[tokio::test]
async fn a_failover_takes_topics_to_the_promoted_replica() {
    let mut cluster = RedisCluster::start(3).await;
    let replica = cluster.join_replica(0).await;

    let gateway = start_gateway(cluster.gateway_config("")).await;
    let topic = &cluster.topic_per_shard("t-failover")[0];
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed(topic).await;
    assert_eq!(cluster.shard_numsub(0, topic), 1);

    cluster.cli(replica, &["CLUSTER", "FAILOVER"]);
    eventually("the replica promoted", || async {
        cluster.cli(replica, &["ROLE"]).starts_with("master")
    })
    .await;
    eventually("the topic SSUBSCRIBEd on the promoted node", || async {
        cluster.shard_numsub(replica, topic) == 1
    })
    .await;
    // The demoted node no longer carries it: no message arrives twice.
    // (Redis drops a demoted master's shard subscriptions on its own
    // schedule, which can trail the promoted node's by a moment.)
    eventually("the demoted node holds the topic no more", || async {
        cluster.shard_numsub(0, topic) == 0
    })
    .await;
    // Until every node has taken the new slot owner, a publish may land on
    // the demoted node and reach nobody (0 receivers), so it is retried;
    // one that reached nobody cannot show up at the client.
    eventually("a publish reaches the promoted node", || async {
        cluster.spublish(1, topic, "1") == 1
    })
    .await;
    assert_eq!(cluster.spublish(1, topic, "2"), 1);
    assert_eq!(c.recv().await, message(topic, json!(1)));
    assert_eq!(c.recv().await, message(topic, json!(2)));
}

#[tokio::test]
async fn a_changed_channel_prefix_resubscribes_every_topic_live() {
    let cluster = RedisCluster::start(3).await;
    let gateway = start_gateway(cluster.gateway_config("")).await;
    let topic = "t-renamed";
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed(topic).await;
    let slot_of = |channel: &str| topicgate::key_slot(channel.as_bytes());
    let before = cluster.owner_of_slot(slot_of(topic)).expect("owned");
    assert_eq!(cluster.shard_numsub(before, topic), 1);

    // What a reload of `[redis]` does: the whole config swapped.
    let renamed = cluster.gateway_config("[redis]\nchannel_prefix = \"tg:\"\n");
    gateway.replace_config(renamed);
    let after = cluster
        .owner_of_slot(slot_of("tg:t-renamed"))
        .expect("owned");
    eventually("the prefixed channel SSUBSCRIBEd", || async {
        cluster.shard_numsub(after, "tg:t-renamed") == 1
    })
    .await;
    eventually("the old channel let go", || async {
        cluster.shard_numsub(before, topic) == 0
    })
    .await;
    assert_eq!(cluster.spublish(0, "tg:t-renamed", r#""renamed""#), 1);
    assert_eq!(c.recv().await, message(topic, json!("renamed")));
    // The same session goes on.
    c.subscribed("t-another").await;
}

#[tokio::test]
async fn a_cluster_behind_tls_and_a_password_round_trips() {
    let tmp = temp_dir("cluster-tls");
    let dir = tmp.path();
    let (ca, cert, key) = make_tls_certs(dir);
    let password = "cluster-secret";
    let secure = common::cluster::Secure {
        ca: ca.clone(),
        cert,
        key,
        password: password.into(),
    };
    let cluster = RedisCluster::start_with(3, Some(secure)).await;
    let port = free_port();
    let seeds: Vec<String> = cluster
        .seed_urls()
        .iter()
        .map(|u| format!("{u:?}"))
        .collect();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[broker]\nkind = \"redis-cluster\"\n\
             [redis]\nnodes = [{}]\npassword = \"{password}\"\n\
             [auth]\nmode = \"bypass\"\n[api]\nkey = \"{KEY}\"\n[acl]\ndefault = \"allow\"\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    // The test CA is trusted the way operators add a private CA.
    let mut gateway = GatewayProcess::spawn(&config, &[("SSL_CERT_FILE", ca.as_os_str())]);
    gateway.wait_for_line("redis cluster connected").await;
    gateway.drain_log();

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let topics = cluster.topic_per_shard("t-tls");
    let mut c = Client::connect(addr).await;
    for topic in &topics {
        c.subscribed(topic).await;
    }
    for (shard, topic) in topics.iter().enumerate() {
        assert_eq!(cluster.shard_numsub(shard, topic), 1, "{topic}");
        let body = json!({"topic": topic, "data": {"shard": shard}}).to_string();
        let (status, text) = post_publish(addr, Some(KEY), &body).await;
        assert_eq!(status, 200, "recorded: {text}");
        assert_eq!(
            unpositioned(c.recv().await),
            message(topic, json!({"shard": shard}))
        );
        assert_eq!(cluster.spublish(0, topic, r#""cli""#), 1);
        assert_eq!(c.recv().await, message(topic, json!("cli")));
    }
}

#[tokio::test]
async fn a_subscribe_answered_moved_follows_the_slot_to_its_new_owner() {
    let cluster = RedisCluster::start(3).await;
    let gateway = start_gateway(cluster.gateway_config("")).await;
    let topic = RedisCluster::topic_where("t-late", "", |slot| slot < 20);
    // The slot moves while no topic of it is held: no SUNSUBSCRIBE tells
    // the gateway, whose slot map still names node 0 (it re-reads the map
    // every 5 s; the subscribe below comes well before that).
    cluster.reshard(0, 1, 20);
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed(&topic).await;
    assert_eq!(cluster.shard_numsub(1, &topic), 1);
    assert_eq!(cluster.spublish(0, &topic, r#""found""#), 1);
    assert_eq!(c.recv().await, message(&topic, json!("found")));
}
