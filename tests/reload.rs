//! Hot reload (README, Live reload): edits to the config file apply live,
//! over real WebSocket clients, without dropping a connection.

use topicgate_test_support as common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use tokio::sync::watch;
use topicgate::{ConfigWatcher as Watcher, Gateway, ReloadOutcome as Outcome, Reloader};

/// A gateway started from a config file that it watches.
struct Live {
    gateway: Gateway,
    path: PathBuf,
    outcomes: watch::Receiver<(u64, Outcome)>,
    _watcher: Watcher,
}

/// A memory-broker config allowing `topics`, with `extra` TOML.
fn memory_config(topics: &str, extra: &str) -> String {
    format!(
        "[broker]\nkind = \"memory\"\n[auth.jwt]\nsecret = \"{SECRET}\"\n{extra}\n\
         [acl]\ndefault = \"deny\"\n[[acl.rules]]\ntopics = [{topics}]\neffect = \"allow\"\n"
    )
}

impl Live {
    async fn start(dir: &Path, text: &str) -> Self {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        Self::start_at(path).await
    }

    async fn start_at(path: PathBuf) -> Self {
        let config = topicgate::load_config(&path, Some(Default::default())).unwrap();
        let gateway = start_gateway(config).await;
        let reloader = Reloader::new(
            path.clone(),
            Some(Default::default()),
            gateway.config_sender(),
            gateway.metrics(),
        );
        let outcomes = reloader.outcomes();
        let watcher = topicgate::watch_config(reloader).unwrap();
        Self {
            gateway,
            path,
            outcomes,
            _watcher: watcher,
        }
    }

    /// Waits for the next reload attempt and returns what it did.
    async fn next_outcome(&mut self) -> Outcome {
        tokio::time::timeout(EVENT_TIMEOUT, self.outcomes.changed())
            .await
            .expect("a reload in time")
            .unwrap();
        self.outcomes.borrow_and_update().1.clone()
    }

    async fn rewrite(&mut self, text: &str) -> Outcome {
        std::fs::write(&self.path, text).unwrap();
        self.next_outcome().await
    }

