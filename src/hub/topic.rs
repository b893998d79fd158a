//! One live topic: its subscribers, the clients joining it, and the order
//! of its recorded messages (docs/PROTOCOL.md, "Positions and recovery").
//!
//! A client that subscribes while the topic has a history first *joins*:
//! live frames are copied into its own buffer while its history read runs;
//! then its reply, its replay and the buffered frames newer than the replay
//! are queued, in that order, and it becomes a plain subscriber. Only
//! joining clients cost per-client work on delivery.
//!
//! The topic remembers the last recorded position it delivered, and a
//! digest of that message's payload. A live message at or below it is late
//! (a replay already carried it); one that skips ahead, or comes in another
//! epoch, makes the topic *hold* newer messages while the missing range is
//! read (`catchup`). A message of the epoch a gap left behind is stale.

use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use tokio::time::Instant;

use super::{ClientHandle, Outbound};
use crate::broker::Position;
use crate::protocol::{Disconnect, Frame};

/// A live topic in the registry. One per topic with a local subscriber,
/// on the delivery path: what every topic needs is inline, what joins,
/// catch-ups and gaps need is boxed in [`Rare`] while they last (a map
/// bucket of this is paid per topic, used or not).
pub(super) struct Topic {
    /// Plain subscribers. Copy-on-write, so a delivery clones the `Arc`
    /// and fans out without holding the registry lock.
    pub subscribers: Arc<Vec<ClientHandle>>,
    /// The last recorded position delivered to `subscribers`.
    pub last: Option<Position>,
    /// The [`digest`] of the payload delivered at `last`; `None` when
    /// `last` came from a history read or a gap. A catch-up checks that the
    /// history still holds this message there.
    pub digest: Option<u64>,
    /// Joiners, a catch-up's held messages, a retired epoch; `None` while
    /// the topic has none of them, which is most of the time.
    pub rare: Option<Box<Rare>>,
}

/// A topic's state while clients join, a catch-up runs, or after a gap.
#[derive(Default)]
pub(super) struct Rare {
    /// Clients between joining and live delivery; empty on the hot path.
    pub joining: Vec<Joiner>,
    /// The epoch a gap moved delivery away from: its frames still in
    /// flight are stale, not a reason to catch up again.
    pub retired: Option<Arc<str>>,
    /// The last catch-up could not read the history, so whether it still
    /// holds `last` is unknown: a live message at or below `last` may then
    /// be a lost offset given out again, and starts a catch-up rather than
    /// being dropped as late.
    pub unverified: bool,
    /// While the range after `last` is read: the catch-up's id and the
    /// live messages waiting behind it, in arrival order.
    pub held: Option<(u64, Vec<Held>)>,
}

impl Rare {
    fn is_idle(&self) -> bool {
        self.joining.is_empty() && self.retired.is_none() && !self.unverified && self.held.is_none()
    }
}

/// A client whose history read is running, or done and waiting for live
/// delivery to reach the position it read.
pub(super) struct Joiner {
    pub client: ClientHandle,
    /// Live frames since it joined, with their positions.
    buffer: Vec<Buffered>,
    /// Its reply and replay, once its read is done.
    ready: Option<Completion>,
}

/// A frame seen by a joining client.
struct Buffered {
    outbound: Outbound,
    /// `None` for unrecorded messages and notices: always passed on.
    position: Option<Position>,
}

/// A joining client's reply and replay, and where its replay ends.
pub(super) struct Completion {
    pub frames: Vec<Outbound>,
    /// The topic's last position as the read saw it.
    pub last: Option<Position>,
}

/// A live message held while a missing range is read.
pub(super) struct Held {
    pub payload: bytes::Bytes,
    pub position: Option<Position>,
    pub arrived: Instant,
}

/// What to do with a recorded live message.
pub(super) enum Admit {
    /// Next in order: deliver it.
    Deliver,
    /// At or below what was delivered: only joiners may still need it.
    Late,
    /// Of a retired epoch: nobody needs it.
    Stale,
    /// A catch-up is running: it was held.
    Held,
    /// It skips ahead: held, and the range after this position must be read.
    CatchUp(Seen, u64),
}

