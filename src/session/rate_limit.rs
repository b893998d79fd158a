//! The per-connection request rate limit (`limits.requests_per_sec`,
//! `limits.request_burst`).

use tokio::time::Instant;

/// A token bucket. The rate and burst are read from the live config at
/// each take rather than kept here: a bucket is part of every idle
/// connection's future.
pub(super) struct TokenBucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub(super) fn new(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// A new, lower burst caps the tokens saved up.
    pub(super) fn cap(&mut self, burst: u32) {
        self.tokens = self.tokens.min(f64::from(burst));
    }

    /// Takes one token if there is one, after adding `rate` a second since
    /// the last take, at most `burst` in all.
    pub(super) fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * f64::from(rate);
        self.tokens = (self.tokens + earned).min(f64::from(burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, start);
        assert!((0..3).all(|_| bucket.take(1, 3, start)));
        assert!(!bucket.take(1, 3, start));
    }

    #[test]
    fn tokens_come_back_at_the_rate_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2, start);
        assert!(bucket.take(2, 2, start) && bucket.take(2, 2, start));
        assert!(!bucket.take(2, 2, start + Duration::from_millis(400)));
        assert!(bucket.take(2, 2, start + Duration::from_millis(500)));
        let much_later = start + Duration::from_secs(60);
        assert!(bucket.take(2, 2, much_later) && bucket.take(2, 2, much_later));
        assert!(!bucket.take(2, 2, much_later));
    }

    #[test]
    fn a_lower_burst_caps_the_saved_tokens() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        bucket.cap(1);
        assert!(bucket.take(1, 1, start));
        assert!(!bucket.take(1, 1, start));
    }
}
