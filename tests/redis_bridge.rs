//! The Redis bridge (docs/SCALING.md), against real `redis-server`
//! processes.

use topicgate_test_support as common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn two_replicas_on_one_redis_both_deliver_one_publish() {
    let redis = RedisServer::start();
    let a = start_gateway(base_config(Some(&redis), "")).await;
    let b = start_gateway(base_config(Some(&redis), "")).await;
    let mut on_a = Client::connect(a.addr).await;
    let mut on_b = Client::connect(b.addr).await;
    for c in [&mut on_a, &mut on_b] {
        c.login("alice").await;
        c.subscribed("chat-room").await;
    }
    let mut conn = redis.connection().await;
    let receivers = redis_publish(&mut conn, "chat-room", r#"{"info":"Hello from Redis"}"#).await;
    assert_eq!(receivers, 2, "one Redis subscription per replica");
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(
            c.recv().await,
            json!({"action":"message","topic":"chat-room","snapshot":{"info":"Hello from Redis"}})
        );
    }
}

#[tokio::test]
async fn one_redis_subscription_per_topic_however_many_local_subscribers() {
    let redis = RedisServer::start();
    let gateway = start_gateway(base_config(Some(&redis), "")).await;
    let mut conn = redis.connection().await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = Client::connect(gateway.addr).await;
        c.login(&format!("user-{i}")).await;
        c.subscribed("chat-room").await;
        c.subscribed("chat-other").await;
        clients.push(c);
    }
    assert_eq!(numsub(&mut conn, "chat-room").await, 1);
    assert_eq!(numsub(&mut conn, "chat-other").await, 1);

    // All but one leave by unsubscribing: still one subscription.
    let mut last = clients.pop().unwrap();
    for c in &mut clients {
        c.unsubscribe("chat-room").await;
    }
    assert_eq!(numsub(&mut conn, "chat-room").await, 1);
    // The last one leaves: Redis is unsubscribed.
    last.unsubscribe("chat-room").await;
    eventually("UNSUBSCRIBE after the last unsubscribe", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, "chat-room").await == 0 }
    })
    .await;

    // Leaving by disconnecting counts the same.
    assert_eq!(numsub(&mut conn, "chat-other").await, 1);
    last.close().await;
    for c in clients.drain(..) {
        c.close().await;
    }
    eventually("UNSUBSCRIBE after the last disconnect", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, "chat-other").await == 0 }
    })
    .await;
    assert_eq!(gateway.topic_count(), 0);
}

#[tokio::test]
async fn resubscribing_after_the_last_unsubscribe_subscribes_again() {
    let redis = RedisServer::start();
    let gateway = start_gateway(base_config(Some(&redis), "")).await;
    let mut conn = redis.connection().await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    // UNSUBSCRIBE and SUBSCRIBE of one topic reach Redis in request order.
    for _ in 0..20 {
        c.subscribed("test-flip").await;
        c.unsubscribe("test-flip").await;
    }
    c.subscribed("test-flip").await;
    assert_eq!(numsub(&mut conn, "test-flip").await, 1);
    redis_publish(&mut conn, "test-flip", "1").await;
    assert_eq!(c.recv().await["snapshot"], 1);
}

#[tokio::test]
async fn channel_prefix_maps_topics_to_prefixed_channels() {
    let redis = RedisServer::start();
    let gateway = start_gateway(base_config(
        Some(&redis),
        "[redis]\nchannel_prefix = \"app1:\"\n",
    ))
    .await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("chat-room").await;
    let mut conn = redis.connection().await;
    assert_eq!(numsub(&mut conn, "app1:chat-room").await, 1);
    assert_eq!(numsub(&mut conn, "chat-room").await, 0);
    redis_publish(&mut conn, "chat-room", "\"unprefixed\"").await;
    redis_publish(&mut conn, "app1:chat-room", "\"prefixed\"").await;
    assert_eq!(
        c.recv().await,
        json!({"action":"message","topic":"chat-room","snapshot":"prefixed"})
    );
}

#[tokio::test]
async fn redis_password_is_used() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let extra = "[redis]\npassword = \"s3cret\"\n";
    let gateway = start_gateway(base_config(Some(&redis), extra)).await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-auth").await;
    let mut conn = connect_redis(&format!("redis://:s3cret@127.0.0.1:{}/0", redis.port)).await;
    redis_publish(&mut conn, "test-auth", "\"ok\"").await;
    assert_eq!(c.recv().await["snapshot"], "ok");
}