/// The last recorded message a topic delivered, as a catch-up checks it
/// against the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    pub position: Position,
    /// See [`Topic::digest`].
    pub digest: Option<u64>,
}

/// A payload's fingerprint, to tell two messages recorded at one offset
/// apart. Not cryptographic: only this process compares them.
pub(super) fn digest(payload: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(payload);
    hasher.finish()
}

impl Topic {
    pub fn new(subscribers: Vec<ClientHandle>, joining: Vec<Joiner>) -> Self {
        let mut topic = Self {
            subscribers: Arc::new(subscribers),
            last: None,
            digest: None,
            rare: None,
        };
        if !joining.is_empty() {
            topic.rare_mut().joining = joining;
        }
        topic
    }

    /// The rare state, made when first needed.
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Frees the rare state once nothing is left in it: a topic keeps its
    /// entry as long as it has subscribers, and most topics see one join.
    pub fn tidy(&mut self) {
        if self.rare.as_ref().is_some_and(|rare| rare.is_idle()) {
            self.rare = None;
        }
    }

    pub fn joining(&self) -> &[Joiner] {
        self.rare.as_ref().map_or(&[], |rare| &rare.joining)
    }

    pub fn held(&self) -> Option<&(u64, Vec<Held>)> {
        self.rare.as_ref().and_then(|rare| rare.held.as_ref())
    }

    fn held_mut(&mut self) -> Option<&mut (u64, Vec<Held>)> {
        self.rare.as_mut().and_then(|rare| rare.held.as_mut())
    }

    fn retired(&self) -> Option<&Arc<str>> {
        self.rare.as_ref().and_then(|rare| rare.retired.as_ref())
    }

