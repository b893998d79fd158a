//! Topic -> local subscribers. Each message is encoded once and its bytes
//! shared by every subscriber's queue; a full queue loses that message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::frame;
use crate::pubsub::Command;

/// One connection's place on a topic.
struct Subscriber {
    /// The connection's id, to find its entry again.
    conn: u64,
    /// The connection's queue to its writer.
    queue: mpsc::Sender<Message>,
    /// Set with the subscribe reply: a subscriber gets no delivery before
    /// it (docs/PROTOCOL.md, "Requests"), but counts as one from the
    /// start, so that a topic is never unsubscribed at Redis while a
    /// subscribe waits for its confirmation.
    live: bool,
}

pub struct Hub {
    /// A std mutex: it is held only to edit the map or to sweep one
    /// message's `try_send`s, never across an await.
    topics: Mutex<HashMap<String, Vec<Subscriber>>>,
    /// The Redis actor; sent to under the lock (see [`Command`]).
    redis: mpsc::UnboundedSender<Command>,
    /// Deliveries lost to full queues, reported at exit.
    dropped: AtomicU64,
}

impl Hub {
    pub fn new(redis: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            topics: Mutex::default(),
            redis,
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds `conn` to `topic`, not yet live. The answer says whether the
    /// topic is held at Redis: then call [`activate`](Self::activate),
    /// else [`leave`](Self::leave).
    pub fn join(
        &self,
        topic: &str,
        conn: u64,
        queue: mpsc::Sender<Message>,
    ) -> oneshot::Receiver<bool> {
        let mut topics = self.lock();
        let subscribers = topics.entry(topic.to_owned()).or_default();
        let (done, confirmed) = oneshot::channel();
        let command = if subscribers.is_empty() {
            Command::Subscribe(topic.to_owned(), done)
        } else {
            Command::Confirm(topic.to_owned(), done)
        };
        subscribers.push(Subscriber {
            conn,
            queue,
            live: false,
        });
        // The actor outlives the hub's users; `done` dropped reads as "no".
        let _ = self.redis.send(command);
        confirmed
    }

    /// Queues `reply` and makes `conn` live on `topic` in one step, so the
    /// reply comes before the topic's first delivery.
    pub fn activate(&self, topic: &str, conn: u64, reply: Utf8Bytes) {
        let mut topics = self.lock();
        let Some(subscriber) = topics
            .get_mut(topic)
            .and_then(|subscribers| subscribers.iter_mut().find(|s| s.conn == conn))
        else {
            return;
        };
        subscriber.live = true;
        if let Err(TrySendError::Full(_)) = subscriber.queue.try_send(Message::Text(reply)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes `conn` from `topic`; the last one out unsubscribes Redis.
    pub fn leave(&self, topic: &str, conn: u64) {
        let mut topics = self.lock();
        let Some(subscribers) = topics.get_mut(topic) else {
            return;
        };
        subscribers.retain(|s| s.conn != conn);
        if subscribers.is_empty() {
            topics.remove(topic);
            let _ = self.redis.send(Command::Unsubscribe(topic.to_owned()));
        }
    }

    /// Encodes a message once and queues it to every live subscriber.
    pub fn deliver(&self, topic: &str, payload: &[u8]) {
        let text = frame::delivery(topic, payload);
        let topics = self.lock();
        let Some(subscribers) = topics.get(topic) else {
            return;
        };
        for subscriber in subscribers.iter().filter(|s| s.live) {
            // A closed queue is a connection on its way out; it leaves the
            // topic itself.
            if let Err(TrySendError::Full(_)) =
                subscriber.queue.try_send(Message::Text(text.clone()))
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Subscriber>>> {
        // Nothing panics while holding the lock; if something did, the map
        // is still whole, so go on with it.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
