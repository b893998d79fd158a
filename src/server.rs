//! Wiring: broker + hub + HTTP routes on a bound listener, and the drain on
//! shutdown. Tests bind port 0 and drive a [`Gateway`] through its methods.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::{self, Broker, BrokerError};
use crate::config::Config;
use crate::hub::{Hub, Registry};
use crate::metrics::Metrics;
use crate::state::{Connections, Shared};

/// A running gateway.
pub struct Gateway {
    /// The address the listener is bound to (port 0 resolved).
    pub addr: SocketAddr,
    /// What routes and connections share; tests reach it only through
    /// the methods below.
    shared: Arc<Shared>,
    /// Swaps the whole config; sessions and routes see the new one.
    config: watch::Sender<Arc<Config>>,
    /// Flipped once by [`Gateway::shutdown`].
    shutdown: watch::Sender<bool>,
    /// The accept loop, aborted once the drain ends.
    server: JoinHandle<()>,
}

/// Publishes through a gateway's broker, as a backend would: through Redis
/// on the Redis brokers, so every replica's subscribers receive it.
#[derive(Clone)]
pub struct Publisher(Arc<dyn Broker>);

impl Publisher {
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        self.0.publish(topic, payload).await.map(drop)
    }
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
            (&config.history).into(),
        );
        let hub = Arc::new(Hub::new(registry, broker));
        hub.watch_link();
        let (config_tx, config_rx) = watch::channel(config);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            hub,
            notices: crate::state::notices(config_rx.clone(), shutdown_rx.clone()),
            config: config_rx,
            shutdown: shutdown_rx.clone(),
            connections: Arc::new(Connections::new(metrics.connections.clone())),
            metrics,
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
        let server = crate::http::serve(listener, shared.clone(), shutdown_rx);
        Ok(Self {
            addr,
            shared,
            config: config_tx,
            shutdown: shutdown_tx,
            server: tokio::spawn(server),
        })
    }

    /// The live config, which changes on every applied reload.
    pub fn config(&self) -> watch::Receiver<Arc<Config>> {
        self.shared.config.clone()
    }

    /// Where reloads go: every session and route sees what is sent here.
    pub fn config_sender(&self) -> watch::Sender<Arc<Config>> {
        self.config.clone()
    }

    /// Applies `config` as a reload would.
    pub fn replace_config(&self, config: Config) {
        self.config.send_replace(Arc::new(config));
    }

    /// This gateway's Prometheus series.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Topics with at least one local subscriber or a pending subscribe:
    /// the broker subscriptions this gateway holds or is taking.
    pub fn topic_count(&self) -> usize {
        self.shared.hub.registry().topic_count()
    }

    /// `true` while the broker can subscribe and publish, as `/readyz` says.
    pub fn broker_ready(&self) -> watch::Receiver<bool> {
        self.shared.hub.broker().ready()
    }

    /// Publishes through this gateway's broker.
    pub fn publisher(&self) -> Publisher {
        Publisher(self.shared.hub.broker().clone())
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.shared.connections.count()
    }

    /// Resolves once at most `n` connections are open.
    pub async fn connections_at_most(&self, n: usize) {
        self.shared.connections.at_most(n).await;
    }

    /// Stops accepting, closes every session with 1001 and waits for them
    /// to end, at most `server.shutdown_grace`. Returns the connections
    /// still open when the grace ran out.
    pub async fn shutdown(self) -> usize {
        let grace = self.shared.config.borrow().server.shutdown_grace;
        self.shutdown.send_replace(true);
        let _ = tokio::time::timeout(grace, self.connections_at_most(0)).await;
        self.server.abort();
        self.connections()
    }

    /// Runs until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> usize {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}