    fn unverified(&self) -> bool {
        self.rare.as_ref().is_some_and(|rare| rare.unverified)
    }

    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.joining().is_empty()
    }

    /// Removes client `id`, subscribed or joining.
    pub fn remove(&mut self, id: u64) {
        if self.subscribers.iter().any(|c| c.id == id) {
            Arc::make_mut(&mut self.subscribers).retain(|c| c.id != id);
        }
        if let Some(rare) = &mut self.rare {
            rare.joining.retain(|j| j.client.id != id);
        }
        self.tidy();
    }

    /// Orders a live message: recorded messages go out once each, in
    /// offset order. `fingerprint` is its payload's [`digest`] (computed by
    /// the caller, outside the registry lock); `hold` copies the message
    /// when it must wait; `next_id` names a new catch-up.
    pub fn admit(
        &mut self,
        position: Option<&Position>,
        fingerprint: Option<u64>,
        hold: impl FnOnce() -> Held,
        next_id: impl FnOnce() -> u64,
    ) -> Admit {
        if let Some((_, held)) = self.held_mut() {
            held.push(hold());
            return Admit::Held;
        }
        let Some(position) = position else {
            return Admit::Deliver;
        };
        let unverified = self.unverified();
        match &self.last {
            Some(last)
                if last.epoch == position.epoch
                    && position.offset <= last.offset
                    && !unverified =>
            {
                Admit::Late
            }
            Some(_) if self.retired() == Some(&position.epoch) => Admit::Stale,
            Some(last)
                if last.epoch != position.epoch
                    || position.offset > last.offset + 1
                    || (unverified && position.offset <= last.offset) =>
            {
                let seen = Seen {
                    position: last.clone(),
                    digest: self.digest,
                };
                let id = next_id();
                self.rare_mut().held = Some((id, vec![hold()]));
                Admit::CatchUp(seen, id)
            }
            _ => {
                self.last = Some(position.clone());
                self.digest = fingerprint;
                Admit::Deliver
            }
        }
    }

    /// Copies a frame to every joining client's buffer. A buffer as long
    /// as the client's send queue is a slow consumer, as a full queue is.
    pub fn buffer(&mut self, frame: &Frame, position: Option<&Position>, arrived: Instant) {
        let Some(rare) = &mut self.rare else { return };
        for joiner in &mut rare.joining {
            if joiner.buffer.len() >= joiner.client.queue().capacity() {
                joiner.client.close(Disconnect::SlowConsumer);
                continue;
            }
            joiner.buffer.push(Buffered {
                outbound: Outbound::delivery(frame.clone(), arrived),
                position: position.cloned(),
            });
        }
    }

    /// Delivers a frame under the registry lock: joiners' buffers, then
    /// subscribers. For the catch-up path; the hot path fans out unlocked.
    pub fn fan(&mut self, frame: &Frame, position: Option<&Position>, arrived: Instant) -> u64 {
        self.buffer(frame, position, arrived);
        let mut dropped = 0;
        let outbound = Outbound::delivery(frame.clone(), arrived);
        for client in self.subscribers.iter() {
            if !client.enqueue(outbound.clone()) {
                dropped += 1;
            }
        }
        dropped
    }

    /// Sends a notice (a `gap`) to every subscriber and joiner.
    pub fn notify(&mut self, frame: &Frame) {
        if let Some(rare) = &mut self.rare {
            for joiner in &mut rare.joining {
                joiner.buffer.push(Buffered {
                    outbound: Outbound::reply(frame.clone()),
                    position: None,
                });
            }
        }
        for client in self.subscribers.iter() {
            client.push(frame.clone());
        }
    }

    /// Adds a joining client.
    pub fn join(&mut self, client: ClientHandle) {
        self.rare_mut().joining.push(Joiner::new(client));
    }

    /// Client `id`'s read is done; it goes live once delivery has reached
    /// the position it read. Returns `false` when it is no longer joining.
    pub fn complete(&mut self, id: u64, completion: Completion) -> bool {
        let fresh = self.last.is_none() && self.held().is_none();
        let Some(rare) = &mut self.rare else {
            return false;
        };
        let Some(joiner) = rare.joining.iter_mut().find(|j| j.client.id == id) else {
            return false;
        };
        if fresh {
            // Nothing recorded has been delivered since the topic went live:
            // every message after this read arrives live from here on.
            self.last.clone_from(&completion.last);
        }
        joiner.ready = Some(completion);
        self.promote();
        true
    }

    /// Makes live every ready joiner whose replay end delivery has reached:
    /// its reply and replay, then its buffered frames newer than the replay.
    pub fn promote(&mut self) {
        let Some(rare) = self.rare.as_mut().filter(|rare| rare.held.is_none()) else {
            return;
        };
        let mut index = 0;
        while index < rare.joining.len() {
            let reached = rare.joining[index]
                .ready
                .as_ref()
                .is_some_and(|ready| reached(self.last.as_ref(), ready.last.as_ref()));
            if !reached {
                index += 1;
                continue;
            }
            let joiner = rare.joining.swap_remove(index);
            let Some(ready) = joiner.ready else { continue };
            let client = joiner.client;
            let mut open = true;
            for outbound in ready.frames {
                open &= client.enqueue(outbound);
            }
            for buffered in joiner.buffer {
                if newer(buffered.position.as_ref(), ready.last.as_ref()) {
                    open &= client.enqueue(buffered.outbound);
                }
            }
            if open {
                let subscribers = Arc::make_mut(&mut self.subscribers);
                // Room for exactly the first one (most topics have one
                // subscriber per replica); later ones grow as usual.
                if subscribers.capacity() == 0 {
                    subscribers.reserve_exact(1);
                }
                subscribers.push(client);
            }
        }
        if rare.joining.is_empty() {
            rare.joining = Vec::new();
        }
        self.tidy();
    }
}

impl Joiner {
    pub fn new(client: ClientHandle) -> Self {
        Self {
            client,
            buffer: Vec::new(),
            ready: None,
        }
    }
}

/// Whether live delivery at `delivered` has passed `read`: then every
/// frame after `read` reached the joiner's buffer. Another epoch counts as
/// passed: its frames are newer than the read or belong to a new life.
fn reached(delivered: Option<&Position>, read: Option<&Position>) -> bool {
    match (delivered, read) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(delivered), Some(read)) => {
            delivered.epoch != read.epoch || delivered.offset >= read.offset
        }
    }
}

/// Whether a buffered frame at `position` comes after a replay ending at
/// `last`.
fn newer(position: Option<&Position>, last: Option<&Position>) -> bool {
    match (position, last) {
        (Some(position), Some(last)) => {
            position.epoch != last.epoch || position.offset > last.offset
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests;
