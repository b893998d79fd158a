//! Real `redis-server` processes on free ports, and the Redis commands the
//! tests check the bridge with.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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
        Self::spawned(free_port(), extra.iter().map(|s| s.to_string()).collect())
    }

    /// Starts on `port` with `args` after the common ones (a cluster node,
    /// a TLS-only server).
    pub(crate) fn spawned(port: u16, args: Vec<String>) -> Self {
        let mut server = Self {
            port,
            args,
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
            // A stopped server would ignore a later signal but this one;
            // resume it so that it also exits cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, …) with `kill`. `STOP` freezes
    /// the server without closing a socket: a dead peer, as a client sees it.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} {pid}");
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

/// `redis-cli -p port args…`: what it printed (errors included), trimmed.
pub fn redis_cli_at(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("the tests need redis-cli on PATH");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
