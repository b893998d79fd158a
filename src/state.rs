//! What one gateway's routes and connections share, and the count of open
//! connections with the slot each one holds.
//!
//! Below `http`, `console` and `session`, which take from it what they
//! need; `server` builds it. It imports nothing above itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use prometheus::IntGauge;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// State every route and connection of one gateway shares.
pub(crate) struct Shared {
    /// Topic table and broker: sessions subscribe through it, `/readyz`
    /// and `POST /publish` use its broker. One `Arc` rather than the
    /// hub's own two, so each session holds a single pointer to it.
    pub hub: Arc<Hub>,
    /// The live config: routes read it per request, sessions re-check
    /// their subscriptions when it changes.
    pub config: watch::Receiver<Arc<Config>>,
    /// Flips to `true` once: sessions close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// This gateway's Prometheus series.
    pub metrics: Arc<Metrics>,
    /// Open WebSocket connections, checked against `limits.max_connections`.
    pub connections: Arc<Connections>,
    /// Wakes every session when `config` or `shutdown` changes
    /// ([`notices`]).
    pub notices: Arc<Notify>,
}

/// A `Notify` woken (all waiters) each time `config` or `shutdown`
/// changes, and once when either sender is gone, from one task per
/// gateway. A session waits on it with one `OwnedNotified` and then reads
/// both channels, rather than holding a `changed()` future per channel:
/// those are 120 bytes each, on every connection.
pub(crate) fn notices(
    mut config: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let notices = notify.clone();
    tokio::spawn(async move {
        loop {
            let open = tokio::select! {
                changed = config.changed() => changed.is_ok(),
                changed = shutdown.changed() => changed.is_ok(),
            };
            notices.notify_waiters();
            if !open {
                break;
            }
        }
    });
    notify
}

/// The open connections of one gateway: WebSocket sessions, and the HTTP
/// connections not (yet) upgraded. Shared with every [`ConnectionSlot`]
/// and [`HttpSlot`] rather than reached through [`Shared`], so a
/// connection holds its count and nothing else of the gateway.
pub(crate) struct Connections {
    /// Slots currently held, the refused ones included until they drop.
    open: AtomicUsize,
    /// HTTP connections accepted and not upgraded: a budget of their own,
    /// so requests that never complete cannot take every descriptor.
    http: AtomicUsize,
    /// Source of client ids, unique per gateway.
    next_id: AtomicU64,
    /// Woken each time a slot is released, for the shutdown drain.
    released: Notify,
    /// `topicgate_connections`, kept equal to `open`.
    gauge: IntGauge,
}

impl Connections {
    /// No connection open; `gauge` follows the count.
    pub fn new(gauge: IntGauge) -> Self {
        Self {
            open: AtomicUsize::new(0),
            http: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            released: Notify::new(),
            gauge,
        }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once at most `n` connections are open.
    pub async fn at_most(&self, n: usize) {
        loop {
            // Registered before the check, so a release in between still wakes us.
            let released = self.released.notified();
            if self.count() <= n {
                return;
            }
            released.await;
        }
    }

    /// Reserves a slot with a fresh client id, or `None` at `limit`.
    pub fn open(self: &Arc<Self>, limit: usize) -> Option<ConnectionSlot> {
        let previous = self.open.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        let slot = ConnectionSlot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            connections: self.clone(),
        };
        (previous < limit).then_some(slot)
    }

    /// HTTP connections accepted and not upgraded.
    #[cfg(test)]
    pub fn http_count(&self) -> usize {
        self.http.load(Ordering::Acquire)
    }

    /// Reserves a slot for an accepted TCP connection, or `None` when
    /// `limit` HTTP connections are already held.
    pub fn accept(self: &Arc<Self>, limit: usize) -> Option<HttpSlot> {
        let previous = self.http.fetch_add(1, Ordering::AcqRel);
        let slot = HttpSlot {
            released: AtomicBool::new(false),
            connections: self.clone(),
        };
        (previous < limit).then_some(slot)
    }
}

/// An accepted TCP connection's place among the HTTP connections; released
/// when it upgrades to a WebSocket (which then holds a [`ConnectionSlot`])
/// or when it closes, whichever comes first.
pub(crate) struct HttpSlot {
    /// Set once the count was given back, so it is given back once.
    released: AtomicBool,
    /// The count this slot is part of.
    connections: Arc<Connections>,
}

impl HttpSlot {
    /// Gives the slot back; later calls and the drop do nothing.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.connections.http.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Holds one of `limits.max_connections`; released on drop.
pub(crate) struct ConnectionSlot {
    /// The connection's client id, unique per gateway: names it in the
    /// hub's topic lists.
    id: u64,
    /// The count this slot is part of.
    connections: Arc<Connections>,
}

impl ConnectionSlot {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let connections = &self.connections;
        connections.open.fetch_sub(1, Ordering::AcqRel);
        connections.gauge.dec();
        connections.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections() -> Arc<Connections> {
        Arc::new(Connections::new(
            IntGauge::new("open", "open").expect("gauge"),
        ))
    }

    #[test]
    fn a_slot_beyond_the_limit_is_refused_and_released() {
        let connections = connections();
        let first = connections.open(1).expect("room for one");
        assert!(connections.open(1).is_none());
        assert_eq!(connections.count(), 1);
        drop(first);
        assert_eq!(connections.count(), 0);
        assert_eq!(connections.gauge.get(), 0);
    }

    #[test]
    fn slots_carry_distinct_ids() {
        let connections = connections();
        let a = connections.open(2).expect("room");
        let b = connections.open(2).expect("room");
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn http_slots_have_their_own_budget_and_release_once() {
        let connections = connections();
        let _session = connections.open(1).expect("room for a session");
        let first = connections.accept(1).expect("room for an HTTP connection");
        assert!(connections.accept(1).is_none());
        assert_eq!(connections.http_count(), 1);
        first.release();
        first.release();
        assert_eq!(connections.http_count(), 0);
        drop(first);
        assert_eq!(connections.http_count(), 0);
        assert_eq!(connections.count(), 1);
    }

    #[tokio::test]
    async fn the_drain_resolves_when_the_last_slot_is_released() {
        let connections = connections();
        let slot = connections.open(1).expect("room");
        let drained = tokio::spawn({
            let connections = connections.clone();
            async move { connections.at_most(0).await }
        });
        tokio::task::yield_now().await;
        assert!(!drained.is_finished());
        drop(slot);
        drained.await.expect("drain task");
    }
}
