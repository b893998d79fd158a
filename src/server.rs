//! Wiring: broker + hub + HTTP routes on a bound listener, and the drain on
//! shutdown. Tests bind port 0 and drive a [`Gateway`] through its handle.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::broker;
use crate::config::Config;
use crate::hub::{Hub, Registry};
use crate::metrics::Metrics;

/// State every connection and route shares.
pub struct Shared {
    pub hub: Hub,
    /// The live config; sessions re-check their subscriptions on change.
    pub config: watch::Receiver<Arc<Config>>,
    /// Flips to `true` once: sessions close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// This gateway's Prometheus series.
    pub metrics: Arc<Metrics>,
    next_client: AtomicU64,
    /// Open WebSocket connections, checked against `limits.max_connections`.
    connections: AtomicUsize,
    /// Woken each time a connection ends, for the shutdown drain.
    connection_closed: Notify,
}

impl Shared {
    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Resolves once at most `n` connections are open.
    pub async fn connections_at_most(&self, n: usize) {
        loop {
            // Registered before the check, so a close in between still wakes us.
            let closed = self.connection_closed.notified();
            if self.connections() <= n {
                return;
            }
            closed.await;
        }
    }

    /// Reserves a connection slot, or `None` at `limit`.
    pub fn open_connection(self: &Arc<Self>, limit: usize) -> Option<ConnectionSlot> {
        let previous = self.connections.fetch_add(1, Ordering::AcqRel);
        self.metrics.connections.inc();
        let slot = ConnectionSlot(self.clone());
        (previous < limit).then_some(slot)
    }
}

/// Holds one of `limits.max_connections`; released on drop.
pub struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.connections.dec();
        self.0.connection_closed.notify_waiters();
    }
}

/// A running gateway.
pub struct Gateway {
    /// The address the listener is bound to (port 0 resolved).
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// Swap the whole config; sessions and routes see the new one.
    pub config: watch::Sender<Arc<Config>>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Gateway {
    /// Starts serving `listener` with `config`.
    pub fn start(listener: TcpListener, config: Config) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(metrics.clone()));
        let broker = broker::start(
            &config,
            registry.clone(),
            metrics.clone(),
            Default::default(),
        );
        let (config_tx, config_rx) = watch::channel(config);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            hub: Hub::new(registry, broker),
            config: config_rx,
            shutdown: shutdown_rx.clone(),
            metrics,
            next_client: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            connection_closed: Notify::new(),
        });
        // A new config may move the broker (e.g. another Redis).
        let mut changes = shared.config.clone();
        let hub = shared.hub.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let config = changes.borrow_and_update().clone();
                hub.broker().reconfigure(&config);
            }
        });
        let mut stop_accepting = shutdown_rx;
        let server = warp::serve(crate::http::routes(shared.clone()))
            .incoming(listener)
            .graceful(async move {
                let _ = stop_accepting.wait_for(|stop| *stop).await;
            })
            .run();
        Ok(Self {
            addr,
            shared,
            config: config_tx,
            shutdown: shutdown_tx,
            server: tokio::spawn(server),
        })
    }

    /// Stops accepting, closes every session with 1001 and waits for them
    /// to end, at most `server.shutdown_grace`. Returns the connections
    /// still open when the grace ran out.
    pub async fn shutdown(self) -> usize {
        let grace = self.shared.config.borrow().server.shutdown_grace;
        self.shutdown.send_replace(true);
        let _ = tokio::time::timeout(grace, self.shared.connections_at_most(0)).await;
        self.server.abort();
        self.shared.connections()
    }

    /// Runs until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> usize {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}
