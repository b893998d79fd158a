//! A TCP proxy between the gateway and a `redis-server`, which can stop
//! forwarding without closing a socket ("black-hole"): what a dropped NAT
//! flow or a network partition looks like to both ends.

use std::net::SocketAddr;
use std::sync::Arc;

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
        let on = forwarding.clone();
        let accept = tokio::spawn(async move {
            // Connections are accepted even while black-holed: the kernel
            // would complete the handshake anyway; nothing passes.
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(bridge(client, upstream, on.subscribe()));
            }
        });
        Self {
            addr,
            forwarding,
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
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Connects `client` to `upstream` and pumps both ways until either side
/// closes; a side closing closes the other.
async fn bridge(client: TcpStream, upstream: SocketAddr, forwarding: watch::Receiver<bool>) {
    // A connection opened while black-holed waits before it is forwarded.
    if !open(&forwarding).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, forwarding.clone()) => {}
        () = pump(server_read, client_write, forwarding) => {}
    }
}

/// Copies `from` to `to`, holding each chunk while forwarding is off.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, forwarding: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if !open(&forwarding).await || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Waits until forwarding is on; `false` when the proxy is gone.
async fn open(forwarding: &watch::Receiver<bool>) -> bool {
    let mut forwarding = forwarding.clone();
    forwarding.wait_for(|on| *on).await.is_ok()
}
