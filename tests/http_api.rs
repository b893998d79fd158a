//! The HTTP endpoints (README, HTTP) and `topicgate publish`.

use topicgate_test_support as common;

use common::*;
use serde_json::{Value, json};

const KEY: &str = "api-test-key";

async fn publish_endpoint_delivers(redis: Option<&RedisServer>) {
    let gateway = start_gateway(base_config(redis, &format!("[api]\nkey = \"{KEY}\"\n"))).await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-http").await;
    let cases = [
        (json!({"topic":"test-http","data":{"n":1}}), json!({"n":1})),
        (
            json!({"topic":"test-http","data":[1,"two"]}),
            json!([1, "two"]),
        ),
        // A JSON string is published as its raw text.
        (json!({"topic":"test-http","data":"hello"}), json!("hello")),
        (
            json!({"topic":"test-http","data":"{\"raw\":true}"}),
            json!({"raw":true}),
        ),
    ];
    for (body, snapshot) in cases {
        let (status, text) = post_publish(gateway.addr, Some(KEY), &body.to_string()).await;
        // Recorded (history is on by default): 200 with the position.
        assert_eq!(status, 200, "{body} -> {text}");
        assert!(text.contains(r#""offset":"#), "{text}");
        assert_eq!(
            unpositioned(c.recv().await),
            json!({"action":"message","topic":"test-http","snapshot":snapshot})
        );
    }
}

#[tokio::test]
async fn publish_endpoint_delivers_on_the_memory_broker() {
    publish_endpoint_delivers(None).await;
}

#[tokio::test]
async fn publish_endpoint_delivers_through_redis() {
    let redis = RedisServer::start();
    publish_endpoint_delivers(Some(&redis)).await;
}

#[tokio::test]
async fn publish_endpoint_refuses_bad_keys_and_bodies() {
    let gateway = start_gateway(base_config(None, &format!("[api]\nkey = \"{KEY}\"\n"))).await;
    let good = json!({"topic":"test-x","data":1}).to_string();
    assert_eq!(post_publish(gateway.addr, None, &good).await.0, 401);
    assert_eq!(
        post_publish(gateway.addr, Some("wrong"), &good).await.0,
        401
    );
    assert_eq!(
        post_publish(gateway.addr, Some(&KEY[..5]), &good).await.0,
        401
    );
    for body in [
        "not json".to_string(),
        json!({"data": 1}).to_string(),
        json!({"topic": "", "data": 1}).to_string(),
        json!({"topic": "a\nb", "data": 1}).to_string(),
        json!({"topic": 5, "data": 1}).to_string(),
    ] {
        let (status, text) = post_publish(gateway.addr, Some(KEY), &body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["error"],
            "bad_request"
        );
    }
}

#[tokio::test]
async fn publish_endpoint_is_404_without_a_key() {
    let gateway = start_gateway(base_config(None, "")).await;
    let body = json!({"topic":"test-x","data":1}).to_string();
    assert_eq!(post_publish(gateway.addr, Some(""), &body).await.0, 404);
}

#[tokio::test]
async fn publish_endpoint_is_503_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let gateway = start_gateway(base_config(
        Some(&redis),
        &format!("[api]\nkey = \"{KEY}\"\n"),
    ))
    .await;
    redis.kill();
    let body = json!({"topic":"test-x","data":1}).to_string();
    let (status, text) = post_publish(gateway.addr, Some(KEY), &body).await;
    assert_eq!(status, 503, "{text}");
    // The reason names the Redis by address, in the gateway's own words.
    let reply: Value = serde_json::from_str(&text).expect("a JSON reply");
    assert_eq!(reply["error"], "unavailable");
    let detail = reply["detail"].as_str().expect("a detail");
    assert!(
        detail.starts_with(&format!("redis unavailable at 127.0.0.1:{}", redis.port)),
        "{detail}"
    );
}

#[tokio::test]
async fn publish_503_names_the_redis_address_without_credentials() {
    let port = free_port();
    let config = config(&format!(
        "[redis]\nurl = \"redis://:pw-in-url@127.0.0.1:{port}/0\"\n[api]\nkey = \"{KEY}\"\n"
    ));
    // Nothing listens there: the gateway serves without waiting for Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = topicgate::Gateway::start(listener, config).unwrap();
    let body = json!({"topic":"test-x","data":1}).to_string();
    let (status, text) = post_publish(gateway.addr, Some(KEY), &body).await;
    assert_eq!(status, 503, "{text}");
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["error"], "unavailable");
    assert_eq!(
        reply["detail"],
        format!("redis unavailable at 127.0.0.1:{port}: connection refused")
    );
}

