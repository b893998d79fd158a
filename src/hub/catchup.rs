//! Replica-side catch-up (docs/PROTOCOL.md, "Positions and recovery"):
//! when the broker's link comes back, or a live offset skips ahead, the
//! hub reads the missing range and delivers it, in order, before the live
//! messages held meanwhile. Where the range is gone, every local
//! subscriber gets a `gap` frame with the position delivery goes on from.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::topic::{Admit, Held};
use super::{Entry, Registry};
use crate::broker::{Broker, BrokerError, Position, Recorded};
use crate::protocol::{encode_delivery, gap};

/// Reads of a missing range tried before giving up on it.
const ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled for each next one.
const RETRY: Duration = Duration::from_millis(100);

/// What a catch-up found after the position it read from.
struct Missing {
    /// Where delivery goes on from when the range was gone.
    gap: Option<Position>,
    /// The recorded messages to deliver, in offset order, and their epoch.
    messages: Vec<Recorded>,
    epoch: Option<Arc<str>>,
}

impl Registry {
    /// Starts reading `topic`'s range after `since` for catch-up `id`.
    pub(super) fn catch_up(&self, topic: String, since: Position, id: u64) {
        let Some((registry, broker)) = self.links() else {
            // No broker to read from: release what was held, after a gap.
            self.caught_up(&topic, id, Err(BrokerError::Stopped));
            return;
        };
        tokio::spawn(async move {
            let missing = read_missing(broker.as_ref(), &topic, &since).await;
            registry.caught_up(&topic, id, missing);
        });
    }

    /// Catches up every live topic that has delivered a recorded message:
    /// what was published while the link was down never arrived live.
    pub(super) fn catch_up_all(&self) {
        let mut started = Vec::new();
        {
            let mut topics = self.lock();
            for (topic, entry) in topics.iter_mut() {
                let Entry::Active(entry) = entry else {
                    continue;
                };
                if let (Some(last), None) = (&entry.last, &entry.held) {
                    let id = self.next_catch_up();
                    started.push((topic.clone(), last.clone(), id));
                    entry.held = Some((id, Vec::new()));
                }
            }
        }
        for (topic, since, id) in started {
            self.catch_up(topic, since, id);
        }
    }

    /// Delivers what catch-up `id` found, then the messages held meanwhile
    /// (which may start another catch-up), all under the lock so nothing
    /// live overtakes them.
    fn caught_up(&self, topic: &str, id: u64, missing: Result<Missing, BrokerError>) {
        let mut topics = self.lock();
        let Some(Entry::Active(entry)) = topics.get_mut(topic) else {
            return;
        };
        let held = match entry.held.take() {
            Some((held_id, held)) if held_id == id => held,
            other => {
                entry.held = other;
                return;
            }
        };
        let now = Instant::now();
        let missing = missing.unwrap_or_else(|err| {
            tracing::warn!(%topic, error = %err, "cannot read the missing range");
            // Delivery goes on from the first held message, after a gap.
            let first = held.iter().find_map(|h| h.position.clone());
            Missing {
                gap: first.map(|p| Position::new(p.offset.saturating_sub(1), p.epoch)),
                messages: Vec::new(),
                epoch: None,
            }
        });
        let mut dropped = 0;
        if let Some(position) = missing.gap {
            self.metrics.history_gaps.inc();
            entry.notify(&gap(topic, (position.offset, &position.epoch)));
            entry.last = Some(position);
        }
        if let Some(epoch) = missing.epoch {
            for message in missing.messages {
                let position = Position::new(message.offset, epoch.clone());
                if let Some(last) = &entry.last
                    && last.epoch == position.epoch
                    && position.offset <= last.offset
                {
                    continue;
                }
                let frame =
                    encode_delivery(topic, &message.payload, Some((message.offset, &epoch)));
                dropped += entry.fan(&frame, Some(&position), now);
                entry.last = Some(position);
            }
        }
        let mut held = held.into_iter();
        while let Some(message) = held.next() {
            let mut again = None;
            let Held {
                payload,
                position,
                arrived,
            } = message;
            let admit = entry.admit(
                position.as_ref(),
                || Held {
                    payload: payload.clone(),
                    position: position.clone(),
                    arrived,
                },
                || self.next_catch_up(),
            );
            let mark = position.as_ref().map(|p| (p.offset, &*p.epoch));
            match admit {
                Admit::Deliver => {
                    let frame = encode_delivery(topic, &payload, mark);
                    dropped += entry.fan(&frame, position.as_ref(), arrived);
                }
                Admit::Late => {
                    let frame = encode_delivery(topic, &payload, mark);
                    entry.buffer(&frame, position.as_ref(), arrived);
                }
                Admit::Held => {}
                Admit::CatchUp(since, id) => again = Some((since, id)),
            }
            if let Some((since, id)) = again {
                if let Some((_, waiting)) = &mut entry.held {
                    waiting.extend(held);
                }
                drop(topics);
                self.catch_up(topic.to_string(), since, id);
                self.count_dropped(dropped);
                return;
            }
        }
        entry.promote();
        drop(topics);
        self.count_dropped(dropped);
    }

    pub(super) fn count_dropped(&self, dropped: u64) {
        if dropped > 0 {
            self.metrics.dropped("slow_consumer", dropped);
        }
    }

    /// The registry itself and the broker, once a hub links them.
    fn links(&self) -> Option<(Arc<Registry>, Arc<dyn Broker>)> {
        let (registry, broker) = self.links.get()?;
        Some((registry.upgrade()?, broker.upgrade()?))
    }
}

/// Watches the broker's readiness: each time its link comes back, every
/// live topic catches up.
pub(super) fn watch_link(registry: Weak<Registry>, broker: &Arc<dyn Broker>) {
    let mut ready = broker.ready();
    tokio::spawn(async move {
        let mut was = *ready.borrow_and_update();
        while ready.changed().await.is_ok() {
            let now = *ready.borrow_and_update();
            if now && !was {
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                registry.catch_up_all();
            }
            was = now;
        }
    });
}

/// The range after `since`, retried a few times while Redis does not
/// answer. Where it is not whole, the gap and what the history still has.
async fn read_missing(
    broker: &dyn Broker,
    topic: &str,
    since: &Position,
) -> Result<Missing, BrokerError> {
    let mut wait = RETRY;
    let mut attempt = 1;
    let range = loop {
        match broker.history(topic, Some(since.clone())).await {
            Ok(range) => break range,
            Err(err) if attempt >= ATTEMPTS => return Err(err),
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
        }
    };
    let Some(last) = range.last.clone() else {
        // No history at all: nothing recorded to deliver, no new position.
        return Ok(Missing {
            gap: None,
            messages: Vec::new(),
            epoch: None,
        });
    };
    if range.recovers(since) {
        return Ok(Missing {
            gap: None,
            messages: range.messages,
            epoch: Some(last.epoch),
        });
    }
    // The range is gone; deliver what the history still has after the loss.
    let (messages, epoch) = if last.epoch == since.epoch {
        (range.messages, last.epoch)
    } else {
        let fresh = broker
            .history(topic, Some(Position::new(0, last.epoch.clone())))
            .await?;
        let epoch = fresh.last.map_or(last.epoch, |p| p.epoch);
        (fresh.messages, epoch)
    };
    let from = messages
        .first()
        .map_or(last.offset, |m| m.offset.saturating_sub(1));
    Ok(Missing {
        gap: Some(Position::new(from, epoch.clone())),
        messages,
        epoch: Some(epoch),
    })
}
