//! Per-client accounting for the history scenarios (`drop`,
//! `recovery-storm`): which messages a client got, how often, in what
//! order, and the position (epoch, offset) it would recover from. Pure
//! logic, no I/O, so the rules are unit-tested below.

/// A position in one topic's history, as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// How one delivery counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First time this client got this message, in offset order.
    New,
    /// First time, but its offset is below one already received.
    OutOfOrder,
    /// The client had this message already.
    Duplicate,
    /// Not one of this run's sequence numbers.
    Foreign,
}

/// What one client received.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// Bit per sequence number: received at least once.
    seen: Vec<u64>,
    /// Sequence numbers `0..len` are this run's.
    len: u64,
    /// Highest offset received, to tell order.
    last_offset: Option<u64>,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Tracker {
    pub fn new(len: u64) -> Self {
        Self {
            seen: vec![0; len.div_ceil(64) as usize],
            len,
            last_offset: None,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }

    /// Records message `seq`, delivered with `offset` (unpositioned
    /// deliveries take no part in the order check).
    pub fn record(&mut self, seq: u64, offset: Option<u64>) -> Outcome {
        if seq >= self.len {
            return Outcome::Foreign;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Outcome::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match (offset, self.last_offset) {
            (Some(offset), Some(last)) if offset < last => {
                self.out_of_order += 1;
                Outcome::OutOfOrder
            }
            (Some(offset), _) => {
                self.last_offset = Some(offset);
                Outcome::New
            }
            (None, _) => Outcome::New,
        }
    }

    /// Forgets the order baseline: a new epoch restarts offsets.
    pub fn restart_offsets(&mut self) {
        self.last_offset = None;
    }

    /// Whether `seq` was received.
    pub fn has(&self, seq: u64) -> bool {
        seq < self.len && self.seen[(seq / 64) as usize] & (1u64 << (seq % 64)) != 0
    }
}

/// The `(epoch, offset)` a frame carries (a delivery, a subscribe reply
/// or a `gap` frame); `None` when it carries no position.
pub fn scan_position(frame: &str) -> Option<Position> {
    Some(Position {
        epoch: scan_last_string(frame, "epoch")?.to_string(),
        offset: scan_last_number(frame, "offset")?,
    })
}

/// `Some(true)` / `Some(false)` for a subscribe reply with `recovered`.
pub fn scan_recovered(frame: &str) -> Option<bool> {
    if frame.contains(r#""recovered":true"#) {
        Some(true)
    } else if frame.contains(r#""recovered":false"#) {
        Some(false)
    } else {
        None
    }
}

/// The last `"key":<integer>` in a frame: the gateway writes its own
/// fields after the payload, so the last match is never inside it.
fn scan_last_number(frame: &str, key: &str) -> Option<u64> {
    let pattern = format!(r#""{key}":"#);
    let rest = &frame[frame.rfind(&pattern)? + pattern.len()..];
    let end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn scan_last_string<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!(r#""{key}":""#);
    let start = frame.rfind(&pattern)? + pattern.len();
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

/// A small deterministic generator (xorshift64*) for drop jitter, seeded
/// per client so runs are repeatable without a dependency.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        // Any non-zero state works; mix the seed so neighbours differ.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in `min..=max` (`min` when `max <= min`).
    pub fn between(&mut self, min: u64, max: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if max <= min {
            return min;
        }
        min + x % (max - min + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_messages_count_once_each() {
        let mut t = Tracker::new(10);
        for seq in 0..10 {
            assert_eq!(t.record(seq, Some(seq + 1)), Outcome::New);
        }
        assert_eq!((t.unique, t.duplicates, t.out_of_order), (10, 0, 0));
        assert!(t.has(9) && !t.has(10));
    }

    #[test]
    fn a_replayed_message_seen_live_before_is_a_duplicate() {
        let mut t = Tracker::new(10);
        t.record(3, Some(4));
        assert_eq!(t.record(3, Some(4)), Outcome::Duplicate);
        assert_eq!((t.unique, t.duplicates), (1, 1));
    }

    #[test]
    fn a_lower_offset_after_a_higher_one_is_out_of_order() {
        let mut t = Tracker::new(10);
        t.record(5, Some(6));
        assert_eq!(t.record(4, Some(5)), Outcome::OutOfOrder);
        assert_eq!(t.record(6, Some(7)), Outcome::New);
        assert_eq!((t.unique, t.out_of_order), (3, 1));
    }

    #[test]
    fn missing_messages_leave_unique_below_the_total() {
        let mut t = Tracker::new(100);
        for seq in (0..100).filter(|s| s % 3 != 0) {
            t.record(seq, Some(seq + 1));
        }
        assert_eq!(t.unique, 66);
        assert!(!t.has(0) && t.has(1));
    }

    #[test]
    fn a_new_epoch_resets_the_order_baseline() {
        let mut t = Tracker::new(10);
        t.record(8, Some(50));
        t.restart_offsets();
        assert_eq!(t.record(9, Some(1)), Outcome::New);
        assert_eq!(t.out_of_order, 0);
    }

    #[test]
    fn foreign_sequence_numbers_are_not_counted() {
        let mut t = Tracker::new(4);
        assert_eq!(t.record(4, Some(1)), Outcome::Foreign);
        assert_eq!(t.unique, 0);
    }

    #[test]
    fn positions_are_read_from_the_gateway_fields_not_the_payload() {
        let delivery = r#"{"action":"message","topic":"t","snapshot":{"s":1,"t":2,"offset":9,"epoch":"zz"},"offset":42,"epoch":"k3x9"}"#;
        let want = Position {
            epoch: "k3x9".into(),
            offset: 42,
        };
        assert_eq!(scan_position(delivery), Some(want));
        let reply = r#"{"action":"subscribe","message":"context subscribed","context":"t","epoch":"e1","offset":7,"recovered":false,"detail":"x"}"#;
        assert_eq!(scan_position(reply).map(|p| p.offset), Some(7));
        assert_eq!(scan_recovered(reply), Some(false));
        let plain = r#"{"action":"subscribe","message":"context subscribed","context":"t"}"#;
        assert_eq!(scan_position(plain), None);
        assert_eq!(scan_recovered(plain), None);
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let mut j = Jitter::new(7);
        let draws: Vec<u64> = (0..1000).map(|_| j.between(3000, 5000)).collect();
        assert!(draws.iter().all(|d| (3000..=5000).contains(d)));
        assert!(draws.iter().any(|&d| d < 3500) && draws.iter().any(|&d| d > 4500));
        assert_eq!(Jitter::new(1).between(5, 5), 5);
    }
}
