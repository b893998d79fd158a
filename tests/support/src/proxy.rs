//! A TCP proxy between the gateway and a `redis-server`, which can stop
//! forwarding without closing a socket ("black-hole"): what a dropped NAT
//! flow or a network partition looks like to both ends. It can also slow
//! the link down, as a Redis a few milliseconds away would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards every connection made to [`addr`](Self::addr) to `upstream`,
/// byte for byte, while forwarding is on. Stops on drop.
pub struct TcpProxy {
    pub addr: SocketAddr,
    /// `true` while bytes pass; every pump waits on it before each write.
    forwarding: Arc<watch::Sender<bool>>,
    /// How long each chunk waits before it is forwarded.
    delay: Arc<watch::Sender<Duration>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let forwarding = Arc::new(watch::Sender::new(true));
        let delay = Arc::new(watch::Sender::new(Duration::ZERO));
        let (on, slow) = (forwarding.clone(), delay.clone());
        let accept = tokio::spawn(async move {
            // Connections are accepted even while black-holed: the kernel
            // would complete the handshake anyway; nothing passes.
            while let Ok((client, _)) = listener.accept().await {
                let link = Link {
                    forwarding: on.subscribe(),
                    delay: slow.subscribe(),
                };
                tokio::spawn(bridge(client, upstream, link));
            }
        });
        Self {
            addr,
            forwarding,
            delay,
            accept,
        }
    }

    /// A `redis://` URL through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Stops forwarding in both directions on every connection, old and
    /// new; sockets stay open and bytes wait in the proxy.
    pub fn black_hole(&self) {
        self.forwarding.send_replace(false);
    }

    /// Forwards again, the held bytes first.
    pub fn resume(&self) {
        self.forwarding.send_replace(true);
    }

    /// Holds every chunk read from either side for `delay` before
    /// forwarding it, in order: a slow link to Redis.
    pub fn set_delay(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What every pump of one connection obeys.
#[derive(Clone)]
struct Link {
    forwarding: watch::Receiver<bool>,
    delay: watch::Receiver<Duration>,
}

/// Connects `client` to `upstream` and pumps both ways until either side
/// closes; a side closing closes the other.
async fn bridge(client: TcpStream, upstream: SocketAddr, link: Link) {
    // A connection opened while black-holed waits before it is forwarded.
    if !open(&link.forwarding).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, link.clone()) => {}
        () = pump(server_read, client_write, link) => {}
    }
}

/// Copies `from` to `to`, holding each chunk for the delay and while
/// forwarding is off.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: Link) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let delay = *link.delay.borrow();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !open(&link.forwarding).await || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Waits until forwarding is on; `false` when the proxy is gone.
async fn open(forwarding: &watch::Receiver<bool>) -> bool {
    let mut forwarding = forwarding.clone();
    forwarding.wait_for(|on| *on).await.is_ok()
}
