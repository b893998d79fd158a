//! The single-Redis engine against a real `redis-server` started on a free
//! port: how its failures reach clients.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;
use crate::broker::{Broker, Delivery, Range};

/// A library with history off: these publishes are plain.
fn plain() -> Arc<Library> {
    let off = HistorySettings {
        size: 0,
        ..HistorySettings::default()
    };
    Arc::new(Library::new(off, false))
}

/// A `redis-server` child on a free port, killed on drop.
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the broker tests need redis-server on PATH");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Redis prints this once it accepts connections.
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to accept connections"));
        assert!(
            ready,
            "redis-server on port {port} exited before it was ready"
        );
        std::thread::spawn(move || lines.for_each(drop));
        Self { port, child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn settings(port: u16, password: Option<&str>) -> Redis {
    Redis {
        url: format!("redis://127.0.0.1:{port}/0"),
        password: password.map(str::to_string),
        pool_size: 2,
        channel_prefix: String::new(),
        reconnect_max: Duration::from_secs(1),
        health_check: Duration::from_secs(5),
        nodes: Vec::new(),
    }
}

/// Counts deliveries.
#[derive(Default)]
struct Count(std::sync::atomic::AtomicUsize);

impl Deliver for Count {
    fn deliver(&self, _delivery: Delivery<'_>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn publishing_to_a_closed_port_is_not_connected_with_its_address() {
    let port = free_port();
    let publisher = Arc::new(Publisher::new(&settings(port, Some("hunter2")), plain()));
    let err = publisher
        .publish("t".into(), Bytes::from_static(b"x"))
        .await
        .expect_err("nothing listens");
    assert_eq!(
        err,
        BrokerError::NotConnected {
            addr: format!("127.0.0.1:{port}"),
            cause: Some("connection refused".into()),
        }
    );
    let text = err.to_string();
    assert_eq!(
        text,
        format!("redis unavailable at 127.0.0.1:{port}: connection refused")
    );
    assert!(
        !text.contains("hunter2") && !text.contains("object"),
        "{text}"
    );
}

#[tokio::test]
async fn publishing_with_a_wrong_password_is_authentication_refused() {
    let server = Server::start(&["--requirepass", "right"]);
    let addr = format!("127.0.0.1:{}", server.port);
    let wrong = Arc::new(Publisher::new(
        &settings(server.port, Some("wrong")),
        plain(),
    ));
    let err = wrong
        .publish("t".into(), Bytes::from_static(b"x"))
        .await
        .expect_err("wrong password");
    assert_eq!(err, BrokerError::AuthRefused { addr: addr.clone() });
    assert_eq!(
        err.to_string(),
        format!("redis refused authentication at {addr}")
    );
    let none = Arc::new(Publisher::new(&settings(server.port, None), plain()));
    let err = none
        .publish("t".into(), Bytes::from_static(b"x"))
        .await
        .expect_err("no password");
    assert_eq!(err, BrokerError::AuthRefused { addr: addr.clone() });

    let right = Arc::new(Publisher::new(
        &settings(server.port, Some("right")),
        plain(),
    ));
    assert_eq!(
        right.publish("t".into(), Bytes::from_static(b"x")).await,
        Ok(None),
        "a plain PUBLISH has no position"
    );
}

#[tokio::test]
async fn a_subscribe_while_redis_is_away_names_the_address() {
    let port = free_port();
    let count = Arc::new(Count::default());
    let broker = start(
        settings(port, None),
        count,
        Arc::new(Metrics::new()),
        HistorySettings::default(),
    );
    let not_connected = Err(BrokerError::not_connected(format!("127.0.0.1:{port}")));
    assert_eq!(broker.subscribe("t").await, not_connected);
    assert_eq!(broker.live("t"), not_connected);
    assert!(!*broker.ready().borrow());
}

#[tokio::test]
async fn the_handle_subscribes_and_delivers_unrecorded_with_history_off() {
    let server = Server::start(&[]);
    let count = Arc::new(Count::default());
    let off = HistorySettings {
        size: 0,
        ..HistorySettings::default()
    };
    let broker = start(
        settings(server.port, None),
        count.clone(),
        Arc::new(Metrics::new()),
        off,
    );
    let mut ready = broker.ready();
    ready.wait_for(|ready| *ready).await.expect("actor runs");
    broker.subscribe("t").await.expect("subscribed");
    assert_eq!(broker.live("t"), Ok(()));
    assert_eq!(
        broker.publish("t", Bytes::from_static(b"x")).await,
        Ok(None)
    );
    assert_eq!(broker.history("t", None).await, Ok(Range::none()));
    assert_eq!(broker.kind(), "redis");
    assert_eq!(broker.history_status(), crate::broker::HistoryStatus::Off);
    drop(server);
    ready.wait_for(|ready| !*ready).await.expect("actor runs");
    assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_library_writes_the_keys_the_gateway_derives() {
    let server = Server::start(&[]);
    let library = Library::new(HistorySettings::default(), false);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", server.port)).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let addr = format!("127.0.0.1:{}", server.port);
    library.load(&mut conn, &addr).await.expect("loaded");
    let channels: [&[u8]; 6] = [b"chat", b"a{b}c", b"{x}", b"a}b", b"{}y", b"x{y"];
    for channel in channels {
        let channel = std::str::from_utf8(channel).expect("utf-8");
        let recorded = library.record(&mut conn, channel, b"p", &addr).await;
        assert!(matches!(recorded, Ok(Call::Done(Some(_)))), "{channel}");
        let (meta, stream) = crate::broker::history::keys::history_keys(channel.as_bytes());
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&meta)
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert_eq!(exists, 2, "{channel}");
    }
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 2 * channels.len());
}
