//! The Redis Function library `topicgate` as one Redis engine uses it: the
//! source with this gateway's `[history]` settings filled in, loading it,
//! calling it, and whether it can be used at all.
//!
//! The settings are written into the library text at load because plain
//! `redis-cli FCALL` callers pass none; with several gateways on one Redis
//! the last to load wins. A library that cannot be loaded (Redis older
//! than 7, an ACL that forbids `FUNCTION` or `FCALL`) leaves the engine
//! publishing plainly, unrecorded, until a later load succeeds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, Value};

use super::reply::{position_of, range_of};
use super::{HistorySettings, HistoryStatus, Position, Range};
use crate::broker::engine::{BrokerError, IO_TIMEOUT, from_redis};

/// The library's source; `__SIZE__`, `__TTL__` and `__SHARDED__` are
/// filled in by [`Library::new`].
const SOURCE: &str = include_str!("../topicgate.lua");

/// A TTL of a hundred years is as good as none.
const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;
/// More messages per topic than any Redis could hold.
const MAX_SIZE: usize = 1 << 40;

/// Not known yet: try it, and load it where it is missing.
const UNKNOWN: u8 = 0;
/// Loaded on every Redis this engine publishes to.
const LOADED: u8 = 1;
/// Refused by the Redis: publish plainly until a load succeeds.
const REFUSED: u8 = 2;
/// The settings changed (a reload): load the new text before the next call.
const STALE: u8 = 3;

pub(crate) struct Library {
    /// Publishing with `SPUBLISH` (a Redis Cluster engine).
    sharded: bool,
    /// `history.size` is 0: nothing is recorded. Apart from `source` so
    /// that every publish can check it without a lock.
    off: AtomicBool,
    /// The settings and [`SOURCE`] with them filled in; replaced when a
    /// reload changes `[history]`. A std mutex, held only to copy or swap.
    source: Mutex<(HistorySettings, String)>,
    /// `UNKNOWN`, `LOADED` or `REFUSED`; shared by the engine's actor, which
    /// loads on each new connection, and its publisher, which calls.
    state: AtomicU8,
}

/// What a call through the library came to.
pub(crate) enum Call<T> {
    Done(T),
    /// The library cannot be used here: go on without history.
    Unusable,
}

impl Library {
    /// The library for `settings`, publishing with `SPUBLISH` when
    /// `sharded` (a Redis Cluster engine), else `PUBLISH`.
    pub(crate) fn new(settings: HistorySettings, sharded: bool) -> Self {
        let code = render(&settings, sharded);
        Self {
            sharded,
            off: AtomicBool::new(settings.size == 0),
            source: Mutex::new((settings, code)),
            state: AtomicU8::new(UNKNOWN),
        }
    }

    /// Applies a reload's `[history]`: the next call loads the new text.
    /// Returns whether anything changed.
    pub(crate) fn update(&self, settings: &HistorySettings) -> bool {
        let mut source = crate::sync::lock(&self.source);
        if source.0 == *settings {
            return false;
        }
        *source = (settings.clone(), render(settings, self.sharded));
        self.off.store(settings.size == 0, Ordering::Relaxed);
        self.state.store(STALE, Ordering::Relaxed);
        true
    }

    fn code(&self) -> String {
        crate::sync::lock(&self.source).1.clone()
    }

    pub(crate) fn status(&self) -> HistoryStatus {
        if self.off.load(Ordering::Relaxed) {
            HistoryStatus::Off
        } else if self.state.load(Ordering::Relaxed) == REFUSED {
            HistoryStatus::Unavailable
        } else {
            HistoryStatus::Available
        }
    }

    /// Whether publishes should go through the library.
    pub(crate) fn records(&self) -> bool {
        self.status() == HistoryStatus::Available
    }

    /// Notes whether the library is loaded everywhere this engine publishes
    /// (after a load, or a sharded engine's round over its masters).
    pub(crate) fn set_loaded(&self, loaded: bool) {
        let state = if loaded { LOADED } else { REFUSED };
        self.state.store(state, Ordering::Relaxed);
    }

