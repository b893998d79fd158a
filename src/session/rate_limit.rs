//! The per-connection request bounds: the rate limit
//! (`limits.requests_per_sec`, `limits.request_burst`) and the number of
//! refused authorizations.

use tokio::time::Instant;

/// Refused authorizations one connection may make; the next one closes it
/// (docs/PROTOCOL.md, "Closing"). Each costs a signature check, which for
/// RS*/ES* is real CPU.
pub(crate) const MAX_AUTH_FAILURES: u8 = 5;

/// A token bucket, and the count of refused authorizations. The rate and
/// burst are read from the live config at each take rather than kept here:
/// a bucket is part of every idle connection's future, and the count sits
/// in what would otherwise be padding.
pub(super) struct TokenBucket {
    /// `f32`: bursts are whole numbers far below its exact range.
    tokens: f32,
    /// Refused authorizations so far, never reset: a valid token between
    /// guesses does not buy more guesses.
    auth_failures: u8,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub(super) fn new(burst: u32, now: Instant) -> Self {
        Self {
            tokens: burst as f32,
            auth_failures: 0,
            last: now,
        }
    }

    /// Counts a refused authorization; `true` once there were more than
    /// [`MAX_AUTH_FAILURES`].
    pub(super) fn refuse_authorization(&mut self) -> bool {
        self.auth_failures = self.auth_failures.saturating_add(1);
        self.auth_failures > MAX_AUTH_FAILURES
    }

    /// A new, lower burst caps the tokens saved up.
    pub(super) fn cap(&mut self, burst: u32) {
        self.tokens = self.tokens.min(burst as f32);
    }

    /// Takes one token if there is one, after adding `rate` a second since
    /// the last take, at most `burst` in all.
    pub(super) fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f32() * rate as f32;
        self.tokens = (self.tokens + earned).min(burst as f32);
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
