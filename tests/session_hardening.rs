//! The session's hardening against the real binary (docs/RELIABILITY.md):
//! far-future token expiry, key rotation through the watched key file, a
//! switch from bypass to jwt, and a truncated config file that must not
//! replace the running one.

use topicgate_test_support as common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use serde_json::{Value, json};
use topicgate::unix_now;

const API_KEY: &str = "session-hardening-api-key";

/// `claims` signed with HS256 and `secret`.
fn signed(claims: Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
}

/// A memory-broker config on `port` allowing `chat-*`, publishing enabled;
/// `auth_jwt` is the body of `[auth.jwt]`.
fn config_text(port: u16, auth_jwt: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\n[broker]\nkind = \"memory\"\n\
         [api]\nkey = \"{API_KEY}\"\n[auth]\ntimeout_secs = 30\n[auth.jwt]\n{auth_jwt}\n\
         [acl]\ndefault = \"deny\"\n[[acl.rules]]\ntopics = [\"chat-*\"]\neffect = \"allow\"\n"
    )
}

async fn publish(addr: SocketAddr, topic: &str, data: &str) {
    let body = json!({"topic": topic, "data": data}).to_string();
    let (status, text) = post_publish(addr, Some(API_KEY), &body).await;
    assert!((200..300).contains(&status), "publish: {status} {text}");
}

async fn metric(addr: SocketAddr, name: &str) -> String {
    let (_, text) = http_get(addr, "/metrics").await;
    text.lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in {text}"))
        .to_string()
}

/// Starts the binary on `path` and waits until it listens.
async fn spawn(path: &Path, envs: &[(&str, &std::ffi::OsStr)]) -> GatewayProcess {
    let mut gateway = GatewayProcess::spawn(path, envs);
    gateway.wait_for_line("watching config for changes").await;
    gateway
}

#[tokio::test]
async fn a_token_expiring_centuries_away_authorizes_and_the_connection_keeps_working() {
    let tmp = temp_dir("far-exp");
    let port = free_port();
    let path = tmp.path().join("config.toml");
    let secret = "far-future-test-secret";
    std::fs::write(&path, config_text(port, &format!("secret = \"{secret}\""))).unwrap();
    let mut gateway = spawn(&path, &[]).await;
    gateway.drain_log();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut c = Client::connect(addr).await;
    for exp in [json!(u64::MAX), json!(i64::MAX), json!(1u64 << 63)] {
        let token = signed(json!({"sub": "alice", "exp": exp}), secret);
        assert_eq!(
            c.authorize(&token).await,
            json!({"action":"session","message":"session authenticated"}),
            "exp {exp}"
        );
    }
    c.subscribed("chat-far").await;
    publish(addr, "chat-far", "still here").await;
    assert_eq!(
        unpositioned(c.recv().await),
        json!({"action":"message","topic":"chat-far","snapshot":"still here"})
    );
    assert_eq!(
        metric(addr, "topicgate_connections").await,
        "topicgate_connections 1"
    );
    assert_eq!(
        metric(addr, "topicgate_sessions_authenticated").await,
        "topicgate_sessions_authenticated 1"
    );
    c.close().await;
    eventually("the connection gauge back at 0", || async {
        metric(addr, "topicgate_connections").await == "topicgate_connections 0"
    })
    .await;
}

#[tokio::test]
async fn an_atomically_replaced_secret_file_expires_sessions_of_the_old_key() {
    let tmp = temp_dir("key-rotation");
    let port = free_port();
    // The key lives in its own directory, as a mounted secret would.
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let secret_file = keys.join("jwt.secret");
    std::fs::write(&secret_file, "the-first-secret\n").unwrap();
    let path = tmp.path().join("config.toml");
    std::fs::write(
        &path,
        config_text(port, "secret_file = \"keys/jwt.secret\""),
    )
    .unwrap();
    let mut gateway = spawn(&path, &[]).await;
    gateway.drain_log();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut c = Client::connect(addr).await;
    let old = signed(
        json!({"sub": "alice", "exp": unix_now() + 3600}),
        "the-first-secret",
    );
    assert_eq!(c.authorize(&old).await["message"], "session authenticated");
    c.subscribed("chat-room").await;

    // An atomic save: a new file renamed over the old one.
    let staged = keys.join("jwt.secret.new");
    std::fs::write(&staged, "the-second-secret\n").unwrap();
    std::fs::rename(&staged, &secret_file).unwrap();

    assert_eq!(
        c.recv().await,
        json!({"action":"unsubscribe","message":"context revoked","context":"chat-room",
               "error":"forbidden","detail":"token key no longer configured"})
    );
    assert_eq!(
        c.recv().await,
        json!({"action":"session","message":"session expired","error":"token_expired"})
    );
    assert_eq!(c.authorize(&old).await["error"], "invalid_token");
    let new = signed(
        json!({"sub": "alice", "exp": unix_now() + 3600}),
        "the-second-secret",
    );
    assert_eq!(c.authorize(&new).await["message"], "session authenticated");
    c.subscribed("chat-room").await;
    publish(addr, "chat-room", "after rotation").await;
    assert_eq!(c.recv().await["snapshot"], "after rotation");
}