    /// `FUNCTION LOAD REPLACE` on `connection` (on a cluster connection:
    /// every master). `Err` when Redis refused it or did not answer.
    pub(crate) async fn load<C: ConnectionLike>(
        &self,
        connection: &mut C,
        addr: &str,
    ) -> Result<(), LoadError> {
        let mut load = redis::cmd("FUNCTION");
        load.arg("LOAD").arg("REPLACE").arg(self.code());
        match tokio::time::timeout(IO_TIMEOUT, load.query_async::<Value>(connection)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) if refused(&err) => {
                Err(LoadError::Refused(from_redis(&err, addr, "FUNCTION LOAD")))
            }
            Ok(Err(err)) => Err(LoadError::Unreachable(from_redis(
                &err,
                addr,
                "FUNCTION LOAD",
            ))),
            Err(_) => Err(LoadError::Unreachable(BrokerError::Timeout {
                addr: addr.to_string(),
                what: "FUNCTION LOAD",
            })),
        }
    }

    /// Records `payload` on `channel` and publishes it with its position;
    /// [`Call::Unusable`] when the caller must publish it plainly.
    pub(crate) async fn record<C: ConnectionLike>(
        &self,
        connection: &mut C,
        channel: &str,
        payload: &[u8],
        addr: &str,
    ) -> Result<Call<Option<Position>>, BrokerError> {
        const WHAT: &str = "FCALL topicgate_publish_position";
        let mut record = redis::cmd("FCALL");
        record
            .arg("topicgate_publish_position")
            .arg(1)
            .arg(channel)
            .arg(payload);
        match self.call(connection, &record, addr, WHAT).await? {
            Call::Done(reply) => position_of(&reply)
                .map(Call::Done)
                .map_err(|reason| garbled(addr, WHAT, reason)),
            Call::Unusable => Ok(Call::Unusable),
        }
    }

    /// `channel`'s recorded range after `since`; no history where the
    /// library cannot be used.
    pub(crate) async fn read<C: ConnectionLike>(
        &self,
        connection: &mut C,
        channel: &str,
        since: Option<&Position>,
        addr: &str,
    ) -> Result<Range, BrokerError> {
        const WHAT: &str = "FCALL_RO topicgate_history";
        let mut read = redis::cmd("FCALL_RO");
        read.arg("topicgate_history").arg(1).arg(channel);
        if let Some(since) = since {
            read.arg(&*since.epoch).arg(since.offset);
        }
        match self.call(connection, &read, addr, WHAT).await? {
            Call::Done(reply) => range_of(&reply).map_err(|reason| garbled(addr, WHAT, reason)),
            Call::Unusable => Ok(Range::none()),
        }
    }

    /// Starts a new epoch of `channel`'s history if `epoch` is still its
    /// current one (`topicgate_reset`); nothing where the library cannot
    /// be used.
    pub(crate) async fn reset<C: ConnectionLike>(
        &self,
        connection: &mut C,
        channel: &str,
        epoch: &str,
        addr: &str,
    ) -> Result<(), BrokerError> {
        const WHAT: &str = "FCALL topicgate_reset";
        let mut reset = redis::cmd("FCALL");
        reset.arg("topicgate_reset").arg(1).arg(channel).arg(epoch);
        match self.call(connection, &reset, addr, WHAT).await? {
            Call::Done(reply) => position_of(&reply)
                .map(|_| ())
                .map_err(|reason| garbled(addr, WHAT, reason)),
            Call::Unusable => Ok(()),
        }
    }

    /// Runs `command` (an FCALL of this library, named `what` in errors) on
    /// `connection`. Where the library is missing it is loaded and the call
    /// made once more; where Redis refuses it, the library is marked
    /// unusable (logged once) and the answer is [`Call::Unusable`].
    async fn call<C: ConnectionLike>(
        &self,
        connection: &mut C,
        command: &Cmd,
        addr: &str,
        what: &'static str,
    ) -> Result<Call<Value>, BrokerError> {
        if !self.records() {
            return Ok(Call::Unusable);
        }
        if self.state.load(Ordering::Relaxed) == STALE {
            match self.load(connection, addr).await {
                Ok(()) => self.set_loaded(true),
                Err(LoadError::Refused(err)) => {
                    self.refuse(&err);
                    return Ok(Call::Unusable);
                }
                Err(LoadError::Unreachable(err)) => return Err(err),
            }
        }
        match self.query(connection, command, addr, what).await? {
            Ok(value) => return Ok(Call::Done(value)),
            Err(err) if forbidden(&err) => {
                self.refuse(&from_redis(&err, addr, what));
                return Ok(Call::Unusable);
            }
            Err(err) if !missing(&err) => return Err(from_redis(&err, addr, what)),
            Err(_) => {}
        }
        match self.load(connection, addr).await {
            Ok(()) => {}
            Err(LoadError::Refused(err)) => {
                self.refuse(&err);
                return Ok(Call::Unusable);
            }
            Err(LoadError::Unreachable(err)) => return Err(err),
        }
        match self.query(connection, command, addr, what).await? {
            Ok(value) => Ok(Call::Done(value)),
            Err(err) if forbidden(&err) || missing(&err) => {
                self.refuse(&from_redis(&err, addr, what));
                Ok(Call::Unusable)
            }
            Err(err) => Err(from_redis(&err, addr, what)),
        }
    }

    /// `command`'s answer; the inner `Err` is Redis refusing it, the outer
    /// one a connection failure or timeout.
    async fn query<C: ConnectionLike>(
        &self,
        connection: &mut C,
        command: &Cmd,
        addr: &str,
        what: &'static str,
    ) -> Result<Result<Value, RedisError>, BrokerError> {
        match tokio::time::timeout(IO_TIMEOUT, command.query_async::<Value>(connection)).await {
            Ok(Ok(value)) => Ok(Ok(value)),
            Ok(Err(err)) if refused(&err) => Ok(Err(err)),
            Ok(Err(err)) => Err(from_redis(&err, addr, what)),
            Err(_) => Err(BrokerError::Timeout {
                addr: addr.to_string(),
                what,
            }),
        }
    }

    /// Marks the library unusable, logging the first time.
    fn refuse(&self, err: &BrokerError) {
        if self.state.swap(REFUSED, Ordering::Relaxed) != REFUSED {
            tracing::warn!(error = %err, "history unavailable: publishing without recording");
        }
    }
}

