//! Counters shared by every connection and publisher task, the latency
//! histogram, and the tiny frame scans that keep readers cheap.
//!
//! Everything here is lock-free: thousands of reader tasks record into the
//! same atomics, and a lock would make the client the bottleneck it must
//! not be.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Sub-buckets per power of two: 2^5 = 32, so a bucket is at most 1/32
/// (≈3 %) wide relative to its value, as in HdrHistogram with 1.5 digits.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`: one exact row, then one row per exponent.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB as usize;

/// An HDR-style log-linear histogram of `u64` values (nanoseconds here).
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn index(value: u64) -> usize {
        if value < SUB {
            return value as usize;
        }
        let shift = 63 - value.leading_zeros() - SUB_BITS;
        let sub = (value >> shift) - SUB;
        ((u64::from(shift) + 1) * SUB + sub) as usize
    }

    /// The largest value that falls in bucket `index`.
    fn upper_bound(index: usize) -> u64 {
        let (row, sub) = (index as u64 / SUB, index as u64 % SUB);
        if row == 0 {
            return sub;
        }
        let end = u128::from(SUB + sub + 1) << (row - 1);
        u64::try_from(end - 1).unwrap_or(u64::MAX)
    }

    pub fn record(&self, value: u64) {
        self.counts[Self::index(value)].fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.max.fetch_max(value, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// Mean of the recorded values, from the bucket upper bounds (so within
    /// a bucket's width, ≤ 3 %); 0 when empty.
    pub fn mean(&self) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let sum: f64 = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| c.load(Relaxed) as f64 * Self::upper_bound(i) as f64)
            .sum();
        sum / total as f64
    }

    /// The value at quantile `q` (0..=1), reported as its bucket's upper
    /// bound (never above the true maximum); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count.load(Relaxed);
            if seen >= rank {
                return Self::upper_bound(index).min(self.max());
            }
        }
        self.max()
    }

    /// p50/p90/p99/max in milliseconds, for the JSON result.
    pub fn summary_ms(&self) -> serde_json::Value {
        let ms = |ns: u64| (ns as f64 / 1e6 * 1000.0).round() / 1000.0;
        serde_json::json!({
            "count": self.count(),
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.max()),
            "mean": ms(self.mean() as u64),
        })
    }
}

