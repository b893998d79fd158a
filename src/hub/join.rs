//! Subscribing to a topic with a history (docs/PROTOCOL.md, "Positions and
//! recovery"): the client joins in a buffering state, the history is read,
//! and its reply, its replay and the live frames newer than the replay are
//! queued in that order before it receives live frames directly.

use tokio::time::Instant;

use super::topic::Completion;
use super::{ClientHandle, Entry, Hub, Outbound};
use crate::broker::{BrokerError, HistoryStatus, Position, Range};
use crate::protocol::{Id, Since, encode_delivery, subscribed};

/// What a subscribe asks of the hub besides the topic.
#[derive(Debug, Default, Clone, Copy)]
pub struct Join<'a> {
    /// Echoed in the reply.
    pub id: Option<&'a Id>,
    /// The last position the client saw: replay what came after it.
    pub since: Option<&'a Since>,
}

/// Takes a client out of a topic it did not finish joining, whatever
/// stopped it (a failed read, or its session going away mid-await).
struct Leave<'a> {
    hub: &'a Hub,
    topic: &'a str,
    id: u64,
    armed: bool,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.unsubscribe(self.topic, self.id);
        }
    }
}

impl Hub {
    /// Adds `client` to `topic` once the broker subscription is active and
    /// queues its subscribe reply before any delivery of the topic; with a
    /// history, the reply carries the position and `join.since`'s replay
    /// follows it. The caller must not already hold the topic.
    pub async fn subscribe(
        &self,
        topic: &str,
        client: &ClientHandle,
        join: Join<'_>,
    ) -> Result<(), BrokerError> {
        if self.broker.history_status() == HistoryStatus::Off {
            let recovered = join.since.map(|_| false);
            if recovered.is_some() {
                self.registry.metrics.recovery(false);
            }
            let detail = recovered.map(|_| "history is off on this gateway");
            let ack = subscribed(topic, join.id, None, recovered, detail);
            return self.enter(topic, client, Some(ack)).await;
        }
        let mut leave = Leave {
            hub: self,
            topic,
            id: client.id,
            armed: true,
        };
        self.enter(topic, client, None).await?;
        let since = join
            .since
            .map(|s| Position::new(s.offset, s.epoch.as_str()));
        let range = self.broker.history(topic, since.clone()).await?;
        let completion = self.completion(topic, join, since.as_ref(), range);
        let mut topics = self.registry.lock();
        if let Some(Entry::Active(entry)) = topics.get_mut(topic) {
            leave.armed = !entry.complete(client.id, completion);
        }
        drop(topics);
        if leave.armed {
            return Err(BrokerError::Stopped);
        }
        Ok(())
    }

    /// The reply to a subscribe that read `range`, and its replay.
    fn completion(
        &self,
        topic: &str,
        join: Join<'_>,
        since: Option<&Position>,
        range: Range,
    ) -> Completion {
        let mark = range.last.as_ref().map(|p| (p.offset, &*p.epoch));
        let Some(since) = since else {
            let reply = subscribed(topic, join.id, mark, None, None);
            return Completion {
                frames: vec![Outbound::reply(reply)],
                last: range.last,
            };
        };
        let metrics = &self.registry.metrics;
        if !range.recovers(since) {
            metrics.recovery(false);
            let detail = not_recovered(since, &range);
            let reply = subscribed(topic, join.id, mark, Some(false), Some(&detail));
            return Completion {
                frames: vec![Outbound::reply(reply)],
                last: range.last,
            };
        }
        metrics.recovery(true);
        metrics
            .recovered_messages
            .inc_by(range.messages.len() as u64);
        let mut frames = Vec::with_capacity(range.messages.len() + 1);
        frames.push(Outbound::reply(subscribed(
            topic,
            join.id,
            mark,
            Some(true),
            None,
        )));
        let now = Instant::now();
        let epoch = &since.epoch;
        for message in &range.messages {
            let frame = encode_delivery(topic, &message.payload, Some((message.offset, epoch)));
            frames.push(Outbound::delivery(frame, now));
        }
        Completion {
            frames,
            last: range.last,
        }
    }
}

/// Why a client cannot recover from `since` (the reply's `detail`).
fn not_recovered(since: &Position, range: &Range) -> String {
    match &range.last {
        None => "the topic has no history: reload your state".into(),
        Some(last) if last.epoch != since.epoch => format!(
            "epoch {} is not the topic's current epoch {}: its history was lost; reload your state",
            since.epoch, last.epoch
        ),
        Some(last) if since.offset > last.offset => format!(
            "offset {} is ahead of the topic's last offset {}: reload your state",
            since.offset, last.offset
        ),
        Some(_) => format!(
            "the messages after offset {} are no longer all in the history: reload your state",
            since.offset
        ),
    }
}
