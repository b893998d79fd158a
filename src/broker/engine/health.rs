//! The health check both Redis engines run on each subscribing link.
//!
//! A connection that stops answering without closing (a dead peer, a
//! dropped NAT flow, a partition) never ends its message stream: only a
//! request that goes unanswered shows it. Each link is therefore pinged
//! every `redis.health_check_secs`, and a ping unanswered within that same
//! period condemns it, so a silent link is noticed within about twice the
//! period (`docs/RELIABILITY.md`).

use std::future::Future;
use std::time::Duration;

use redis::RedisResult;
use tokio::sync::watch;
use tokio::time::timeout;

use super::{BrokerError, from_redis};

/// Pings with `ping` every period `every` holds (read at each round, so a
/// reload applies at once) until a ping fails or is not answered within
/// the period; returns why, naming the link at `addr`.
pub(crate) async fn until_silent<F, Fut>(
    mut ping: F,
    every: watch::Receiver<Duration>,
    addr: &str,
) -> BrokerError
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<()>>,
{
    loop {
        let period = *every.borrow();
        tokio::time::sleep(period).await;
        let wait = *every.borrow();
        match timeout(wait, ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return from_redis(&err, addr, "PING"),
            Err(_) => {
                return BrokerError::Timeout {
                    addr: addr.to_string(),
                    what: "PING",
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ping_unanswered_within_the_period_condemns_the_link() {
        let (_period, every) = watch::channel(Duration::from_secs(5));
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        let started = tokio::time::Instant::now();
        // Three pings answered, then silence.
        let ping = move || {
            let round = count.fetch_add(1, Ordering::SeqCst);
            async move {
                if round >= 3 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        };
        let why = until_silent(ping, every, "10.0.0.1:6379").await;
        assert_eq!(
            why,
            BrokerError::Timeout {
                addr: "10.0.0.1:6379".into(),
                what: "PING"
            }
        );
        assert_eq!(answered.load(Ordering::SeqCst), 4);
        // Four periods of waiting, then one period without an answer.
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_period_applies_from_the_next_round() {
        let (period, every) = watch::channel(Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let mut rounds = 0;
        // The first ping is answered and shortens the period (a reload);
        // the second is never answered.
        let ping = move || {
            rounds += 1;
            period.send_replace(Duration::from_secs(1));
            let answered = rounds == 1;
            async move {
                if !answered {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        };
        let why = until_silent(ping, every, "a:1").await;
        assert!(matches!(why, BrokerError::Timeout { .. }), "{why:?}");
        // 5 s before the first ping, then 1 s before the second and 1 s
        // without its answer.
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }
}
