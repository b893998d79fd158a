//! Typed broker errors, and how Redis and pool failures map to them.
//!
//! The `Display` text is what a client reads in an `unavailable` reply's
//! `detail` and what `POST /publish` answers with its 503: short, naming
//! the Redis address (never credentials) and never the wording of the
//! libraries underneath.

use redis::{ErrorKind, RedisError};

/// Why a broker cannot subscribe or publish now; the client may retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// No usable connection to Redis at `addr` (`host:port`).
    #[error("redis unavailable at {addr}{}", cause_suffix(.cause))]
    NotConnected {
        addr: String,
        /// What the connection attempt met, e.g. "connection refused".
        cause: Option<String>,
    },
    /// Redis at `addr` did not answer `what` within the I/O timeout.
    #[error("redis at {addr} did not answer {what} in time")]
    Timeout { addr: String, what: &'static str },
    /// Redis at `addr` refused the configured credentials.
    #[error("redis refused authentication at {addr}")]
    AuthRefused { addr: String },
    /// Redis at `addr` answered `what` with an error (e.g. NOPERM, READONLY).
    #[error("redis at {addr} refused {what}: {reason}")]
    Refused {
        addr: String,
        what: &'static str,
        reason: String,
    },
    /// The topic's cluster slot is moving to another master.
    #[error("redis cluster slot is moving; retry later")]
    SlotMoving,
    /// No cluster master serves the topic's slot.
    #[error("no redis cluster master serves this topic's slot")]
    NoSlotOwner,
    /// The `[redis]` settings cannot make a connection.
    #[error("redis settings unusable: {0}")]
    Settings(String),
    /// The broker has stopped; nothing will be subscribed or published.
    #[error("broker stopped")]
    Stopped,
}

fn cause_suffix(cause: &Option<String>) -> String {
    cause
        .as_ref()
        .map_or_else(String::new, |c| format!(": {c}"))
}

impl BrokerError {
    /// Not connected, for no reason more precise than that.
    pub(crate) fn not_connected(addr: impl Into<String>) -> Self {
        Self::NotConnected {
            addr: addr.into(),
            cause: None,
        }
    }

    /// Whether the connection that met this error is suspect (it did not
    /// answer, or it broke) and must not be used again.
    pub(crate) fn breaks_link(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::NotConnected { .. })
    }

    /// A hint for the operator, logged next to the error.
    pub(crate) fn hint(&self) -> Option<&'static str> {
        match self {
            Self::AuthRefused { .. } => Some("check redis.password or the URL's password"),
            _ => None,
        }
    }
}

/// `err`, met by `what` (e.g. "PUBLISH") on the connection to `addr`.
pub(crate) fn from_redis(err: &RedisError, addr: &str, what: &'static str) -> BrokerError {
    let addr = addr.to_string();
    let code = err.code();
    if err.kind() == ErrorKind::AuthenticationFailed || matches!(code, Some("WRONGPASS" | "NOAUTH"))
    {
        return BrokerError::AuthRefused { addr };
    }
    if err.is_timeout() {
        return BrokerError::Timeout { addr, what };
    }
    if err.is_io_error() || err.is_connection_dropped() {
        return BrokerError::NotConnected {
            addr,
            cause: Some(io_cause(err)),
        };
    }
    let reason = match (code, err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        (None, _) => err.to_string(),
    };
    BrokerError::Refused { addr, what, reason }
}

/// What an I/O failure was, in a few words.
fn io_cause(err: &RedisError) -> String {
    if err.is_connection_refusal() {
        return "connection refused".into();
    }
    // A wrapped failure (e.g. a cluster's initial connections) carries the
    // system's words as its detail: keep them, without the errno.
    if let Some(detail) = err.detail() {
        let words = detail.split(" (os error").next().unwrap_or(detail).trim();
        let mut chars = words.chars();
        if let Some(first) = chars.next() {
            return first.to_lowercase().chain(chars).collect();
        }
    }
    if err.is_connection_dropped() {
        "connection lost".into()
    } else {
        // e.g. a name that does not resolve: the resolver's own words.
        err.to_string()
    }
}

/// A failure to get a pooled connection to `addr`.
pub(crate) fn from_pool(err: &deadpool_redis::PoolError, addr: &str) -> BrokerError {
    use deadpool_redis::{PoolError, TimeoutType};
    match err {
        PoolError::Backend(err) => from_redis(err, addr, "the connection attempt"),
        PoolError::Timeout(TimeoutType::Create) => BrokerError::Timeout {
            addr: addr.to_string(),
            what: "the connection attempt",
        },
        PoolError::Timeout(TimeoutType::Wait | TimeoutType::Recycle) => BrokerError::Timeout {
            addr: addr.to_string(),
            what: "PUBLISH",
        },
        PoolError::Closed | PoolError::NoRuntimeSpecified => BrokerError::Stopped,
        PoolError::PostCreateHook(_) => BrokerError::not_connected(addr),
    }
}

#[cfg(test)]
mod tests;