/// Everything the run counts, shared by all tasks.
pub struct Stats {
    /// Publish-to-receive latency of each delivery, in nanoseconds.
    pub latency: Histogram,
    /// Connect + authorize + subscribe time of each connection, in ns.
    pub setup: Histogram,
    /// Time of each PUBLISH / FCALL round trip from the publisher's side, in ns.
    pub publish_call: Histogram,
    pub received: AtomicU64,
    /// Deliveries whose payload was not ours or could not be scanned.
    pub unparsed: AtomicU64,
    /// Bench-clock time of the last delivery, in ns (for deliveries/s).
    pub last_delivery_ns: AtomicU64,
    /// Per publish sequence number: deliveries received, so loss can be
    /// told apart as "nobody got it" (gateway or Redis) vs "some clients
    /// missed it" (slow consumers, dropped connections).
    pub per_seq: Box<[AtomicU32]>,
    /// Per sequence number: whether Redis accepted the PUBLISH.
    pub published: Box<[AtomicBool]>,
    /// PUBLISHes Redis answered with 0 receivers (the gateway was not subscribed).
    pub publish_no_receivers: AtomicU64,
    /// Largest lateness of a publish against its schedule, in ns.
    pub publish_lag_max_ns: AtomicU64,
    /// Labelled failures: setup steps, publish errors, disconnects.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn new(publishes: usize) -> Self {
        Self {
            latency: Histogram::new(),
            setup: Histogram::new(),
            publish_call: Histogram::new(),
            received: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            per_seq: (0..publishes).map(|_| AtomicU32::new(0)).collect(),
            published: (0..publishes).map(|_| AtomicBool::new(false)).collect(),
            publish_no_receivers: AtomicU64::new(0),
            publish_lag_max_ns: AtomicU64::new(0),
            errors: Mutex::default(),
        }
    }

    /// Counts one failure under `label` (rare events only: it takes a lock).
    pub fn error(&self, label: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(label.into()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records one delivery frame received at bench-clock time `now_ns`.
    pub fn delivery(&self, frame: &str, now_ns: u64) {
        let Some((seq, sent_ns)) = scan_delivery(frame) else {
            self.unparsed.fetch_add(1, Relaxed);
            return;
        };
        match self.per_seq.get(seq as usize) {
            Some(slot) => slot.fetch_add(1, Relaxed),
            None => {
                self.unparsed.fetch_add(1, Relaxed);
                return;
            }
        };
        self.received.fetch_add(1, Relaxed);
        self.latency.record(now_ns.saturating_sub(sent_ns));
        self.last_delivery_ns.fetch_max(now_ns, Relaxed);
    }

    /// Publishes Redis accepted, and how their deliveries turned out when
    /// each should have reached `fanout` clients: (ok, full, partial, none).
    pub fn publish_outcomes(&self, fanout: u32) -> (u64, u64, u64, u64) {
        let (mut ok, mut full, mut partial, mut none) = (0, 0, 0, 0);
        for (sent, got) in self.published.iter().zip(self.per_seq.iter()) {
            if !sent.load(Relaxed) {
                continue;
            }
            ok += 1;
            match got.load(Relaxed) {
                0 => none += 1,
                n if n >= fanout => full += 1,
                _ => partial += 1,
            }
        }
        (ok, full, partial, none)
    }
}

/// The payload every publish carries: sequence number and send time on the
/// bench clock, in this exact order so readers can find them by prefix.
pub fn payload(seq: u64, sent_ns: u64, padding: &str) -> String {
    if padding.is_empty() {
        format!(r#"{{"s":{seq},"t":{sent_ns}}}"#)
    } else {
        format!(r#"{{"s":{seq},"t":{sent_ns},"p":"{padding}"}}"#)
    }
}

/// Finds `(seq, sent_ns)` in a delivery frame without parsing the JSON:
/// the gateway embeds a JSON payload verbatim after `"snapshot":`.
pub fn scan_delivery(frame: &str) -> Option<(u64, u64)> {
    let at = frame.rfind(r#""snapshot":{"s":"#)?;
    let rest = &frame[at + r#""snapshot":{"s":"#.len()..];
    let (seq, rest) = leading_number(rest)?;
    let rest = rest.strip_prefix(r#","t":"#)?;
    let (sent, _) = leading_number(rest)?;
    Some((seq, sent))
}

fn leading_number(text: &str) -> Option<(u64, &str)> {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    Some((text[..end].parse().ok()?, &text[end..]))
}

/// The string value of `"key":"..."` in a frame (no escapes expected:
/// session ids and error codes are plain ASCII).
pub fn scan_string<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!(r#""{key}":""#);
    let start = frame.find(&pattern)? + pattern.len();
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_stay_within_a_bucket() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        for (q, exact) in [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.04, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.quantile(1.0), 10_000_000);
    }

    #[test]
    fn histogram_mean_stays_within_a_bucket() {
        let h = Histogram::new();
        assert_eq!(h.mean(), 0.0);
        for v in [1_000u64, 2_000, 3_000, 10_000] {
            h.record(v);
        }
        let mean = h.mean();
        assert!((mean - 4_000.0).abs() / 4_000.0 < 0.04, "{mean}");
    }

    #[test]
    fn histogram_buckets_cover_every_u64() {
        for v in [0, 1, 31, 32, 33, 63, 64, 1 << 40, u64::MAX] {
            let i = Histogram::index(v);
            assert!(i < BUCKETS);
            assert!(Histogram::upper_bound(i) >= v, "{v}");
            if i > 0 {
                assert!(Histogram::upper_bound(i - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn delivery_scan_finds_seq_and_time() {
        let frame = format!(
            r#"{{"action":"message","topic":"bench.x.1","snapshot":{}}}"#,
            payload(42, 123_456, "")
        );
        assert_eq!(scan_delivery(&frame), Some((42, 123_456)));
        let padded = format!(
            r#"{{"action":"message","topic":"t","snapshot":{}}}"#,
            payload(7, 9, "xx")
        );
        assert_eq!(scan_delivery(&padded), Some((7, 9)));
        assert_eq!(
            scan_delivery(r#"{"action":"message","snapshot":"x"}"#),
            None
        );
    }

    #[test]
    fn string_scan_reads_session_and_error() {
        let frame = r#"{"action":"session","message":"m","session":"ab-12"}"#;
        assert_eq!(scan_string(frame, "session"), Some("ab-12"));
        assert_eq!(scan_string(frame, "error"), None);
    }
}
