//! Test harness: real `redis-server` processes on free ports, the gateway on
//! port 0, and a small WebSocket client that speaks the SPEC §1 protocol.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use topicgate::{Config, Gateway, RawConfig};

pub mod cluster;

/// How long any single expected event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The HS256 secret of every test config.
pub const SECRET: &str = "test-secret";

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A `redis-server` owned by the test, killed on drop.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts on a free port with extra arguments (e.g. `--requirepass x`).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .args(["--loglevel", "notice"])
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => panic!(
                "cannot start redis-server ({err}). The integration tests need \
                 `redis-server` on PATH: install it, e.g. `apt-get install redis-server`."
            ),
        };
        // Redis prints this line once it accepts connections: wait for the event.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut log = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let ready = line.contains("Ready to accept connections");
                    log.push(line);
                    if ready {
                        break;
                    }
                }
                _ => panic!(
                    "redis-server on port {} exited before it was ready:\n{}",
                    self.port,
                    log.join("\n")
                ),
            }
        }
        // Keep draining so redis never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        connect_redis(&self.url()).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn connect_redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis")
}

pub async fn redis_publish(
    conn: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    payload: &str,
) -> i64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(conn)
        .await
        .expect("PUBLISH")
}

/// `PUBSUB NUMSUB channel` -> number of subscriptions on that channel.
pub async fn numsub(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    reply.1
}

/// Waits until `check` holds. For state owned by another process (Redis's
/// subscription count), where no event reaches the test.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh directory under the system temp dir, named `topicgate-{what}-…`,
/// removed when the returned guard drops (pass or fail).
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("topicgate-{what}-"))
        .tempdir()
        .expect("temp dir")
}

/// A file holding `text` in a directory of its own, removed with the guard.
pub struct TempFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempFile {
    pub fn new(what: &str, name: &str, text: &str) -> Self {
        let dir = temp_dir(what);
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write temp file");
        Self { _dir: dir, path }
    }
}

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A config from TOML, with the test secret unless the text sets auth.
pub fn config(toml_text: &str) -> Config {
    compile(RawConfig::from_toml(toml_text).expect("test config parses"))
}

fn compile(mut raw: RawConfig) -> Config {
    if raw.auth.jwt.secret.is_empty() && raw.auth.jwt.public_key_file.is_empty() {
        raw.auth.jwt.secret = SECRET.into();
    }
    raw.compile(&fixtures_dir())
        .unwrap_or_else(|err| panic!("test config compiles: {err}"))
}

/// The usual test config: the Redis broker on `redis` (memory when `None`),
/// jwt mode, topics starting with `t` or `chat-` allowed unless `extra`
/// (TOML) sets its own rules.
pub fn base_config(redis: Option<&RedisServer>, extra: &str) -> Config {
    let mut raw = RawConfig::from_toml(extra).expect("test config parses");
    match redis {
        Some(redis) => {
            raw.broker.kind = "redis".into();
            raw.redis.url = redis.url();
        }
        None => raw.broker.kind = "memory".into(),
    }
    compile(with_test_acl(raw))
}

/// Topics starting with `t` or `chat-` allowed, unless `raw` has rules.
pub fn with_test_acl(mut raw: RawConfig) -> RawConfig {
    if raw.acl.rules.is_empty() {
        raw.acl = RawConfig::from_toml(
            "[[acl.rules]]\ntopics = [\"t*\", \"chat-*\"]\neffect = \"allow\"\n",
        )
        .expect("test acl parses")
        .acl;
    }
    raw
}

pub async fn start_gateway(config: Config) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let gateway = Gateway::start(listener, config).expect("gateway starts");
    // Redis-backed gateways report ready once the Pub/Sub link is up.
    let mut ready = gateway.broker_ready();
    tokio::time::timeout(EVENT_TIMEOUT, ready.wait_for(|r| *r))
        .await
        .expect("broker ready in time")
        .expect("broker alive");
    gateway
}

/// Signs an HS256 token with [`SECRET`], valid for an hour, with `claims`.
pub fn token(claims: Value) -> String {
    let mut claims = claims;
    let object = claims.as_object_mut().expect("claims object");
    let now = topicgate::unix_now();
    object.entry("exp").or_insert(json!(now + 3600));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
}

