//! Topic -> local subscribers, and the fan-out of broker messages to them.
//!
//! The first local subscriber of a topic makes the hub subscribe at the
//! broker; later ones wait for that same confirmation; the last one to leave
//! unsubscribes. A broker message is encoded into its frame once
//! and the same bytes are pushed to every subscriber's bounded queue with
//! `try_send`: the hub never waits for a socket, and a full queue closes that
//! client as a slow consumer (`docs/PROTOCOL.md`) without delaying anyone else.
//!
//! Topics with a history add their order (`topic`): a subscriber joins
//! through a history read that closes the seam between replay and live
//! delivery (`join`), and a topic whose recorded offsets skip, or whose
//! broker link came back, reads the missing range first (`catchup`).

mod catchup;
mod join;
mod queue;
mod topic;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use join::Join;
pub use queue::{Next, PushError, SendQueue};

use crate::broker::{Broker, BrokerError, Deliver, Delivery};
use crate::metrics::Metrics;
use crate::protocol::{Disconnect, Frame, encode_delivery};
use topic::{Admit, Held, Topic};

/// One queued frame. Deliveries carry their broker arrival time, so the
/// writer can measure delivery latency when the frame reaches the socket.
#[derive(Clone)]
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

    /// When the broker handed the message over, in nanoseconds on
    /// [`clock_nanos`]'s clock (the writer's latency arithmetic stays in
    /// integers); `None` for replies.
    pub fn arrival(&self) -> Option<u64> {
        self.arrived.checked_sub(1)
    }
}

/// The instant delivery arrival times are counted from.
fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Now, in nanoseconds since the origin of [`Outbound::arrival`].
pub fn clock_nanos() -> u64 {
    let since = Instant::now().saturating_duration_since(clock_origin());
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
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
    /// The subscribe reply, queued at activation before any delivery;
    /// `None` for a client that joins through a history read.
    ack: Option<Frame>,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

enum Entry {
    /// The broker subscription is in flight.
    Pending(Vec<Waiter>),
    /// Confirmed; deliveries go to its clients.
    Active(Topic),
}

/// The topic table, shared by the hub (subscribe side) and the broker
/// (delivery side).
pub struct Registry {
    /// A std mutex: it is never held across an await, and every critical
    /// section is a map operation, a `Vec` edit, or (on the rare catch-up
    /// and join paths) queueing frames without waiting.
    topics: Mutex<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
    /// Itself and the broker it reads missing ranges from, set once a hub
    /// links them; weak, since the broker holds the registry.
    links: OnceLock<(Weak<Registry>, Weak<dyn Broker>)>,
    /// Names catch-ups, so a stale one cannot release a newer one's held
    /// messages.
    catch_ups: AtomicU64,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            topics: Mutex::default(),
            metrics,
            links: OnceLock::new(),
            catch_ups: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        crate::sync::lock(&self.topics)
    }

    fn next_catch_up(&self) -> u64 {
        self.catch_ups.fetch_add(1, Ordering::Relaxed)
    }

    /// Topics with at least one local subscriber or a pending subscribe.
    pub fn topic_count(&self) -> usize {
        self.lock().len()
    }
}

impl Deliver for Registry {
    /// Encodes once and queues the same bytes to every subscriber; a
    /// recorded message goes out in offset order (`topic`).
    fn deliver(&self, delivery: Delivery<'_>) {
        let Delivery {
            topic,
            payload,
            position,
        } = delivery;
        let arrived = Instant::now();
        let fingerprint = position.map(|_| topic::digest(payload));
        let encode = || encode_delivery(topic, payload, position.map(|p| (p.offset, &*p.epoch)));
        let (subscribers, frame) = {
            let mut topics = self.lock();
            let Some(Entry::Active(entry)) = topics.get_mut(topic) else {
                return;
            };
            self.metrics.broker_messages.inc();
            let hold = || Held {
                payload: Bytes::copy_from_slice(payload),
                position: position.cloned(),
                arrived,
            };
            match entry.admit(position, fingerprint, hold, || self.next_catch_up()) {
                Admit::Deliver => {}
                Admit::Stale => return,
                Admit::Late => {
                    if !entry.joining().is_empty() {
                        entry.buffer(&encode(), position, arrived);
                    }
                    return;
                }
                Admit::Held => return,
                Admit::CatchUp(since, id) => {
                    drop(topics);
                    self.catch_up(topic.to_string(), since, id);
                    return;
                }
            }
            let subscribers = entry.subscribers.clone();
            if entry.joining().is_empty() {
                (subscribers, None)
            } else {
                // Joiners see it in their buffers; those it brings up to
                // their replay's end go live after this frame's fan-out.
                let frame = encode();
                entry.buffer(&frame, position, arrived);
                entry.promote();
                (subscribers, Some(frame))
            }
        };
        // One arrival stamp for all: only the frame handle is cloned per
        // subscriber.
        let outbound = Outbound::delivery(frame.unwrap_or_else(encode), arrived);
        let mut dropped = 0;
        for client in subscribers.iter() {
            if !client.enqueue(outbound.clone()) {
                dropped += 1;
            }
        }
        self.count_dropped(dropped);
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
        let _ = registry
            .links
            .set((Arc::downgrade(&registry), Arc::downgrade(&broker)));
        Self { registry, broker }
    }

    /// Catches up every live topic each time the broker's link comes back.
    /// Needs a runtime; once per gateway.
    pub fn watch_link(&self) {
        catchup::watch_link(Arc::downgrade(&self.registry), &self.broker);
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Adds `client` to `topic` once the broker subscription is active:
    /// directly with `ack` queued first, or, for `ack` `None`, as a joining
    /// client (`join`). The caller must not already hold the topic.
    async fn enter(
        &self,
        topic: &str,
        client: &ClientHandle,
        ack: Option<Frame>,
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
                Some(Entry::Active(entry)) => {
                    self.broker.live(topic)?;
                    match waiter.ack {
                        Some(ack) => {
                            client.push(ack);
                            Arc::make_mut(&mut entry.subscribers).push(waiter.client);
                        }
                        None => entry.join(waiter.client),
                    }
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
                let mut entry = Topic::new(Vec::with_capacity(waiters.len()), Vec::new());
                for waiter in waiters {
                    // The ack is queued before the session learns of the
                    // success: once it knows, it answers later requests, and
                    // those replies must not overtake this one.
                    if waiter.done.is_closed() {
                        continue;
                    }
                    if let Some(ack) = &waiter.ack {
                        waiter.client.push(ack.clone());
                    }
                    if waiter.done.send(Ok(())).is_ok() {
                        match waiter.ack {
                            Some(_) => Arc::make_mut(&mut entry.subscribers).push(waiter.client),
                            None => entry.join(waiter.client),
                        }
                    }
                }
                if entry.is_empty() {
                    self.broker.unsubscribe(topic);
                } else {
                    topics.insert(topic.to_string(), Entry::Active(entry));
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
            Some(Entry::Active(entry)) => {
                entry.remove(id);
                entry.is_empty()
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