#[tokio::test]
async fn subscribe_while_redis_is_down_is_unavailable_and_recorded_nowhere() {
    let mut redis = RedisServer::start();
    let gateway = start_gateway(base_config(Some(&redis), "")).await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-kept").await;

    let mut ready = gateway.broker_ready();
    redis.kill();
    ready.wait_for(|r| !*r).await.unwrap();
    let (status, body) = http_get(gateway.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["redis"],
        "down"
    );

    let reply = c.subscribe("test-new").await;
    assert_eq!(reply["action"], "subscribe");
    assert_eq!(reply["error"], "unavailable");
    assert_eq!(reply["context"], "test-new");
    // A topic this replica already holds is not live at Redis either.
    let mut other = Client::connect(gateway.addr).await;
    other.login("bob").await;
    assert_eq!(other.subscribe("test-kept").await["error"], "unavailable");

    // Redis comes back on the same port: the live topic is resubscribed by
    // itself, the refused one is not.
    redis.restart();
    ready.wait_for(|r| *r).await.unwrap();
    let mut conn = redis.connection().await;
    assert_eq!(numsub(&mut conn, "test-kept").await, 1);
    assert_eq!(numsub(&mut conn, "test-new").await, 0);
    redis_publish(&mut conn, "test-kept", "\"after restart\"").await;
    assert_eq!(c.recv().await["snapshot"], "after restart");
    let (status, _) = http_get(gateway.addr, "/readyz").await;
    assert_eq!(status, 200);
    // The client can retry the refused subscribe now.
    c.subscribed("test-new").await;
}

#[tokio::test]
async fn gateway_serves_while_redis_is_away_at_start() {
    let port = free_port();
    let config = config(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n[acl]\ndefault = \"allow\"\n"
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = topicgate::Gateway::start(listener, config).unwrap();
    let (status, _) = http_get(gateway.addr, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = http_get(gateway.addr, "/readyz").await;
    assert_eq!(status, 503);
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    assert_eq!(c.subscribe("anything").await["error"], "unavailable");
}

#[tokio::test]
async fn refused_redis_password_is_logged_clearly_and_retried() {
    let redis = RedisServer::start_with(&["--requirepass", "right"]);
    let tmp = temp_dir("wrongpass");
    let dir = tmp.path();
    let port = free_port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\nmode = \"bypass\"\n\
             [redis]\nurl = \"{}\"\npassword = \"wrong\"\nreconnect_max_secs = 1\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut gateway = GatewayProcess::spawn(&config, &[]);
    gateway.wait_for_line("redis refused authentication").await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, _) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503);
    // The operator fixes Redis's side; the gateway's retries get through.
    let mut admin = connect_redis(&format!("redis://:right@127.0.0.1:{}/0", redis.port)).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("wrong")
        .query_async(&mut admin)
        .await
        .unwrap();
    gateway.wait_for_line("redis connected").await;
    gateway.drain_log();
    let (status, _) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_redis_that_starts_requiring_a_password_unreadies_the_gateway_until_the_config_has_it() {
    let redis = RedisServer::start();
    let tmp = temp_dir("newpass");
    let port = free_port();
    let config = tmp.path().join("config.toml");
    let write_config = |password: &str| {
        let text = format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[auth]\nmode = \"bypass\"\n\
             [redis]\nurl = \"{}\"\npassword = \"{password}\"\nreconnect_max_secs = 1\n\
             [acl]\ndefault = \"allow\"\n",
            redis.url()
        );
        std::fs::write(&config, text).expect("config written");
    };
    write_config("");
    let mut gateway = GatewayProcess::spawn(&config, &[]);
    gateway.wait_for_line("redis connected").await;
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    let mut c = Client::connect(addr).await;
    c.subscribed("chat-room").await;

    // Redis starts requiring a password: the links it already authorized
    // keep working, so the gateway stays ready until its link drops.
    redis_cli_at(redis.port, &["CONFIG", "SET", "requirepass", "fresh"]);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    // redis-cli with the new password.
    let authorized = |args: &[&str]| {
        let args = [&["-a", "fresh", "--no-auth-warning"], args].concat();
        redis_cli_at(redis.port, &args)
    };
    let killed = authorized(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed.trim(), "0", "the gateway's link was killed");
    gateway.wait_for_line("redis refused authentication").await;
    assert_eq!(http_get(addr, "/readyz").await.0, 503);

    // The operator adds the password to the config: a reload connects.
    write_config("fresh");
    gateway.wait_for_line("resubscribed").await;
    gateway.drain_log();
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    // The topic was subscribed again on the new link.
    assert_eq!(authorized(&["PUBLISH", "chat-room", "1"]), "1");
    assert_eq!(c.recv().await["snapshot"], 1);
}

#[tokio::test]
async fn with_a_write_delay_a_burst_waits_for_its_end_and_arrives_whole_and_in_order() {
    const DELAY_MS: u64 = 1000;
    let redis = RedisServer::start();
    let extra = format!("[server]\nwrite_delay_ms = {DELAY_MS}\n");
    let gateway = start_gateway(base_config(Some(&redis), &extra)).await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("chat-room").await;
    let mut conn = redis.connection().await;
    // `0` may wait for the delay after the subscribe reply's write; what
    // follows within the delay of its own write waits too.
    redis_publish(&mut conn, "chat-room", "0").await;
    assert_eq!(c.recv().await["snapshot"], 0);
    let first = std::time::Instant::now();
    for n in 1..=20 {
        redis_publish(&mut conn, "chat-room", &n.to_string()).await;
    }
    for n in 1..=20 {
        assert_eq!(c.recv().await["snapshot"], n);
    }
    // The write of `0` happened before it was read: half the delay is
    // a bound no scheduling delay can break.
    let waited = first.elapsed();
    assert!(waited.as_millis() >= u128::from(DELAY_MS / 2), "{waited:?}");
}