#[tokio::test]
async fn a_truncated_config_file_is_rejected_and_live_clients_keep_their_subscriptions() {
    let tmp = temp_dir("truncate");
    let port = free_port();
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, config_text(port, "")).unwrap();
    // The secret comes from the environment, as in production: an empty
    // file would otherwise compile to all defaults (every topic denied).
    let secret = "truncate-test-secret";
    let mut gateway = spawn(&path, &[("TOPICGATE__AUTH__JWT__SECRET", secret.as_ref())]).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut c = Client::connect(addr).await;
    let token = signed(json!({"sub": "alice", "exp": unix_now() + 3600}), secret);
    assert_eq!(
        c.authorize(&token).await["message"],
        "session authenticated"
    );
    c.subscribed("chat-room").await;

    std::fs::File::create(&path).unwrap();
    gateway.wait_for_line("config reload rejected").await;
    gateway.drain_log();
    assert_eq!(
        metric(addr, "topicgate_config_reload_failures_total").await,
        "topicgate_config_reload_failures_total 1"
    );
    publish(addr, "chat-room", "kept").await;
    assert_eq!(c.recv().await["snapshot"], "kept");
    c.subscribed("chat-other").await;
}

#[test]
fn an_empty_config_file_at_start_exits_2() {
    let tmp = temp_dir("empty-start");
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, "\n  \n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_topicgate"))
        .arg("--config")
        .arg(&path)
        .env("TOPICGATE__AUTH__JWT__SECRET", "s")
        .output()
        .expect("run topicgate");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is empty"), "{stderr}");
}

#[tokio::test]
async fn forty_binary_frames_at_a_burst_of_five_are_limit_exceeded_past_the_fifth() {
    use tokio_tungstenite::tungstenite::Message;
    let gateway = start_gateway(base_config(
        None,
        "[limits]\nrequests_per_sec = 1\nrequest_burst = 5\n",
    ))
    .await;
    let mut c = Client::connect(gateway.addr).await;
    for _ in 0..40 {
        c.send_message(Message::binary(vec![1u8, 2, 3])).await;
    }
    let mut limited = 0;
    for _ in 0..40 {
        let reply = c.recv().await;
        assert_eq!(reply["action"], "error", "{reply}");
        if reply["error"] == "limit_exceeded" {
            limited += 1;
        } else {
            assert_eq!(reply["error"], "bad_request", "{reply}");
        }
    }
    // Five tokens, and at most a few more earned while the frames arrive.
    assert!(limited >= 30, "{limited} of 40 limited");
}

#[tokio::test]
async fn a_64_kib_id_is_refused_without_being_echoed() {
    // Frames of up to 128 KiB, so that the id, not the frame, is too long.
    let gateway = start_gateway(base_config(None, "[limits]\nmax_message_bytes = 131072\n")).await;
    let mut c = Client::connect(gateway.addr).await;
    let id = "i".repeat(64 * 1024);
    let session = c.session.clone();
    c.send_json(&json!({"action":"subscribe","session":session,"context":"chat-a","id":id}))
        .await;
    let reply = c.recv().await;
    assert_eq!(
        reply,
        json!({"action":"error","message":"bad request","error":"bad_request",
               "detail":"id is longer than 128 bytes"})
    );
}