#[tokio::test]
async fn publish_command_posts_to_a_running_gateway() {
    let gateway = start_gateway(base_config(None, &format!("[api]\nkey = \"{KEY}\"\n"))).await;
    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-cli").await;
    let url = format!("http://{}", gateway.addr);
    let run = |payload: &'static str, key: &'static str| {
        let url = url.clone();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_topicgate"))
            .args(["publish", "test-cli", payload, "--url", &url, "--key", key])
            .output()
    };
    let out = run(r#"{"info":"Hello"}"#, KEY).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("published at offset 1 (epoch "),
        "{printed}"
    );
    assert_eq!(c.recv().await["snapshot"], json!({"info":"Hello"}));
    let out = run("plain words", KEY).await.unwrap();
    assert!(out.status.success());
    assert_eq!(c.recv().await["snapshot"], "plain words");
    let out = run("1", "wrong-key").await.unwrap();
    assert!(!out.status.success());
    // The server's reason is passed on, not only its status.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{url}/publish answered 401: unauthorized: send Authorization: Bearer <api.key>\n")
    );
}

#[tokio::test]
async fn publish_command_explains_a_gateway_without_a_key() {
    let gateway = start_gateway(base_config(None, "")).await;
    let url = format!("http://{}", gateway.addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_topicgate"))
        .args(["publish", "test-cli", "1", "--url", &url, "--key", "any"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{url}/publish answered 404: not found \
             (publishing is off: set api.key in the gateway's config)\n"
        )
    );
}

#[tokio::test]
async fn metrics_export_every_family_from_start_without_topic_labels() {
    let gateway = start_gateway(base_config(None, "")).await;
    let (status, text) = http_get(gateway.addr, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "topicgate_connections 0",
        "topicgate_sessions_authenticated 0",
        "topicgate_subscriptions 0",
        "topicgate_topics 0",
        "topicgate_broker_messages_total 0",
        "topicgate_frames_delivered_total 0",
        "topicgate_frames_dropped_total{reason=\"slow_consumer\"} 0",
        "topicgate_auth_failures_total{code=\"invalid_token\"} 0",
        "topicgate_config_reloads_total 0",
        "topicgate_config_reload_failures_total 0",
        "topicgate_redis_reconnects_total 0",
        "topicgate_delivery_latency_seconds_count 0",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }

    let mut c = Client::connect(gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-secret-topic-name").await;
    assert_eq!(c.authorize("bad").await["error"], "invalid_token");
    let broker = gateway.publisher();
    broker
        .publish("test-secret-topic-name", "1".into())
        .await
        .unwrap();
    c.recv().await;
    let (_, text) = http_get(gateway.addr, "/metrics").await;
    for family in [
        "topicgate_connections 1",
        "topicgate_sessions_authenticated 1",
        "topicgate_subscriptions 1",
        "topicgate_topics 1",
        "topicgate_broker_messages_total 1",
        "topicgate_frames_delivered_total 1",
        "topicgate_auth_failures_total{code=\"invalid_token\"} 1",
        "topicgate_delivery_latency_seconds_count 1",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert!(!text.contains("test-secret-topic-name"));
    assert!(!text.contains(&c.session));
}

#[tokio::test]
async fn readyz_reports_broker_and_bypass() {
    let redis = RedisServer::start();
    let gateway = start_gateway(base_config(Some(&redis), "[auth]\nmode = \"bypass\"\n")).await;
    let (status, body) = http_get(gateway.addr, "/readyz").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["redis"], "up");
    assert_eq!(body["broker"], "redis");
    assert_eq!(body["bypass"], true);
    let hash = body["config"]["hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 16);
    assert!(body["config"]["loaded_at"].as_u64().unwrap() > 1_700_000_000);
    // A new config shows a new hash.
    let changed = base_config(Some(&redis), "[auth]\nmode = \"jwt\"\n");
    gateway.replace_config(changed);
    let (_, body) = http_get(gateway.addr, "/readyz").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(body["config"]["hash"], hash.as_str());
    assert_eq!(body["bypass"], false);
    let (status, _) = http_get(gateway.addr, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = http_get(gateway.addr, "/nowhere").await;
    assert_eq!(status, 404);
}
