//! Topic -> local subscribers, and the fan-out of broker messages to them.
//!
//! The first local subscriber of a topic makes the hub subscribe at the
//! broker; later ones wait for that same confirmation; the last one to leave
//! unsubscribes. A broker message is encoded into its frame once
//! and the same bytes are pushed to every subscriber's bounded queue with
//! `try_send`: the hub never waits for a socket, and a full queue closes that
//! client as a slow consumer (`docs/PROTOCOL.md`) without delaying anyone else.

mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::oneshot;
use tokio::time::Instant;

pub use queue::{PushError, SendQueue};

use crate::broker::{Broker, BrokerError, Deliver, Delivery};
use crate::metrics::Metrics;
use crate::protocol::{Disconnect, Frame, encode_delivery};

/// One queued frame. Deliveries carry their broker arrival time, so the
/// writer can measure delivery latency when the frame reaches the socket.
pub struct Outbound {
    pub frame: Frame,
    /// For deliveries, nanoseconds from [`clock_origin`] to the broker
    /// arrival, plus one; 0 for replies. Eight bytes rather than an
    /// `Option<Instant>`'s sixteen, for every frame waiting in a queue.
    arrived: u64,
}

impl Outbound {
    /// A reply: not counted as a delivery.
    pub fn reply(frame: Frame) -> Self {
        Self { frame, arrived: 0 }
    }

    /// A broker message's frame, which arrived from the broker at `arrived`.
    pub fn delivery(frame: Frame, arrived: Instant) -> Self {
        let since = arrived.saturating_duration_since(clock_origin());
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1);
        Self {
            frame,
            arrived: nanos + 1,
        }
    }

    /// When the broker handed the message over; `None` for replies.
    pub fn arrived(&self) -> Option<Instant> {
        let nanos = self.arrived.checked_sub(1)?;
        Some(clock_origin() + std::time::Duration::from_nanos(nanos))
    }
}

/// The instant delivery arrival times are counted from.
fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A connection as the hub sees it: where its frames go and how to close it.
#[derive(Clone)]
pub struct ClientHandle {
    /// Unique per process; identifies the client inside topic lists.
    pub id: u64,
    /// The connection's bounded send queue (`limits.send_queue`) and close
    /// signal; the session's writer drains it, its reader watches the close.
    queue: Arc<SendQueue>,
}

impl ClientHandle {
    /// A client with an empty queue of at most `capacity` frames.
    pub fn new(id: u64, capacity: usize) -> Self {
        Self {
            id,
            queue: Arc::new(SendQueue::new(capacity)),
        }
    }

    /// A client whose queue is also bounded to `max_bytes` bytes of frames.
    pub fn with_byte_limit(id: u64, capacity: usize, max_bytes: usize) -> Self {
        Self {
            id,
            queue: Arc::new(SendQueue::with_byte_limit(capacity, max_bytes)),
        }
    }

    pub fn queue(&self) -> &Arc<SendQueue> {
        &self.queue
    }

    /// Queues a reply without waiting; a full queue closes the client as a
    /// slow consumer. Returns whether the frame was queued.
    pub fn push(&self, frame: Frame) -> bool {
        self.enqueue(Outbound::reply(frame))
    }

    fn enqueue(&self, outbound: Outbound) -> bool {
        match self.queue.push(outbound) {
            Ok(()) => true,
            Err(PushError::Full) => {
                self.close(Disconnect::SlowConsumer);
                false
            }
            Err(PushError::Shut) => false,
        }
    }

    /// Asks the session to close for `reason`, unless it is already closing.
    pub fn close(&self, reason: Disconnect) {
        self.queue.close(reason);
    }
}

/// A session waiting for the broker to confirm a topic's subscription.
struct Waiter {
    client: ClientHandle,
    /// The subscribe reply, queued at activation before any delivery.
    ack: Frame,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

enum Entry {
    /// The broker subscription is in flight.
    Pending(Vec<Waiter>),
    /// Confirmed; deliveries go to these clients. Copy-on-write, so a
    /// delivery clones the `Arc` and fans out without holding the lock.
    Active(Arc<Vec<ClientHandle>>),
}

/// The topic table, shared by the hub (subscribe side) and the broker
/// (delivery side).
pub struct Registry {
    /// A std mutex: it is never held across an await, and every critical
    /// section is a map operation or a `Vec` edit.
    topics: Mutex<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            topics: Mutex::default(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        crate::sync::lock(&self.topics)
    }