#[tokio::test]
async fn a_symlink_swap_of_the_mounted_secret_expires_sessions_of_the_old_key() {
    // A Kubernetes Secret volume: keys/jwt.secret -> ..data/jwt.secret,
    // ..data -> ..v1; an update swaps ..data.
    let tmp = temp_dir("key-symlink");
    let port = free_port();
    let keys = tmp.path().join("keys");
    let version = |name: &str, secret: &str| {
        std::fs::create_dir_all(keys.join(name)).unwrap();
        std::fs::write(keys.join(name).join("jwt.secret"), secret).unwrap();
    };
    version("..v1", "the-mounted-secret");
    std::os::unix::fs::symlink("..v1", keys.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/jwt.secret", keys.join("jwt.secret")).unwrap();
    let path = tmp.path().join("config.toml");
    std::fs::write(
        &path,
        config_text(port, "secret_file = \"keys/jwt.secret\""),
    )
    .unwrap();
    let mut gateway = spawn(&path, &[]).await;
    gateway.drain_log();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut c = Client::connect(addr).await;
    let old = signed(
        json!({"sub": "alice", "exp": unix_now() + 3600}),
        "the-mounted-secret",
    );
    assert_eq!(c.authorize(&old).await["message"], "session authenticated");
    c.subscribed("chat-room").await;

    version("..v2", "the-rotated-secret");
    std::os::unix::fs::symlink("..v2", keys.join("..data_tmp")).unwrap();
    std::fs::rename(keys.join("..data_tmp"), keys.join("..data")).unwrap();

    assert_eq!(c.recv().await["detail"], "token key no longer configured");
    assert_eq!(c.recv().await["message"], "session expired");
    let new = signed(
        json!({"sub": "alice", "exp": unix_now() + 3600}),
        "the-rotated-secret",
    );
    assert_eq!(c.authorize(&new).await["message"], "session authenticated");
}

#[tokio::test]
async fn a_reload_from_bypass_to_jwt_unauthenticates_every_session_without_a_verified_token() {
    let tmp = temp_dir("bypass-to-jwt");
    let port = free_port();
    let secret = "bypass-to-jwt-test-secret";
    let path = tmp.path().join("config.toml");
    let mode = |mode: &str| {
        config_text(port, &format!("secret = \"{secret}\"")).replace(
            "[auth]\ntimeout_secs = 30\n",
            &format!("[auth]\nmode = \"{mode}\"\ntimeout_secs = 1\n"),
        )
    };
    std::fs::write(&path, mode("bypass")).unwrap();
    let mut gateway = spawn(&path, &[]).await;
    gateway.drain_log();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Authorized with a string that is no token at all.
    let mut loose = Client::connect(addr).await;
    assert_eq!(
        loose.authorize("anything at all").await["message"],
        "session authenticated"
    );
    loose.subscribed("chat-loose").await;
    // Never authorized: bypass lets it subscribe anyway.
    let mut anonymous = Client::connect(addr).await;
    anonymous.subscribed("chat-anonymous").await;
    // A token that verifies under the jwt policy too.
    let mut verified = Client::connect(addr).await;
    let token = signed(json!({"sub": "carol", "exp": unix_now() + 3600}), secret);
    assert_eq!(
        verified.authorize(&token).await["message"],
        "session authenticated"
    );
    verified.subscribed("chat-verified").await;

    // An editor's atomic save switches the file to jwt.
    let staged = tmp.path().join("config.toml.new");
    std::fs::write(&staged, mode("jwt")).unwrap();
    std::fs::rename(&staged, &path).unwrap();

    let revoked = |topic: &str| {
        json!({"action":"unsubscribe","message":"context revoked","context":topic,
               "error":"forbidden","detail":"authorization required"})
    };
    assert_eq!(loose.recv().await, revoked("chat-loose"));
    assert_eq!(
        loose.recv().await,
        json!({"action":"session","message":"session expired","error":"token_expired"})
    );
    assert_eq!(anonymous.recv().await, revoked("chat-anonymous"));
    // Neither may subscribe again without a token, and both are closed
    // once `auth.timeout_secs` (1 s here) has passed.
    let refused = anonymous.request("subscribe", "chat-anonymous").await;
    assert_eq!(refused["error"], "unauthenticated");
    for client in [&mut loose, &mut anonymous] {
        let (frames, close) = client.recv_until_close().await;
        assert_eq!(
            frames,
            vec![json!({"action":"connect","message":"client disconnect","error":"auth_timeout"})]
        );
        assert_eq!(u16::from(close.expect("close frame").code), 1008);
    }
    // The verified session is untouched.
    publish(addr, "chat-verified", "kept").await;
    assert_eq!(verified.recv().await["snapshot"], "kept");
}