    async fn publish(&self, topic: &str, payload: &str) {
        let broker = self.gateway.publisher();
        broker
            .publish(topic, payload.to_string().into())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn tightened_acl_revokes_live_subscriptions_it_no_longer_allows() {
    let tmp = temp_dir("reload-acl");
    let dir = tmp.path();
    let mut live = Live::start(dir, &memory_config("\"chat-*\", \"test-*\"", "")).await;
    let mut c = Client::connect(live.gateway.addr).await;
    c.login("alice").await;
    c.subscribed("chat-a").await;
    c.subscribed("test-b").await;

    assert_eq!(
        live.rewrite(&memory_config("\"test-*\"", "")).await,
        Outcome::Applied
    );
    let revoked = c.recv().await;
    assert_eq!(revoked["action"], "unsubscribe");
    assert_eq!(revoked["message"], "context revoked");
    assert_eq!(revoked["context"], "chat-a");
    assert_eq!(revoked["error"], "forbidden");

    live.publish("chat-a", "\"revoked topic\"").await;
    live.publish("test-b", "\"kept topic\"").await;
    assert_eq!(
        unpositioned(c.recv().await),
        json!({"action":"message","topic":"test-b","snapshot":"kept topic"})
    );
    assert_eq!(c.subscribe("chat-a").await["error"], "forbidden");
    assert_eq!(live.gateway.topic_count(), 1);
}

#[tokio::test]
async fn rotated_secret_refuses_old_tokens_and_expires_the_sessions_it_verified() {
    let tmp = temp_dir("reload-secret");
    let dir = tmp.path();
    let mut live = Live::start(dir, &memory_config("\"test-*\"", "")).await;
    let mut before = Client::connect(live.gateway.addr).await;
    before.login("alice").await;
    before.subscribed("test-live").await;

    let rotated = memory_config("\"test-*\"", "").replace(SECRET, "rotated-secret");
    assert_eq!(live.rewrite(&rotated).await, Outcome::Applied);

    let mut after = Client::connect(live.gateway.addr).await;
    let reply = after.authorize(&token(json!({"sub": "bob"}))).await;
    assert_eq!(reply["error"], "invalid_token", "old secret refused");
    let key = jsonwebtoken::EncodingKey::from_secret(b"rotated-secret").unwrap();
    let fresh = jsonwebtoken::encode(
        &Default::default(),
        &json!({"sub": "bob", "exp": topicgate::unix_now() + 60}),
        &key,
    )
    .unwrap();
    assert_eq!(
        after.authorize(&fresh).await["message"],
        "session authenticated"
    );

    // The session the old secret verified must authorize again.
    assert_eq!(
        before.recv().await["detail"],
        "token key no longer configured"
    );
    assert_eq!(before.recv().await["message"], "session expired");
    assert_eq!(
        before.authorize(&fresh).await["message"],
        "session authenticated"
    );
    before.subscribed("test-live").await;
    live.publish("test-live", "1").await;
    assert_eq!(before.recv().await["snapshot"], 1);
}

#[tokio::test]
async fn redis_moved_by_config_keeps_deliveries_flowing() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let redis_config = |redis: &RedisServer| {
        format!(
            "[broker]\nkind = \"redis\"\n[redis]\nurl = \"{}\"\n[auth.jwt]\nsecret = \"{SECRET}\"\n\
             [acl]\ndefault = \"allow\"\n",
            redis.url()
        )
    };
    let tmp = temp_dir("reload-redis");
    let dir = tmp.path();
    let mut live = Live::start(dir, &redis_config(&old)).await;
    let mut c = Client::connect(live.gateway.addr).await;
    c.login("alice").await;
    c.subscribed("test-moving").await;

    assert_eq!(live.rewrite(&redis_config(&new)).await, Outcome::Applied);
    let mut new_conn = new.connection().await;
    eventually("the topic subscribed on the new redis", || {
        let mut conn = new_conn.clone();
        async move { numsub(&mut conn, "test-moving").await == 1 }
    })
    .await;
    let old_conn = old.connection().await;
    eventually("the old redis let go", || {
        let mut conn = old_conn.clone();
        async move { numsub(&mut conn, "test-moving").await == 0 }
    })
    .await;
    redis_publish(&mut new_conn, "test-moving", "\"from the new redis\"").await;
    assert_eq!(c.recv().await["snapshot"], "from the new redis");
    // The connection never dropped: the same session keeps working.
    c.subscribed("test-another").await;
}

#[tokio::test]
async fn invalid_file_is_rejected_whole_then_a_valid_one_applies() {
    let tmp = temp_dir("reload-invalid");
    let dir = tmp.path();
    let mut live = Live::start(dir, &memory_config("\"test-*\"", "")).await;
    let mut c = Client::connect(live.gateway.addr).await;
    c.login("alice").await;

    for broken in [
        "[server\nbind = ",                                            // TOML syntax
        &memory_config("\"test-*\"", "[limits]\nunknown_limit = 1\n"), // unknown key
        &memory_config("\"test-[\"", ""),                              // bad glob
        &memory_config("\"test-*\"", "").replace(SECRET, ""),          // missing secret
        &memory_config(
            "\"test-*\"",
            "[auth.jwt]\npublic_key_file = \"nope.pem\"\nalgorithms = [\"RS256\"]\n",
        )
        .replace(&format!("[auth.jwt]\nsecret = \"{SECRET}\"\n"), ""), // unreadable key
    ] {
        match live.rewrite(broken).await {
            // One log line: "invalid config FILE: key: why; key: why".
            Outcome::Rejected(reason) => assert!(
                reason.starts_with("invalid config ")
                    && !reason.contains('\n')
                    && !reason.contains(":;"),
                "{reason}"
            ),
            other => panic!("{broken:?} was not rejected: {other:?}"),
        }
        // The old config keeps serving.
        c.subscribed("test-still-allowed").await;
        c.unsubscribe("test-still-allowed").await;
    }
    let (_, metrics) = http_get(live.gateway.addr, "/metrics").await;
    assert!(
        metrics.contains("topicgate_config_reload_failures_total 5"),
        "{metrics}"
    );
    assert_eq!(
        live.rewrite(&memory_config("\"chat-*\"", "")).await,
        Outcome::Applied
    );
    c.subscribed("chat-now").await;
    assert_eq!(c.subscribe("test-then").await["error"], "forbidden");
}

#[tokio::test]
async fn editor_style_atomic_save_is_seen() {
    let tmp = temp_dir("reload-atomic");
    let dir = tmp.path();
    let mut live = Live::start(dir, &memory_config("\"test-*\"", "")).await;
    let temp = dir.join(".config.toml.swp");
    std::fs::write(&temp, memory_config("\"chat-*\"", "")).unwrap();
    std::fs::rename(&temp, &live.path).unwrap();
    assert_eq!(live.next_outcome().await, Outcome::Applied);
    // And again: the watch survived the rename.
    std::fs::write(&temp, memory_config("\"news-*\"", "")).unwrap();
    std::fs::rename(&temp, &live.path).unwrap();
    assert_eq!(live.next_outcome().await, Outcome::Applied);
    let mut c = Client::connect(live.gateway.addr).await;
    c.login("alice").await;
    c.subscribed("news-1").await;
}

#[tokio::test]
async fn kubernetes_style_symlink_swap_is_seen() {
    // The ConfigMap layout: config.toml -> ..data/config.toml, ..data -> ..v1
    let tmp = temp_dir("reload-symlink");
    let dir = tmp.path();
    let version = |name: &str, text: &str| {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("config.toml"), text).unwrap();
    };
    version("..v1", &memory_config("\"test-*\"", ""));
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).unwrap();
    let mut live = Live::start_at(dir.join("config.toml")).await;

    version("..v2", &memory_config("\"chat-*\"", ""));
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert_eq!(live.next_outcome().await, Outcome::Applied);
    let mut c = Client::connect(live.gateway.addr).await;
    c.login("alice").await;
    c.subscribed("chat-1").await;
}