    /// Topics with at least one local subscriber or a pending subscribe.
    pub fn topic_count(&self) -> usize {
        self.lock().len()
    }
}

impl Deliver for Registry {
    /// Sends the topic and snapshot; the delivery's position is not part
    /// of the frame.
    fn deliver(&self, delivery: Delivery<'_>) {
        let Delivery { topic, payload, .. } = delivery;
        let arrived = Instant::now();
        let subscribers = match self.lock().get(topic) {
            Some(Entry::Active(subscribers)) => subscribers.clone(),
            _ => return,
        };
        self.metrics.broker_messages.inc();
        let frame = encode_delivery(topic, payload);
        let mut dropped = 0;
        for client in subscribers.iter() {
            if !client.enqueue(Outbound::delivery(frame.clone(), arrived)) {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.metrics.dropped("slow_consumer", dropped);
        }
    }
}

/// Subscribe/unsubscribe for sessions, refcounted per topic at the broker.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
}

impl Hub {
    pub fn new(registry: Arc<Registry>, broker: Arc<dyn Broker>) -> Self {
        Self { registry, broker }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Adds `client` to `topic` once the broker subscription is active, and
    /// queues `ack` to it before any delivery of the topic. The caller must
    /// not already hold the topic.
    pub async fn subscribe(
        &self,
        topic: &str,
        client: &ClientHandle,
        ack: Frame,
    ) -> Result<(), BrokerError> {
        let (done, result) = oneshot::channel();
        {
            let mut topics = self.registry.lock();
            let waiter = Waiter {
                client: client.clone(),
                ack,
                done,
            };
            match topics.get_mut(topic) {
                // While the broker (or this topic's shard) is down the topic
                // is held but not live at Redis: confirming now would promise
                // deliveries that cannot arrive until the resubscription
                // (a subscribe is confirmed only once Redis holds the topic).
                Some(Entry::Active(subscribers)) => {
                    self.broker.live(topic)?;
                    client.push(waiter.ack);
                    Arc::make_mut(subscribers).push(waiter.client);
                    return Ok(());
                }
                Some(Entry::Pending(waiters)) => waiters.push(waiter),
                None => {
                    topics.insert(topic.to_string(), Entry::Pending(vec![waiter]));
                    self.registry.metrics.topics.set(topics.len() as i64);
                    // Spawned, so a session that goes away cannot strand the entry.
                    let confirm = self.broker.subscribe(topic);
                    let (hub, topic) = (self.clone(), topic.to_string());
                    tokio::spawn(async move {
                        let outcome = confirm.await;
                        hub.activate(&topic, outcome);
                    });
                }
            }
        }
        // The confirming task only goes away with the runtime.
        result.await.unwrap_or(Err(BrokerError::Stopped))
    }

    fn activate(&self, topic: &str, outcome: Result<(), BrokerError>) {
        let mut topics = self.registry.lock();
        let Some(Entry::Pending(waiters)) = topics.remove(topic) else {
            return;
        };
        match outcome {
            Ok(()) => {
                let mut subscribers = Vec::with_capacity(waiters.len());
                for waiter in waiters {
                    // The ack is queued before the session learns of the
                    // success: once it knows, it answers later requests, and
                    // those replies must not overtake this one.
                    if waiter.done.is_closed() {
                        continue;
                    }
                    waiter.client.push(waiter.ack);
                    if waiter.done.send(Ok(())).is_ok() {
                        subscribers.push(waiter.client);
                    }
                }
                if subscribers.is_empty() {
                    self.broker.unsubscribe(topic);
                } else {
                    topics.insert(topic.to_string(), Entry::Active(Arc::new(subscribers)));
                }
            }
            Err(err) => {
                for waiter in waiters {
                    let _ = waiter.done.send(Err(err.clone()));
                }
            }
        }
        self.registry.metrics.topics.set(topics.len() as i64);
    }

    /// Removes client `id` from `topic`; the last local subscriber leaving
    /// unsubscribes at the broker at once.
    pub fn unsubscribe(&self, topic: &str, id: u64) {
        let mut topics = self.registry.lock();
        let now_empty = match topics.get_mut(topic) {
            Some(Entry::Active(subscribers)) => {
                Arc::make_mut(subscribers).retain(|c| c.id != id);
                subscribers.is_empty()
            }
            Some(Entry::Pending(waiters)) => {
                waiters.retain(|w| w.client.id != id);
                false
            }
            None => false,
        };
        if now_empty {
            topics.remove(topic);
            self.registry.metrics.topics.set(topics.len() as i64);
            self.broker.unsubscribe(topic);
        }
    }
}
