//! Connection helpers both Redis engines use: timeouts, reconnect backoff,
//! connection settings and the address errors name.

use std::future::Future;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo, RedisResult};
use tokio::time::timeout;

use super::{BrokerError, from_redis};

/// Longest wait for Redis to accept a connection or confirm a command.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay; doubles up to `redis.reconnect_max_secs`.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(100);

/// Capped, jittered exponential backoff between reconnect attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    /// The next delay before jitter.
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            next: BACKOFF_START,
        }
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// The delay before the next attempt: between half and all of the
    /// current step, so replicas do not reconnect in lockstep. The step
    /// then doubles, up to `max`.
    pub(crate) fn delay(&mut self, max: Duration) -> Duration {
        use rand::Rng;
        let delay = self.next.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.next = (self.next * 2).min(max.max(BACKOFF_START));
        delay
    }
}

/// `url` as connection settings, with `password` (when set) in place of
/// the URL's own.
pub(crate) fn url_info(url: &str, password: Option<&str>) -> Result<ConnectionInfo, BrokerError> {
    let info = url
        .into_connection_info()
        .map_err(|err| BrokerError::Settings(format!("redis url: {err}")))?;
    Ok(match password {
        Some(password) => {
            let redis = info.redis_settings().clone().set_password(password);
            info.set_redis_settings(redis)
        }
        None => info,
    })
}

/// Where `info` connects, as errors and logs name it: `host:port`, never
/// credentials.
pub(crate) fn addr_of(info: &ConnectionInfo) -> String {
    info.addr().to_string()
}

/// Runs `query` (Redis command `what`, on the connection to `addr`) within
/// [`IO_TIMEOUT`].
pub(crate) async fn within<T>(
    query: impl Future<Output = RedisResult<T>>,
    addr: &str,
    what: &'static str,
) -> Result<T, BrokerError> {
    match timeout(IO_TIMEOUT, query).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(from_redis(&err, addr, what)),
        Err(_) => Err(BrokerError::Timeout {
            addr: addr.to_string(),
            what,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let max = Duration::from_millis(500);
        let mut backoff = Backoff::new();
        let steps = [100, 200, 400, 500, 500];
        for step in steps {
            let step = Duration::from_millis(step);
            let delay = backoff.delay(max);
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
        }
        backoff.reset();
        assert!(backoff.delay(max) <= BACKOFF_START);
    }

    #[test]
    fn addresses_name_host_and_port_without_credentials() {
        let info = url_info("redis://user:pw@10.0.0.1:6380/0", Some("secret")).expect("url");
        assert_eq!(addr_of(&info), "10.0.0.1:6380");
        let info = url_info("rediss://:pw@cache.example:6390", None).expect("url");
        assert_eq!(addr_of(&info), "cache.example:6390");
    }
}
