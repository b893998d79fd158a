//! Replica-side catch-up (docs/PROTOCOL.md, "Positions and recovery"):
//! when the broker's link comes back, or a live offset skips ahead, the
//! hub reads the missing range and delivers it, in order, before the live
//! messages held meanwhile. Where the range is gone, every local
//! subscriber gets a `gap` frame with the position delivery goes on from.
//!
//! A catch-up also checks that the history still holds the last message
//! this replica delivered: same offset, same payload. Where it does not,
//! the history lost its tail (a failover to a Redis replica that missed
//! the last writes), and the next records would reuse the lost offsets
//! under the same epoch; the hub asks the broker to start a new epoch
//! (`Broker::reset`) and the subscribers get a `gap` into it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::topic::{Admit, Held, Seen, digest};
use super::{Entry, Registry};
use crate::broker::{Broker, BrokerError, Position, Range, Recorded};
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
    pub(super) fn catch_up(&self, topic: String, since: Seen, id: u64) {
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
                if let (Some(last), None) = (&entry.last, entry.held()) {
                    let id = self.next_catch_up();
                    let seen = Seen {
                        position: last.clone(),
                        digest: entry.digest,
                    };
                    started.push((topic.clone(), seen, id));
                    entry.rare_mut().held = Some((id, Vec::new()));
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
        let held = match entry.rare.as_mut().and_then(|rare| rare.held.take()) {
            Some((held_id, held)) if held_id == id => held,
            other => {
                entry.rare_mut().held = other;
                entry.tidy();
                return;
            }
        };
        let now = Instant::now();
        let unverified = missing.is_err();
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
            if let Some(last) = &entry.last
                && last.epoch != position.epoch
            {
                let retired = last.epoch.clone();
                entry.rare_mut().retired = Some(retired);
            }
            entry.last = Some(position);
            entry.digest = None;
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
                entry.digest = Some(digest(&message.payload));
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
                position.as_ref().map(|_| digest(&payload)),
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
                Admit::Stale | Admit::Held => {}
                Admit::CatchUp(since, id) => again = Some((since, id)),
            }
            if let Some((since, id)) = again {
                if let Some((_, waiting)) = entry.rare.as_mut().and_then(|r| r.held.as_mut()) {
                    waiting.extend(held);
                }
                drop(topics);
                self.catch_up(topic.to_string(), since, id);
                self.count_dropped(dropped);
                return;
            }
        }
        // Only later messages may start another read: held ones go out now.
        if unverified || entry.rare.is_some() {
            entry.rare_mut().unverified = unverified;
        }
        entry.promote();
        entry.tidy();
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

/// The range after `seen`, retried a few times while Redis does not
/// answer. Where it is not whole, the gap and what the history still has;
/// where the history lost `seen` itself, a new epoch first.
async fn read_missing(
    broker: &dyn Broker,
    topic: &str,
    seen: &Seen,
) -> Result<Missing, BrokerError> {
    let since = &seen.position;
    // One message further back, to check what the history holds at `since`.
    let check = seen.digest.filter(|_| since.offset > 0);
    let from = match check {
        Some(_) => Position::new(since.offset - 1, since.epoch.clone()),
        None => since.clone(),
    };
    let mut range = read(broker, topic, &from).await?;
    if lost_tail(&range, since, check) {
        tracing::warn!(
            %topic,
            epoch = %since.epoch,
            offset = since.offset,
            "the history lost messages this replica delivered (a failover to a lagging Redis replica?): starting a new epoch"
        );
        match broker.reset(topic, since.epoch.clone()).await {
            Ok(()) => range = read(broker, topic, since).await?,
            Err(err) => {
                // The lost offsets may be reused; at least say so.
                tracing::warn!(%topic, error = %err, "cannot start a new epoch");
                return Ok(Missing {
                    gap: range.last,
                    messages: Vec::new(),
                    epoch: None,
                });
            }
        }
    }
    range
        .messages
        .retain(|message| message.offset > since.offset);
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
        let fresh = read(broker, topic, &Position::new(0, last.epoch.clone())).await?;
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

/// Whether `range` (read from before `since`) shows that its epoch lost the
/// message delivered at `since`: its last offset is below it, or the
/// message it holds there is another one (payload `digest` differs).
fn lost_tail(range: &Range, since: &Position, digest_at: Option<u64>) -> bool {
    let Some(last) = &range.last else {
        return false;
    };
    if last.epoch != since.epoch {
        return false;
    }
    if last.offset < since.offset {
        return true;
    }
    match (digest_at, range.messages.first()) {
        (Some(delivered), Some(held)) if held.offset == since.offset => {
            digest(&held.payload) != delivered
        }
        _ => false,
    }
}

/// `topic`'s range after `since`, retried a few times while Redis does not
/// answer.
async fn read(broker: &dyn Broker, topic: &str, since: &Position) -> Result<Range, BrokerError> {
    let mut wait = RETRY;
    let mut attempt = 1;
    loop {
        match broker.history(topic, Some(since.clone())).await {
            Ok(range) => return Ok(range),
            Err(err) if attempt >= ATTEMPTS => return Err(err),
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
        }
    }
}