/// A WebSocket client speaking the gateway's protocol.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The session id from the greeting.
    pub session: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_path(addr, "/").await
    }

    /// Connects, reads the two greeting frames and keeps the session id.
    pub async fn connect_path(addr: SocketAddr, path: &str) -> Self {
        let mut ws = Self::raw(addr, path).await;
        let first = next_json(&mut ws).await;
        assert_eq!(
            first,
            json!({"action":"connect","message":"connection established"})
        );
        let second = next_json(&mut ws).await;
        assert_eq!(second["action"], "session");
        assert_eq!(second["message"], "waiting for create session");
        let session = second["session"].as_str().expect("session id").to_string();
        Self { ws, session }
    }

    /// The upgraded socket before any frame was read.
    pub async fn raw(addr: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let (ws, _response) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
            .await
            .expect("websocket handshake");
        ws
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends `{action, session, context}` with this connection's session.
    pub async fn request(&mut self, action: &str, context: &str) -> Value {
        let session = self.session.clone();
        self.send_json(&json!({"action": action, "session": session, "context": context}))
            .await;
        self.recv().await
    }

    pub async fn authorize(&mut self, token: &str) -> Value {
        self.request("authorization", token).await
    }

    pub async fn subscribe(&mut self, topic: &str) -> Value {
        self.request("subscribe", topic).await
    }

    pub async fn unsubscribe(&mut self, topic: &str) -> Value {
        self.request("unsubscribe", topic).await
    }

    /// Authorizes with a fresh token for `sub` and asserts success.
    pub async fn login(&mut self, sub: &str) {
        let reply = self.authorize(&token(json!({"sub": sub}))).await;
        assert_eq!(
            reply,
            json!({"action":"session","message":"session authenticated"})
        );
    }

    /// Subscribes and asserts the success reply.
    pub async fn subscribed(&mut self, topic: &str) {
        let reply = self.subscribe(topic).await;
        assert_eq!(
            reply,
            json!({"action":"subscribe","message":"context subscribed","context":topic}),
            "subscribe {topic}"
        );
    }

    /// The next text frame as JSON.
    pub async fn recv(&mut self) -> Value {
        next_json(&mut self.ws).await
    }

    /// Reads until the close frame: the text frames before it and its code.
    pub async fn recv_until_close(&mut self) -> (Vec<Value>, Option<CloseFrame>) {
        let mut frames = Vec::new();
        loop {
            let message = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .expect("close in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(&text).expect("server sends JSON"))
                }
                Some(Ok(Message::Close(frame))) => return (frames, frame),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (frames, None),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server's close arrives, so it has seen ours.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await {}
    }
}

async fn next_json(ws: &mut WebSocketStream<TcpStream>) -> Value {
    loop {
        let message = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("a frame in time")
            .expect("connection open")
            .expect("frame readable");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
            Message::Close(frame) => panic!("unexpected close: {frame:?}"),
            _ => continue,
        }
    }
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// `POST /publish` with `body` and, when given, the bearer `key`.
pub async fn post_publish(addr: SocketAddr, key: Option<&str>, body: &str) -> (u16, String) {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    http_request(
        addr,
        &format!(
            "POST /publish HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

pub async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, tcp.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends a WebSocket upgrade request by hand with `extra` header lines and
/// returns the status code with the still-open TCP stream. No WebSocket
/// library sits on top, so nothing answers the server's pings.
pub async fn raw_upgrade(addr: SocketAddr, extra: &str) -> (u16, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    // Read the response head byte by byte so no frame bytes are consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(EVENT_TIMEOUT, tcp.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read response");
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, tcp)
}

/// Reads and discards until the peer closes the TCP connection; returns
/// the number of bytes read.
pub async fn read_until_eof(tcp: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, tcp.read(&mut buf))
            .await
            .expect("connection closed in time")
        {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

/// Writes a test CA and a server certificate for `localhost`/127.0.0.1
/// into `dir` with openssl; returns (ca, cert, key) paths.
pub fn make_tls_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed for the TLS test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=topicgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

impl RedisServer {
    /// A Redis that speaks only TLS on its port, with the given certificate.
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            args: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-ca-cert-file".into(),
                ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            child: None,
        };
        server.spawn();
        server
    }
}

/// The `topicgate` binary running as a child process, its log on a pipe.
pub struct GatewayProcess {
    pub child: tokio::process::Child,
    lines: Option<tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>>,
}

impl GatewayProcess {
    /// Runs `topicgate --config <config>` with `envs` and info logs.
    pub fn spawn(config: &Path, envs: &[(&str, &std::ffi::OsStr)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_topicgate"));
        command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the topicgate binary");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: Some(tokio::io::BufReader::new(stdout).lines()),
        }
    }

    /// Waits for a log line containing `needle`: the process's own event.
    /// Returns that line.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        let lines = self.lines.as_mut().expect("log not yet handed off");
        loop {
            let line = tokio::time::timeout(EVENT_TIMEOUT, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} log line in time"))
                .expect("read the log")
                .unwrap_or_else(|| panic!("gateway exited before logging {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Keeps draining the log in the background, so the child never blocks on it.
    pub fn drain_log(&mut self) {
        if let Some(mut lines) = self.lines.take() {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        }
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, …) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("child running").to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} {pid}");
    }
}