#[tokio::test]
async fn fifty_rapid_writes_end_in_the_last_valid_config() {
    let tmp = temp_dir("reload-rapid");
    let dir = tmp.path();
    let live = Live::start(dir, &memory_config("\"test-*\"", "")).await;
    let mut config = live.gateway.config();
    for i in 1..=50 {
        let text = if i % 7 == 0 && i != 50 {
            "[limits\n".to_string()
        } else {
            memory_config(
                "\"test-*\"",
                &format!("[limits]\nmax_subscriptions = {i}\n"),
            )
        };
        std::fs::write(&live.path, text).unwrap();
    }
    tokio::time::timeout(
        EVENT_TIMEOUT,
        config.wait_for(|c| c.limits.max_subscriptions == 50),
    )
    .await
    .expect("the last write applies in time")
    .unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let tmp = temp_dir("reload-sighup");
    let dir = tmp.path();
    let port = free_port();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        memory_config(
            "\"test-*\"",
            &format!("[server]\nbind = \"127.0.0.1:{port}\"\n"),
        ),
    )
    .unwrap();
    let mut gateway = GatewayProcess::spawn(&path, &[]);
    gateway.wait_for_line("watching config for changes").await;
    gateway.signal("HUP");
    gateway.wait_for_line("config reloaded").await;
    let (_, metrics) = http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/metrics").await;
    assert!(
        metrics.contains("topicgate_config_reloads_total 1"),
        "{metrics}"
    );
}