/// [`SOURCE`] with `settings` and the broker kind filled in.
fn render(settings: &HistorySettings, sharded: bool) -> String {
    // EXPIRE 0 would delete at once: a TTL is at least a second. Both
    // saturate well below where Lua would print them with an exponent.
    let ttl = settings.ttl.as_secs().clamp(1, MAX_TTL_SECS);
    let size = settings.size.min(MAX_SIZE);
    SOURCE
        .replacen("__SIZE__", &size.to_string(), 1)
        .replacen("__TTL__", &ttl.to_string(), 1)
        .replacen("__SHARDED__", if sharded { "true" } else { "false" }, 1)
}

/// Why [`Library::load`] failed.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// Redis answered with an error (too old, ACL, bad library).
    Refused(BrokerError),
    /// Redis could not be reached or did not answer in time.
    Unreachable(BrokerError),
}

/// A library reply this gateway cannot read (another version loaded?).
fn garbled(addr: &str, what: &'static str, reason: String) -> BrokerError {
    BrokerError::Refused {
        addr: addr.to_string(),
        what,
        reason: format!("unexpected reply: {reason}"),
    }
}

/// Whether Redis itself answered `err` (rather than the link failing).
fn refused(err: &RedisError) -> bool {
    !(err.is_io_error() || err.is_timeout() || err.is_connection_dropped())
        && err.code().is_some()
        && !matches!(
            err.code(),
            Some("WRONGPASS" | "NOAUTH" | "LOADING" | "TRYAGAIN")
        )
        && err.redirect_node().is_none()
}

/// Whether `err` says this Redis will not run the library at all: an ACL
/// forbids it, or the Redis predates functions.
fn forbidden(err: &RedisError) -> bool {
    err.code() == Some("NOPERM")
        || err
            .detail()
            .is_some_and(|detail| detail.starts_with("unknown command"))
}

/// Whether `err` says the library's function does not exist there.
fn missing(err: &RedisError) -> bool {
    err.detail()
        .is_some_and(|detail| detail.starts_with("Function not found"))
}

#[cfg(test)]
mod tests;
