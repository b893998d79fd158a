//! `rediss://` (SPEC §2): the gateway subscribes and publishes over TLS.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn rediss_url_subscribes_and_publishes_over_tls() {
    let dir = std::env::temp_dir().join(format!("topicgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = make_tls_certs(&dir);
    let redis = RedisServer::start_tls(&ca, &cert, &key);
    let port = free_port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\n[redis]\nurl = \"rediss://localhost:{}/0\"\n\
             [auth]\nmode = \"bypass\"\n[api]\nkey = \"k\"\n[acl]\ndefault = \"allow\"\n",
            redis.port
        ),
    )
    .unwrap();
    // The test CA is trusted the way operators add a private CA: the system
    // trust store, here pointed to by SSL_CERT_FILE.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_topicgate"))
        .arg("--config")
        .arg(&config)
        .env("SSL_CERT_FILE", &ca)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(EVENT_TIMEOUT, lines.next_line())
            .await
            .expect("redis connected over TLS in time")
            .unwrap()
            .expect("gateway running");
        if line.contains("redis connected") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, _) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200);
    let mut c = Client::connect(addr).await;
    c.subscribed("secure-room").await;
    let body = json!({"topic":"secure-room","data":{"over":"tls"}}).to_string();
    let (status, text) = http_request(
        addr,
        &format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer k\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(c.recv().await["snapshot"], json!({"over":"tls"}));
}
