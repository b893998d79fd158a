//! Positions in a topic's history and the recorded range a broker reads.
//!
//! A recorded message has an offset (1 for a topic's first, +1 for each
//! next) within an epoch, which names one life of the topic's history:
//! when that history is lost the epoch changes and offsets restart
//! (`docs/PROTOCOL.md`, history and recovery).
//!
//! The Redis engines record through the Redis Function library `topicgate`
//! (`topicgate.lua`, rendered and loaded by `library`); a recorded message
//! reaches subscribers framed with its position (`frame`).

mod frame;
#[cfg(test)]
pub(crate) mod keys;
mod library;
mod reply;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub(crate) use frame::decode;
pub(crate) use library::{Call, Library, LoadError};

/// `[history]`: what a broker records per topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    /// Messages kept per topic; 0 records nothing.
    pub size: usize,
    /// How long a topic's messages outlive its last recorded publish.
    pub ttl: Duration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            size: 100,
            ttl: Duration::from_secs(300),
        }
    }
}

impl From<&crate::config::History> for HistorySettings {
    fn from(history: &crate::config::History) -> Self {
        Self {
            size: history.size,
            ttl: history.ttl,
        }
    }
}

/// Whether a broker records publishes now, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryStatus {
    /// `history.size` is 0.
    Off,
    /// Publishes through the broker are recorded.
    Available,
    /// History is configured but cannot be kept (the Redis Function library
    /// could not be loaded): publishes go out unrecorded.
    Unavailable,
}

impl HistoryStatus {
    /// The word `/readyz` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Available => "available",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Where a recorded message sits in its topic's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub offset: u64,
    /// Shared: every delivery of one history life carries the same epoch.
    pub epoch: Arc<str>,
}

impl Position {
    pub fn new(offset: u64, epoch: impl Into<Arc<str>>) -> Self {
        Self {
            offset,
            epoch: epoch.into(),
        }
    }
}

/// One message as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub offset: u64,
    pub payload: Bytes,
}

/// What a broker read of a topic's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    /// The topic's last recorded position; `None` when it has no history.
    pub last: Option<Position>,
    /// The messages still recorded after the `since` asked for, in offset
    /// order; empty without `since` or when `since` is of another epoch.
    pub messages: Vec<Recorded>,
}

impl Range {
    /// A topic with no history (or a broker that keeps none).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `messages` are exactly every message recorded after `since`
    /// up to `last`: same epoch, nothing trimmed away, no hole, `since` not
    /// ahead of the history. Only then can a client recover from `since`.
    pub fn recovers(&self, since: &Position) -> bool {
        let Some(last) = &self.last else {
            return false;
        };
        if last.epoch != since.epoch || since.offset > last.offset {
            return false;
        }
        let missing = last.offset - since.offset;
        u64::try_from(self.messages.len()) == Ok(missing)
            && self
                .messages
                .iter()
                .zip(since.offset + 1..)
                .all(|(message, expected)| message.offset == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(epoch: &str, last: u64, offsets: &[u64]) -> Range {
        Range {
            last: Some(Position::new(last, epoch)),
            messages: offsets
                .iter()
                .map(|offset| Recorded {
                    offset: *offset,
                    payload: Bytes::from(offset.to_string()),
                })
                .collect(),
        }
    }

    #[test]
    fn a_whole_range_after_since_recovers() {
        assert!(range("e1", 5, &[3, 4, 5]).recovers(&Position::new(2, "e1")));
        assert!(range("e1", 5, &[]).recovers(&Position::new(5, "e1")));
        assert!(range("e1", 2, &[1, 2]).recovers(&Position::new(0, "e1")));
    }

    #[test]
    fn another_epoch_a_trimmed_start_or_a_hole_does_not_recover() {
        assert!(!range("e2", 5, &[3, 4, 5]).recovers(&Position::new(2, "e1")));
        assert!(!range("e1", 5, &[4, 5]).recovers(&Position::new(2, "e1")));
        assert!(!range("e1", 5, &[3, 5]).recovers(&Position::new(2, "e1")));
        assert!(!range("e1", 5, &[3, 3, 5]).recovers(&Position::new(2, "e1")));
    }

    #[test]
    fn a_since_ahead_of_the_history_or_no_history_does_not_recover() {
        assert!(!range("e1", 5, &[]).recovers(&Position::new(6, "e1")));
        assert!(!Range::none().recovers(&Position::new(0, "e1")));
    }
}
