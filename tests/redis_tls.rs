//! `rediss://` (docs/CONFIG.md `[redis]`): the gateway subscribes and publishes over TLS.

use topicgate_test_support as common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn rediss_url_subscribes_and_publishes_over_tls() {
    let tmp = temp_dir("tls");
    let dir = tmp.path();
    let (ca, cert, key) = make_tls_certs(dir);
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
    let mut gateway = GatewayProcess::spawn(&config, &[("SSL_CERT_FILE", ca.as_os_str())]);
    gateway.wait_for_line("redis connected").await;
    gateway.drain_log();

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
    assert_eq!(status, 200, "recorded: {text}");
    assert_eq!(c.recv().await["snapshot"], json!({"over":"tls"}));
}
