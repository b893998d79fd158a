//! The gateway's log lines as an operator reads them in a file: the real
//! binary with its stdout piped (not a terminal), each line awaited as it
//! is written.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_topicgate");
/// Ends a hung run; no assertion depends on it.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway binary, killed on drop, with its log lines on a channel.
struct Gateway {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Gateway {
    fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["--config", &config.to_string_lossy()])
            .env_remove("TOPICGATE_CONFIG")
            .env("TOPICGATE__SERVER__BIND", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start topicgate");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the first line containing `what`.
    fn line(&mut self, what: &str) -> String {
        loop {
            match self.lines.recv_timeout(EVENT_TIMEOUT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {what:?}; got:\n{}", self.seen.join("\n")),
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn logs_have_no_colour_codes_and_name_the_peer_plainly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_file(
        &dir,
        "[auth]\nmode = \"bypass\"\n[broker]\nkind = \"memory\"\n",
    );
    let mut gateway = Gateway::start(&config);
    let listening = gateway.line("topicgate listening");
    let addr = listening
        .split("addr=")
        .nth(1)
        .expect("the address in the log line")
        .trim()
        .to_string();
    let mut socket = TcpStream::connect(&addr).expect("connect");
    socket
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .expect("send the upgrade");
    let opened = gateway.line("connection opened");
    let local = socket.local_addr().expect("local address");
    assert!(opened.contains(&format!("peer={local}")), "{opened}");
    assert!(!opened.contains("Some("), "{opened}");
    for line in &gateway.seen {
        assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
    }
}

#[test]
fn redis_unavailable_names_the_address_without_the_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = closed_port();
    let config = config_file(
        &dir,
        &format!(
            "[auth]\nmode = \"bypass\"\n[redis]\nurl = \"redis://:hunter2-password@127.0.0.1:{port}/0\"\n"
        ),
    );
    let mut gateway = Gateway::start(&config);
    let line = gateway.line("redis unavailable");
    assert!(line.contains(&format!("addr=127.0.0.1:{port}")), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}
