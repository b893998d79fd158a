//! Test configs and tokens, the gateway in process on port 0, and the
//! `topicgate` binary as a child process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use topicgate::{Config, Gateway, RawConfig};

use crate::{EVENT_TIMEOUT, RedisServer, fixtures_dir};

/// The HS256 secret of every test config.
pub const SECRET: &str = "test-secret";

/// A config from TOML, with the test secret unless the text sets auth.
pub fn config(toml_text: &str) -> Config {
    compile(RawConfig::from_toml(toml_text).expect("test config parses"))
}

pub(crate) fn compile(mut raw: RawConfig) -> Config {
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

/// Like [`base_config`], on the Redis at `url` (e.g. through a
/// [`TcpProxy`](crate::TcpProxy)).
pub fn redis_url_config(url: &str, extra: &str) -> Config {
    let mut raw = RawConfig::from_toml(extra).expect("test config parses");
    raw.broker.kind = "redis".into();
    raw.redis.url = url.to_string();
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

/// The `topicgate` binary Cargo built for this test run: Cargo gives its
/// path to the package's integration tests at run time as well as at
/// build time, so a library can read it too.
fn gateway_binary() -> PathBuf {
    std::env::var_os("CARGO_BIN_EXE_topicgate")
        .map(PathBuf::from)
        .expect("CARGO_BIN_EXE_topicgate is set: run the tests with `cargo test`")
}

/// The `topicgate` binary running as a child process, its log on a pipe.
pub struct GatewayProcess {
    pub child: tokio::process::Child,
    lines: Option<tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>>,
}

impl GatewayProcess {
    /// Runs `topicgate --config <config>` with `envs` and info logs.
    pub fn spawn(config: &Path, envs: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut command = tokio::process::Command::new(gateway_binary());
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
